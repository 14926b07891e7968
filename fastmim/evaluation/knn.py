"""k-nearest-neighbour evaluation of frozen features (Wu et al. 2018, as DINO runs it).

Every test image is classified by the labelled images of a *bank* (the train split) whose
features are closest to its own:

1. features: the backbone's last map, globally average-pooled (or the ViT class token with
   ``out_type='cls_token'``), then L2-normalised, so that a dot product is a cosine similarity;
2. the ``k`` (20) most similar bank images vote for their class with weight
   ``exp(similarity / temperature)`` (temperature 0.07); a class's score is the sum of its votes.

It needs no training and no hyper-parameter search, which makes it a cheap check of a
pre-training checkpoint. Two pieces run it with mmengine:

- :class:`KNNClassifier` (a model): extracts features; once :meth:`KNNClassifier.set_bank` has
  given it the bank, ``predict`` returns the normalised class scores as ``pred_score``, so the
  ordinary ``Accuracy`` metric reports top-1 / top-5;
- :class:`KNNTestLoop` (``test_cfg``): extracts the bank from its own ``bank_dataloader``,
  gathers it from every rank, hands it to the model and then runs the usual test loop.

``tools/test.py CONFIG CHECKPOINT`` runs both on any checkpoint: the loop loads the backbone
through :func:`~fastmim.models.utils.load_pretrained` (pre-training, fine-tuning, timm and
reference-release formats; position embeddings resized; an error instead of a partial load).
Configs name these classes with no ``custom_imports``: the ``MODELS`` and ``LOOPS`` registries
import ``fastmim.evaluation`` on demand.
"""
import datetime
import logging
import time
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather, get_world_size
from mmengine.hooks import EMAHook
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.runner import TestLoop
from mmengine.runner.amp import autocast
from mmengine.structures import BaseDataElement
from torch.utils.data import DataLoader

from fastmim.checks import check_positive_int
from fastmim.constants import IMAGENET_PREPROCESSOR
from fastmim.datasets.utils import annotation_reader, describe_labels, label_coverage
from fastmim.engine.runner_model import bare_model
from fastmim.models.algorithms.image_classifier import attach_predictions, pool_features
from fastmim.models.utils import load_pretrained
from fastmim.registry import LOOPS, MODELS


def knn_class_scores(features: torch.Tensor,
                     bank_features: torch.Tensor,
                     bank_labels: torch.Tensor,
                     num_classes: int,
                     k: int = 20,
                     temperature: float = 0.07) -> torch.Tensor:
    """Weighted kNN votes ``(B, num_classes)`` of L2-normalised ``features`` ``(B, D)``.

    The ``min(k, N)`` bank entries of highest cosine similarity each add
    ``exp(similarity / temperature)`` to the score of their label (DINO's ``knn_classifier``),
    each row divided by the vote of its nearest entry: the same scores once normalised, but
    finite for any temperature (``exp(1 / 0.01)`` overflows fp32, and inf / inf is NaN).
    The similarity matrix is ``B x N``: its memory bounds the test batch size for large banks.
    """
    similarity = features.float() @ bank_features.float().T
    top_similarity, top_index = similarity.topk(min(k, bank_features.shape[0]), dim=1)
    weights = ((top_similarity - top_similarity[:, :1]) / temperature).exp()
    scores = torch.zeros(len(features), num_classes, device=features.device)
    return scores.scatter_add_(1, bank_labels[top_index], weights)


