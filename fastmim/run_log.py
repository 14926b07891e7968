"""Lines for the log file of the run in progress, beside what the console shows."""
import logging

from mmengine.logging import MMLogger


def log_to_files(message: str) -> None:
    """Write ``message`` as a warning to the log files of the current ``MMLogger`` (a run's
    ``<work_dir>/<timestamp>/<timestamp>.log``), where one exists: a Python warning, or the
    line a tool ends with, goes to the terminal only, and the run's record, read later beside
    its checkpoints, lacked it. The console handler is left out (the caller prints there), and
    no logger is created outside a run: mmengine's ``get_current_instance`` would make one,
    which looks for a device to name."""
    if not MMLogger._instance_dict:  # no public way to ask without creating one
        return
    logger = MMLogger.get_current_instance()
    files = [handler for handler in logger.handlers if isinstance(handler, logging.FileHandler)]
    # WARNING: the file format of ERROR adds a source line, here always this function.
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, None, None)
    for handler in files:
        if record.levelno >= handler.level:
            handler.handle(record)
