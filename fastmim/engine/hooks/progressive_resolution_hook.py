"""Progressive-resolution pre-training (FastMIM-P): change input size, batch and accumulation
at given epochs, without disturbing the learning-rate schedule.

mmengine builds the train dataloader once and converts epoch-based schedulers to iterations with
that loader's length. When a later stage uses smaller batches with gradient accumulation, an
epoch has more iterations but the same number of optimiser updates. Two rules keep the schedule
exact in epochs:

- every stage has the same ``batch_size * accumulative_counts`` (the batch of one update), and
  the config's ``train_dataloader.batch_size`` is that product, so the conversion counts updates;
- :class:`PerUpdateParamSchedulerHook` steps iteration-based schedulers once per update.

Accumulation windows start at every epoch start; the iterations left over at the end of an epoch
that cannot fill a window are discarded, which is ``drop_last`` at the level of the update batch:
every stage uses exactly the samples of ``len(sampler) // (batch_size * accumulative_counts)``
updates per epoch, as a run without stages would.
"""
import copy
import logging
from typing import List, NamedTuple, Sequence, Tuple, Union

from mmengine.hooks import Hook, ParamSchedulerHook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapperDict
from mmengine.runner import EpochBasedTrainLoop

from fastmim.engine.accumulation import (WindowSpan, iter_based_schedulers,
                                        start_accumulation_windows,
                                        warn_if_resumed_inside_a_window)
from fastmim.engine.runner_model import bare_model
from fastmim.checks import check_positive_int
from fastmim.registry import HOOKS, type_name

STAGE_KEYS = ('epoch', 'input_size', 'batch_size', 'accumulative_counts')
CROP_TYPE = 'RandomResizedCrop'
# The top-level variable the progressive configs name their stages in.
STAGES_VARIABLE = 'progressive_stages'


class Stage(NamedTuple):
    """From ``epoch`` on, crops of ``input_size`` in batches of ``batch_size``, one optimiser
    update every ``accumulative_counts`` batches."""
    epoch: int
    input_size: Union[int, Tuple[int, int]]
    batch_size: int
    accumulative_counts: int

    @property
    def update_batch(self) -> int:
        return self.batch_size * self.accumulative_counts


def _input_size(value, where: str):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f'{where}: input_size must be an int or a (height, width) pair, '
                             f'got {value!r}')
        return tuple(check_positive_int(where, 'input_size', v) for v in value)
    return check_positive_int(where, 'input_size', value)


def warn_unused_stages(cfg, path, cfg_options=None) -> None:
    """The progressive configs name their stages in a top-level variable,
    ``progressive_stages``, that mmengine copies into the hook's ``stages`` when it reads the
    file: a child config or ``--cfg-options progressive_stages.0.batch_size=4`` that changes
    the variable alone changes nothing, and the hook's errors then quote the values the user
    thinks were replaced. Log a warning naming the key to change instead, unless the hook's
    own stages are changed on the command line."""
    stages, cfg_options = cfg.get(STAGES_VARIABLE), cfg_options or {}
    if stages is None:
        return
    for index, hook in enumerate(cfg.get('custom_hooks') or []):
        if not isinstance(hook, dict) or type_name(hook) != 'ProgressiveResolutionHook':
            continue
        key = f'custom_hooks.{index}.stages'
        if hook.get('stages') == stages or any(
                option == key or option.startswith(f'{key}.') for option in cfg_options):
            continue
        example = next((f'{key}{option[len(STAGES_VARIABLE):]}={value}'
                        for option, value in cfg_options.items()
                        if option.startswith(f'{STAGES_VARIABLE}.')), None)
        print_log(f'{path}: progressive_stages differs from custom_hooks[{index}].stages, which '
                  'the hook runs (the variable was copied into it when the file was read); '
                  f'change {key}' + (f' (e.g. --cfg-options {example})' if example else ''),
                  logger='current', level=logging.WARNING)


