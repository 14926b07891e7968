"""The up-front check that mmcv's compiled ops run on the training GPU (fastmim/engine/mmcv_ops.py).

There is no GPU here: the device the check probes is mocked. A device mmcv has no kernels for
(``meta``) goes through mmcv's real dispatcher, exactly as a CUDA tensor does with a CPU-only wheel.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from fastmim.engine import mmcv_ops
from fastmim.errors import LaunchError

ROOT = Path(__file__).resolve().parents[2]
DETECTION = ROOT / 'projects' / 'detection' / 'configs' / 'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'


def test_probe_passes_where_mmcv_has_kernels():
    mmcv_ops.probe_mmcv_ops('cpu')


def test_probe_without_kernels_for_the_device_says_how_to_rebuild():
    with pytest.raises(LaunchError) as error:
        mmcv_ops.probe_mmcv_ops('meta')
    message = str(error.value)
    assert 'has no meta kernels' in message
    assert 'FASTMIM_CUDA_OPS=1 tools/setup_env.sh' in message
    assert '\n' not in message


def test_probe_with_kernels_for_other_gpus_names_the_architecture(monkeypatch):
    from mmcv.ops import RoIAlign

    def launch_fails(*args):
        raise torch.AcceleratorError(
            'CUDA error: no kernel image is available for execution on the device')

    monkeypatch.setattr(RoIAlign, 'forward', launch_fails)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device: (10, 0))
    with pytest.raises(LaunchError,
                       match=r'sm_100.*TORCH_CUDA_ARCH_LIST="10.0" FASTMIM_CUDA_OPS=1'):
        mmcv_ops.probe_mmcv_ops('cpu')


def test_probe_with_mmcv_lite_says_how_to_rebuild(monkeypatch):
    """mmcv without compiled ops (mmcv-lite, or a build that skipped them) failed the probe
    with a bare "No module named 'mmcv._ext'" from deep inside mmcv.ops."""
    for name in [name for name in sys.modules if name.startswith('mmcv.ops')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'mmcv._ext', None)  # import fails as in mmcv-lite
    with pytest.raises(LaunchError) as error:
        mmcv_ops.probe_mmcv_ops('cpu')
    message = str(error.value)
    assert 'no compiled ops' in message and 'FASTMIM_CUDA_OPS=1 tools/setup_env.sh' in message


@pytest.mark.parametrize('launcher, env, index', [
    ('none', {}, 0), ('pytorch', {'LOCAL_RANK': '3'}, 3),
    ('slurm', {'LOCAL_RANK': '0', 'SLURM_LOCALID': '5'}, 1),  # 5 % 4 GPUs
    ('mpi', {'OMPI_COMM_WORLD_LOCAL_RANK': '2'}, 2)])
def test_only_mmdet_and_mmseg_configs_on_cuda_are_probed_on_their_own_gpu(
        monkeypatch, launcher, env, index):
    probed = []
    monkeypatch.setattr(mmcv_ops, 'probe_mmcv_ops', probed.append)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4)
    for name in ('LOCAL_RANK', 'SLURM_LOCALID', 'OMPI_COMM_WORLD_LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    mmcv_ops.check_mmcv_cuda_ops(Config(dict(default_scope='mmdet', launcher=launcher)))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    mmcv_ops.check_mmcv_cuda_ops(Config(dict(default_scope='fastmim', launcher=launcher)))
    assert probed == []
    for scope in ('mmdet', 'mmseg'):
        mmcv_ops.check_mmcv_cuda_ops(Config(dict(default_scope=scope, launcher=launcher)))
    assert probed == [torch.device('cuda', index)] * 2


# tools/train.py and tools/test.py on a "GPU" whose mmcv has no kernels for it: mmcv_ops is told
# that CUDA is there and that the training device is one mmcv's dispatcher has no kernels for.
FAKE_GPU = '''
import os, runpy, sys, torch
torch.cuda.is_available = lambda: True
import fastmim.engine.mmcv_ops as mmcv_ops
mmcv_ops.training_device = lambda launcher: torch.device('meta')
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])  # as `python tools/TOOL.py` sets it
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_stop_before_any_work_when_mmcv_has_no_kernels_for_the_gpu(tmp_path, tool):
    work_dir = tmp_path / 'work'
    checkpoint = tmp_path / 'model.pth'
    # test.py checks that it is there, and not empty, before the config is loaded
    checkpoint.write_bytes(b'PK\x05\x06' + bytes(18))  # an empty zip archive: read by nothing
    args = [str(DETECTION)] + ([str(checkpoint)] if tool == 'test.py' else [])
    result = subprocess.run(
        [sys.executable, '-c', FAKE_GPU, str(ROOT / 'tools' / tool), *args,
         '--work-dir', str(work_dir)],
        cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: LaunchError: mmcv ') and 'has no meta kernels' in last, last
    assert 'FASTMIM_CUDA_OPS=1 tools/setup_env.sh' in last
    assert not work_dir.exists()
