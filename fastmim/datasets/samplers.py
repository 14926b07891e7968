"""Samplers that let a run resume exactly, also in the middle of an epoch, without loading the
samples it skips."""
import itertools

from mmengine.dataset import DefaultSampler, InfiniteSampler

from fastmim.registry import DATA_SAMPLERS

from .sample_seeds import SeededIndex, sample_seed


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (same order: shuffled by ``seed + epoch``, split across
    ranks), with what an exact resume needs:

    - ``set_start_index(n)`` makes the next pass skip the first ``n`` indices of this rank's
      epoch, so a run resumed from a checkpoint saved inside an epoch continues with the batch
      the interrupted run would have drawn next, without loading the skipped ones;
    - every index is a :class:`SeededIndex` whose seed is ``sample_seed(seed, epoch, index)``,
      so datasets with ``SeededSamples`` augment a sample the same way whatever process or
      worker loads it, and whatever that worker loaded before (persistent workers, resumes).

    ``len()`` stays the full epoch: the train loop numbers a resumed epoch's batches from where
    it stopped, so progress logs and end-of-epoch checks keep their meaning.

    Args:
        dataset, shuffle, seed, round_up: as ``DefaultSampler``.
    """

    def __init__(self, dataset, shuffle=True, seed=None, round_up=True):
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        self.start_index = 0

    def set_start_index(self, start_index: int) -> None:
        """Start passes at this rank's ``start_index``-th index of the epoch (0: from the start)."""
        if not 0 <= start_index <= self.num_samples:
            raise ValueError(f'ResumableSampler: start_index must be in [0, {self.num_samples}] '
                             f'(samples of this rank per epoch), got {start_index}')
        self.start_index = start_index

    def __iter__(self):
        indices = list(super().__iter__())[self.start_index:]
        return (SeededIndex(index, sample_seed(self.seed, self.epoch, index)) for index in indices)


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(InfiniteSampler):
    """mmengine's ``InfiniteSampler`` (the iteration-based loops' sampler: one endless stream of
    permutations drawn from ``seed``, split across ranks), with what a fast, exact resume needs:

    - ``set_start_position(n)`` makes the next pass start at position ``n`` of the whole
      job's stream: rank ``r`` of ``W`` takes positions ``n + r``, ``n + r + W``, ... mmengine's
      ``IterBasedTrainLoop`` skips the batches trained before a resume by loading them all
      (160k-iteration segmentation runs spend tens of minutes on it);
      ``ResumableIterBasedTrainLoop`` skips the positions here instead. Counted over the job,
      not per rank, so a run resumed with another number of processes (or batch size) starts
      at the first position the checkpoint's run had not trained, whatever it divides into;
    - every index is a :class:`SeededIndex` whose seed is ``sample_seed(seed, pass, index)``
      (``pass``: which permutation of the stream it belongs to), so datasets with
      ``SeededSamples`` augment a sample the same way whether or not the batches before it were
      loaded in this process.

    The indices are mmengine's, in mmengine's order. Each pass over the sampler starts the
    stream anew (mmengine's continues one stream); the train loop iterates it once.

    Args:
        dataset, shuffle, seed: as ``InfiniteSampler``.
    """

    def __init__(self, dataset, shuffle=True, seed=None):
        super().__init__(dataset, shuffle=shuffle, seed=seed)
        self.start_position = 0

    def set_start_position(self, start_position: int) -> None:
        """Start passes at position ``start_position`` of the job's stream (0: from the
        start); this rank takes its share of the positions from there."""
        if start_position < 0:
            raise ValueError(f'ResumableInfiniteSampler: start_position must be >= 0, got '
                             f'{start_position}')
        self.start_position = start_position

    def __iter__(self):
        # mmengine's stream, numbered: each permutation of it (a pass) holds ``size`` indices.
        numbered = enumerate(self._infinite_indices())
        of_rank = itertools.islice(numbered, self.start_position + self.rank, None,
                                   self.world_size)
        for position, index in of_rank:
            yield SeededIndex(index, sample_seed(self.seed, position // self.size, index))
