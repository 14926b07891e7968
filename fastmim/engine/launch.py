"""What ``tools/train.py`` and ``tools/test.py`` need beyond mmengine's Runner.

mmengine assumes a GPU when it launches distributed work: it calls ``torch.cuda.set_device``,
passes ``device_ids=[LOCAL_RANK]`` to DDP and keeps SyncBN layers. These helpers adapt a config
so that the same command runs on a laptop (gloo processes on the CPU) and on a GPU node, and
build the Runner after the checks that turn the usual set-up mistakes into one clear line. The
command line is :mod:`fastmim.cli`'s; the launcher's environment, the process's tie to torchrun
and the CPU process group have their own modules (:mod:`fastmim.engine.launcher_env`,
:mod:`fastmim.engine.launcher_lifecycle`, :mod:`fastmim.engine.process_group`).
"""
import torch
from mmengine.logging import print_log


def replace_sync_bn(cfg_node):
    """Replace every ``SyncBN`` norm config by ``BN`` in place; return how many were replaced.

    SyncBN only works on CUDA tensors, so a CPU (gloo) run of a detection or segmentation config
    that uses it needs plain BatchNorm.
    """
    replaced = 0
    if isinstance(cfg_node, dict):
        if cfg_node.get('type') in ('SyncBN', 'MMSyncBN'):
            cfg_node['type'] = 'BN'
            replaced += 1
        for value in cfg_node.values():
            replaced += replace_sync_bn(value)
    elif isinstance(cfg_node, (list, tuple)):
        for value in cfg_node:
            replaced += replace_sync_bn(value)
    return replaced


def unpin_dataloaders(cfg):
    """Set ``pin_memory=False`` in every dataloader of ``cfg`` (``train_dataloader``,
    ``val_dataloader``, ``test_dataloader``, and those a loop config holds, such as the kNN
    loop's ``bank_dataloader``).

    Page-locked memory only speeds a copy to an accelerator: without one, torch warns
    "'pin_memory' argument is set as true but no accelerator is found" for every dataloader
    the published recipes (which pin, for the GPU) build."""
    from fastmim.engine.config_loading import dataloaders
    for _, loader in dataloaders(cfg):
        if loader.get('pin_memory'):
            loader['pin_memory'] = False


