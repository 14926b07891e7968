"""Warn when a config's parameter schedule does not span its training, or warms up in one step.

The published recipes write the length of training three times: ``max_epochs`` (a variable),
``train_cfg.max_epochs`` (what the loop runs) and the schedulers' ``end`` / ``T_max`` (what
the lr follows), the last two computed from the first when the file that defines them is read.
An ablation that shortens training by inheritance (``max_epochs = 100`` in a child config) or
on the command line (``--cfg-options train_cfg.max_epochs=100``) changes one of them: the run
then stops a quarter of the way down an 800-epoch cosine, or spends its last epochs at the
final lr, and reports a worse result for the wrong reason. Nothing in mmengine checks it.
"""
import ast
import logging
from typing import Any, Collection, Dict, List, Optional, Tuple

from mmengine.logging import print_log
from mmengine.optim.scheduler.param_scheduler import INF as UNBOUNDED
from mmengine.optim.scheduler.param_scheduler import LinearParamScheduler

# Schedulers that change a value on the way and then leave it where the config set it: a
# schedule that ends with one of them before training does loses nothing.
WARMUP_TYPES = ('LinearLR', 'LinearParamScheduler', 'LinearMomentum', 'ConstantLR',
                'ConstantParamScheduler', 'ConstantMomentum')


LENGTH_VARIABLES = ('max_epochs', 'max_iters')
# The warmup's length, written beside the training length in every schedule file, and as dead
# once the file that uses it was read.
WARMUP_VARIABLES = ('warmup_epochs', 'warmup_iters')


def warn_schedule_length(cfg, path, cfg_options=None) -> None:
    """Log a warning for each way ``cfg`` (read from ``path``, then ``cfg_options`` applied)
    has its schedule and training length disagree. A length the command line sets in
    ``train_cfg`` itself, or a warmup it sets in ``param_scheduler``, is what the user means;
    the file's variable is then left behind."""
    overridden = {key.split('.', 1)[1] for key in (cfg_options or {})
                  if key.startswith('train_cfg.')}
    if _sets_a_warmup(cfg, cfg_options or {}):
        overridden.update(WARMUP_VARIABLES)  # the warmup set where it runs
    given = [key for key in (cfg_options or {}) if key in LENGTH_VARIABLES + WARMUP_VARIABLES]
    assigned = [name for name in dict.fromkeys(assigned_variables(path) + given)
                if name not in overridden or name in given]
    for message in schedule_length_problems(cfg, assigned):
        print_log(f'{path}: {message}', logger='current', level=logging.WARNING)


def _sets_a_warmup(cfg, cfg_options) -> bool:
    """Whether an option sets the span of a warmup scheduler: the whole ``param_scheduler``,
    one warmup entry, or its ``begin`` / ``end`` (``param_scheduler.0.end=8000``), not another
    setting of the schedule (``param_scheduler.1.eta_min``)."""
    schedulers = _configured_schedulers(cfg)
    for key in cfg_options:
        parts = key.split('.')
        if parts[0] != 'param_scheduler':
            continue
        if len(parts) == 1:
            return True
        index = int(parts[1]) if parts[1].isdigit() else None
        if index is not None and index < len(schedulers) and \
                isinstance(schedulers[index], dict) and \
                schedulers[index].get('type') in WARMUP_TYPES and \
                (len(parts) == 2 or parts[2] in ('begin', 'end')):
            return True
    return False


def _configured_schedulers(cfg) -> list:
    """The config's ``param_scheduler`` as a list (mmengine also takes one dict); empty when
    it has none, or something no check here can read."""
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        return [schedulers]
    return list(schedulers) if isinstance(schedulers, (list, tuple)) else []