def parse_stages(stages: Sequence[dict]) -> List[Stage]:
    """Check a stage list and return it as :class:`Stage` tuples.

    Epochs must start at 0 and increase strictly, sizes and batches must be positive and
    ``batch_size * accumulative_counts`` the same in every stage: that product is the batch of
    one optimiser update, and keeping it fixed keeps the updates per epoch, hence the
    learning-rate schedule in epochs, unchanged. ``accumulative_counts`` defaults to 1.
    """
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ValueError(f'ProgressiveResolutionHook: stages must be a non-empty list of dicts '
                         f'with keys {STAGE_KEYS}, got {stages!r}')
    parsed = []
    for index, stage in enumerate(stages):
        where = f'ProgressiveResolutionHook stages[{index}]'
        if not isinstance(stage, dict):
            raise ValueError(f'{where} must be a dict with keys {STAGE_KEYS}, got {stage!r}')
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        missing = [key for key in STAGE_KEYS[:3] if key not in stage]
        if unknown or missing:
            raise ValueError(f'{where} = {dict(stage)}: unknown keys {unknown}, missing keys '
                             f'{missing}; expected keys {STAGE_KEYS} (accumulative_counts '
                             'optional, default 1)')
        epoch = stage['epoch']
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f'{where}: epoch must be an int >= 0, got {epoch!r}')
        parsed.append(
            Stage(epoch, _input_size(stage['input_size'], where),
                  check_positive_int(where, 'batch_size', stage['batch_size']),
                  check_positive_int(where, 'accumulative_counts',
                                     stage.get('accumulative_counts', 1))))

    if parsed[0].epoch != 0:
        raise ValueError(f'ProgressiveResolutionHook stages[0] must start at epoch 0, got '
                         f'epoch {parsed[0].epoch}: every epoch needs a stage')
    for index in range(1, len(parsed)):
        previous, stage = parsed[index - 1], parsed[index]
        where = f'ProgressiveResolutionHook stages[{index}]'
        if stage.epoch <= previous.epoch:
            raise ValueError(f'{where}: epoch {stage.epoch} must be greater than the previous '
                             f"stage's epoch {previous.epoch}")
        if stage.update_batch != parsed[0].update_batch:
            raise ValueError(
                f'{where}: batch_size x accumulative_counts = {stage.batch_size} x '
                f'{stage.accumulative_counts} = {stage.update_batch}, but stages[0] has '
                f'{parsed[0].batch_size} x {parsed[0].accumulative_counts} = '
                f'{parsed[0].update_batch}. Every stage needs the same batch per optimiser '
                'update, so that the updates per epoch and the learning-rate schedule stay the '
                'same')
    return parsed


def _set_crop_size(node, input_size) -> int:
    """Set ``size`` of every ``RandomResizedCrop`` config under ``node``; return how many.

    Walks the whole dataset config, so pipelines of wrapped datasets (``ConcatDataset``,
    ``RepeatDataset``) are found too.
    """
    found = 0
    if isinstance(node, dict):
        if 'type' in node and type_name(node) == CROP_TYPE:
            node['size'] = input_size
            found += 1
        for value in node.values():
            found += _set_crop_size(value, input_size)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _set_crop_size(value, input_size)
    return found


def stage_dataloader_config(dataloader_cfg: dict, stage: Stage) -> dict:
    """A copy of ``dataloader_cfg`` with the stage's batch size and crop size."""
    cfg = copy.deepcopy(dataloader_cfg)
    cfg['batch_size'] = stage.batch_size
    if _set_crop_size(cfg.get('dataset'), stage.input_size) == 0:
        raise ValueError('ProgressiveResolutionHook: train_dataloader.dataset has no '
                         f'{CROP_TYPE} in its pipeline, so the input size cannot be changed; '
                         f'add dict(type={CROP_TYPE!r}, size=...)')
    return cfg


def batches_done_in_epoch(loop) -> int:
    """Batches of the current epoch trained before the checkpoint this run resumed from:
    ``ResumableEpochBasedTrainLoop`` goes on after them, so the epoch's accumulation windows
    must stay where they were (restarted at the resumed batch, they would group the rest of
    the epoch otherwise than the uninterrupted run). mmengine's loop restarts the epoch: 0."""
    done = getattr(loop, 'batches_done_in_epoch', None)
    return done(warn=False) if done is not None else 0


def _single_optim_wrapper(runner):
    wrapper = runner.optim_wrapper
    if isinstance(wrapper, OptimWrapperDict):
        raise TypeError('ProgressiveResolutionHook and PerUpdateParamSchedulerHook support one '
                        f'optimiser; got an OptimWrapperDict with {list(wrapper.keys())}')
    return wrapper


def with_sampler_seed(dataloader_cfg: dict, sampler) -> dict:
    """``dataloader_cfg`` whose sampler keeps the seed of the current loader's ``sampler``.

    With ``randomness.diff_rank_seed`` mmengine builds samplers without a seed, and they draw
    one from numpy's generator; a loader rebuilt at a stage change would then shuffle by a seed
    that depends on when it is built, and a resumed run would see another data order.
    """
    sampler_cfg = dataloader_cfg.get('sampler')
    if not isinstance(sampler_cfg, dict) or getattr(sampler, 'seed', None) is None:
        return dataloader_cfg
    return {**dataloader_cfg, 'sampler': {**sampler_cfg, 'seed': sampler.seed}}


