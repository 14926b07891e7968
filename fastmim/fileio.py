"""Local files that cannot be half-written, and the small file facts the tools report.

A low layer: it imports only the standard library, mmengine's file backend and fastmim's leaf
modules (:mod:`fastmim.errors`, :mod:`fastmim.file_checks`), so the engine, the datasets and
every tool write and hash files the same way without importing the checkpoint loaders.

- :class:`AtomicLocalBackend` writes to a temporary file in the same folder, then renames it
  (``os.replace``), so an interrupted write never replaces the last good file. Registered as
  mmengine's local backend by :func:`fastmim.engine.checkpoint.install`, it writes every
  checkpoint; the tools call it directly for their results files.
- :func:`remove_stale_temporary_files` deletes what a write killed by SIGKILL leaves behind.
- :func:`file_sha256`, :func:`format_size` and :func:`mode_for_new_file` name a file's
  content, size and permission bits.
"""
import contextlib
import hashlib
import os
import os.path as osp
import re
import shutil
import stat
import tempfile

from mmengine.fileio.backends import LocalBackend

from fastmim.errors import CheckpointError
from fastmim.file_checks import file_in_the_way

TEMPORARY_SUFFIX = '.tmp'
# The names of AtomicLocalBackend's temporary files: tempfile.mkstemp(prefix='.<name>.',
# suffix='.tmp') puts 8 characters of [a-z0-9_] between them.
TEMPORARY_FILE = re.compile(r'\.(?P<target>.+)\.[a-z0-9_]{8}' + re.escape(TEMPORARY_SUFFIX))


def remove_stale_temporary_files(folder) -> list:
    """Delete the temporary files that :class:`AtomicLocalBackend` left in ``folder`` (not in
    its subfolders) when a write was cut off by SIGKILL (which raises nothing, so the writer
    cannot remove them), and return ``(path, size in bytes)`` of each.

    Only names of the writer's pattern (``.<name>.<8 of [a-z0-9_]>.tmp``) are touched. Call it
    when nothing is writing there: before a run's first save, on the process that saves.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no work dir yet, or not a local folder
        return removed
    for entry in sorted(entries, key=lambda entry: entry.name):
        if not TEMPORARY_FILE.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            os.remove(entry.path)
        except OSError:
            continue  # gone meanwhile, or not ours to delete: leave it
        removed.append((entry.path, size))
    return removed


def format_size(size: int) -> str:
    """``'0 B'``, ``'12.1 KiB'``, ``'1.3 GiB'``."""
    if size < 1024:
        return f'{size} B'
    for unit in ('KiB', 'MiB', 'GiB'):
        size /= 1024
        if size < 1024 or unit == 'GiB':
            return f'{size:.1f} {unit}'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, but every write goes to a temporary file first.

    The file gets the mode a plain ``open(path, 'wb')`` (``torch.save``) would give it: the
    mode of the file it replaces, else ``0o666`` less the umask, so teammates can read
    checkpoints where the umask allows it (``mkstemp`` alone would make them 0600). A failed
    write (full disk, read-only or vanished folder) removes its temporary file, leaves the
    previous file untouched and raises :class:`CheckpointError` naming the file and the free
    space: the error every tool reports in one line, since most writes through this backend
    are checkpoints. A write cut off by SIGKILL cannot remove its temporary file; the next run
    removes it (:func:`remove_stale_temporary_files`, from ``CheckpointMetaHook``).
    """

    def put(self, obj, filepath):
        self._write_atomically(obj, filepath)

    def put_text(self, obj, filepath, encoding='utf-8'):
        self._write_atomically(obj.encode(encoding), filepath)

    @staticmethod
    def _write_atomically(data, filepath):
        folder = osp.dirname(osp.abspath(filepath))
        tmp_path = None
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp_path = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.',
                                            suffix=TEMPORARY_SUFFIX, dir=folder)
            with os.fdopen(fd, 'wb') as f:
                os.fchmod(f.fileno(), mode_for_new_file(filepath))
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, filepath)
        except BaseException as error:
            if tmp_path is not None and osp.lexists(tmp_path):
                with contextlib.suppress(OSError):  # e.g. the folder is gone or read-only
                    os.remove(tmp_path)
            if isinstance(error, OSError):
                reason = file_in_the_way(folder) or error.strerror or error
                raise CheckpointError(f'could not write {filepath}: {reason}'
                                      f'{_free_space(folder)}; the previous file, if any, is '
                                      'unchanged') from None
            raise


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in 16 MiB blocks: what identifies a checkpoint across
    copies and moves, for the tools that keep results per checkpoint."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 24), b''):
            digest.update(block)
    return digest.hexdigest()


def mode_for_new_file(filepath):
    """The permission bits ``open(filepath, 'wb')`` would give: those of an existing file,
    else ``0o666`` less the process's umask. For a file written under a temporary name
    (``mkstemp`` makes it 0600) and renamed into place."""
    try:
        return stat.S_IMODE(os.stat(filepath).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask, read without changing it where Linux allows (``os.umask`` can only
    be read by setting it, which races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open('/proc/self/status') as status:
            return int(next(line for line in status if line.startswith('Umask:')).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _free_space(folder):
    """`` (N MiB free on FOLDER)`` for the nearest existing ancestor of ``folder``, or ''."""
    path = folder
    while not osp.isdir(path) and osp.dirname(path) != path:
        path = osp.dirname(path)
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return ''
    return f' ({free / 2**20:.1f} MiB free on {path})'