def adapt_to_device(cfg):
    """Adapt a config in place to a machine without CUDA: gloo, no DDP device ids, no SyncBN,
    bf16 autocast instead of fp16 AMP (fp32 for mmdet, whose CPU ops take fp32 only), no
    pinned memory in the dataloaders."""
    if torch.cuda.is_available():
        return
    unpin_dataloaders(cfg)
    from fastmim.engine.fsdp import is_fsdp_strategy
    from fastmim.engine.optim_wrappers import mixed_precision_of
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    optim_wrapper = cfg.get('optim_wrapper')
    precision = mixed_precision_of(optim_wrapper.get('type') if optim_wrapper else None)
    if cfg.get('default_scope') == 'mmdet' and precision:
        # mmcv's CPU kernels of NMS and RoIAlign refuse bf16 ("expected scalar type Float but
        # found BFloat16" in the RPN's NMS at the first iteration).
        optim_wrapper.type = 'fastmim.GuardedOptimWrapper'  # keeps the non-finite loss guard
        optim_wrapper.pop('loss_scale', None)
        optim_wrapper.pop('dtype', None)
        print_log('no CUDA device: mmdet configs train in fp32 on the CPU (mmcv\'s CPU NMS and '
                  'RoIAlign take fp32 only); mixed precision left out', logger='current')
    elif precision == 'loss_scaling':
        # mmengine's AmpOptimWrapper refuses to run without an accelerator; bf16 autocast is
        # the CPU's mixed precision and needs no loss scaling. Scoped: mmdet and mmseg configs
        # (another default scope) must find it too.
        optim_wrapper.type = 'fastmim.AutocastOptimWrapper'
        optim_wrapper.pop('loss_scale', None)
        optim_wrapper.dtype = 'bfloat16'
        print_log('no CUDA device: mixed precision runs as bf16 autocast on the CPU',
                  logger='current')
    if is_fsdp_strategy(cfg.get('strategy')):
        # FSDP1 looks for an accelerator unless told the device ('FSDP needs a non-CPU
        # accelerator device'); mmengine's FSDPStrategy would pass LOCAL_RANK, a CUDA index.
        cfg.strategy.model_wrapper = {**(cfg.strategy.get('model_wrapper') or {}),
                                      'device_id': 'cpu'}
        if cfg.strategy.get('state_dict_cfg') == 'full':
            # mmengine's 'full' offloads the gathered state to the CPU with ``.cpu()``, which
            # on the CPU copies nothing: each optimiser state of a parameter would be a view of
            # torch's one gather buffer, so a checkpoint would hold exp_avg_sq as exp_avg too,
            # and a resumed run would go on with the wrong momentum. Without offloading torch
            # clones.
            cfg.strategy.state_dict_cfg = dict(
                state_dict_type='FULL_STATE_DICT',
                state_dict_config=dict(type='FullStateDictConfig', rank0_only=True,
                                       offload_to_cpu=False),
                optim_state_dict_config=dict(type='FullOptimStateDictConfig', rank0_only=True,
                                             offload_to_cpu=False))
    if cfg.get('sync_bn'):
        cfg.sync_bn = None
    replaced = replace_sync_bn(cfg._cfg_dict)
    if replaced and cfg.get('launcher', 'none') != 'none':
        print_log(f'no CUDA device: replaced {replaced} SyncBN layer config(s) by BN',
                  logger='current')


def build_runner(cfg, splits, trusted_checkpoints=()):
    """Check what the run needs, adapt the config to this machine and build its Runner.

    ``cfg`` is the prepared config (command-line flags folded in); ``splits`` are the dataset
    splits the run reads (``'train'``, ``'val'``, ``'test'``); ``trusted_checkpoints`` the
    files the user allowed to unpickle fully (``--trust-checkpoint``). The checks run before
    the Runner is built because building it already builds the model, writes the work dir's
    log and joins the process group: a missing dataset, an unwritable work dir or mmcv
    without kernels for the GPU then ends in one line, not after the start-up and on every
    rank; so does a checkpoint the run starts from that is not there. The checkpoint it
    resumes from is marked, so that the loader's hints name what resumes
    (:func:`~fastmim.engine.checkpoint.mark_resumed_checkpoint`). A config that names
    its ``runner_type`` (e.g. mmengine's FlexibleRunner) is built through the registry, as
    mmengine's tools do.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from fastmim.file_checks import check_work_dir
    from fastmim.engine.checkpoint import (check_start_checkpoints, mark_resumed_checkpoint,
                                          trust_checkpoint)
    from fastmim.engine.dataset_paths import check_dataset_paths
    from fastmim.engine.fsdp import check_fsdp, scale_losses_across_shards
    from fastmim.engine.launcher_lifecycle import check_launcher_running
    from fastmim.engine.mmcv_ops import check_mmcv_cuda_ops
    from fastmim.engine.process_group import init_cpu_distributed

    check_mmcv_cuda_ops(cfg)
    check_dataset_paths(cfg, splits)
    check_start_checkpoints(cfg, training='train' in splits)
    mark_resumed_checkpoint(cfg.get('load_from') if cfg.get('resume') else None)
    check_work_dir(cfg.work_dir)
    for path in trusted_checkpoints:
        trust_checkpoint(path)
    check_fsdp(cfg)
    adapt_to_device(cfg)
    scale_losses_across_shards(cfg)
    check_launcher_running()  # last, before the process joins the group
    init_cpu_distributed(cfg.launcher, cfg.get('env_cfg', {}).get('dist_cfg'))
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