@MODELS.register_module()
class KNNClassifier(BaseModel):
    """A backbone whose pooled, L2-normalised features are classified by a kNN vote.

    Args:
        backbone (dict): config of a fastmim backbone (tuple of NCHW maps, or ``(B, C)`` class
            tokens with ``out_type='cls_token'``).
        k (int): number of neighbours that vote.
        temperature (float): the vote of a neighbour of cosine similarity ``s`` is
            ``exp(s / temperature)``.
        num_classes (int, optional): number of classes; by default ``1 + the largest bank label``.
        data_preprocessor (dict, optional): defaults to ImageNet normalisation, RGB input.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 backbone: dict,
                 k: int = 20,
                 temperature: float = 0.07,
                 num_classes: Optional[int] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        check_positive_int('KNNClassifier', 'k', k)
        if not temperature > 0:
            raise ValueError(f'KNNClassifier: temperature must be > 0, got {temperature!r}')
        if num_classes is not None:
            check_positive_int('KNNClassifier', 'num_classes', num_classes)
        super().__init__(data_preprocessor=data_preprocessor or dict(IMAGENET_PREPROCESSOR),
                         init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.k = k
        self.temperature = temperature
        self.num_classes = num_classes
        # Plain attributes, not buffers: the bank belongs to one evaluation, not to checkpoints.
        self.bank_features = None
        self.bank_labels = None
        self.bank_num_classes = None

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled features ``(B, C)`` in fp32."""
        features = pool_features(self.backbone(inputs)[-1])
        return F.normalize(features.float(), dim=1)

    def set_bank(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """The labelled features ``(N, C)``, ``(N,)`` that later predictions vote with."""
        if features.dim() != 2 or labels.shape != features.shape[:1] or not len(labels):
            raise ValueError(f'KNNClassifier: the bank needs features (N, C) and labels (N,) '
                             f'with N > 0, got shapes {tuple(features.shape)} and '
                             f'{tuple(labels.shape)}')
        num_classes = self.num_classes or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f'KNNClassifier: bank labels must lie in [0, {num_classes}), got '
                             f'the range [{int(labels.min())}, {int(labels.max())}]; is '
                             f'num_classes right for the dataset?')
        if int(labels.min()) == int(labels.max()):
            # Every query would get this class: a top-1 that measures nothing.
            raise ValueError(f'KNNClassifier: the bank holds only class {int(labels.min())} '
                             f'({len(labels)} images); a kNN vote needs at least two classes: '
                             f'point test_cfg.bank_dataloader.dataset at the folder of class '
                             f'sub-folders (or list file) of the train split')
        self.bank_features = F.normalize(features.float(), dim=1)
        self.bank_labels = labels.long()
        self.bank_num_classes = num_classes

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[BaseDataElement]] = None) -> List[BaseDataElement]:
        """Data samples with ``pred_score`` (the class scores divided by their sum) and
        ``pred_label``; the given samples are updated in place, keeping their ``gt_label``."""
        if self.bank_features is None:
            raise RuntimeError('KNNClassifier: no feature bank; call set_bank() first '
                               '(KNNTestLoop does it from its bank_dataloader)')
        features = self.extract_feat(inputs)
        # fp32 even inside a test loop's autocast: exp(1 / 0.07) overflows fp16.
        with torch.autocast(device_type=features.device.type, enabled=False):
            scores = knn_class_scores(features, self.bank_features.to(features.device),
                                      self.bank_labels.to(features.device),
                                      self.bank_num_classes, self.k, self.temperature)
        return attach_predictions(scores / scores.sum(dim=1, keepdim=True), data_samples)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        """``'tensor'`` -> normalised features ``(B, C)``, ``'predict'`` -> data samples with
        kNN predictions. There is no ``'loss'``: the classifier has nothing to train."""
        if mode == 'tensor':
            return self.extract_feat(inputs)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise ValueError(f"KNNClassifier has modes 'tensor' and 'predict' (it is evaluated with "
                         f"tools/test.py, not trained), got {mode!r}")


