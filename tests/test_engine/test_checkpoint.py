"""Checkpoints: plain types, weights-only loading, atomic writes."""
import errno
import os
import re
import stat
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

import fastmim  # noqa: F401  installs the safe checkpoint I/O
from fastmim.engine.checkpoint import (check_checkpoint_file, check_start_checkpoints,
                                      from_plain, mark_resumed_checkpoint, to_plain,
                                      trust_checkpoint)
from fastmim.errors import CheckpointError


class Payload:
    """A class whose unpickling would run code from the file."""


def message_hub_state():
    hub = MessageHub.get_instance('test_checkpoint_hub')
    for value in (1.0, 0.5, 0.25):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', 3)
    return hub.state_dict()


def test_message_hub_round_trips_through_weights_only_load(tmp_path):
    meta = {'seed': np.int64(7), 'eta': np.float64(2.5), 'mean': np.array([1.5, 2.5])}
    state = {'message_hub': message_hub_state(), 'meta': meta}
    path = tmp_path / 'ckpt.pth'
    torch.save(to_plain(state), path)

    loaded = from_plain(torch.load(path, weights_only=True))

    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.data[0].tolist() == [1.0, 0.5, 0.25]
    assert buffer.mean() == pytest.approx(np.mean([1.0, 0.5, 0.25]))
    assert loaded['message_hub']['runtime_info']['iter'] == 3
    assert loaded['meta']['seed'] == 7 and type(loaded['meta']['seed']) is int
    assert type(loaded['meta']['eta']) is float
    assert torch.equal(loaded['meta']['mean'], torch.tensor([1.5, 2.5], dtype=torch.float64))


def test_unsafe_object_is_named_when_saving():
    with pytest.raises(TypeError, match=r"checkpoint\['meta'\]\['bad'\].*Payload"):
        to_plain({'meta': {'bad': Payload()}}, 'checkpoint')


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'extra': Payload()}, path)

    with pytest.raises(CheckpointError,
                       match=f'{path}.*Unsupported global.*Payload.*--trust-checkpoint'):
        _load_checkpoint(str(path))

    trust_checkpoint(str(path))
    assert isinstance(_load_checkpoint(str(path))['extra'], Payload)


class SystemCall:
    """Unpickled, runs a shell command: the audit's code-execution payload."""

    def __reduce__(self):
        return os.system, ('echo pwned',)


class EvalCall:
    def __reduce__(self):
        return eval, ('print("pwned")',)


class SubprocessCall:
    def __reduce__(self):
        import subprocess
        return subprocess.call, (['echo', 'pwned'],)


@pytest.mark.parametrize('payload, called', [
    (SystemCall(), f'{os.system.__module__}.system'),  # posix.system on Linux
    (EvalCall(), 'eval'), (SubprocessCall(), r'(subprocess|commands)\.call')])
def test_a_code_execution_payload_is_named_and_never_offered_trust(tmp_path, capfd, payload,
                                                                   called):
    """torch words a global of a module it blocks (os, posix, nt, sys) in lower case
    ('unsupported GLOBAL ... is blocked'), others as 'Unsupported global': either way the
    refusal names what the file would call, without torch's long text and without offering
    --trust-checkpoint, which would run it. Pickle writes subprocess.call as commands.call."""
    path = tmp_path / 'payload.pth'
    torch.save({'state_dict': {}, 'meta': payload}, path)
    with pytest.raises(CheckpointError, match=rf'^{path} would call {called} when loaded: a '
                       'code-execution payload') as refused:
        _load_checkpoint(str(path))
    message = str(refused.value)
    assert '--trust-checkpoint' not in message and 'if you trust' not in message
    assert 'Weights only load failed' not in message and '\n' not in message
    assert 'pwned' not in capfd.readouterr().out


def test_an_unknown_harmless_global_keeps_the_trust_advice_in_words_every_tool_takes(tmp_path):
    """A numpy dtype runs no code: the refusal names it and offers --trust-checkpoint in words
    true for every tool, where only tools/train.py takes the file after the flag (tools/test.py
    and the converters take a bare flag)."""
    path = tmp_path / 'dtype.pth'
    torch.save({'state_dict': {}, 'meta': np.dtype('float32')}, path)
    with pytest.raises(CheckpointError, match=r'dtype.pth holds pickled Python objects that '
                       r'weights-only loading refuses \(Unsupported global numpy\.dtype\)\. '
                       r'.*if you trust its origin, pass --trust-checkpoint '
                       r'\(tools/train\.py takes the file with it: --trust-checkpoint '
                       r'\S*dtype\.pth\)$'):
        _load_checkpoint(str(path))


