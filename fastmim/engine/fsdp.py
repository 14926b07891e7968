"""FSDP training through mmengine's ``FlexibleRunner`` and ``FSDPStrategy`` (``tools/train.py
--fsdp``), with what mmengine 0.10.7 gets wrong under FSDP mended, and the set-ups that would
train or save the wrong thing refused.

Each process holds a shard of the weights, gradients and optimiser state; checkpoints are
gathered whole on rank 0 into one file of the model's own keys and shapes, as a DDP run writes,
so they load weights-only, fine-tune and resume like any other. On the CPU (gloo) a two-process
FSDP run gives DDP's weights, optimiser state and losses to float rounding
(``tests/test_tools/test_train_fsdp.py``).
"""
from functools import partial

import torch
from mmengine._strategy import FSDPStrategy
from mmengine.logging import print_log
from mmengine.registry import STRATEGIES
from mmengine.runner import FlexibleRunner
from torch.distributed.fsdp import FullyShardedDataParallel

from fastmim.engine.optim_wrappers import each_optim_wrapper, mixed_precision_of
from fastmim.errors import LaunchError
from fastmim.registry import RUNNERS, type_name

FSDP_WRAPPERS = ('MMFullyShardedDataParallel', 'FullyShardedDataParallel')
FSDP_STRATEGY = 'FullShapeFSDPStrategy'
FSDP_RUNNER = 'FlexibleRunnerKeepingPosition'


@STRATEGIES.register_module(name=FSDP_STRATEGY)
class FullShapeFSDPStrategy(FSDPStrategy):
    """mmengine's ``FSDPStrategy`` that builds the optimiser from the parameters' own shapes.

    mmengine builds the optimiser after wrapping the model, when FSDP1 has replaced every
    parameter by a 1-D view of its shard. The optimiser constructors tell a bias, a norm or a
    flat parameter (``flat_decay_mult``, the layer-decay constructor's no-decay rule) by
    ``param.ndim == 1``, so every weight matrix would lose its weight decay, without a word, and
    FSDP would train another model than DDP. The constructor runs here inside torch's
    ``summon_full_params``, which shows the parameters whole: the groups are DDP's, and the
    optimiser keeps the same parameter objects, which FSDP (``use_orig_params=True``) points
    back at their shards afterwards.

    ``--resume`` would fail in mmengine's ``load_optim_state_dict`` ('unhashable type: dict' in
    torch's FSDP): it passes the state, the model and the optimiser in the order of torch
    before 2.1, which takes the model first; they are passed by name here. The optimiser
    wrapper's ``base_param_settings`` (the ``base_lr`` the log shows and the schedulers step),
    which torch's FSDP conversion leaves out, is saved and restored beside it: a resumed run
    logged the warmup's first ``base_lr``."""

    def build_optim_wrapper(self, optim_wrapper, model=None):
        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            built = super().build_optim_wrapper(optim_wrapper, model)
        for wrapper in each_optim_wrapper(built):
            if getattr(wrapper, 'clip_func', None) is torch.nn.utils.clip_grad_norm_:
                wrapper.clip_func = partial(_clip_whole_model_norm, model)
        return built

    def optim_state_dict(self):
        state = super().optim_state_dict()
        base = getattr(self.optim_wrapper, 'base_param_settings', None)
        if state and base is not None:  # rank 0's full state; the others get none
            state['base_param_settings'] = base
        return state

    def load_optim_state_dict(self, state_dict):
        base = state_dict.pop('base_param_settings', None)
        self.optim_wrapper.load_state_dict(FullyShardedDataParallel.optim_state_dict_to_load(
            model=self.model, optim=self.optim_wrapper.optimizer, optim_state_dict=state_dict))
        if base is not None:
            self.optim_wrapper.base_param_settings = base


