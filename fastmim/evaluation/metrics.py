"""Top-k classification accuracy, the number the FastMIM tables report (ImageNet top-1)."""
import warnings
from typing import List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric

from fastmim.registry import METRICS


class TrivialTopKWarning(UserWarning):
    """A reported top-k whose k covers every class: 100 whatever the model predicts."""


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, as mmpretrain's ``Accuracy`` reports it.

    An image counts as correct at ``k`` when its ground-truth class is among the ``k`` classes
    with the highest ``pred_score`` (``torch.topk`` order; with ``k`` >= the number of classes
    every image is correct, which a :class:`TrivialTopKWarning` says: a top-5 of a 3-class test
    set is no result). Results are reported as ``accuracy/top1``, ``accuracy/top5``, ...

    Only the ``max(topk)`` best class indices of each image are kept between batches, not its
    whole score vector, so evaluating ImageNet's 50,000 images holds 50,000 x 5 integers.

    Args:
        topk: the k values to report, e.g. ``(1, 5)``.
        collect_device: how results are gathered across ranks, in mmengine's terms:
            ``'gpu'`` (the default) through the process group's ``all_gather_object`` (on
            the CPU under gloo, so on any machine); ``'cpu'`` through files under
            ``.dist_test`` of the current directory, which every node must share, and which
            mmengine leaves behind, empty, after each distributed evaluation.
        prefix: prefix of the metric names (default ``'accuracy'``).
    """

    default_prefix = 'accuracy'

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, ),
                 collect_device: str = 'gpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not topk or not all(isinstance(k, int) and k > 0 for k in topk):
            raise ValueError(f'Accuracy: topk must be positive ints, got {topk!r}')
        self.topk = topk

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the best ``max(topk)`` class indices and the label of each prediction."""
        for sample in data_samples:
            missing = [key for key in ('pred_score', 'gt_label') if key not in sample]
            if missing:
                raise ValueError(f'Accuracy: every data sample needs pred_score and gt_label, '
                                 f'one lacks {missing} (has {sorted(sample)}); evaluate a '
                                 f'labelled dataset with a classifier')
            score = torch.as_tensor(sample['pred_score'])
            if score.dim() != 1:
                raise ValueError(f'Accuracy: pred_score must be a (num_classes,) vector, got '
                                 f'shape {tuple(score.shape)}')
            top = score.topk(min(max(self.topk), score.numel())).indices
            self.results.append(dict(top=top.cpu(), classes=score.numel(), label=int(
                torch.as_tensor(sample['gt_label']).reshape(-1)[0])))

    def compute_metrics(self, results: List[dict]) -> dict:
        """``{'top1': ..., 'top5': ...}`` in percent over all processed images."""
        metrics = {}
        classes = min(result['classes'] for result in results)
        for k in self.topk:
            if k >= classes:
                warnings.warn(f'{self.prefix}/top{k}: k={k} covers all {classes} classes, so every '
                              f'image counts as correct and it is 100 whatever the model '
                              f'predicts; report a k below the number of classes',
                              TrivialTopKWarning)
            hits = [bool((result['top'][:k] == result['label']).any()) for result in results]
            metrics[f'top{k}'] = 100. * sum(hits) / len(hits)
        return metrics