def test_truncated_and_missing_checkpoints_are_named(tmp_path):
    path = tmp_path / 'truncated.pth'
    torch.save({'w': torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match='truncated.pth is not a readable checkpoint'):
        _load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match='not found.*absent.pth'):
        _load_checkpoint(str(tmp_path / 'absent.pth'))
    with pytest.raises(CheckpointError, match=r'not found: .*/missing/epoch_2.pth$'):
        _load_checkpoint(str(tmp_path / 'missing' / 'epoch_2.pth'))


def test_a_folder_given_as_checkpoint_names_the_checkpoints_in_it(tmp_path):
    """init_cfg.checkpoint=work_dirs/pre said 'checkpoint not found', though the folder exists."""
    folder = tmp_path / 'pre'
    folder.mkdir()
    torch.save({'w': torch.zeros(1)}, folder / 'epoch_1.pth')
    with pytest.raises(CheckpointError, match=r'/pre is a folder; a checkpoint is a file. '
                                              r'Checkpoints in .*/pre, newest first: '
                                              r'epoch_1.pth$'):
        _load_checkpoint(str(folder))


def test_a_missing_checkpoint_names_the_ones_beside_it(tmp_path):
    """A resume whose last_checkpoint names a deleted file: the user saw only 'not found'."""
    torch.save({'w': torch.zeros(1)}, tmp_path / 'epoch_1.pth')
    with pytest.raises(CheckpointError, match=r'not found: .*epoch_2.pth. Other checkpoints in '
                                              r'.*, newest first: epoch_1.pth$'):
        _load_checkpoint(str(tmp_path / 'epoch_2.pth'))


