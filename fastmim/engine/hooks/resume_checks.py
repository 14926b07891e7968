"""What ``--resume`` takes from the checkpoint rather than the config, checked before it does.

mmengine's ``Runner.resume`` restores the weights, then the optimiser's state, then the
parameter schedulers' state, all from the checkpoint. What it leaves unsaid:

- a file without the run's state (a ``best_*`` checkpoint, a published or converted one) has
  none to restore: mmengine goes on with a fresh optimiser and restarted schedules without a
  word, or ends in ``KeyError: 'epoch'`` (:func:`check_run_state`);
- the model must be the checkpoint's model (:func:`check_resumed_model`);
- an optimiser of another type than the checkpoint's cannot take its state (mmengine loads
  AdamW's groups into SGD, which fails at the first step with ``KeyError: 'momentum'``)
  (:func:`check_resumed_optimiser`);
- the learning rate, weight decay and schedule go on as the checkpoint has them: a config
  edited before resuming (another lr, a longer cosine, another warmup) takes no effect
  (:func:`warn_kept_optimisation` names each value the run keeps);
- a ``meta['config']`` entry is rebuilt with ``Config.fromstring``, which runs it as Python
  (:func:`drop_executable_config`);
- a checkpoint that has trained the whole ``train_cfg`` trains nothing more, with exit
  status 0 (:func:`warn_if_finished`);
- the run goes on in the config's precision, not the checkpoint's: a float16 run's loss
  scaler is dropped, or a new one starts afresh (:func:`warn_if_precision_changed`);
- a run resumed on another number of CPU threads than the checkpoint's trains on, but not
  bitwise as the uninterrupted run would have (:func:`warn_if_threads_changed`).

They run from :class:`ResumeChecksHook` when a checkpoint has been read for resuming, before
mmengine or any other hook loads anything from it; the precision warning runs from
``CheckpointMetaHook``, after them all.
"""
import logging
import math
from typing import Iterator, List, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, find_latest_checkpoint

from fastmim.engine.loops import PROGRESS_KEY
from fastmim.engine.optim_wrappers.guarded import training_precision
from fastmim.engine.runner_model import bare_model, whole_parameters
from fastmim.engine.validation_record import validation_finished
from fastmim.errors import CheckpointError
from fastmim.load_problems import modules_without_weights, top_level_names
from fastmim.registry import HOOKS

from .checkpoint_fit_hook import weights_that_do_not_fit
from .load_from_checks import check_loaded_weights
from .preemption_hook import PENDING_VALIDATION_KEY

# Optimiser settings a config sets per parameter group (``initial_lr``: the lr before the
# schedule; ``lr`` itself is the schedule's current value, and differs by design).
OPTIMISER_SETTINGS = ('initial_lr', 'weight_decay', 'betas', 'momentum', 'eps')
# The optimiser's config key of a group setting named otherwise: a group's ``initial_lr`` is the
# ``lr`` it was built with (scaled by layer decay, where the config sets one).
CONFIG_KEYS = {'initial_lr': 'lr'}
# Scheduler entries that record progress rather than configuration (``base_values`` are the
# groups' ``initial_lr``, compared above).
SCHEDULER_PROGRESS = ('last_step', '_global_step', '_last_value', 'base_values', 'verbose',
                      '_get_value_called_within_step')


# Where a checkpoint records its optimiser's class (``CheckpointMetaHook`` writes it).
OPTIMISER_TYPE_KEY = 'optimizer_type'
# Where a checkpoint records the precision its run trained in (:func:`training_precision`;
# ``CheckpointMetaHook`` writes it).
PRECISION_KEY = 'precision'
# Where a checkpoint records the CPU threads of the process that saved it
# (``torch.get_num_threads()``; ``CheckpointMetaHook`` writes it).
THREADS_KEY = 'cpu_threads'


