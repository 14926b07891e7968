"""Fail before training when mmcv's compiled ops cannot run on the GPU.

An mmcv wheel built on a machine without a GPU holds its ops for the CPU only (a shared
``~/.cache`` carries such a wheel from a login node to the GPU nodes; ``tools/build_mmcv.sh``
names the flavour in the cache key). On a GPU, Mask R-CNN then stops inside RoIAlign at the
first iteration, after the data, the model and the checkpoints have been loaded. One tiny
RoIAlign and one NMS on the device find that out in a second, before anything is written.
"""
import os

import torch

from fastmim.errors import LaunchError

from fastmim.engine.launcher_env import launched_local_rank

# Scopes whose models run mmcv's compiled ops (RoIAlign, NMS, deformable convolutions, ...).
OPS_SCOPES = ('mmdet', 'mmseg')
REBUILD = 'FASTMIM_CUDA_OPS=1 tools/setup_env.sh'


def training_device(launcher):
    """The GPU this process will train on (mmengine picks it from the launcher's local rank
    later). Probing another one would leave a CUDA context (hundreds of MB) on it for the
    whole run."""
    index = launched_local_rank(launcher)
    return torch.device('cuda', index % torch.cuda.device_count())


def probe_mmcv_ops(device):
    """Run one RoIAlign and one NMS on ``device``; a :class:`LaunchError` that says how to
    rebuild mmcv if it has no kernels for that device."""
    import mmcv
    try:
        from mmcv.ops import RoIAlign, nms
    except ImportError as error:  # mmcv-lite, or a build that left the ops out
        raise LaunchError(f'mmcv {mmcv.__version__} at {os.path.dirname(mmcv.__file__)} has no '
                          f'compiled ops ({error}): rebuild it with `{REBUILD}`') from None

    device = torch.device(device)
    features = torch.rand(1, 1, 8, 8, device=device)
    rois = torch.tensor([[0., 0., 0., 4., 4.]], device=device)
    boxes = torch.tensor([[0., 0., 4., 4.], [0., 0., 4., 5.]], device=device)
    scores = torch.tensor([0.9, 0.8], device=device)
    try:
        RoIAlign((2, 2), spatial_scale=1.)(features, rois)
        nms(boxes, scores, iou_threshold=0.5)
    except RuntimeError as error:
        where = f'mmcv {mmcv.__version__} at {os.path.dirname(mmcv.__file__)}'
        if 'implementation for device' in str(error):  # mmcv's dispatcher found no kernel
            raise LaunchError(f'{where} has no {device.type} kernels for its ops (RoIAlign and '
                              f'NMS fail on {device}): rebuild it with `{REBUILD}`') from None
        if 'no kernel image' in str(error):  # kernels, but for other GPU architectures
            major, minor = torch.cuda.get_device_capability(device)
            raise LaunchError(f'{where} has no CUDA kernels for this GPU (sm_{major}{minor}): '
                              f'rebuild it with `TORCH_CUDA_ARCH_LIST="{major}.{minor}" '
                              f'{REBUILD}`') from None
        raise


def check_mmcv_cuda_ops(cfg):
    """Probe mmcv's ops on the GPU before an mmdet / mmseg config trains or tests on it."""
    if cfg.get('default_scope') not in OPS_SCOPES or not torch.cuda.is_available():
        return
    probe_mmcv_ops(training_device(cfg.get('launcher', 'none')))
