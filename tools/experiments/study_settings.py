"""Settings records of the Fashion-MNIST studies' runs (both runners): what a run was trained
with, written next to it before it starts, and the refusal of a finished or stopped run whose
record differs from the command's. Without them a rerun under other options, or from another
pre-training, would report the earlier runs' results as the new command's, or resume them under
it.

The runners supply what is theirs: the settings file's name, the weights a run starts from and
how a difference is said; the reading, comparing and wording of the differences live here.
"""
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Tuple


# Options the runner derives from where the work dir lies (a checkpoint is compared by its
# sha256): a work dir or repository moved elsewhere holds the same runs.
DERIVED_OPTIONS = ('model.backbone.init_cfg.checkpoint=',)


def command_settings(command: Optional[List[str]], derived: Tuple[str, ...] = DERIVED_OPTIONS
                     ) -> dict:
    """The config and the ``--cfg-options`` of a tools/train.py or tools/test.py command
    (``[python, tool, config, ..., '--cfg-options', *options]``, ``--resume`` after them for a
    training) less the options starting with one of ``derived`` and ``--resume`` (which
    commands before it lack); ``None`` for both of a command of another form (or none)."""
    if not command or '--cfg-options' not in command:
        return dict(config=None, options=None)
    options = command[command.index('--cfg-options') + 1:]
    return dict(config=osp.basename(command[2]),
                options=[option for option in options
                         if option != '--resume' and not option.startswith(derived)])


def recorded_settings(work_dir: str, settings_file: str, finished: bool,
                      checkpoint: Optional[str], digest: Optional[str],
                      derived: Tuple[str, ...] = DERIVED_OPTIONS) -> dict:
    """The settings a finished or stopped run recorded in ``settings_file``; for a run of a
    runner that recorded none, the command on the first line of its ``run.log`` (as
    :func:`command_settings` reads it, less ``derived``) and the sha256 of the checkpoint it
    would start from now (``digest``, of ``checkpoint``) if that file is older than its result
    (else ``None``: unknown), marked ``unrecorded``."""
    path = osp.join(work_dir, settings_file)
    if osp.isfile(path):
        with open(path) as f:
            return json.load(f)
    log = osp.join(work_dir, 'run.log')
    command = None
    if osp.isfile(log):
        with open(log) as f:
            command = f.readline().split()
    older = written_before(checkpoint, result_time(work_dir, finished))
    return dict(**command_settings(command, derived),
                checkpoint_sha256=digest if older else None, unrecorded=True)


def result_time(work_dir: str, finished: bool) -> float:
    """When a run's result was written (mmengine's ``scalars.json``, tools/test.py's
    ``--out``), or for a stopped one its ``last_checkpoint``."""
    if not finished:
        return osp.getmtime(osp.join(work_dir, 'last_checkpoint'))
    from fastmim.logged_scalars import scalars_files
    results = scalars_files(work_dir, missing_ok=True)
    return max(osp.getmtime(path) for path in [*results, osp.join(work_dir, 'metrics.json')]
               if osp.isfile(path))


def written_before(path: Optional[str], moment: float) -> bool:
    """Whether the file ``path`` is there and was last written no later than ``moment``."""
    return path is not None and osp.isfile(path) and osp.getmtime(path) <= moment


def option_differences(then: dict, now: dict) -> List[str]:
    """What differs between a run's recorded config and options and this command's, in
    words."""
    said = []
    if then.get('config') != now['config']:
        said.append(f'config: {now["config"]} now, {then.get("config") or "unknown"} then')
    if then.get('options') != now['options']:
        before = then.get('options')
        if before is None:
            said.append('options: unknown then (no command in its run.log)')
        else:
            added = [part for part in now['options'] if part not in before]
            dropped = [part for part in before if part not in now['options']]
            said.append('options: ' + '; '.join(
                words for words in (added and f'{" ".join(added)} now',
                                    dropped and f'{" ".join(dropped)} then') if words)
                if added or dropped else 'options: in another order')
    return said


def weights_differences(then: dict, now: dict, needed: bool, missing: str,
                        other: str) -> List[str]:
    """What differs between the weights a run recorded (``checkpoint_sha256``) and those it
    would start from now, in words: ``missing`` when it ``needed`` weights and there are none
    now, ``other`` when they are others."""
    if needed and now['checkpoint_sha256'] is None:
        return [missing]
    return [other] if then.get('checkpoint_sha256') != now['checkpoint_sha256'] else []


def held_to_settings(work_dir: str, finished: bool) -> bool:
    """Whether a run is held to this command's settings: it finished (its result would be
    reported under them), or it was stopped after saving a checkpoint (``last_checkpoint``:
    the ``iter_N.pth`` PreemptionHook saved on SIGTERM), which ``--resume`` would continue
    under them."""
    return finished or osp.isfile(osp.join(work_dir, 'last_checkpoint'))


def write_settings(work_dir: str, settings_file: str, settings: dict) -> None:
    """Record ``settings`` in ``work_dir`` (made if needed) before its run starts."""
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, settings_file), 'w') as f:
        json.dump(settings, f, indent=1)


def refuse_other_settings(other: List[Tuple[str, bool, List[str]]], fresh: str) -> None:
    """Exit in one line if ``other`` names runs (their work dir, whether they finished, what
    differs in words) of other settings than this command's: the first, and how many more;
    ``fresh`` says what ``--fresh`` does."""
    if not other:
        return
    work_dir, finished, said = other[0]
    more = f' (and {len(other) - 1} more runs)' if len(other) > 1 else ''
    sys.exit(f'error: {work_dir} {"finished" if finished else "was stopped"} with other '
             f'settings than this command ({"; ".join(said)}){more}; {fresh}')


def checkpoint_digest(path: Optional[str]) -> Optional[str]:
    """The sha256 that identifies a checkpoint across copies and moves; ``None`` without
    one."""
    from fastmim.fileio import file_sha256
    return file_sha256(path) if path and osp.isfile(path) else None
