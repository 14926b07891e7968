"""The scalars a run logged, read back from mmengine's ``vis_data/scalars.json``.

Every run writes them through the default ``LocalVisBackend``: one JSON record per line,
``<work_dir>/<timestamp>/vis_data/scalars.json``, one run folder per start (a resumed run gets
a folder of its own). Training records carry ``iter`` (and ``epoch`` when the run counts
epochs); a validation record has no iteration of its own. The tools that read these logs
(``analyze_logs.py``, ``train_speed.py``, the demo, the Fashion-MNIST studies) read them here,
so that all of them find the same files, survive a last line cut short by a killed run and
report a corrupt line by file and number.
"""
import json
import sys
from pathlib import Path
from typing import Iterable, List, NamedTuple, Tuple, Union

from .errors import LaunchError

SCALARS = Path('vis_data') / 'scalars.json'


def scalars_files(run: Union[str, Path], missing_ok: bool = False) -> List[Path]:
    """The scalars files of ``run``, oldest first: the file itself, a run folder's one, or those
    of every run folder of a work dir. Run folders are named by their start time
    (YYYYMMDD_HHMMSS), so name order is time order. A path that is not there, or a folder
    without any, is an error naming where they were looked for, unless ``missing_ok`` (a run
    that has not started yet): then none."""
    path = Path(run)
    if path.is_file():
        return [path]
    if (path / SCALARS).is_file():
        return [path / SCALARS]
    files = sorted(path.glob(f'*/{SCALARS}'))
    if files or missing_ok:
        return files
    if not path.is_dir():
        raise LaunchError(f'{run}: no such file or folder')
    raise LaunchError(f'{run}: no scalars.json found in {path / SCALARS} nor in '
                      f'{path}/<timestamp>/{SCALARS} (where mmengine writes the scalars of '
                      'each run of a work dir)')


def read_records(path: Union[str, Path]) -> List[dict]:
    """The records of one scalars file. A last line cut short (a run killed while writing it,
    or one still writing) is left out with a note; any other line that is not JSON is an error
    naming the file and the line."""
    lines = _read_text(path).splitlines()
    last = max((number for number, line in enumerate(lines, 1) if line.strip()), default=0)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < last:
                raise LaunchError(f'{path}, line {number}: not a JSON record ({error})') from None
            print(f'{path}: its last line is cut short; left out', file=sys.stderr)
    return records


def _read_text(path: Union[str, Path]) -> str:
    """The text of a scalars file; a binary file (a checkpoint given instead of the log: JSON
    text holds no NUL byte) or one that is not UTF-8 is an error naming it and what is
    expected."""
    data = Path(path).read_bytes()
    expected = (f"expected mmengine's <work_dir>/<timestamp>/{SCALARS.as_posix()}, one JSON "
                'record per line')
    if b'\0' in data:
        raise LaunchError(f'{path}: a binary file (a checkpoint?), not a scalars log; {expected}')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as error:
        raise LaunchError(f'{path}: not UTF-8 text (byte {data[error.start]:#04x} at offset '
                          f'{error.start}), not a scalars log; {expected}') from None


class Replacement(NamedTuple):
    """Earlier runs that ``run`` leaves out whole: it starts at ``iteration``, at or before
    their first logged iteration, so none of their records stands."""
    run: Path
    iteration: int
    replaced: List[Path]
    afresh: bool  # no earlier run keeps a record: it did not resume from any of them

    def message(self) -> str:
        if self.afresh:
            them = ('the run before it is' if len(self.replaced) == 1 else
                    f'the {len(self.replaced)} runs before it are')
            return (f'run {run_name(self.run)} started afresh at iteration {self.iteration} '
                    f'(not a resume): {them} left out')
        names = ', '.join(f'run {run_name(path)}' for path in self.replaced)
        them = 'that run is' if len(self.replaced) == 1 else 'those runs are'
        return (f'run {run_name(self.run)} resumed at iteration {self.iteration}, before '
                f'{names} started: {them} left out')


class Joined(NamedTuple):
    """The history of successive runs, the runs that contribute to it (oldest first) and the
    runs each later run left out."""
    history: List[Tuple[int, dict]]
    kept: List[Path]
    replacements: List[Replacement]


def run_name(path: Union[str, Path]) -> str:
    """The run folder's name (its start time) of a scalars file."""
    path = Path(path)
    return path.parent.parent.name if path.name == SCALARS.name else path.name


def training_history(files: Iterable[Union[str, Path]]) -> List[Tuple[int, dict]]:
    """The ``(iteration, record)`` history of :func:`join_runs`."""
    return join_runs(files).history


def join_runs(files: Iterable[Union[str, Path]]) -> Joined:
    """One ``(iteration, record)`` history of the successive runs logged in ``files`` (oldest
    first, as :func:`scalars_files` gives them). A training record is at its own ``iter``, a
    validation record at the last training iteration logged before it. A run that resumed
    starts at an iteration its predecessor may already have logged (it trained on past the
    checkpoint before it stopped): each run replaces the records of those before it from its
    first training iteration on, so a run started afresh replaces all before it. Which runs
    a later one left out whole is noted, so that a reader is told instead of finding fewer
    runs in the history than in the work dir."""
    history, replacements = [], []  # history: (iteration, record, file)
    for path in map(Path, files):
        run = _with_iterations(read_records(path))
        first = next((record['iter'] for _, record in run if 'iter' in record), None)
        if first is not None:
            before = _runs_of(history)
            history = [entry for entry in history if entry[0] < first]
            after = _runs_of(history)
            replaced = [earlier for earlier in before if earlier not in after]
            if replaced:
                replacements.append(Replacement(path, first, replaced, afresh=not after))
        history.extend((iteration, record, path) for iteration, record in run)
    return Joined([(iteration, record) for iteration, record, _ in history],
                  _runs_of(history), replacements)


def _runs_of(history: List[Tuple[int, dict, Path]]) -> List[Path]:
    """The runs with a record in ``history``, in order."""
    return list(dict.fromkeys(path for _, _, path in history))


def _with_iterations(records: List[dict]) -> List[Tuple[int, dict]]:
    """``(iteration, record)`` pairs: a training record's own ``iter``, a validation record's
    the last training iteration before it (0 before any)."""
    pairs, iteration = [], 0
    for record in records:
        iteration = record.get('iter', iteration)
        pairs.append((iteration, record))
    return pairs
