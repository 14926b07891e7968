"""No deprecation notices about the ``FileClient`` that mmengine builds and never uses.

mmengine 0.10 builds one wherever a config sets no ``file_client_args`` (every
``CheckpointHook.before_train``, every ``save_checkpoint``, a ``LoggerHook`` given ``out_dir``)
and writes to the file backends instead; the client announces '"FileClient" will be deprecated
in future' each time, and its disk backend '"HardDiskBackend" is the alias of "LocalBackend"'
once: warnings about nothing a config sets. They are not Python warnings but
``print_log(..., logger='current')``, which goes to the ``MMLogger`` made last (a run's, one
made after it, mmengine's default one), so a filter on the run's logger misses the others.

Every such build goes through ``FileClient.infer_client`` with ``file_client_args=None``; only
while that call runs does the logger it writes to leave out those two notices. A client built
from ``file_client_args`` (a config that sets them: a client that is used) still announces
itself, and mmengine's '"file_client_args" will be deprecated' is never left out.
"""
import contextlib
import logging

from mmengine.fileio import FileClient
from mmengine.logging import MMLogger


class UnusedFileClientNotices(logging.Filter):
    """Leaves out the two notices of a ``FileClient`` being built, and nothing else."""

    NOTICES = ('"FileClient" will be deprecated in future',
               '"HardDiskBackend" is the alias of "LocalBackend"')

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


@contextlib.contextmanager
def _notices_left_out(logger):
    notices = UnusedFileClientNotices()
    logger.addFilter(notices)
    try:
        yield
    finally:
        logger.removeFilter(notices)


def install():
    """Make ``FileClient.infer_client`` without ``file_client_args`` (mmengine's unused
    clients) build its client with the notices left out on the logger ``print_log`` writes to
    (the current ``MMLogger``; asking for it makes mmengine's default one where none exists,
    as ``print_log`` would)."""
    infer_client = FileClient.infer_client.__func__

    def infer_client_without_notices(cls, file_client_args=None, uri=None):
        if file_client_args is not None:
            return infer_client(cls, file_client_args, uri)
        with _notices_left_out(MMLogger.get_current_instance()):
            return infer_client(cls, file_client_args, uri)

    FileClient.infer_client = classmethod(infer_client_without_notices)
