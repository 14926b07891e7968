"""Checkpoints: plain types, weights-only loading, atomic writes."""
import os

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

import fastmim  # noqa: F401  installs the safe checkpoint I/O
from fastmim.engine.checkpoint import CheckpointError, from_plain, to_plain, trust_checkpoint


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


def test_truncated_and_missing_checkpoints_are_named(tmp_path):
    path = tmp_path / 'truncated.pth'
    torch.save({'w': torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match='truncated.pth is not a readable checkpoint'):
        _load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match='not found.*absent.pth'):
        _load_checkpoint(str(tmp_path / 'absent.pth'))


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
