"""ResumableSampler and per-sample seeds: a sample's augmentation depends on (seed, epoch, index)
only, not on the process, the worker or what that worker loaded before."""
import gc
import itertools
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler, InfiniteSampler, pseudo_collate
from torch.utils.data import DataLoader

from fastmim.datasets import (EmbeddedPhotos, ImageList, ResumableInfiniteSampler,
                              ResumableSampler, SeededIndex)

PIPELINE = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCrop', size=32, scale=(0.2, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]


@pytest.fixture(scope='module')
def photos():
    return EmbeddedPhotos(num_samples=8, pipeline=PIPELINE)


def test_same_order_as_default_sampler_and_start_index_skips(photos):
    resumable, default = ResumableSampler(photos, seed=3), DefaultSampler(photos, seed=3)
    for sampler in (resumable, default):
        sampler.set_epoch(2)
    order = list(default)
    assert [int(index) for index in resumable] == order
    resumable.set_start_index(5)
    assert [int(index) for index in resumable] == order[5:]
    assert len(resumable) == len(order)  # the loop numbers a resumed epoch's batches from 5
    with pytest.raises(ValueError, match=r'start_index must be in \[0, 8\]'):
        resumable.set_start_index(9)


def _stream(photos, shuffle, length):
    """mmengine's stream for one process: the positions every rank's share is cut from."""
    return list(itertools.islice(InfiniteSampler(photos, shuffle=shuffle, seed=3), length))


@pytest.mark.parametrize('shuffle', [True, False])
@pytest.mark.parametrize('rank', [0, 1])
def test_infinite_stream_is_mmengines_and_start_position_skips_it(photos, monkeypatch, shuffle,
                                                                  rank):
    """The iteration-based loops' stream, split over two ranks, skipped without loading."""
    monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda: (rank, 2))
    resumable = ResumableInfiniteSampler(photos, shuffle=shuffle, seed=3)
    of_rank = list(itertools.islice(InfiniteSampler(photos, shuffle=shuffle, seed=3), 30))
    assert [int(index) for index in itertools.islice(resumable, 30)] == of_rank
    resumable.set_start_position(22)  # inside the third pass (8 positions per pass)
    assert [int(index) for index in itertools.islice(resumable, 19)] == of_rank[11:]
    # A sample's seed is that of its pass and index, however the stream was entered.
    resumable.set_start_position(0)
    seeds = [index.seed for index in itertools.islice(resumable, 30)]
    resumable.set_start_position(22)
    assert [index.seed for index in itertools.islice(resumable, 19)] == seeds[11:]
    assert len(set(seeds)) == 30  # no sample is augmented as another
    with pytest.raises(ValueError, match='start_position must be >= 0'):
        resumable.set_start_position(-1)


@pytest.mark.parametrize('world_size', [1, 2, 3])
@pytest.mark.parametrize('start', [0, 5, 12, 13])
def test_the_ranks_go_on_at_the_start_position_of_the_job_s_stream(photos, monkeypatch,
                                                                   world_size, start):
    """Started at ``start`` (the positions a checkpoint's run trained, with whatever number
    of processes), the ranks take between them each later position of the single-process
    stream once, in turn: rank r the positions start + r, start + r + W, ... This also for a
    ``start`` the world size does not divide."""
    shares = []
    for rank in range(world_size):
        monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info',
                            lambda rank=rank: (rank, world_size))
        sampler = ResumableInfiniteSampler(photos, seed=3)
        sampler.set_start_position(start)
        shares.append([(int(index), index.seed) for index in itertools.islice(sampler, 10)])
    taken_in_turn = [shares[k % world_size][k // world_size] for k in range(10 * world_size)]
    monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda: (0, 1))
    whole = ResumableInfiniteSampler(photos, seed=3)
    stream = _stream(photos, True, start + 10 * world_size)
    assert [index for index, _ in taken_in_turn] == stream[start:]
    # seeds as the single-process stream's at those positions
    assert taken_in_turn == [(int(index), index.seed) for index in
                             itertools.islice(whole, start, start + 10 * world_size)]


def test_sample_seeds_depend_on_seed_epoch_and_index_only(photos):
    def seeds(seed, epoch):
        sampler = ResumableSampler(photos, seed=seed)
        sampler.set_epoch(epoch)
        return {int(index): index.seed for index in sampler}

    assert seeds(0, 1) == seeds(0, 1)
    assert seeds(0, 1) != seeds(0, 2)
    assert seeds(0, 1) != seeds(1, 1)
    assert len(set(seeds(0, 1).values())) == len(photos)


def test_seeded_fetch_repeats_and_leaves_the_callers_generators_alone(photos):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()

    first = photos[SeededIndex(3, seed=11)]['inputs']
    again = photos[SeededIndex(3, seed=11)]['inputs']
    other = photos[SeededIndex(3, seed=12)]['inputs']

    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def epoch_batches(dataset, num_workers, persistent, epochs=(0, 1)):
    sampler = ResumableSampler(dataset, seed=5)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=num_workers,
                        persistent_workers=persistent, collate_fn=pseudo_collate)
    batches = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        batches += [torch.stack(batch['inputs']) for batch in loader]
    return batches


def test_workers_and_persistent_workers_load_what_the_main_process_loads(photos):
    reference = epoch_batches(photos, num_workers=0, persistent=False)
    for persistent in (False, True):
        batches = epoch_batches(photos, num_workers=2, persistent=persistent)
        assert all(torch.equal(a, b) for a, b in zip(batches, reference, strict=True))
    # an epoch loaded by a fresh process (a resumed run) matches the same epoch loaded after
    # other epochs by persistent workers
    resumed = epoch_batches(photos, num_workers=2, persistent=True, epochs=(1, ))
    assert all(torch.equal(a, b) for a, b in zip(resumed, reference[4:], strict=True))


def test_a_large_file_list_holds_no_python_object_per_image(tmp_path):
    # DataLoader workers are forked: touching a Python object per image (reference counts)
    # copies its memory page into every worker, which grows with the list. mmengine's
    # serialize_data keeps the list as one numpy byte buffer instead.
    first = tmp_path / 'train' / 'n0' / 'img_0.JPEG'
    first.parent.mkdir(parents=True)
    first.write_bytes(b'')
    lines = [f'n{i % 1000}/img_{i}.JPEG' for i in range(50_000)]
    (tmp_path / 'train.txt').write_text('\n'.join(lines))
    gc.collect()
    before = len(gc.get_objects())
    dataset = ImageList('train.txt', data_root=str(tmp_path), data_prefix='train')
    gc.collect()
    assert len(dataset) == 50_000
    assert isinstance(dataset.data_bytes, np.ndarray) and not dataset.data_list
    assert len(gc.get_objects()) - before < 1_000
    assert dataset.get_data_info(49_999)['img_path'].endswith('img_49999.JPEG')