def test_the_checkpoints_named_beside_a_missing_one_leave_out_cut_off_files(tmp_path):
    """A newer epoch_2.pth cut off mid-copy was named first, a file that does not load."""
    torch.save({'w': torch.zeros(1)}, tmp_path / 'epoch_1.pth')
    torch.save({'w': torch.zeros(1000)}, tmp_path / 'whole.pth')
    whole = (tmp_path / 'whole.pth').read_bytes()
    (tmp_path / 'epoch_2.pth').write_bytes(whole[:len(whole) // 2])
    (tmp_path / 'whole.pth').unlink()
    with pytest.raises(CheckpointError, match=r'not found: .*epoch_3.pth. Other checkpoints in '
                                              r'.*, newest first: epoch_1.pth$'):
        _load_checkpoint(str(tmp_path / 'epoch_3.pth'))


def test_the_checkpoints_named_beside_a_missing_one_leave_out_files_that_are_none(tmp_path):
    """A newer text file named .pth was offered first, a file that does not load."""
    torch.save({'w': torch.zeros(1)}, tmp_path / 'epoch_1.pth')
    (tmp_path / 'notes.pth').write_text('resume from epoch 1\n')
    with pytest.raises(CheckpointError, match=r'not found: .*epoch_3.pth. Other checkpoints in '
                                              r'.*, newest first: epoch_1.pth$'):
        _load_checkpoint(str(tmp_path / 'epoch_3.pth'))


@pytest.mark.parametrize('name', ['vit_timm.safetensors', 'vit_timm.pth'])
def test_a_safetensors_file_loads_as_its_state_dict(tmp_path, name):
    """A valid .safetensors file (to_timm.py --safetensors writes one) was called 'not a
    readable checkpoint (truncated or corrupt?)'. It loads as a timm state dict saved with
    torch.save does: a flat name -> tensor dict. A header of 19280 bytes starts with b'PK'."""
    from safetensors.torch import save_file
    path = tmp_path / name
    state = {'pos_embed': torch.arange(6.).reshape(1, 2, 3), 'padding': torch.zeros(1)}
    save_file(state, str(path), metadata={'x': 'x' * 19128})
    assert path.read_bytes()[:2] == b'PK'
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_a_cut_off_safetensors_file_is_named_in_one_line(tmp_path):
    from safetensors.torch import save_file
    torch.save({'w': torch.zeros(1)}, tmp_path / 'epoch_1.pth')
    path = tmp_path / 'vit_timm.safetensors'
    save_file({'w': torch.zeros(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r'vit_timm.safetensors is not a readable '
                       r'\.safetensors file \(truncated or corrupt\?\): .*newest first: '
                       r'epoch_1.pth$') as raised:
        _load_checkpoint(str(path))
    assert '\n' not in str(raised.value)


def test_a_torch_file_named_safetensors_is_named_in_one_line(tmp_path):
    """torch.load reads a .safetensors name with safetensors: a torch.save zip of that name
    (the converters wrote one) ended in a SafetensorError traceback ('header too large')."""
    path = tmp_path / 'vit_timm.safetensors'
    torch.save({'w': torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r'vit_timm.safetensors is named \.safetensors but '
                       r'is a torch file .*: rename it to \.pth$'):
        _load_checkpoint(str(path))


def test_a_state_that_stops_the_weights_only_unpickler_with_type_error_is_refused(tmp_path):
    """An OrderedDict pickled with the state ``(None, {...})`` makes the weights-only unpickler
    raise TypeError (full unpickling sets the attribute): refused in one line like any file
    weights-only loading cannot read, with --trust-checkpoint offered, and loaded when trusted."""

    class CraftedState:
        def __reduce__(self):
            return OrderedDict, (), (None, {'x': 1})

    path = tmp_path / 'crafted.pth'
    torch.save({'state': CraftedState()}, path)
    with pytest.raises(CheckpointError, match=r'crafted.pth is not a readable checkpoint .*'
                       r'--trust-checkpoint \S*crafted.pth\)$'):
        _load_checkpoint(str(path))
    trust_checkpoint(str(path))
    assert _load_checkpoint(str(path))['state'].x == 1


def test_a_file_that_is_no_pickle_is_not_called_a_pickle_of_python_objects(tmp_path):
    """Nor offered --trust-checkpoint, which would only fail again: a file that starts as no
    torch file does (a zip archive, or a legacy pickle) is named as such, with its first
    bytes; text that read as pickle opcodes ended in an unpickler's number ('...: 101')."""
    path = tmp_path / 'notes.pth'
    for text in ('garbage\n', 'hello\n'):
        path.write_text(text)
        with pytest.raises(CheckpointError, match=r'notes.pth is not a readable checkpoint '
                           r"\(truncated or corrupt\?\): no torch file, which starts with "
                           r"b'PK' \(a zip "
                           rf"archive\) or b'\\x80' \(a pickle\); it starts with b'{text[:5]}"
                           ) as raised:
            _load_checkpoint(str(path))
        assert '--trust-checkpoint' not in str(raised.value)


@pytest.mark.parametrize('content, reason', [(b'', 'the file is empty'),
                                             (b'hello\n', 'truncated or corrupt')])
def test_empty_files_and_text_that_reads_as_pickle_opcodes_are_unreadable(tmp_path, content,
                                                                          reason):
    """``h`` is the BINGET opcode: weights-only unpickling fails with KeyError on such text."""
    (tmp_path / 'a_folder.pth').mkdir()  # not named as another checkpoint
    path = tmp_path / 'notes.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f'notes.pth is not a readable checkpoint.*{reason}'
                       ) as raised:
        _load_checkpoint(str(path))
    assert 'a_folder.pth' not in str(raised.value)


def test_a_checkpoint_cut_off_near_its_end_is_named_with_the_others_beside_it(tmp_path):
    """torch's zip reader raises OSError (EINVAL), not RuntimeError, for such a file."""
    earlier, latest = tmp_path / 'epoch_1.pth', tmp_path / 'epoch_2.pth'
    # With the run's state: named for --resume too, which refuses a file of weights only.
    torch.save({'meta': {'iter': 4}, 'message_hub': {}, 'optimizer': {},
                'state_dict': {'w': torch.zeros(1)}}, earlier)
    torch.save({'w': torch.zeros(100000)}, latest)
    latest.write_bytes(latest.read_bytes()[:10000])
    with pytest.raises(CheckpointError, match=r'epoch_2.pth is not a readable checkpoint '
                       r'\(truncated or corrupt\?\).*newest first: epoch_1.pth'):
        _load_checkpoint(str(latest))


def test_the_checkpoint_a_run_resumes_from_is_named_only_with_those_that_resume(tmp_path):
    """A file refused as it is read was named with every loadable file beside it, also when
    --resume read it: a newer weights-only file (to_timm.py's, publish.py's), which --resume
    refuses, first. load_from takes such a file, so it is still named there."""
    import zipfile
    run_state = {'meta': {'iter': 4}, 'message_hub': {}, 'optimizer': {}}
    earlier, weights, latest = (tmp_path / name for name in
                                ('epoch_1.pth', 'vit_timm.pth', 'epoch_2.pth'))
    torch.save({**run_state, 'state_dict': {'w': torch.zeros(1)}}, earlier)
    os.utime(earlier, (1e9, 1e9))
    torch.save({'w': torch.zeros(1)}, weights)
    whole = tmp_path / 'whole'
    torch.save({**run_state, 'state_dict': {'w': torch.zeros(1000)}}, whole)
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(latest, 'w') as cut:
        for entry in source.infolist():  # the archive whole, a tensor record cut short
            data = source.read(entry)
            cut.writestr(entry, data[:100] if entry.filename.endswith('/data/0') else data)
    check_checkpoint_file(str(latest), resuming=True)  # passes the launch check
    refused = r'epoch_2\.pth is not a readable checkpoint \(truncated or corrupt\?\): .*'
    try:
        mark_resumed_checkpoint(str(latest))
        with pytest.raises(CheckpointError, match=refused + r'newest first: epoch_1\.pth$'):
            _load_checkpoint(str(latest))
        mark_resumed_checkpoint(None)
        with pytest.raises(CheckpointError,
                           match=refused + r'newest first: vit_timm\.pth, epoch_1\.pth$'):
            _load_checkpoint(str(latest))
    finally:
        mark_resumed_checkpoint(None)


def test_a_cut_off_checkpoint_names_no_empty_file_and_ends_its_sentence_once(tmp_path):
    """An empty file beside it was offered to resume from, and torch's reason ended in a period
    the hint added a second one to ('after saving.. Other checkpoints')."""
    earlier, empty, latest = (tmp_path / name for name in ('epoch_1.pth', 'zero.pth',
                                                           'epoch_2.pth'))
    torch.save({'w': torch.zeros(100000)}, earlier)
    empty.write_bytes(b'')
    torch.save({'w': torch.zeros(100000)}, latest)
    latest.write_bytes(latest.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r'newest first: epoch_1.pth$') as raised:
        _load_checkpoint(str(latest))
    assert '..' not in str(raised.value)


def test_a_reference_release_file_is_pointed_to_its_converter(tmp_path):
    """Passing --trust-checkpoint as told led to a second refusal ('holds its weights under
    model ... convert it with tools/convert/from_reference.py'): say so at once."""
    import argparse
    path = tmp_path / 'checkpoint-799.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'args': argparse.Namespace(lr=1.)}, path)
    with pytest.raises(CheckpointError, match=r'argparse\.Namespace.*MAE-style file of the '
                       r'reference release.*tools/convert/from_reference\.py'):
        _load_checkpoint(str(path))


def test_an_empty_start_checkpoint_is_named_with_its_key(tmp_path):
    """A folder or a missing file was named with its config key, an empty file was not."""
    empty = tmp_path / 'zero.pth'
    empty.write_bytes(b'')
    cfg = Config(dict(model=dict(type='X', backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=str(empty))))))
    with pytest.raises(CheckpointError, match=r'^model.backbone.init_cfg.checkpoint: .*zero.pth '
                       r'is not a readable checkpoint: the file is empty'):
        check_start_checkpoints(cfg)


TEXT_AS_CHECKPOINT = b'hello, I am a text file saved as .pth\n'


@pytest.mark.parametrize('key, cfg', [
    ('load_from', lambda path: dict(load_from=path)),
    ('--resume', lambda path: dict(load_from=path, resume=True)),
    ('model.backbone.init_cfg.checkpoint', lambda path: dict(model=dict(type='X', backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=path))))),
])
def test_a_start_checkpoint_that_is_no_torch_file_is_refused_at_launch(tmp_path, key, cfg):
    """A text file named .pth was refused only by the loader, once the Runner was built (300
    lines of start-up, a log folder left in the work dir); a missing one at launch."""
    text = tmp_path / 'text.pth'
    text.write_bytes(TEXT_AS_CHECKPOINT)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(key)}: {re.escape(str(text))} is "
                       r"not a readable checkpoint \(truncated or corrupt\?\): no torch file, "
                       r".* it starts with b'hello, I '$"):
        check_start_checkpoints(Config(cfg(str(text))))


