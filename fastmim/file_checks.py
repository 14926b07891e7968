"""Checks of the folders a run or a tool writes to, made before the work that fills them: a
leaf module importing only the standard library and :mod:`fastmim.errors`, so the engine, the
command line and the tools share one wording of what is in the way.
"""
import os
import os.path as osp
import tempfile

from fastmim.errors import LaunchError


def file_in_the_way(folder):
    """``'<path> is a file, not a folder'`` for the nearest part of ``folder`` that exists
    when it is no folder: ``os.makedirs`` then says only 'File exists', naming nothing."""
    while not osp.exists(folder) and osp.dirname(folder) != folder:
        folder = osp.dirname(folder)
    return None if osp.isdir(folder) else f'{folder} is a file, not a folder'


def check_work_dir(work_dir, name='work dir'):
    """Create ``work_dir`` if needed and prove it is writable, before anything runs.

    ``name`` is how the user gave the folder (``'--out-dir'``) for the error line."""
    try:
        os.makedirs(work_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix='.write_test'):
            pass
    except OSError as error:
        reason = file_in_the_way(osp.abspath(work_dir)) or error.strerror
        raise LaunchError(f'{name} {osp.abspath(work_dir)} is not writable: {reason}') from None
