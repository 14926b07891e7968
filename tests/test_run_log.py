"""fastmim.run_log: where the console log goes while a tool keeps stdout for its result."""
import io
import logging
import sys

from mmengine.logging import MMLogger

from fastmim.run_log import console_log_on_stderr


def test_console_log_goes_to_stderr_and_back_even_after_its_stream_closed(monkeypatch):
    logger = MMLogger.get_instance('test_console_log_on_stderr', log_level='INFO')
    handler = next(handler for handler in logger.handlers
                   if type(handler) is logging.StreamHandler)
    monkeypatch.setattr(handler, 'stream', io.StringIO())
    original = handler.stream
    for time in range(2):  # the second time, the first stderr is closed (a test capture's end)
        captured = io.StringIO()
        monkeypatch.setattr(sys, 'stderr', captured)
        with console_log_on_stderr():
            logger.warning(f'to stderr {time}')  # mmengine drops a repeated warning
        assert f'to stderr {time}' in captured.getvalue()
        captured.close()
        assert handler.stream is original
    assert 'to stderr' not in original.getvalue()