@HOOKS.register_module()
class ResumeChecksHook(Hook):
    """Checks a checkpoint read for ``--resume``, or for ``load_from`` alone
    (:mod:`.load_from_checks`), before anything is loaded from it.

    Priority ``VERY_HIGH``: the other hooks' ``after_load_checkpoint`` come after it. EMAHook
    loads its averaged copy of the weights in its own, so a checkpoint of another model (a
    fine-tuning resumed with another ``num_classes``) would end there in a size-mismatch
    traceback instead of this module's one-line error. ``CheckpointMetaHook`` runs the checks itself
    in a config without this hook."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint):
        check_read_checkpoint(runner, checkpoint)


def check_read_checkpoint(runner, checkpoint: dict) -> None:
    """The checks of a checkpoint read for resuming, or of one read for ``load_from`` alone
    (:func:`~.load_from_checks.check_loaded_weights`)."""
    if runner._resume:  # mmengine has no public flag
        check_resumed_checkpoint(runner, checkpoint)
    else:
        check_loaded_weights(runner, checkpoint)


def check_resumed_checkpoint(runner, checkpoint: dict) -> None:
    """Every check of this module, on a checkpoint read for resuming."""
    path = resumed_path(runner)
    check_run_state(runner, checkpoint, path)
    drop_executable_config(checkpoint, path)
    with whole_parameters(runner.model):
        check_resumed_model(bare_model(runner), checkpoint, path)
    check_resumed_optimiser(runner, checkpoint, path)
    warn_kept_optimisation(runner, checkpoint, path)
    warn_if_finished(runner, checkpoint, path)
    warn_if_threads_changed(checkpoint, path)


def check_run_state(runner, checkpoint: dict, path: str) -> None:
    """Refuse a file that holds weights without the state ``--resume`` continues: the
    optimiser's, the schedulers' (when the config has schedulers), the message hub and the
    epoch and iteration in ``meta``. mmengine skips a missing optimiser or scheduler state
    silently: resumed from ``best_accuracy_top1_epoch_1.pth`` (mmengine saves the best
    checkpoints without them), a run would go on with a fresh AdamW and start its warmup
    over."""
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    wanted = ['optimizer', 'message_hub'] + (['param_schedulers']
                                             if runner.param_schedulers else [])
    lacking = [key for key in wanted if key not in checkpoint] + [
        f"meta['{key}']" for key in ('epoch', 'iter') if key not in meta]
    if lacking:
        raise CheckpointError(
            f'{path} holds weights without the state of the run that wrote them (no '
            f'{", ".join(lacking)}): a best_* checkpoint, a published or converted file. '
            f'--resume continues a run from that state: resume from the run\'s latest '
            f'checkpoint (epoch_*/iter_*.pth, or --resume alone), or start a new run from '
            f'these weights with load_from / init_cfg, without --resume')


def optimiser_type(runner) -> Optional[str]:
    """The class name of the run's optimiser (None for a wrapper of several, whose state
    mmengine saves per optimiser)."""
    optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
    return type(optimizer).__name__ if optimizer is not None else None


def check_resumed_optimiser(runner, checkpoint: dict, path: str) -> None:
    """Refuse a checkpoint whose optimiser (``meta['optimizer_type']``, which
    ``CheckpointMetaHook`` records; a file without it is not checked) is not the config's:
    torch's ``load_state_dict`` gives the config's optimiser the checkpoint's parameter groups
    whole, so SGD resumed from AdamW lacks its momentum and the first step ends in a
    ``KeyError`` after the start-up."""
    saved = (checkpoint.get('meta') or {}).get(OPTIMISER_TYPE_KEY)
    built = optimiser_type(runner)
    if saved and built and saved != built:
        raise CheckpointError(
            f'{path} was trained with {saved}, the config builds {built}: --resume continues '
            f'the optimiser state it holds. Resume with the config that wrote it, or start a '
            f'new run from its weights (load_from / init_cfg, without --resume)')


def drop_executable_config(checkpoint: dict, path: str) -> None:
    """Remove ``meta['config']``. mmengine's resume rebuilds it with ``Config.fromstring`` to
    compare GPU counts, which executes the text as Python: a ``--resume`` file could run any
    code, though the file itself is read weights-only. mmengine writes its config as
    ``meta['cfg']``, so only foreign or crafted files carry the entry."""
    meta = checkpoint.get('meta')
    if isinstance(meta, dict) and 'config' in meta:
        del meta['config']
        print_log(f"{path}: left out meta['config']: mmengine's resume would run it as Python "
                  '(the run goes on without it)', logger='current', level=logging.WARNING)


def check_resumed_model(model, checkpoint: dict, path: str) -> None:
    """A resumed run continues the model of its checkpoint, so every weight must fit. mmengine
    loads the weights non-strictly (a checkpoint of another model size, from a work dir shared
    by two configs, only logs its mismatches) and then the optimiser state of other shapes:
    the first update ends in a RuntimeError deep in the optimiser, or a segmentation fault;
    fewer blocks fail with 'loaded state dict has a different number of parameter groups'."""
    state = checkpoint['state_dict']
    saved, own = [key.removeprefix('module.') for key in state], model.state_dict().keys()
    if modules_without_weights(own, saved) or modules_without_weights(saved, own):
        saved_parts, own_parts = top_level_names(saved), top_level_names(own)
        # Another kind of model: the backbone's own load checks would otherwise speak first,
        # with advice about its settings (a fine-tuned ViT's learned position table) that
        # only leads to the next error.
        raise CheckpointError(
            f'{path} holds {", ".join(saved_parts)}, not the parts of the config\'s '
            f'{type(model).__name__} ({", ".join(own_parts)}): a checkpoint of another kind '
            f'of model{_kinds_hint(saved_parts, own_parts, path)}')
    problems = weights_that_do_not_fit(model, state, judge_unexpected=True)
    if problems:
        raise CheckpointError(
            problems.message(path, type(model).__name__, '--resume continues the model it holds')
            + '\nWas it written with another config (model size) in the same work dir? Resume '
            'with the config that wrote it, or use another --work-dir')


def _kinds_hint(saved: List[str], own: List[str], path: str) -> str:
    """What to do with a checkpoint of another kind of model, told by the parts each has: a
    pre-training model's decoder (``neck``) against a classifier's ``head``."""
    if 'neck' in saved and 'head' in own and 'neck' not in own:
        return (' (a pre-training checkpoint resumed with a fine-tuning config? To start '
                f'fine-tuning from it, set model.backbone.init_cfg.checkpoint={path} without '
                '--resume)')
    advice = ('--resume continues the model it holds: resume with the config that wrote it, '
              'or start from its weights with load_from or the backbone\'s init_cfg')
    if 'head' in saved and 'neck' in own and 'head' not in own:
        return f' (a fine-tuned classifier resumed with a pre-training config?). {advice}'
    return f'. {advice}'


def warn_kept_optimisation(runner, checkpoint: dict, path: str) -> None:
    """Log one warning listing every optimiser setting and scheduler entry of the config that
    differs from the checkpoint's: the run continues with the checkpoint's values."""
    differences = []
    if 'optimizer' in checkpoint:
        differences += optimiser_differences(runner.optim_wrapper.state_dict(),
                                             checkpoint['optimizer'])
    if runner.param_schedulers and 'param_schedulers' in checkpoint:
        differences += scheduler_differences(runner.param_schedulers,
                                             checkpoint['param_schedulers'],
                                             runner.cfg.get('param_scheduler'))
    if differences:
        print_log(
            f'--resume goes on with the optimisation of {path}, not the config\'s: mmengine '
            'restores the optimiser and the parameter schedulers from the checkpoint, so these '
            'config values take no effect:\n  ' + '\n  '.join(differences) +
            '\nTo train with the config\'s values, start a new run from the checkpoint\'s '
            'weights instead (load_from / init_cfg, without --resume).',
            logger='current', level=logging.WARNING)


def warn_if_finished(runner, checkpoint: dict, path: str) -> None:
    """Log a warning when the checkpoint has already trained the whole ``train_cfg``: mmengine
    then runs no iteration and exits 0, which reads as a resumed run that has trained (a job
    requeued after it finished, or ``--resume`` meant to lengthen a run without a longer
    ``max_epochs``). A checkpoint of a stop before or during the last validation, which the
    work dir does not record as finished, is no such case: the resumed run repeats that
    validation (``PreemptionHook``). It advises a new run from the checkpoint's weights to
    train longer: mmengine restores the schedulers' ``end`` from the checkpoint, so a raised
    ``max_epochs`` with a resume trains the added epochs at the schedule's final lr."""
    runtime_info = (checkpoint.get('message_hub') or {}).get('runtime_info') or {}
    meta, loop = checkpoint.get('meta', {}), runner.train_loop
    if (runtime_info.get(PENDING_VALIDATION_KEY)
            and not validation_finished(runner.work_dir, meta.get('iter'))):
        return
    # An epoch loop counts epochs: its max_iters follow today's dataloader length, which the
    # checkpoint's iteration count need not (another batch size).
    unit, done, total, key = (
        ('epochs', epochs_done(runner, runtime_info, meta), loop.max_epochs, 'max_epochs')
        if isinstance(loop, EpochBasedTrainLoop) else
        ('iterations', meta.get('iter'), getattr(loop, 'max_iters', None), 'max_iters'))
    if isinstance(done, int) and total is not None and done >= total:
        print_log(f'{path} has trained all {total} {unit} of train_cfg ({done} done): --resume '
                  f'has nothing left to train. To train longer, start a new run from these '
                  f'weights with a longer train_cfg.{key} and param_scheduler, in another '
                  f'--work-dir and without --resume (--cfg-options load_from={path}): a '
                  f"resumed run keeps this checkpoint's schedule, whose end a config cannot "
                  f'move, so the {unit} added would train at its final lr',
                  logger='current', level=logging.WARNING)


