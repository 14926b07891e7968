"""Shared fixtures.

Test isolation for mmengine's process-wide default scope: a Runner makes its config's
``default_scope`` (``mmdet``, ``mmseg``, ...) the current scope of the whole process; registry
builds by plain name in later tests would then look in that library's registries. Every test
starts in fastmim's scope, as a user's fastmim process does.

And for its named loggers and message hubs: a Runner names them after its config file and the
second it starts in, and takes over an existing instance of that name, so a run that started
in the same second as the previous test's logged into that test's work dir and added to its
scalars (one run per process, as a user's, never meets this). Its visualizer likewise wrote
into the previous test's vis_data, which pytest has removed once that test passed. Each
test's instances, of every such mmengine class, are dropped after it.

And for the unreadable image files already named in a warning (once per file and process):
each test warns of its own, as a fresh process would, though fixtures share files between
tests.
"""
import importlib.util
import logging
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from mmengine.utils import ManagerMixin
from mmengine.registry import init_default_scope


@pytest.fixture(autouse=True)
def fastmim_default_scope():
    init_default_scope('fastmim')


def _named_instance_classes():
    """mmengine's classes of named, process-wide instances (loggers, message hubs,
    visualizers of every library), each with its own table (``ManagerMeta``)."""
    found, waiting = [], [ManagerMixin]
    while waiting:
        cls = waiting.pop()
        found.append(cls)
        waiting.extend(cls.__subclasses__())
    return found


@pytest.fixture(autouse=True)
def fresh_named_instances():
    before = {cls: set(cls._instance_dict) for cls in _named_instance_classes()}
    yield
    for cls in _named_instance_classes():  # with those the test imported
        for name in set(cls._instance_dict) - before.get(cls, set()):
            instance = cls._instance_dict.pop(name)
            for handler in getattr(instance, 'handlers', ())[:]:  # the logger's file
                instance.removeHandler(handler)
                handler.close()


@pytest.fixture(autouse=True)
def unreadable_files_warned_anew(monkeypatch):
    loading = sys.modules.get('fastmim.datasets.transforms.loading')
    if loading is not None:  # imported by the test itself: fresh already
        monkeypatch.setattr(loading, '_warned_unreadable_files', set())


@pytest.fixture(autouse=True, scope='session')
def child_processes_temp_files_in_basetemp(tmp_path_factory):
    """The tools that tests start (torchrun's agents, training runs stopped by a signal) leave
    folders in the temp dir (torchelastic_*, pymp-*); each run added hundreds to /tmp. Children
    make them in pytest's base temp folder instead, which goes when every test passed."""
    folder = tmp_path_factory.mktemp('child_processes_tmp')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('TMPDIR', str(folder))
        yield


# The handlers pytest started with, put back after every test.
PREEMPTION_SIGNAL_HANDLERS = {signum: signal.getsignal(signum)
                              for signum in (signal.SIGTERM, signal.SIGUSR1)}


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """A run preempted in this process (PreemptionHook's stop) leaves SIGTERM and SIGUSR1
    ignored, as a tool that exits next needs; the processes that later tests started inherited
    that and ignored the signals sent to them (a preemption test then trained to the end)."""
    yield
    for signum, handler in PREEMPTION_SIGNAL_HANDLERS.items():
        if handler is not None:
            signal.signal(signum, handler)


@pytest.fixture(scope='session')
def load_script():
    """``load_script(path)``: the module of a script that is no package (a tool, a study
    runner), executed from its file; the tests run with ``--import-mode=importlib``, which puts
    no folder of the repository on ``sys.path``."""
    def load(path):
        spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope='module')
def one_thread():
    """Tiny models run ~100x faster on one thread than on two busy cores. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LogRecords(logging.Handler):
    """The messages of the current mmengine logger, with their levels."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelno, record.getMessage()))


@pytest.fixture
def log_records(request):
    """What the current mmengine logger logs during the test (``.messages``: level, text), on a
    logger of the test's own: mmengine's current logger is the last one created."""
    from mmengine.logging import MMLogger
    records = LogRecords()
    logger = MMLogger.get_instance(f'log_records_{request.node.name}')
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


