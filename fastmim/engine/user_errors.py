"""Tell an error a user can fix from a bug, so that the command-line tools show the first as
one line and the second with its traceback.

Python raises ``TypeError``, ``ValueError`` and ``KeyError`` for mistakes in code as well as
for mistakes in input: ``None + 1`` and a config key ``depths=[2, 2]`` given as a string look
the same by type. What separates them is where the error came from. A check that names what
to fix is a ``raise`` statement (ours, mmengine's, torch's); a bug is raised by the
interpreter inside an expression. One exception to that rule is a call with arguments the
callee does not take, which is how a config key a module does not accept shows up.
"""
import linecache
import re

from fastmim.engine.optim_wrappers import NonFiniteLossError
from fastmim.errors import CheckpointError

# Each of these says what to fix whatever raised it; OSError names the file or folder.
ALWAYS_USER_ERRORS = (CheckpointError, NonFiniteLossError, OSError)
CHECKED_TYPES = (KeyError, TypeError, ValueError)
_BAD_CALL_ARGUMENTS = re.compile(
    r'got an unexpected keyword argument|missing \d+ required (positional|keyword-only) '
    r'argument|takes \d+ positional arguments? but \d+ (was|were) given|'
    r'got multiple values for argument')
_WORKER_ERROR = re.compile(r'^Caught \w+ in DataLoader worker process \d+')
# torch's BatchNorm in training mode given a batch of one value per channel
_ONE_VALUE_PER_CHANNEL = 'Expected more than 1 value per channel when training'


def is_user_error(error, project_errors=()):
    """Whether ``error`` says what a user must change (True) or is a bug to report (False).

    ``project_errors`` are the caller's own error types, always raised on purpose."""
    if isinstance(error, ALWAYS_USER_ERRORS + tuple(project_errors)):
        return True
    if not isinstance(error, CHECKED_TYPES):
        return False
    if _WORKER_ERROR.match(str(error)):
        return _worker_raised_it(str(error))
    if isinstance(error, TypeError) and _BAD_CALL_ARGUMENTS.search(str(error)):
        return True
    return _raised_by_statement(error)


def user_message(error):
    """``Type: message`` of a user error. torch re-raises an error of a DataLoader worker as
    the same type whose message is ``Caught ... in DataLoader worker process N`` followed by the
    worker's whole traceback; its last line is the original ``Type: message``, so that is what
    the user sees, as for an error in the main process."""
    message = str(error)
    if _WORKER_ERROR.match(message):
        return message.strip().splitlines()[-1]
    if isinstance(error, KeyError) and error.args:  # str() would quote the message
        return f'{type(error).__name__}: {error.args[0]}'
    if _ONE_VALUE_PER_CHANNEL in message:
        message += (' (a BatchNorm normalises over the images of one process: one image through '
                    'a 1 x 1 map, such as UperNet\'s pooled branch, is one value per channel; '
                    'set train_dataloader.batch_size to 2 or more, or use SyncBN over several '
                    'GPUs)')
    return f'{type(error).__name__}: {message}'


def _raised_by_statement(error):
    """Whether the innermost frame of the error's traceback is a ``raise`` statement."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    line = linecache.getline(traceback.tb_frame.f_code.co_filename, traceback.tb_lineno)
    return _is_raise_line(line.strip())


def _worker_raised_it(message):
    """The same test on a worker's traceback, which reaches the main process as text: its
    innermost source line is the last indented line that is not a caret marker."""
    code_lines = [line.strip() for line in message.splitlines()
                  if line.startswith('    ') and line.strip().strip('^~ ')]
    return bool(code_lines) and _is_raise_line(code_lines[-1])


def _is_raise_line(line):
    return line == 'raise' or line.startswith(('raise ', 'raise('))