def warn_if_precision_changed(runner, checkpoint: dict, path: str) -> None:
    """Name a resume in another precision than the checkpoint's run (``--amp`` added or left
    out, ``optim_wrapper.type`` changed): the run goes on in the config's, a float16 run's loss
    scaler dropped or a new one started at its initial scale, which nothing else says (a
    changed lr is named by :func:`warn_kept_optimisation`). A checkpoint without the record
    (``meta['precision']``, which ``CheckpointMetaHook`` writes) tells only whether it holds a
    loss scaler. ``CheckpointMetaHook`` runs it, after every other hook has loaded its part of
    the checkpoint."""
    built = training_precision(runner.optim_wrapper)
    optimizer_state = checkpoint.get('optimizer')
    had_scaler = isinstance(optimizer_state, dict) and 'loss_scaler' in optimizer_state
    has_scaler = 'loss scaling' in built
    saved = (checkpoint.get('meta') or {}).get(PRECISION_KEY)
    if saved is None and had_scaler != has_scaler:
        saved = ('autocast with loss scaling' if had_scaler else
                 'float32 or bfloat16 autocast, without loss scaling')
    if saved is None or saved == built:
        return
    scaler = ('; its loss scaler is dropped' if had_scaler and not has_scaler else
              '; the loss scaler starts afresh at its initial scale'
              if has_scaler and not had_scaler else '')
    print_log(f'{path} was trained in {saved}, the config trains in {built} (--amp, '
              f'optim_wrapper.type): the resumed run goes on in {built}{scaler}',
              logger='current', level=logging.WARNING)