def test_the_launch_check_names_the_checkpoints_beside_a_text_file(tmp_path):
    (tmp_path / 'text.pth').write_bytes(TEXT_AS_CHECKPOINT)
    torch.save({'state_dict': {}}, tmp_path / 'epoch_1.pth')
    with pytest.raises(CheckpointError, match=r'Other checkpoints in .*, newest first: '
                                              r'epoch_1\.pth$'):
        check_checkpoint_file(str(tmp_path / 'text.pth'))


def test_the_launch_check_passes_every_file_the_loader_reads(tmp_path):
    """Torch zip and legacy files and safetensors files (whose header length can start with
    b'PK' or b'\\x80', or with neither) pass; the loader reads them whole later."""
    from safetensors.torch import save_file
    zipped, legacy, safetensors = (tmp_path / name for name in
                                   ('zip.pth', 'legacy.pth', 'timm.safetensors'))
    torch.save({'w': torch.zeros(2)}, zipped)
    torch.save({'w': torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    save_file({'w': torch.zeros(2)}, str(safetensors))
    assert safetensors.read_bytes()[:1] not in (b'P', b'\x80')
    for path in (zipped, legacy, safetensors):
        check_checkpoint_file(str(path))
        check_start_checkpoints(Config(dict(load_from=str(path))))


@pytest.mark.parametrize('key, cfg', [
    ('load_from', lambda path: dict(load_from=path)),
    ('--resume', lambda path: dict(load_from=path, resume=True))])
def test_a_cut_off_torch_file_is_refused_at_launch(tmp_path, key, cfg):
    """Its b'PK' start passed the launch check: the loader refused it only once the Runner was
    built and the dataset listed (minutes on ImageNet), with a log folder left behind."""
    earlier, latest = tmp_path / 'epoch_1.pth', tmp_path / 'epoch_2.pth'
    # With the run's state: named for --resume too, which refuses a file of weights only.
    torch.save({'meta': {'iter': 4}, 'message_hub': {}, 'optimizer': {},
                'state_dict': {'w': torch.zeros(1)}}, earlier)
    torch.save({'w': torch.zeros(100000)}, latest)
    latest.write_bytes(latest.read_bytes()[:10000])
    with pytest.raises(CheckpointError, match=rf'^{re.escape(key)}: {re.escape(str(latest))} is '
                       r'truncated or not a torch checkpoint: its zip archive has no end record '
                       r'.*Other checkpoints in .*, newest first: epoch_1\.pth$'):
        check_start_checkpoints(Config(cfg(str(latest))))


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    backend = get_file_backend(str(path))
    backend.put(b'good checkpoint', str(path))

    def fail_midway(fd):
        raise KeyboardInterrupt  # the save is killed after the bytes were written

    monkeypatch.setattr(os, 'fsync', fail_midway)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'half-written', str(path))

    assert path.read_bytes() == b'good checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_the_temporary_file_is_renamed_within_the_checkpoint_folder(tmp_path, monkeypatch):
    """os.replace is atomic only within one file system, and fails across two (EXDEV): a
    temporary file in the system's temporary folder (/tmp) could not be renamed onto a work
    dir on NFS or Lustre, so the first checkpoint of such a run would fail."""
    import tempfile
    elsewhere, work_dir = tmp_path / 'system_tmp', tmp_path / 'work_dir'
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(elsewhere))
    renames = []
    rename = os.replace

    def recorded_rename(source, target):
        renames.append((os.path.dirname(source), os.path.dirname(target)))
        rename(source, target)
    monkeypatch.setattr(os, 'replace', recorded_rename)
    path = work_dir / 'epoch_1.pth'
    get_file_backend(str(path)).put(b'checkpoint', str(path))

    assert path.read_bytes() == b'checkpoint'
    assert renames == [(str(work_dir), str(work_dir))] and not os.listdir(elsewhere)