@HOOKS.register_module()
class PerUpdateParamSchedulerHook(ParamSchedulerHook):
    """mmengine's ``ParamSchedulerHook``, but iteration-based schedulers step once per
    optimiser update instead of once per iteration.

    With gradient accumulation an update spans several iterations; stepping per update keeps the
    schedule in updates, which is what :class:`ProgressiveResolutionHook` converts epochs to.
    Epoch-based schedulers step after every epoch, as before. Use it as
    ``default_hooks.param_scheduler``.
    """

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        # Right after update_params, should_update() tells whether that call stepped.
        if _single_optim_wrapper(runner).should_update():
            super().after_train_iter(runner, batch_idx, data_batch, outputs)


@HOOKS.register_module()
class ProgressiveResolutionHook(Hook):
    """Switch input size, batch size and gradient accumulation at given epochs (FastMIM-P).

    At the start of each epoch the stage of ``runner.epoch`` is selected; on a change the train
    dataloader is rebuilt from ``runner.cfg.train_dataloader`` with the stage's ``batch_size``
    and every ``RandomResizedCrop`` ``size`` set to ``input_size`` (same seed settings as the
    runner's), and the switch is logged. Because the stage is chosen from the epoch, a resumed
    run continues in the stage of its epoch.

    Requirements, checked before training with errors that say what to change:

    - ``train_dataloader.batch_size`` equals ``batch_size * accumulative_counts`` of the stages
      (mmengine converts epoch-based schedulers with the length of the loader built from it),
      ``drop_last=True`` and no custom ``batch_sampler``;
    - ``optim_wrapper.accumulative_counts`` is 1 (the stages set it);
    - with accumulation and iteration-based schedulers, ``default_hooks.param_scheduler`` is a
      :class:`PerUpdateParamSchedulerHook`;
    - an epoch-based train loop (a stage starting at or after ``max_epochs`` is warned
      about: it will not run).

    Its priority is above ``DistSamplerSeedHook`` so that a new sampler gets its epoch seed.

    Args:
        stages (list[dict]): ``dict(epoch, input_size, batch_size, accumulative_counts=1)``
            per stage, epochs increasing from 0; see :func:`parse_stages`.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, stages: Sequence[dict]):
        self.stages = parse_stages(stages)
        self.active_stage = None
        self._loader_cfg = None  # the config the current train dataloader was built from

    def stage_index(self, epoch: int) -> int:
        """Index of the stage that epoch ``epoch`` belongs to."""
        return max(i for i, stage in enumerate(self.stages) if stage.epoch <= epoch)

    def before_train(self, runner) -> None:
        self._check_runner(runner)
        self.active_stage = None
        self._loader_cfg = runner.cfg.train_dataloader

    def before_train_epoch(self, runner) -> None:
        index = self.stage_index(runner.epoch)
        if index != self.active_stage:
            self._enter_stage(runner, index)
        counts = self.stages[index].accumulative_counts
        done = batches_done_in_epoch(runner.train_loop)
        start_accumulation_windows(_single_optim_wrapper(runner), counts, done=done)
        warn_if_resumed_inside_a_window(runner.epoch, done, counts)

    def window_spans(self, runner) -> List[WindowSpan]:
        """Every epoch's accumulation windows: those of its stage from the epoch's start, a
        last one that cannot fill up dropped. For the check of the checkpoint interval before
        training (:func:`~fastmim.engine.accumulation.warn_if_checkpoints_fall_inside_windows`),
        when the optimiser wrapper holds no stage's accumulation yet."""
        samples = len(runner.train_loop.dataloader.sampler)
        spans = []
        for epoch in range(runner.max_epochs):
            index = self.stage_index(epoch)
            stage = self.stages[index]
            spans.append(WindowSpan(
                samples // stage.batch_size, stage.accumulative_counts, False,
                f'ProgressiveResolutionHook stages[{index}].accumulative_counts='
                f'{stage.accumulative_counts}'))
        return spans

    # --- steps --------------------------------------------------------------------------------
    def _enter_stage(self, runner, index: int) -> None:
        stage = self.stages[index]
        cfg = stage_dataloader_config(runner.cfg.train_dataloader, stage)
        if cfg != self._loader_cfg:  # else the current loader already has the stage's settings
            runner.train_loop.dataloader = runner.build_dataloader(
                with_sampler_seed(cfg, runner.train_loop.dataloader.sampler), seed=runner.seed,
                diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed', False))
            self._loader_cfg = cfg
        self.active_stage = index
        self._update_max_iters(runner)
        iterations = len(runner.train_loop.dataloader)
        print_log(
            f'ProgressiveResolutionHook: epoch {runner.epoch} starts stage {index}: input '
            f'{stage.input_size} px, batch {stage.batch_size} x {stage.accumulative_counts} '
            f'accumulation = {stage.update_batch} per update, {iterations} iterations = '
            f'{iterations // stage.accumulative_counts} updates per epoch', logger='current')

    def _update_max_iters(self, runner) -> None:
        """Make ``runner.max_iters`` the iterations this run will really do.

        mmengine computes it once, from the first loader; ETA, "last iteration" checks and logs
        read it. The loop offers no setter, hence the private attribute. A run resumed inside
        an epoch (``ResumableEpochBasedTrainLoop``) has its done batches of this epoch in
        ``runner.iter`` already.
        """
        samples = len(runner.train_loop.dataloader.sampler)
        remaining = sum(samples // self.stages[self.stage_index(epoch)].batch_size
                        for epoch in range(runner.epoch, runner.max_epochs))
        batches_done = getattr(runner.train_loop, 'batches_done_in_epoch', lambda: 0)()
        runner.train_loop._max_iters = runner.iter - batches_done + remaining
        runner.message_hub.update_info('max_iters', runner.max_iters)

    # --- checks -------------------------------------------------------------------------------
    def _check_stage_sizes(self, runner) -> None:
        """Every stage's input size through the model's own check (FastMIM's
        ``check_input_size``: mask blocks and backbone stride), now rather than when the stage
        starts, hundreds of epochs into the run."""
        model = bare_model(runner)
        check_input_size = getattr(model, 'check_input_size', None)
        if check_input_size is None:
            return
        for index, stage in enumerate(self.stages):
            size = stage.input_size
            height, width = (size, size) if isinstance(size, int) else size
            try:
                check_input_size(height, width)
            except ValueError as error:
                raise ValueError(f'ProgressiveResolutionHook stages[{index}] (from epoch '
                                 f'{stage.epoch}): {error}') from None

    def _check_runner(self, runner) -> None:
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise TypeError('ProgressiveResolutionHook needs an epoch-based train loop '
                            f'(train_cfg.by_epoch=True), got {type(runner.train_loop).__name__}')
        late = [i for i, stage in enumerate(self.stages) if stage.epoch >= runner.max_epochs]
        if late:
            # A shortened run (e.g. --cfg-options train_cfg.max_epochs=1 to try a recipe) is
            # legitimate: say which stages will not be reached instead of refusing to start.
            runner.logger.warning(
                f'ProgressiveResolutionHook stages {late} start at epochs '
                f'{[self.stages[i].epoch for i in late]}, but training stops after '
                f'{runner.max_epochs} epochs: they will not run')

        dataloader_cfg = runner.cfg.get('train_dataloader')
        if not isinstance(dataloader_cfg, dict):
            raise ValueError('ProgressiveResolutionHook rebuilds the train dataloader from '
                             'runner.cfg.train_dataloader, which is missing: build the runner '
                             'with Runner.from_cfg(cfg)')
        update_batch = self.stages[0].update_batch
        if dataloader_cfg.get('batch_size') != update_batch:
            raise ValueError(
                f"train_dataloader.batch_size is {dataloader_cfg.get('batch_size')}, but with "
                f'ProgressiveResolutionHook it must be the batch of one optimiser update, '
                f'batch_size x accumulative_counts = {update_batch} in every stage: mmengine '
                'converts epoch-based schedulers to steps with the length of the loader built '
                'from it, and the steps must be updates')
        if not dataloader_cfg.get('drop_last', False):
            raise ValueError('ProgressiveResolutionHook needs train_dataloader.drop_last=True: '
                             'with a partial last batch the stages would make different '
                             'numbers of updates per epoch')
        for key in ('batch_sampler', 'num_batch_per_epoch'):
            if dataloader_cfg.get(key) is not None:
                raise ValueError(f'ProgressiveResolutionHook cannot use train_dataloader.{key}: '
                                 'iterations per epoch must be len(sampler) // batch_size')
        for stage in self.stages:
            stage_dataloader_config(dataloader_cfg, stage)  # raises without a RandomResizedCrop
        self._check_stage_sizes(runner)

        wrapper = _single_optim_wrapper(runner)
        if wrapper._accumulative_counts != 1:
            raise ValueError(
                f'optim_wrapper.accumulative_counts is {wrapper._accumulative_counts}; with '
                'ProgressiveResolutionHook leave it at 1 and set accumulative_counts per stage')
        accumulates = any(stage.accumulative_counts > 1 for stage in self.stages)
        per_iteration_hooks = [
            hook for hook in runner.hooks if isinstance(hook, ParamSchedulerHook)
            and not isinstance(hook, PerUpdateParamSchedulerHook)
        ]
        if accumulates and iter_based_schedulers(runner) and per_iteration_hooks:
            raise ValueError(
                'stages accumulate gradients but iteration-based schedulers are stepped by '
                f'{type(per_iteration_hooks[0]).__name__} once per iteration; set '
                "default_hooks.param_scheduler=dict(type='PerUpdateParamSchedulerHook') so they "
                'step once per optimiser update')
