"""Per-sample seeds: a sample's random transforms depend on (seed, epoch, index) only.

mmengine seeds each DataLoader worker once, from (seed, rank, worker id). What a worker draws
for a sample then depends on everything that worker drew before: a resumed run (fresh workers),
persistent workers (their generators carry over from epoch to epoch), another number of workers
or of processes all give other crops and flips for the same sample. Here the sampler attaches a
seed to every index it yields (:class:`SeededIndex`), and datasets that mix in
:class:`SeededSamples` run the sample's pipeline with Python's, numpy's and torch's CPU
generators seeded from it. The augmentation of sample ``i`` in epoch ``e`` is then the same
whichever process, worker and history fetch it.
"""
import contextlib
import random

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap bijection of 64-bit ints whose outputs look random."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


def derive_seed(*keys: int) -> int:
    """A 32-bit seed (numpy's limit) determined by ``keys``, e.g. (seed, epoch, index).

    Pure integer arithmetic, about a microsecond: it runs for every sample in the main process.
    """
    state = 0
    for key in keys:
        state = _mix64((state ^ int(key)) & _MASK64)
    return state & 0xFFFFFFFF


# Separate streams, so that a sample's seed never equals an iteration's.
_SAMPLE_STREAM, _ITERATION_STREAM = 1, 2


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the random transforms of sample ``index`` in ``epoch``."""
    return derive_seed(_SAMPLE_STREAM, seed, epoch, index)


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """Seed of what training process ``rank`` draws in ``iteration`` (masks, dropout)."""
    return derive_seed(_ITERATION_STREAM, seed, rank, iteration)


class SeededIndex(int):
    """A dataset index that carries the seed of its sample's random transforms.

    It is an ``int``, so any dataset can use it as an index; datasets without
    :class:`SeededSamples` just ignore the seed.
    """

    def __new__(cls, index: int, seed: int):
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):  # DataLoader workers receive indices pickled
        return SeededIndex, (int(self), self.seed)

    def __repr__(self):
        return f'SeededIndex({int(self)}, seed={self.seed})'


@contextlib.contextmanager
def seeded_generators(seed: int):
    """Seed Python's ``random``, ``numpy.random`` and torch's CPU generator; restore them after.

    Restoring matters without workers, where samples load in the training process: loading must
    not move the generators that masks and dropout draw from. CUDA generators are not touched
    (transforms run on the CPU).
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class SeededSamples:
    """Mixin for mmengine datasets: fetched with a :class:`SeededIndex`, a sample's pipeline
    (and mmengine's re-draw of another index when the pipeline rejects one) runs under
    :func:`seeded_generators` with the index's seed. Put it before ``BaseDataset`` in the bases.
    """

    def __getitem__(self, idx):
        seed = getattr(idx, 'seed', None)
        if seed is None:
            return super().__getitem__(idx)
        with seeded_generators(seed):
            return super().__getitem__(int(idx))