def test_full_disk_is_one_error_naming_the_file_and_keeps_the_previous_one(tmp_path,
                                                                             monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    backend = get_file_backend(str(path))
    backend.put(b'good checkpoint', str(path))

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(CheckpointError) as error:
        backend.put(b'does not fit', str(path))

    message = str(error.value)
    assert '\n' not in message
    assert f'could not write {path}: No space left on device' in message
    assert re.search(r'\(\d+\.\d MiB free on .+\)', message), message
    assert path.read_bytes() == b'good checkpoint'
    assert os.listdir(tmp_path) == ['epoch_1.pth']  # no temporary file left


def test_vanished_work_dir_is_one_error_naming_the_file(tmp_path):
    # The work dir's parent was replaced by a file (an unmounted or deleted scratch folder
    # shows up the same way: the folder cannot be recreated).
    parent = tmp_path / 'scratch'
    parent.write_text('not a folder')
    path = parent / 'work' / 'epoch_2.pth'
    with pytest.raises(CheckpointError, match=f'could not write {path}: {parent} is a file, '
                                              f'not a folder'):
        get_file_backend(str(path)).put(b'weights', str(path))
    assert parent.read_text() == 'not a folder'
    # directly in the file: os.makedirs said only 'File exists'
    with pytest.raises(CheckpointError, match=f'could not write {parent}/out.pth: {parent} is '
                                              f'a file, not a folder'):
        get_file_backend(str(path)).put(b'weights', str(parent / 'out.pth'))


@pytest.mark.parametrize('umask', [0o022, 0o077])
def test_checkpoints_get_the_mode_torch_save_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        torch.save({'w': torch.zeros(1)}, tmp_path / 'torch_save.pth')
        path = tmp_path / 'epoch_1.pth'
        get_file_backend(str(path)).put(b'weights', str(path))
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / 'torch_save.pth').stat().st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE(path.stat().st_mode) == expected