def _clip_whole_model_norm(model, params, max_norm, norm_type=2.0):
    """``clip_grad=dict(max_norm=...)`` under FSDP. torch's ``clip_grad_norm_``, which mmengine's
    optimiser wrapper calls, takes the norm of the gradients it is given: here this rank's
    shards, so each rank clipped by its own part of the norm (neither DDP's update nor the same
    on every rank) and logged that part as ``grad_norm``. FSDP's own ``clip_grad_norm_``
    reduces the norm over the ranks (every rank clips at the same steps) and returns the whole
    model's."""
    return model.clip_grad_norm_(max_norm, norm_type)


class _GivenValuesFirst(dict):
    """A checkpoint's ``meta`` whose ``update`` keeps the entries it already has."""

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self.setdefault(key, value)


@RUNNERS.register_module()
class FlexibleRunnerKeepingPosition(FlexibleRunner):
    """mmengine's ``FlexibleRunner`` whose ``save_checkpoint`` keeps the epoch and iteration a
    caller gives in ``meta``, as mmengine's ``Runner`` does (``setdefault``).

    ``FlexibleRunner`` overwrites them with its own count of whole epochs, so the checkpoint
    that ``PreemptionHook`` writes inside an epoch would record the epoch as finished and one
    iteration less: the resumed run would skip the rest of that epoch (a preemption at
    iteration 11 of 2-iteration epochs would end a 14-iteration run after 12)."""

    def save_checkpoint(self, out_dir, filename, file_client_args=None, save_optimizer=True,
                        save_param_scheduler=True, meta=None, by_epoch=True,
                        backend_args=None):
        FlexibleRunner.save_checkpoint(
            self, out_dir, filename, file_client_args, save_optimizer, save_param_scheduler,
            _GivenValuesFirst(meta) if isinstance(meta, dict) else meta,
            by_epoch, backend_args)


def enable_fsdp(cfg):
    """``--fsdp``: train with mmengine's ``FlexibleRunner`` and FSDP
    (:class:`FullShapeFSDPStrategy`, ``MMFullyShardedDataParallel``), keeping a ``strategy``
    the config sets (its wrapper options: ``auto_wrap_policy``, ``mixed_precision``, ...).
    Checkpoints are gathered whole on rank 0 (``state_dict_cfg='full'``): one file of the
    model's own keys and shapes, as a DDP run writes, which loads weights-only, fine-tunes
    and resumes."""
    strategy = dict(cfg.get('strategy') or {})
    strategy['type'] = FSDP_STRATEGY
    strategy.setdefault('state_dict_cfg', 'full')
    cfg.strategy = strategy
    cfg.runner_type = f'fastmim.{FSDP_RUNNER}'


def is_fsdp_strategy(strategy):
    """Whether the config's ``strategy`` is mmengine's FSDP one or ours (FlexibleRunner)."""
    return isinstance(strategy, dict) and type_name(strategy) in (FSDP_STRATEGY, 'FSDPStrategy')