def assigned_variables(path) -> List[str]:
    """The length variables that the file itself assigns at its top level. Only there is a
    variable that differs from ``train_cfg`` a change that did not reach it; an inherited one
    that differs is a base's value that ``--cfg-options train_cfg.max_epochs=...`` (the
    documented way) has left behind, and harmless."""
    with open(path, encoding='utf-8') as source:
        tree = ast.parse(source.read(), str(path))
    targets = [target for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
               for target in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return [target.id for target in targets if isinstance(target, ast.Name)
            and target.id in LENGTH_VARIABLES + WARMUP_VARIABLES]


def schedule_length_problems(cfg, assigned: Collection[str] = LENGTH_VARIABLES) -> List[str]:
    """What is wrong, one sentence each; empty for a consistent config. A length variable is
    compared with ``train_cfg`` only when it is in ``assigned`` (:func:`assigned_variables`)."""
    train_cfg = cfg.get('train_cfg') or {}
    problems = []
    for variable in assigned:
        if variable in cfg and variable in train_cfg and cfg[variable] != train_cfg[variable]:
            problems.append(
                f'the variable {variable} ({cfg[variable]}) differs from train_cfg.{variable} '
                f'({train_cfg[variable]}), which is the one the loop runs: the variable was '
                'copied into train_cfg and param_scheduler when the file that uses it was read, '
                f'so changing it later changes neither; set train_cfg.{variable} and the '
                'schedulers\' end (and T_max)')
    length = _training_length(train_cfg)
    schedulers = _configured_schedulers(cfg)
    problems += filter(None, (_unused_warmup_variable(cfg, variable, schedulers)
                              for variable in assigned if variable in WARMUP_VARIABLES))
    if length is None:
        return problems
    total, unit, by_epoch = length
    counted = [(index, scheduler) for index, scheduler in enumerate(schedulers)
               if isinstance(scheduler, dict) and scheduler.get('by_epoch', True) == by_epoch]
    problems += filter(None, (_unfinished_cosine(index, scheduler, unit)
                              for index, scheduler in counted))
    # mmengine's schedulers without ``end`` run to the end of training (its ``INF``)
    ends = [(scheduler.get('end', UNBOUNDED), index, scheduler) for index, scheduler in counted]
    bounded = [entry for entry in ends if entry[0] < UNBOUNDED]
    if not bounded:
        return problems
    end, index, last = max(bounded, key=lambda entry: entry[0])
    name = f'param_scheduler[{index}] ({last.get("type")})'
    if end > total:
        problems.append(
            f'training stops at {unit} {total} (train_cfg), before {name} ends at {unit} {end}: '
            'the lr never reaches the end of its schedule; set the schedulers\' end (and T_max) '
            'to the training length')
    elif end < total and last.get('type') not in WARMUP_TYPES:
        problems.append(
            f'{name} ends at {unit} {end}, but training runs to {unit} {total} (train_cfg): '
            f'{unit}s {end}-{total} run at the final lr of the schedule; set its end (and '
            'T_max) to the training length')
    return problems


def mirrored_values(cfg) -> Dict[str, Any]:
    """The values the config's length and warmup variables have where they were copied:
    ``train_cfg``'s length, the end of the warmup (:func:`_warmup_of`). A flattened config
    (``print_config.py --out``) writes its variables with these: written as read, a length
    ``--cfg-options train_cfg.max_epochs=1`` changed would leave ``max_epochs = 12`` in the
    file, which would then warn that the user had changed the variable too late."""
    train_cfg = cfg.get('train_cfg') or {}
    schedulers = _configured_schedulers(cfg)
    values = {variable: train_cfg[variable] for variable in LENGTH_VARIABLES
              if variable in cfg and variable in train_cfg}
    for variable in WARMUP_VARIABLES:
        warmup = _warmup_of(variable, schedulers) if variable in cfg else None
        if warmup is not None and 'end' in warmup[1]:
            values[variable] = warmup[1]['end']
    return values


def _warmup_of(variable: str, schedulers) -> Optional[Tuple[int, dict]]:
    """``(index, scheduler)`` of the warmup a warmup variable is copied into: the first
    scheduler of its unit (epochs or iterations) when that is a warmup type; else None."""
    by_epoch = variable == 'warmup_epochs'
    first = next(((index, scheduler) for index, scheduler in enumerate(schedulers)
                  if isinstance(scheduler, dict)
                  and bool(scheduler.get('by_epoch', True)) == by_epoch), None)
    return first if first is not None and first[1].get('type') in WARMUP_TYPES else None


def _unused_warmup_variable(cfg, variable: str, schedulers) -> Optional[str]:
    """A warmup variable that differs from the end of the warmup it was copied into
    (:func:`_warmup_of`)."""
    first = _warmup_of(variable, schedulers)
    if (variable not in cfg or first is None
            or first[1].get('end', cfg[variable]) == cfg[variable]):
        return None
    index, warmup = first
    by_epoch = variable == 'warmup_epochs'
    unit = 'epoch' if by_epoch else 'iteration'
    return (f'the variable {variable} ({cfg[variable]}) differs from the end of the warmup, '
            f'param_scheduler[{index}] ({warmup.get("type")}) ends at {unit} {warmup["end"]}: '
            'the variable was copied into param_scheduler when the file that uses it was read, '
            f'so changing it later changes nothing; set param_scheduler.{index}.end and the '
            f'next scheduler\'s begin (and T_max)')


def _training_length(train_cfg) -> Optional[Tuple[int, str, bool]]:
    """(length, unit, whether schedulers counted in that unit are ``by_epoch``), or None for
    a loop whose length the config does not say."""
    if 'max_epochs' in train_cfg:
        return int(train_cfg['max_epochs']), 'epoch', True
    if 'max_iters' in train_cfg:
        return int(train_cfg['max_iters']), 'iteration', False
    return None


def _unfinished_cosine(index: int, scheduler: dict, unit: str) -> Optional[str]:
    """A cosine whose half period is not its span: it stops short of ``eta_min`` or turns
    back up before its end."""
    if 'T_max' not in scheduler or 'end' not in scheduler:
        return None
    span = scheduler['end'] - scheduler.get('begin', 0)
    if scheduler['T_max'] == span:
        return None
    return (f'param_scheduler[{index}] ({scheduler.get("type")}) has T_max={scheduler["T_max"]} '
            f'but spans {span} {unit}s (begin {scheduler.get("begin", 0)}, end '
            f'{scheduler["end"]}): its cosine does not end at eta_min at its end; make T_max '
            'end - begin')


def empty_scheduler_spans(cfg) -> List[str]:
    """The schedulers of ``cfg`` that do not end after they begin, one sentence each, in the
    config's units (epochs for ``by_epoch``) and with what to change.

    mmengine refuses such a scheduler only when the Runner builds it, after the model, with
    ``end should be larger than begin`` in iterations when it converts epochs, naming no
    entry. A run shortened on the command line makes one easily: the demo at
    ``train_cfg.max_epochs=1`` and ``param_scheduler.1.end=1`` leaves its cosine, which begins
    after the 1-epoch warmup, no epoch to run in."""
    schedulers = _configured_schedulers(cfg)
    problems = []
    for index, scheduler in enumerate(schedulers):
        if not isinstance(scheduler, dict):
            continue
        begin, end = scheduler.get('begin', 0), scheduler.get('end', UNBOUNDED)
        if not (_is_number(begin) and _is_number(end)) or end > begin:
            continue
        unit = 'epoch' if scheduler.get('by_epoch', True) else 'iteration'
        problems.append(
            f'param_scheduler[{index}] ({scheduler.get("type")}) begins at {unit} '
            f'{_count(begin)} and ends at {unit} {_count(end)}: a scheduler must end after it '
            'begins (mmengine refuses it when training starts); set '
            f'param_scheduler.{index}.end after {_count(begin)}'
            f'{_begin_earlier(schedulers, index)}{_train_longer(cfg, scheduler, unit)}')
    return problems


def _begin_earlier(schedulers, index: int) -> str:
    """How to make room before scheduler ``index``: shorten the one of its unit that ends
    where it begins (the warmup before a cosine), with values when epochs may be fractions
    (``convert_to_iter_based``: mmengine rounds them to iterations)."""
    scheduler = schedulers[index]
    begin, end = scheduler.get('begin', 0), scheduler['end']
    by_epoch = scheduler.get('by_epoch', True)
    before = next((earlier for earlier, entry in enumerate(schedulers[:index])
                   if isinstance(entry, dict) and entry.get('end') == begin
                   and entry.get('by_epoch', True) == by_epoch), None)
    if before is None:
        return ''
    entry = schedulers[before]
    unit = 'epoch' if by_epoch else 'iteration'
    hint = (f', or begin it earlier: param_scheduler[{before}] ({entry.get("type")}) runs to '
            f'{unit} {_count(begin)}, where this one begins; shorten it '
            f'(param_scheduler.{before}.end and param_scheduler.{index}.begin')
    middle = (entry.get('begin', 0) + end) / 2
    if not (by_epoch and scheduler.get('convert_to_iter_based') and
            _is_number(entry.get('begin', 0)) and entry.get('begin', 0) < middle):
        return hint + ')'
    example = (f'param_scheduler.{before}.end={_count(middle)} '
               f'param_scheduler.{index}.begin={_count(middle)}')
    if 'T_max' in scheduler:
        example += f' param_scheduler.{index}.T_max={_count(end - middle)}'
    return f'{hint}, e.g. {example}: with convert_to_iter_based epochs may be fractions)'


def _train_longer(cfg, scheduler: dict, unit: str) -> str:
    """The other way out when training itself ends where the scheduler begins."""
    length = _training_length(cfg.get('train_cfg') or {})
    if length is None or length[1] != unit or length[0] > scheduler.get('begin', 0):
        return ''
    key = 'max_epochs' if unit == 'epoch' else 'max_iters'
    return f'; or train longer (train_cfg.{key}={_count(length[0])} ends where it begins)'


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value) -> str:
    """A number of epochs or iterations as written: ``1``, ``0.5``."""
    return str(int(value)) if float(value).is_integer() else str(value)