def test_replacing_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / 'last_checkpoint'
    path.write_text('epoch_1.pth')
    path.chmod(0o640)
    get_file_backend(str(path)).put_text('epoch_2.pth', str(path))
    assert path.read_text() == 'epoch_2.pth'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_log_line_of_a_load_names_the_local_backend(tmp_path):
    """mmengine names the backend after its loader function's name; it read 'point_file'."""
    from mmengine.logging import MMLogger
    from mmengine.runner.checkpoint import CheckpointLoader

    path = tmp_path / 'weights.pth'
    torch.save({'w': torch.ones(1)}, path)
    logged = []
    logger = MMLogger.get_instance('test_checkpoint_backend_name')
    logger.log = lambda level, message: logged.append(message)
    CheckpointLoader.load_checkpoint(str(path), logger=logger)
    assert logged == [f'Loads checkpoint by local backend from path: {path}']


# Remote checkpoints. The downloads are torch.hub's (mmengine's loaders and fastmim's both call
# torch.hub.download_url_to_file into torch.hub's cache): replaced here by a copy of a local
# file, so the tests need no network.

URL = 'https://example.com/models/remote.pth'


@pytest.fixture
def downloads(tmp_path, monkeypatch):
    """``{url: local file}`` that the fake download copies from, with torch.hub's cache in
    ``tmp_path``; every URL fetched is appended to ``downloads.fetched``. What a test trusts
    is forgotten after it (the URLs are the same in every test)."""
    import shutil

    import torch.hub

    from fastmim.engine import checkpoint
    monkeypatch.setattr(checkpoint, '_TRUSTED_CHECKPOINTS', set())

    served = type('Downloads', (dict,), {})()
    served.fetched = []

    def download_url_to_file(url, dst, hash_prefix=None, progress=True):
        served.fetched.append(url)
        shutil.copyfile(served[url], dst)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', download_url_to_file)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return served


def cached_copy(tmp_path, url=URL):
    return tmp_path / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1]


def foreign_checkpoint(tmp_path):
    path = tmp_path / 'served_foreign.pth'
    torch.save({'state_dict': {'weight': torch.ones(2, 2)}, 'extra': Payload()}, path)
    return path


@pytest.fixture
def weights_only_arguments(monkeypatch):
    """The ``weights_only`` argument of every ``torch.load``: on torch >= 2.6 its default is
    True, so a load that leaves it out is not caught by a refusal on this stack."""
    real_load = torch.load
    seen = []

    def load(*args, **kwargs):
        seen.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, 'load', load)
    return seen


