"""Lines for the log file of the run in progress, beside what the console shows."""
import logging
from typing import List

from mmengine.logging import MMLogger


def log_to_files(message: str) -> None:
    """Write ``message`` as a warning to the log files of the current ``MMLogger`` (a run's
    ``<work_dir>/<timestamp>/<timestamp>.log``), where one exists: a Python warning, or the
    line a tool ends with, goes to the terminal only, and the run's record, read later beside
    its checkpoints, lacked it. The console handler is left out (the caller prints there), and
    no logger is created outside a run: mmengine's ``get_current_instance`` would make one,
    which looks for a device to name. A file name that is no UTF-8 (its undecodable bytes
    surrogate-escaped by Python) is written with those bytes as escapes: the log file's strict
    UTF-8 encoder failed on it, and the line was lost behind a 'Logging error' traceback."""
    if not MMLogger._instance_dict:  # no public way to ask without creating one
        return
    logger = MMLogger.get_current_instance()
    files = [handler for handler in logger.handlers if isinstance(handler, logging.FileHandler)]
    # WARNING: the file format of ERROR adds a source line, here always this function.
    writable = message.encode('utf-8', 'backslashreplace').decode('utf-8')
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, writable, None, None)
    for handler in files:
        if record.levelno >= handler.level:
            handler.handle(record)


def console_handlers() -> List[logging.StreamHandler]:
    """The console handlers of the current ``MMLogger``: its plain stream handlers, not its file
    handlers (a ``FileHandler`` is a ``StreamHandler`` too)."""
    return [handler for handler in MMLogger.get_current_instance().handlers
            if type(handler) is logging.StreamHandler]