def warn_if_threads_changed(checkpoint: dict, path: str) -> None:
    """Name a resume on another number of CPU threads than the run that saved the checkpoint
    (``meta['cpu_threads']``, which ``CheckpointMetaHook`` records; a checkpoint without it is
    not compared). CPU kernels split their sums by thread, so the resumed run can differ from
    the uninterrupted one in the last bits, and every later step carries that on. A job
    requeued on a node with other cores, or started by torchrun (one thread per process where
    ``OMP_NUM_THREADS`` is unset), changes the count without a word."""
    saved = (checkpoint.get('meta') or {}).get(THREADS_KEY)
    now = torch.get_num_threads()
    if not isinstance(saved, int) or saved == now:
        return
    print_log(f'{path} was written by a run on {saved} CPU thread(s) (torch.get_num_threads()), '
              f'this run has {now}: it is not bitwise the uninterrupted run (CPU kernels split '
              f'their sums by thread, so results can differ in the last bits). To resume on '
              f'{saved}, start it with OMP_NUM_THREADS={saved} in its environment (torchrun '
              f'sets 1 per process where it is unset), or call torch.set_num_threads({saved}) '
              'before training',
              logger='current', level=logging.WARNING)


def epochs_done(runner, runtime_info: dict, meta: dict) -> Optional[int]:
    """The epochs a checkpoint has trained whole. ``meta['epoch']`` counts an epoch once its
    end-of-epoch hooks have run; a checkpoint written at an epoch's last iteration (every N
    iterations, a preemption's) comes before them, and the resumed run replays them and the
    validation after them, so that epoch counts as done only when the work dir records its
    validation as finished (or none follows). ``ResumableEpochBasedTrainLoop`` tells a
    complete epoch from the progress the message hub records."""
    epoch = meta.get('epoch')
    completes = getattr(runner.train_loop, 'completes_its_epoch', None)
    if not isinstance(epoch, int) or completes is None:
        return epoch
    progress = runtime_info.get(PROGRESS_KEY)
    if not (progress and progress[0] == epoch and completes(progress)):
        return epoch
    if runner.val_loop is not None and not validation_finished(runner.work_dir,
                                                               meta.get('iter')):
        return epoch  # the resumed run validates after it
    return epoch + 1