def test_every_checkpoint_scheme_of_mmengine_loads_through_fastmim():
    """mmengine's own loaders of remote schemes call torch.load without weights_only (and
    https:// through torch.hub, whose default is full unpickling)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    assert {prefix: loader.__module__ for prefix, loader in CheckpointLoader._schemes.items()
            if loader.__module__ != 'fastmim.engine.checkpoint'} == {}


def test_a_url_with_pickled_objects_is_refused_naming_the_url_unless_trusted(tmp_path,
                                                                            downloads):
    downloads[URL] = foreign_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as refused:
        _load_checkpoint(URL)
    message = str(refused.value)
    assert message.startswith(f'{URL} (downloaded to {cached_copy(tmp_path)}) holds pickled '
                              'Python objects')
    assert 'Unsupported global' in message and 'Payload' in message
    assert message.endswith(f'--trust-checkpoint {URL})')
    assert '\n' not in message

    trust_checkpoint(URL)
    assert isinstance(_load_checkpoint(URL)['extra'], Payload)
    assert downloads.fetched == [URL]  # the second load read the cached copy


def test_a_url_is_trusted_by_its_downloaded_copy_too(tmp_path, downloads):
    url = 'https://example.com/models/trusted_by_copy.pth'
    downloads[url] = foreign_checkpoint(tmp_path)
    with pytest.raises(CheckpointError):
        _load_checkpoint(url)
    trust_checkpoint(str(cached_copy(tmp_path, url)))
    assert isinstance(_load_checkpoint(url)['extra'], Payload)


def test_a_state_dict_at_a_url_loads_weights_only_into_the_model(tmp_path, downloads,
                                                                 weights_only_arguments):
    from mmengine.runner.checkpoint import load_checkpoint
    weights = {'weight': torch.arange(6.).reshape(2, 3), 'bias': torch.tensor([7., 8.])}
    downloads[URL] = tmp_path / 'served.pth'
    torch.save({'state_dict': weights}, downloads[URL])
    model = torch.nn.Linear(3, 2)

    load_checkpoint(model, URL, map_location='cpu')

    assert torch.equal(model.weight.detach(), weights['weight'])
    assert torch.equal(model.bias.detach(), weights['bias'])
    assert weights_only_arguments == [True]


def test_a_pretrained_init_cfg_at_a_url_refuses_pickled_objects(tmp_path, downloads):
    from mmengine.model import BaseModule

    class Tiny(BaseModule):
        def __init__(self, init_cfg=None):
            super().__init__(init_cfg)
            self.linear = torch.nn.Linear(2, 2)
    cfg = Config(dict(init_cfg=dict(type='Pretrained', checkpoint=URL)))
    downloads[URL] = foreign_checkpoint(tmp_path)

    with pytest.raises(CheckpointError, match=f'^{re.escape(URL)} .*holds pickled Python'):
        Tiny(**cfg.to_dict()).init_weights()


def test_a_downloaded_web_page_is_named_with_how_to_fetch_it_again(tmp_path, downloads):
    downloads[URL] = tmp_path / 'login_page.html'
    downloads[URL].write_text('<!DOCTYPE html><html>sign in first</html>')
    with pytest.raises(CheckpointError) as refused:
        _load_checkpoint(URL)
    assert str(refused.value) == (
        f"{URL} (downloaded to {cached_copy(tmp_path)}) is not a readable checkpoint "
        "(truncated or corrupt?): no torch file, which starts with b'PK' (a zip archive) or "
        "b'\\x80' (a pickle); it starts with b'<!DOCTYPE'. "
        f'Delete {cached_copy(tmp_path)} to download it again')


def test_a_cut_off_download_is_named_with_how_to_fetch_it_again(tmp_path, downloads):
    downloads[URL] = tmp_path / 'cut.pth'
    torch.save({'w': torch.zeros(1000)}, downloads[URL])
    downloads[URL].write_bytes(downloads[URL].read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=(
            f'^{re.escape(URL)} \\(downloaded to .*\\) is not a readable checkpoint '
            f'\\(truncated or corrupt\\?\\).*Delete {re.escape(str(cached_copy(tmp_path)))} '
            'to download it again$')):
        _load_checkpoint(URL)


def test_a_failed_download_is_one_line_naming_the_url(tmp_path, monkeypatch):
    import urllib.error

    import torch.hub

    def not_found(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.HTTPError(url, 404, 'Not Found', None, None)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', not_found)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(CheckpointError, match=f'^could not download {re.escape(URL)}: '
                                              'HTTP Error 404: Not Found$'):
        _load_checkpoint(URL)
    assert not cached_copy(tmp_path).exists()


def test_an_unknown_model_name_is_named_with_its_scheme():
    with pytest.raises(CheckpointError, match="^open-mmlab://no_such_net: no model named "
                                              "'no_such_net' among the open-mmlab:// models"):
        _load_checkpoint('open-mmlab://no_such_net')


def serve_model_names(foreign, downloads, monkeypatch):
    """``torchvision://resnet18`` and ``open-mmlab://resnet50_v1c`` serve ``foreign``: their
    URLs in mmengine's model tables are downloaded (faked by ``downloads``)."""
    from mmengine.runner.checkpoint import get_external_models, get_torchvision_models
    downloads[get_torchvision_models()['resnet18']] = foreign
    downloads[get_external_models()['resnet50_v1c']] = foreign