def one_step_warmups(param_schedulers) -> List[str]:
    """The built schedulers (``runner.param_schedulers``: a list, or a dict of lists per
    optimiser) whose linear ramp spans a single step, one sentence each.

    mmengine's linear schedulers reach ``end_factor`` at their last step by multiplying the
    current value; over one step they apply ``start_factor`` and stop there, and the
    schedulers after them scale that value: the lr stays ``start_factor`` times too small for
    the whole run. A warmup given in epochs and converted to iterations spans one step when an
    epoch is one batch (a demo shrunk to a batch of images), which is known only once the
    dataloader is built, so this checks the built schedulers, not the config."""
    if isinstance(param_schedulers, dict):
        named = [(f'param_scheduler[{key!r}]', schedulers)
                 for key, schedulers in param_schedulers.items()]
    else:
        named = [('param_scheduler', param_schedulers or [])]
    problems = []
    for name, schedulers in named:
        for index, scheduler in enumerate(schedulers):
            if (not isinstance(scheduler, LinearParamScheduler)
                    or scheduler.end - scheduler.begin != 1
                    or scheduler.start_factor == scheduler.end_factor):
                continue
            unit = 'epoch' if scheduler.by_epoch else 'iteration'
            problems.append(
                f'{name}[{index}] ({type(scheduler).__name__}) spans one {unit} ({unit}s '
                f'{scheduler.begin} to {scheduler.end}): mmengine applies its start_factor '
                'there and never reaches end_factor, and the schedulers after it scale that '
                f'value, so the lr stays lr x {scheduler.start_factor:g} for the whole run; '
                'warm up over 2 or more iterations (more than one batch per epoch, or '
                'by_epoch=False with end in iterations)')
    return problems