def optimiser_differences(built: dict, saved: dict) -> List[str]:
    """``'<config key>: config X, checkpoint Y (<which groups>)'`` for each of
    :data:`OPTIMISER_SETTINGS` that differs, named by the key a user sets
    (``optim_wrapper.optimizer.lr`` for the groups' ``initial_lr``), with the values of the
    first group that differs and how many of the groups do (layer decay gives each layer a
    group of its own)."""
    differences = []
    for name, built_groups, saved_groups in _param_groups(built, saved):
        if len(built_groups) != len(saved_groups):
            continue  # mmengine's load_state_dict refuses another number of groups itself
        for setting in OPTIMISER_SETTINGS:
            differing = [index for index, (ours, theirs) in enumerate(zip(built_groups,
                                                                          saved_groups))
                         if setting in ours and setting in theirs
                         and not _same(ours[setting], theirs[setting])]
            if not differing:
                continue
            first = differing[0]
            key = CONFIG_KEYS.get(setting, setting)
            note = _groups_note(setting if key != setting else '', len(differing),
                                len(built_groups), first)
            differences.append(
                f'optim_wrapper.{name}optimizer.{key}: config {built_groups[first][setting]}, '
                f'checkpoint {saved_groups[first][setting]}{note}')
    return differences


def _groups_note(setting: str, differing: int, groups: int, first: int) -> str:
    """`` (initial_lr, in all 96 parameter groups; group 0 shown)``: the group setting a
    config key stands for (``setting``, '' when the key is its name) and which groups
    differ."""
    if groups == 1:
        return f' ({setting} of the parameter group)' if setting else ''
    which = 'all' if differing == groups else f'{differing} of'
    where = f'in {which} {groups} parameter groups; group {first} shown'
    return f' ({setting}, {where})' if setting else f' ({where})'


