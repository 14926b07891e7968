"""Checks of the folders a run or a tool writes to, made before the work that fills them: a
leaf module importing only the standard library and :mod:`fastmim.errors`, so the engine, the
command line and the tools share one wording of what is in the way.
"""
import os
import os.path as osp
import tempfile

from fastmim.errors import LaunchError


ARCHIVE_SUFFIXES = ('.tar', '.tar.gz', '.tgz', '.zip', '.tar.bz2', '.tar.xz', '.7z', '.rar')


def _nearest_existing(path):
    """``path`` or its nearest parent that exists (``''`` or the root when none does)."""
    while not osp.exists(path) and osp.dirname(path) != path:
        path = osp.dirname(path)
    return path


def file_in_place_of(folder):
    """The file that ``folder`` or one of its parents is, or ``None``: a data folder given
    as its archive (``imgs.tar``) or as one of its images is then named as that file, not as
    a folder not found."""
    path = _nearest_existing(osp.normpath(folder))
    return path if osp.isfile(path) else None


def file_in_the_way(folder):
    """``'<path> is a file, not a folder'`` for the file that ``folder`` or one of its parents
    is (:func:`file_in_place_of`): ``os.makedirs`` then says only 'File exists', naming
    nothing."""
    file = file_in_place_of(folder)
    return None if file is None else f'{file} is a file, not a folder'


def what_to_give_instead(file):
    """What to give in place of ``file`` where a folder of data was expected."""
    if file.lower().endswith(ARCHIVE_SUFFIXES):
        return 'an archive: extract it and give the extracted folder'
    return 'give the folder that holds the images'


def check_dir_can_be_made(folder, name='work dir'):
    """Prove that :func:`check_work_dir` on ``folder`` would pass, without making anything: a
    file is written and removed in ``folder`` where it exists, else in its nearest parent that
    does. A tool whose later checks (the model, its arguments) can still refuse the run checks
    its output folder early with this and makes it with :func:`check_work_dir` only once those
    passed, so that a refusal leaves no empty folder behind."""
    folder = osp.abspath(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=_nearest_existing(folder), prefix='.write_test'):
            pass
    except OSError as error:
        reason = file_in_the_way(folder) or error.strerror
        raise LaunchError(f'{name} {folder} is not writable: {reason}') from None


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
