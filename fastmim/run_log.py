"""Lines for the log file of the run in progress, beside what the console shows."""
import contextlib
import logging
import os
import os.path as osp
import sys
from typing import Dict, Iterator, List, Optional

from mmengine.logging import MMLogger

# The file handlers of the per-rank logs this process opened (:func:`rank_log_file`), by path.
_rank_log_handlers: Dict[str, logging.FileHandler] = {}


def log_to_files(message: str, every_rank: bool = False) -> None:
    """Write ``message`` as a warning to the log files of the current ``MMLogger`` (a run's
    ``<work_dir>/<timestamp>/<timestamp>.log``), where one exists: a Python warning, or the
    line a tool ends with, goes to the terminal only, and the run's record, read later beside
    its checkpoints, would lack it. The console handler is left out (the caller prints there), and
    no logger is created outside a run: mmengine's ``get_current_instance`` would make one,
    which looks for a device to name. A file name that is no UTF-8 (its undecodable bytes
    surrogate-escaped by Python) is written with those bytes as escapes: the log file's strict
    UTF-8 encoder would fail on it, and the line would be lost behind a 'Logging error'
    traceback.

    mmengine gives rank 0 alone a log file: with ``every_rank`` a process without one (another
    rank of a multi-process run, or a DataLoader worker of it) writes the line to its own
    :func:`rank_log_file` beside it, so that what it alone saw (an image skipped in its share of
    the data) is in the work dir too, not only on a console that is gone once the job ends."""
    if not MMLogger._instance_dict:  # no public way to ask without creating one
        return
    logger = MMLogger.get_current_instance()
    files = [handler for handler in logger.handlers if isinstance(handler, logging.FileHandler)]
    if not files and every_rank:
        files = _rank_log_handlers_of(logger)
    # WARNING: the file format of ERROR adds a source line, here always this function.
    writable = message.encode('utf-8', 'backslashreplace').decode('utf-8')
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, writable, None, None)
    for handler in files:
        if record.levelno >= handler.level:
            handler.handle(record)


def rank_log_file(logger: MMLogger) -> Optional[str]:
    """``<timestamp>_rank<R>.log`` beside the run's log file, for a process of rank R > 0 of a
    run (mmengine names every rank's logger the run's log file, but opens it on rank 0 alone:
    one file written by several machines' processes would interleave or, on storage that is
    not shared, be lost); None outside a run or on rank 0. The rank is the global one, so the
    names differ on every node of a shared work dir."""
    from mmengine.dist import get_rank
    log_file = getattr(logger, '_log_file', None)
    rank = get_rank()
    if not log_file or rank == 0:
        return None
    return _rank_log_path(log_file, rank)


def rank_log_pattern() -> Optional[str]:
    """The :func:`rank_log_file` of every rank, with ``<R>`` for the rank, in the run in
    progress (None outside one): what a process names when another one's error, written there,
    ended the job (on a multi-node job each node's console is a separate file, if kept)."""
    if not MMLogger._instance_dict:  # no public way to ask without creating one
        return None
    log_file = getattr(MMLogger.get_current_instance(), '_log_file', None)
    return _rank_log_path(log_file, '<R>') if log_file else None


def _rank_log_path(log_file: str, rank) -> str:
    stem, suffix = osp.splitext(log_file)
    return f'{stem}_rank{rank}{suffix}'


def _rank_log_handlers_of(logger: MMLogger) -> List[logging.FileHandler]:
    """The handler of this process's :func:`rank_log_file` (none on rank 0 or outside a run),
    opened on first use (a rank that skips nothing leaves no file), for appending: DataLoader
    workers forked from this process, or opening it themselves, add whole lines to it, not over
    each other's."""
    from mmengine.logging.logger import MMFormatter
    path = rank_log_file(logger)
    if path is None:
        return []
    if path not in _rank_log_handlers:
        os.makedirs(osp.dirname(path), exist_ok=True)
        handler = logging.FileHandler(path, mode='a', encoding='utf-8', delay=True)
        handler.setFormatter(MMFormatter(color=False, datefmt='%Y/%m/%d %H:%M:%S'))
        _rank_log_handlers[path] = handler
    return [_rank_log_handlers[path]]


def console_handlers() -> List[logging.StreamHandler]:
    """The console handlers of the current ``MMLogger``: its plain stream handlers, not its file
    handlers (a ``FileHandler`` is a ``StreamHandler`` too)."""
    return [handler for handler in MMLogger.get_current_instance().handlers
            if type(handler) is logging.StreamHandler]


@contextlib.contextmanager
def console_log_on_stderr() -> Iterator[None]:
    """Within it, the console handlers of the current ``MMLogger`` write to ``sys.stderr``, not
    to stdout, which a tool keeps for its result (a printed config, a report redirected to a
    file); on the way out each writes where it wrote before. The streams are swapped, not set
    with ``setStream``, which flushes the stream it replaces: a handler left pointing at a
    stream closed since (a finished test's captured stderr) would fail the next tool there."""
    handlers = console_handlers()
    before = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.stream = sys.stderr
    try:
        yield
    finally:
        for handler, stream in zip(handlers, before):
            handler.stream = stream