def check_fsdp(cfg):
    """Refuse the FSDP set-ups that would train or save the wrong thing, naming the fix.

    - mmengine's ``Runner`` with ``model_wrapper_cfg`` FSDP: its ``save_checkpoint`` runs on
      rank 0 alone and reads the wrapped module's state, which holds rank 0's flat shards,
      and rank 0's part of the optimiser: the checkpoint is not the model;
    - mmengine's own ``FlexibleRunner`` or ``FSDPStrategy``: a preemption checkpoint that
      ends its epoch (:class:`FlexibleRunnerKeepingPosition`), no weight decay on any weight
      (:class:`FullShapeFSDPStrategy`);
    - a sharded ``state_dict_cfg``: a folder of per-rank files, which neither fastmim's
      weights-only loading nor fine-tuning reads;
    - ``use_orig_params=False``: the optimiser sees FSDP's flat parameters only;
    - no distributed launch.
    """
    wrapper = cfg.get('model_wrapper_cfg') or {}
    runner_type = cfg.get('runner_type', 'Runner')
    if type_name(wrapper) in FSDP_WRAPPERS and type_name(runner_type) == 'Runner':
        raise LaunchError(f'model_wrapper_cfg.type={wrapper["type"]} with mmengine\'s Runner: '
                          f'it saves checkpoints on rank 0 alone, which under FSDP hold rank '
                          f'0\'s shards, not the model; train with --fsdp (FlexibleRunner and '
                          f'FSDPStrategy) instead')
    strategy = cfg.get('strategy')
    if not is_fsdp_strategy(strategy):
        return
    if type_name(runner_type) != FSDP_RUNNER:
        raise LaunchError(f'runner_type={runner_type} with strategy.type={strategy["type"]}: '
                          f'mmengine\'s FlexibleRunner records a checkpoint saved inside an '
                          f'epoch (a preemption\'s) as the end of the epoch; use --fsdp '
                          f'(runner_type=fastmim.{FSDP_RUNNER})')
    if type_name(strategy) != FSDP_STRATEGY:
        raise LaunchError(f'strategy.type={strategy["type"]}: mmengine\'s FSDPStrategy builds '
                          f'the optimiser on FSDP\'s 1-D parameter shards, so no weight gets '
                          f'weight decay; use --fsdp (strategy.type={FSDP_STRATEGY})')
    state_dict_cfg = strategy.get('state_dict_cfg', 'local')
    kind = (state_dict_cfg.get('state_dict_type') if isinstance(state_dict_cfg, dict)
            else state_dict_cfg)
    if kind not in ('full', 'FULL_STATE_DICT'):
        raise LaunchError(f'strategy.state_dict_cfg={state_dict_cfg!r}: fastmim checkpoints are '
                          f'single files of the whole model (weights-only loading, '
                          f'fine-tuning, --resume); use \'full\' (--fsdp sets it)')
    if (strategy.get('model_wrapper') or {}).get('use_orig_params', True) is not True:
        raise LaunchError('strategy.model_wrapper.use_orig_params must stay True: with False '
                          'the optimiser and the checkpoints see FSDP\'s flat parameters only')
    if cfg.get('launcher', 'none') == 'none':
        raise LaunchError('--fsdp shards the model over the processes of a distributed launch; '
                          'start it with tools/dist_train.sh CONFIG N --fsdp')


def scale_losses_across_shards(cfg):
    """Under FSDP an fp16 run's loss scaler must agree across the ranks, each of which sees
    its own gradient shard only: mmengine's ``AmpOptimWrapper`` then needs ``use_fsdp=True``
    (torch's ``ShardedGradScaler``), which mmengine's ``FSDPStrategy`` sets for that wrapper
    alone, not for fastmim's ``GuardedAmpOptimWrapper`` (the recipes' fp16 on CUDA). Called
    after :func:`adapt_to_device`, which turns fp16 into bf16 autocast on the CPU.

    The recipes' fused AdamW is turned off there: the scaler hands a fused optimiser its
    overflow flag from each rank's own shard, agreed across ranks only when ``unscale_`` runs
    first (gradient clipping), so without clipping a rank whose shard overflowed skips the
    update while the others apply it and raise their scales. torch's default (foreach) AdamW
    goes through the scaler's ``unscale_``, whose all-reduce makes every rank skip together."""
    optim_wrapper = cfg.get('optim_wrapper')
    if not (is_fsdp_strategy(cfg.get('strategy')) and isinstance(optim_wrapper, dict)
            and mixed_precision_of(optim_wrapper.get('type')) == 'loss_scaling'):
        return
    optim_wrapper.setdefault('use_fsdp', True)
    optimizer = optim_wrapper.get('optimizer') or {}
    if optimizer.get('fused'):
        optimizer['fused'] = False
        print_log('--fsdp with fp16 loss scaling: optim_wrapper.optimizer.fused=False (a fused '
                  'optimiser would let the ranks disagree on skipping an overflowed step)',
                  logger='current')