def serve_s3_and_pavi(foreign, downloads, monkeypatch):
    """``s3://`` and ``pavi://`` names serve ``foreign``. Both read the file through packages
    not installed here (petrel_client, pavi): faked."""
    import sys
    import types

    from mmengine.runner import checkpoint as mmengine_checkpoint

    from fastmim.engine import checkpoint

    class Bucket:
        def get(self, filepath):
            return foreign.read_bytes()
    for module in (mmengine_checkpoint, checkpoint):  # mmengine's loader reads it there
        monkeypatch.setattr(module, 'get_file_backend', lambda *args, **kwargs: Bucket())

    class CloudModel:
        name = 'model.pth'

        def download(self, path):
            Path(path).write_bytes(foreign.read_bytes())
    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=lambda name: CloudModel())
    monkeypatch.setitem(sys.modules, 'pavi', pavi)


DOWNLOADED_TO = ' \\(downloaded to .*\\)'  # a fetched copy's errors name where it lies


@pytest.mark.parametrize('name, serve, where', (
    ('torchvision://resnet18', serve_model_names, DOWNLOADED_TO),
    ('open-mmlab://resnet50_v1c', serve_model_names, DOWNLOADED_TO),
    ('s3://bucket/model.pth', serve_s3_and_pavi, ''),
    ('pavi://project/model', serve_s3_and_pavi, ''),
))
def test_remote_checkpoints_load_weights_only_and_are_trusted_by_name(
        name, serve, where, tmp_path, downloads, monkeypatch):
    """A foreign file behind each of mmengine's remote schemes is refused until the name the
    user wrote is trusted (``downloads`` forgets what a test trusts)."""
    serve(foreign_checkpoint(tmp_path), downloads, monkeypatch)
    with pytest.raises(CheckpointError, match=(
            f'^{re.escape(name)}{where} holds pickled Python objects.*'
            f'--trust-checkpoint {re.escape(name)}\\)$')):
        _load_checkpoint(name)
    trust_checkpoint(name)
    assert isinstance(_load_checkpoint(name)['extra'], Payload)


@pytest.mark.parametrize('name', ['s3://bucket/model.pth', 'pavi://project/model'])
def test_the_temporary_copy_of_an_s3_or_pavi_checkpoint_is_removed(name, tmp_path, downloads,
                                                                  monkeypatch):
    """The copy these loaders read locally goes, whether the load is refused or succeeds."""
    import tempfile
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    serve_s3_and_pavi(foreign_checkpoint(tmp_path), downloads, monkeypatch)
    with pytest.raises(CheckpointError, match='holds pickled Python objects'):
        _load_checkpoint(name)
    assert list(scratch.iterdir()) == []
    trust_checkpoint(name)
    assert isinstance(_load_checkpoint(name)['extra'], Payload)
    assert list(scratch.iterdir()) == []


def test_other_processes_fetch_a_url_after_process_0(tmp_path, downloads, monkeypatch,
                                                     weights_only_arguments):
    """Process 0 downloads first; the others wait at a barrier and then read its copy (or
    download their own where the cache is not shared), as mmengine's loader does."""
    from mmengine.runner import checkpoint as mmengine_checkpoint

    from fastmim.engine import checkpoint
    downloads[URL] = tmp_path / 'served.pth'
    torch.save({'w': torch.ones(2)}, downloads[URL])
    _load_checkpoint(URL)  # process 0's download
    events = []
    for module in (mmengine_checkpoint, checkpoint):
        monkeypatch.setattr(module, 'get_dist_info', lambda: (1, 2))
    monkeypatch.setattr(torch.distributed, 'barrier', lambda: events.append('barrier'))
    downloads[URL].unlink()  # process 1 must read process 0's copy

    assert torch.equal(_load_checkpoint(URL)['w'], torch.ones(2))
    assert events == ['barrier'] and downloads.fetched == [URL]
    assert weights_only_arguments == [True, True]
