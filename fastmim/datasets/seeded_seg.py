"""mmseg's ``BaseSegDataset`` with per-sample seeds, for segmentation configs that resume exactly.

mmseg's datasets run their pipeline on the generators of whatever process loads the sample: with
``num_workers=0`` the training process, whose generators the model's dropout and drop path have
moved since the run started, so a run resumed from a checkpoint flips and crops other samples
than the uninterrupted run did. Fetched with the seeded indices of
:class:`~fastmim.datasets.ResumableInfiniteSampler`, :class:`SeededSegDataset` runs each
sample's pipeline under that sample's seed (:class:`~fastmim.datasets.SeededSamples`), and
leaves the training process's generators as they were.

It needs mmseg, which pre-training does not: this module is imported by the configs that use it
(``custom_imports``), not by ``fastmim.datasets``.
"""
from mmseg.datasets import BaseSegDataset

from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples


@DATASETS.register_module()
class SeededSegDataset(SeededSamples, BaseSegDataset):
    """``BaseSegDataset`` (same arguments) whose samples, fetched with a
    :class:`~fastmim.datasets.SeededIndex`, are augmented from that index's seed. Used as
    ``type='fastmim.SeededSegDataset'`` in mmseg configs, with
    ``sampler=dict(type='fastmim.ResumableInfiniteSampler')`` and
    ``train_cfg=dict(type='fastmim.ResumableIterBasedTrainLoop', ...)``. Fetched with a plain
    index (validation's ``DefaultSampler``) it is ``BaseSegDataset``."""