@pytest.fixture(scope='session')
def load_config_log():
    """``load_config_log(config, cfg_options=None)``: what
    ``fastmim.engine.config_loading.load_config`` logs (its warnings) while it loads
    ``config``."""
    from unittest.mock import patch

    from mmengine.logging import MMLogger

    from fastmim.engine.config_loading import load_config

    def load(config, cfg_options=None):
        logged = []
        with patch.object(MMLogger.get_current_instance(), 'log',
                          lambda level, message: logged.append(message)):
            load_config(str(config), cfg_options)
        return logged
    return load


@pytest.fixture(scope='session')
def groups_by_name():
    """``groups_by_name(model, param_groups)``: ``{parameter name: its optimiser group}``,
    checking that no parameter is in two groups (the layer-decay constructor's tables)."""
    def by_name(model, groups):
        names = {id(param): name for name, param in model.named_parameters()}
        counts = Counter(id(param) for group in groups for param in group['params'])
        assert max(counts.values()) == 1, 'a parameter is in more than one group'
        return {names[key]: group for group in groups for key in map(id, group['params'])}
    return by_name


@pytest.fixture(scope='session')
def run_ranks():
    """``run_ranks(script, *args, timeout=120, env=None)``: run ``python -c script RANK *args``
    as ranks 0 and 1 of a two-process job and wait for both; a rank still running at the
    timeout is killed (a rank left waiting in a collective waits for ever). Asserts that both
    exited 0, naming their output otherwise."""
    import subprocess
    import sys

    def run(script, *args, timeout=120, env=None):
        ranks = [subprocess.Popen([sys.executable, '-c', script, str(rank), *map(str, args)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
                 for rank in range(2)]
        try:
            outputs = [process.communicate(timeout=timeout)[0] for process in ranks]
        finally:
            for process in ranks:
                process.kill()
        assert [process.returncode for process in ranks] == [0, 0], outputs
        return outputs
    return run


def _release_positions(side: int, target_side: int):
    """The releases' geometric offsets, restated from their description: gaps 1, q, q^2, ...
    from the centre, q bisected in (0.5, 2) to 1e-6 so that they add up to target_side // 2."""
    low, high, steps = 0.5, 2.0, side // 2
    while high - low > 1e-6:
        ratio = (low + high) / 2
        if sum(ratio**i for i in range(steps)) > target_side // 2:
            high = ratio
        else:
            low = ratio
    gaps = [ratio**i for i in range(steps)]
    right = [sum(gaps[:i + 1]) for i in range(steps)]
    return [-p for p in reversed(right)] + [0.0] + right


@pytest.fixture(scope='session')
def release_table_resampling():
    """Independent reference for the releases' Swin-table resampling (SimMIM's and FastMIM's
    ``remap_mode='simmim'``): a ``(rows, heads)`` table of the ``src`` window -> the ``dst``
    window's, on the geometric offsets, read by SciPy's ``RegularGridInterpolator``
    (cubic, or linear for a window of 2; its own spline code, not the FITPACK fit the toolbox
    calls), the points beyond the outermost offset given the end value as ``interp2d`` did.
    The releases' windows are square (an int); an ``(h, w)`` pair places each axis on its own
    offsets, as the toolbox does for non-square windows (both sides cubic, or both linear)."""
    import numpy as np
    from scipy.interpolate import RegularGridInterpolator

    def axis(src_side: int, dst_side: int):
        positions = np.array(_release_positions(src_side, dst_side))
        offsets = np.clip(np.arange(-(dst_side // 2), dst_side // 2 + 1, dtype=float),
                          positions[0], positions[-1])
        return positions, offsets

    def resample(table: torch.Tensor, src, dst) -> torch.Tensor:
        src, dst = ((size, size) if isinstance(size, int) else tuple(size) for size in (src, dst))
        sides = [2 * size - 1 for size in src]
        (rows, row_offsets), (columns, column_offsets) = (
            axis(side, 2 * size - 1) for side, size in zip(sides, dst))
        points = np.stack(np.meshgrid(row_offsets, column_offsets, indexing='ij'),
                          -1).reshape(-1, 2)
        method = 'cubic' if min(sides) > 3 else 'linear'
        values = table.double().numpy().reshape(*sides, -1)
        heads = [RegularGridInterpolator((rows, columns), values[..., head],
                                         method=method)(points)
                 for head in range(values.shape[-1])]
        return torch.from_numpy(np.stack(heads, axis=1)).to(table.dtype)

    return resample