def gather_bank(features: torch.Tensor, labels: torch.Tensor,
                indices: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The bank of every rank, each dataset sample once, in dataset order.

    Ranks may hold different numbers of samples, and mmengine's ``DefaultSampler`` repeats a
    few samples to give every rank the same count: the parts are padded to one length for
    ``all_gather``, trimmed, and duplicates of a ``sample_idx`` dropped. One process returns
    its bank unchanged.
    """
    if get_world_size() == 1:
        return features, labels
    if indices is None:
        raise ValueError('KNNTestLoop: a distributed bank needs the sample_idx of every bank '
                         'sample (PackInputs keeps it in the data sample metainfo by default)')
    counts = [int(count) for count in all_gather(
        torch.tensor([len(features)], device=features.device))]

    def gather(tensor):
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
        padded[:len(tensor)] = tensor
        return torch.cat([part[:count] for part, count in zip(all_gather(padded), counts)])

    features, labels, indices = gather(features), gather(labels), gather(indices)
    order = indices.argsort(stable=True)
    sorted_indices = indices[order]
    first = torch.ones_like(sorted_indices, dtype=torch.bool)
    first[1:] = sorted_indices[1:] != sorted_indices[:-1]
    keep = order[first]
    return features[keep], labels[keep]


class BankSmallerThanKWarning(UserWarning):
    """The kNN bank holds fewer images than ``k``: every query is voted on by the whole bank."""


class BankHoldsTestImagesWarning(UserWarning):
    """The kNN bank holds the test images, read as the test split reads them: each test image
    is its own nearest neighbour."""


def bank_holds_test_images(bank_dataset, test_dataset, checked: int = 64) -> Tuple[int, int]:
    """``(found, checked)``: how many of the first ``checked`` test image files the bank
    lists too, when both read them through pipelines of the same description (features then
    equal, or drawn alike); ``found`` is 0 for datasets that name no files or pipelines that
    differ (the demo's bank: random crops of the photos it tests on centre crops). Reads every
    bank annotation, no image: seconds for ImageNet's train split."""
    bank_info, test_info = annotation_reader(bank_dataset), annotation_reader(test_dataset)
    checked = min(checked, len(test_dataset))
    if (bank_info is None or test_info is None or repr(getattr(bank_dataset, 'pipeline', None))
            != repr(getattr(test_dataset, 'pipeline', None))):
        return 0, checked
    test_files = {test_info(index).get('img_path') for index in range(checked)} - {None}
    if not test_files:
        return 0, checked
    bank_files = {bank_info(index).get('img_path') for index in range(len(bank_dataset))}
    return len(test_files & bank_files), checked


def check_bank(k: int, bank_dataset, test_dataset) -> None:
    """Check, before the bank (the whole train split) is extracted, that the kNN measures what
    it reports. Warn when ``k`` is larger than the bank: every query is then voted on by the
    whole bank, the kNN of a smaller k (DINO's kNN stops there, topk out of range; here a
    two-image smoke test of a config still runs). Warn when the bank holds the test images
    (a bank pointed at the val split): knn/top1 would then be reported near 100 without a
    word.
    Refuse test images of classes the bank has no image of, which no vote can classify right
    (a list file or a subset that misses classes; class folders of other names are
    ``DatasetClassesCheckHook``'s)."""
    bank_key = 'test_cfg.bank_dataloader.dataset'
    if k > len(bank_dataset):
        warnings.warn(f'KNNClassifier: k={k} neighbours, but {bank_key} holds '
                      f'{len(bank_dataset)} images: every query is voted on by the whole bank, '
                      f'the kNN of k={len(bank_dataset)}; set model.k to at most '
                      f'{len(bank_dataset)} or give a larger bank', BankSmallerThanKWarning,
                      stacklevel=2)
    found, checked = bank_holds_test_images(bank_dataset, test_dataset)
    if found:
        # A warning: the config smoke tests run each kNN config on one pair of photos.
        warnings.warn(f'KNNTestLoop: {found} of the first {checked} test images are in '
                      f'{bank_key} too, read through the same pipeline: each is its own nearest '
                      f'neighbour, so knn/top1 is near 100 whatever the checkpoint; point the '
                      f'bank at the train split', BankHoldsTestImagesWarning, stacklevel=2)
    coverage = label_coverage(bank_dataset, test_dataset)
    if coverage is not None and coverage.missing:
        raise ValueError(f'KNNTestLoop: {coverage.samples_missing} of the {coverage.samples} '
                         f'test images are of {len(coverage.missing)} classes that {bank_key} '
                         f'has no image of ({describe_labels(coverage.missing, test_dataset)}): '
                         f'a kNN vote can never give them their class; give the bank images of '
                         f'every class of the test split')


def refuse_weight_swapping_hooks(runner) -> None:
    """mmengine's ``EMAHook`` swaps its averaged copy of the weights in at
    ``before_test_epoch``; it loads that copy only through the runner's own checkpoint loading,
    which this loop replaces, so the copy is the model's initialisation, swapped in for the
    test split alone: its features would be compared with the checkpoint's bank."""
    for hook in runner.hooks:
        if isinstance(hook, EMAHook):
            raise ValueError(
                'KNNTestLoop: custom_hooks has an EMAHook, which would classify the test split '
                'with the weights the model was built with, not the checkpoint\'s; remove it '
                '(the loop evaluates the checkpoint\'s state_dict; to evaluate averaged '
                'weights, save them as the state_dict of a checkpoint first)')


@LOOPS.register_module()
class KNNTestLoop(TestLoop):
    """mmengine's test loop preceded by the extraction of a kNN feature bank.

    The runner's ``load_from`` checkpoint (``tools/test.py CONFIG CHECKPOINT``) is loaded by this
    loop, into the model's backbone, through ``load_pretrained``: mmengine's own loading is
    non-strict (a wrong file would silently leave a random backbone) and cannot resize
    position embeddings. Without a checkpoint the backbone is evaluated as it is. Before the
    bank is extracted, :func:`check_bank` refuses test classes the bank lacks and warns about a
    ``k`` larger than the bank and a bank that holds the test images, and an ``EMAHook`` is
    refused (:func:`refuse_weight_swapping_hooks`).

    Every rank holds the whole bank on its device, in fp32: 1.28 M x 768 values (3.9 GB) for
    ViT-B on the ImageNet train split, twice that while it is being gathered.

    Args:
        runner: the mmengine runner.
        dataloader: the test dataloader (images to classify, with labels).
        evaluator: the test evaluator, e.g. ``dict(type='Accuracy', topk=(1, 5))``.
        bank_dataloader: dataloader (or config) of the labelled bank, usually the train split
            through the test pipeline; with ``DefaultSampler(shuffle=False)`` in distributed
            runs every rank extracts its share and the shares are all-gathered.
        fp16: run the feature extraction under autocast (bf16 on CPU).
        prefix: part of the checkpoint that holds the backbone.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, dict],
                 evaluator: Union[dict, Sequence[dict]],
                 bank_dataloader: Union[DataLoader, dict],
                 fp16: bool = False,
                 prefix: str = 'backbone.'):
        super().__init__(runner, dataloader, evaluator, fp16)
        if isinstance(bank_dataloader, dict):
            bank_dataloader = runner.build_dataloader(bank_dataloader, seed=runner.seed)
        self.bank_dataloader = bank_dataloader
        self.prefix = prefix
        # Taken over from the runner, which would otherwise load it non-strictly before run().
        self.checkpoint = runner._load_from
        runner._load_from = None

    def run(self) -> dict:
        """Load the checkpoint, build the bank, then classify the test split; returns the
        metrics."""
        refuse_weight_swapping_hooks(self.runner)
        model = bare_model(self.runner)
        if self.checkpoint is not None:
            load_pretrained(model.backbone, self.checkpoint, prefix=self.prefix)
        self.runner.call_hook('before_test')
        check_bank(model.k, self.bank_dataloader.dataset, self.dataloader.dataset)
        self.runner.model.eval()
        model.set_bank(*self.extract_bank(model))
        # After the bank: IterTimerHook starts the test's clock here, and would otherwise log
        # the extraction (the whole train split) as the first batch's data_time and average it
        # into the ETA of every later test batch.
        self.runner.call_hook('before_test_epoch')

        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    @torch.no_grad()
    def extract_bank(self, model: KNNClassifier) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of the whole bank, gathered from every rank."""
        features, labels, indices = [], [], []
        num_batches = len(self.bank_dataloader)
        start = time.monotonic()
        for batch_index, data_batch in enumerate(self.bank_dataloader):
            data = model.data_preprocessor(data_batch, False)
            with autocast(enabled=self.fp16):
                features.append(model.extract_feat(data['inputs']).float())
            samples = data['data_samples']
            if any('gt_label' not in sample for sample in samples):
                raise ValueError('KNNTestLoop: every bank sample needs a gt_label (a labelled '
                                 'dataset in bank_dataloader, e.g. with_label=True)')
            labels.append(torch.cat([sample.gt_label for sample in samples]))
            if all('sample_idx' in sample for sample in samples):
                indices.append(torch.tensor([sample.sample_idx for sample in samples]))
            done = batch_index + 1
            if done % max(1, num_batches // 10) == 0:
                # The bank is the train split, the longest part of a kNN evaluation.
                eta = (time.monotonic() - start) / done * (num_batches - done)
                print_log(f'kNN bank: {done}/{num_batches} batches, eta '
                          f'{datetime.timedelta(seconds=int(eta))}', logger='current')
        if not features:
            raise ValueError('KNNTestLoop: the bank dataloader yielded no batches')
        device = features[0].device
        features, labels = gather_bank(
            torch.cat(features), torch.cat(labels).to(device),
            torch.cat(indices).to(device) if len(indices) == len(features) else None)
        print_log(f'kNN bank: {len(features)} features of dimension {features.shape[1]}',
                  logger='current', level=logging.INFO)
        return features, labels
