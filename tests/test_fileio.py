"""Local writes that cannot be half-done, and the file facts the tools report."""
import hashlib
import os
import stat
import tempfile

import pytest

from fastmim.fileio import (AtomicLocalBackend, file_sha256, format_size,
                            remove_stale_temporary_files)


def test_the_writers_temporary_files_are_removed_and_nothing_else(tmp_path):
    """The stale files are named as the writer names them (``tempfile.mkstemp`` with its
    prefix and suffix); a checkpoint, a hidden file of another pattern, a folder of the
    pattern and a subfolder's temporary file are left."""
    fd, stale = tempfile.mkstemp(prefix='.epoch_2.pth.', suffix='.tmp', dir=tmp_path)
    os.write(fd, b'\0' * 1000)
    os.close(fd)
    kept = [tmp_path / 'epoch_1.pth', tmp_path / '.epoch_1.pth.tmp',
            tmp_path / '.epoch_3.pth.abcdefgh.tmp.part']
    for path in kept:
        path.write_bytes(b'kept')
    (tmp_path / '.epoch_4.pth.abcdefgh.tmp').mkdir()
    (tmp_path / 'sub').mkdir()
    nested = tmp_path / 'sub' / '.epoch_5.pth.abcdefgh.tmp'
    nested.write_bytes(b'kept')

    assert remove_stale_temporary_files(tmp_path) == [(stale, 1000)]
    assert not os.path.exists(stale)
    assert all(path.exists() for path in kept + [nested, tmp_path / '.epoch_4.pth.abcdefgh.tmp'])
    assert remove_stale_temporary_files(tmp_path / 'missing') == []


@pytest.mark.parametrize('size, text', [
    (0, '0 B'), (1023, '1023 B'), (1024, '1.0 KiB'), (1536, '1.5 KiB'),
    (5 * 2**20, '5.0 MiB'), (3 * 2**40, '3072.0 GiB')])
def test_sizes_are_written_in_binary_units(size, text):
    assert format_size(size) == text


def test_the_hash_of_a_file_longer_than_one_read_is_the_hash_of_its_bytes(tmp_path):
    data = os.urandom(1 << 16) * 257  # 16 MiB and 64 KiB: two reads of 16 MiB blocks
    path = tmp_path / 'weights.pth'
    path.write_bytes(data)
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_a_tool_s_own_backend_replaces_a_file_whole_and_keeps_its_mode(tmp_path):
    """The tools write their results through an instance of their own, not through
    mmengine's registry: the same temporary file and rename."""
    path = tmp_path / 'results.json'
    path.write_text('earlier results')
    path.chmod(0o640)
    AtomicLocalBackend().put_text('{"accuracy": 0.5}', str(path))
    assert path.read_text() == '{"accuracy": 0.5}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ['results.json']