def scheduler_differences(built, saved, configs=None) -> List[str]:
    """Differences between the config's schedulers and the checkpoint's, in the order mmengine
    pairs them (it zips the two lists, so another count pairs the wrong ones). ``configs``, the
    config's ``param_scheduler`` list, lets epoch counts converted to iterations that only
    another epoch length changed (:func:`recounted_entries`) go unlisted."""
    differences = []
    for name, ours, theirs in _scheduler_lists(built, saved):
        if len(ours) != len(theirs):
            differences.append(f'{name}param_scheduler: config {len(ours)} schedulers, checkpoint '
                               f'{len(theirs)} (mmengine pairs them in order)')
        entries = configs if isinstance(configs, (list, tuple)) and not name else []
        for index, (scheduler, state) in enumerate(zip(ours, theirs)):
            own = scheduler.state_dict()
            recounted = recounted_entries(entries[index], state) if index < len(entries) else ()
            for key in sorted((own.keys() | state.keys()) - set(SCHEDULER_PROGRESS) -
                              set(recounted)):
                if not _same(own.get(key), state.get(key)):
                    differences.append(
                        f'{name}param_scheduler[{index}] ({type(scheduler).__name__}) {key}: '
                        f'config {own.get(key)}, checkpoint {state.get(key)}'
                        f'{_unit(key, own)}')
    return differences


def recounted_entries(config: dict, state: dict) -> Tuple[str, ...]:
    """The iteration counts of a scheduler the config counts in epochs
    (``convert_to_iter_based``) that equal the config's epochs times one epoch length: the
    checkpoint was written at another batch size or number of processes (which the train
    loop warns about), not with another schedule. Empty when the epochs themselves differ."""
    if not (isinstance(config, dict) and config.get('convert_to_iter_based')
            and config.get('by_epoch', True) and isinstance(config.get('end'), int)):
        return ()
    begin, end = config.get('begin', 0), config['end']
    length = state.get('end', 0) // end if end > 0 else 0
    if length < 1 or (state.get('begin'), state.get('end')) != (begin * length, end * length):
        return ()
    same_t_max = 'T_max' not in config or state.get('T_max') == config['T_max'] * length
    return ('begin', 'end', 'total_iters') + (('T_max', ) if same_t_max else ())


def _param_groups(built: dict, saved: dict) -> Iterator[Tuple[str, list, list]]:
    """(label, config groups, checkpoint groups) of one optimiser, or of each optimiser of an
    ``OptimWrapperDict`` (whose state is ``{name: state}``)."""
    if 'param_groups' in built:
        if 'param_groups' in saved:
            yield '', built['param_groups'], saved['param_groups']
        return
    for name, state in built.items():
        if isinstance(state, dict) and isinstance(saved.get(name), dict):
            yield from ((f'{name}.{label}', ours, theirs)
                        for label, ours, theirs in _param_groups(state, saved[name]))


def _scheduler_lists(built, saved) -> Iterator[Tuple[str, list, list]]:
    if isinstance(built, dict):
        for name, schedulers in built.items():
            if isinstance(saved, dict) and name in saved:
                yield f'{name}.', schedulers, saved[name]
    elif isinstance(saved, list):
        yield '', built, saved


def _unit(key: str, state: dict) -> str:
    if key not in ('begin', 'end', 'T_max', 'total_iters', 'milestones', 'step_size'):
        return ''
    return ' epochs' if state.get('by_epoch') else ' iterations'


def _same(ours, theirs) -> bool:
    """Equal, with tuples and lists alike (checkpoints store plain lists) and floats equal to
    rounding (a config's ``1.5e-4 * 2048 / 256`` against its stored result)."""
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    if all(isinstance(value, (int, float)) and not isinstance(value, bool)
           for value in (ours, theirs)):
        return math.isclose(ours, theirs, rel_tol=1e-9)
    return ours == theirs


def resumed_path(runner) -> Optional[str]:
    """The file a resuming runner reads: ``load_from`` or the work dir's latest checkpoint, as
    mmengine's ``load_or_resume`` picks it (mmengine keeps both private)."""
    return runner._load_from or find_latest_checkpoint(runner.work_dir)
