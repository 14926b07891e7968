"""Top-k accuracy against a plain numpy computation, through mmengine's Evaluator as the
runner calls it."""
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import BaseDataElement

from fastmim.evaluation import Accuracy
from fastmim.registry import METRICS


def numpy_topk_accuracy(scores, labels, k):
    """Percent of rows whose label is among the k largest scores (scores without ties)."""
    order = np.argsort(-scores, axis=1)[:, :k]
    return 100.0 * np.mean([label in row for row, label in zip(order, labels)])


def samples(scores, labels):
    out = []
    for score, label in zip(scores, labels):
        sample = BaseDataElement(metainfo=dict(img_path='x.jpg'))
        sample.pred_score = torch.as_tensor(score)
        sample.pred_label = torch.as_tensor(score).argmax(dim=0, keepdim=True)
        sample.gt_label = torch.tensor([int(label)])
        out.append(sample)
    return out


@pytest.mark.parametrize('num_classes', [10, 1000])
def test_accuracy_matches_numpy_over_several_batches(num_classes):
    rng = np.random.default_rng(0)
    scores = rng.random((103, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=103)
    # Make top-1 and top-5 hits frequent enough to be meaningful.
    labels[:30] = scores[:30].argmax(axis=1)
    labels[30:50] = np.argsort(-scores[30:50], axis=1)[:, 1]
    labels[50:70] = np.argsort(-scores[50:70], axis=1)[:, 3]

    evaluator = Evaluator(METRICS.build(dict(type='Accuracy', topk=(1, 2, 5))))
    for start in range(0, 103, 40):  # batches of 40, 40, 23
        evaluator.process(samples(scores[start:start + 40], labels[start:start + 40]))
    metrics = evaluator.evaluate(103)

    assert set(metrics) == {'accuracy/top1', 'accuracy/top2', 'accuracy/top5'}
    for k in (1, 2, 5):
        assert metrics[f'accuracy/top{k}'] == pytest.approx(
            numpy_topk_accuracy(scores, labels, k))
    assert metrics['accuracy/top1'] < metrics['accuracy/top2'] < metrics['accuracy/top5']


def test_accuracy_by_hand():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = [1, 1, 0, 2]  # top-1 right, second, last, last
    metric = Accuracy(topk=(1, 2, 3, 5))
    metric.process(None, [sample.to_dict() for sample in samples(scores, labels)])
    result = metric.evaluate(4)
    assert result == {'accuracy/top1': 25.0, 'accuracy/top2': 50.0, 'accuracy/top3': 100.0,
                      'accuracy/top5': 100.0}


def test_accuracy_needs_scores_and_labels():
    metric = Accuracy()
    sample = BaseDataElement()
    sample.pred_score = torch.tensor([0.2, 0.8])
    with pytest.raises(ValueError, match='gt_label'):
        metric.process(None, [sample.to_dict()])


@pytest.mark.parametrize('topk', [0, (1, -5), ()])
def test_accuracy_rejects_bad_topk(topk):
    with pytest.raises(ValueError, match='topk'):
        Accuracy(topk=topk)


def test_a_k_that_covers_every_class_is_warned_about():
    """top5 of a 3-class test set is 100 whatever the model does; it was reported as a
    result without a word (mmpretrain refuses such a k)."""
    from fastmim.evaluation.metrics import TrivialTopKWarning
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    metric = Accuracy(topk=(1, 2, 5))
    metric.process(None, [sample.to_dict() for sample in samples(scores, [1, 2])])
    with pytest.warns(TrivialTopKWarning,
                      match=r'accuracy/top5: k=5 covers all 3 classes') as caught:
        metric.evaluate(2)
    assert len(caught) == 1  # top2 of 3 classes says something


def _evaluate_share_on_rank(rank, init_file, workdir, scores, labels, result_file):
    import os

    import torch.distributed as torch_dist
    os.chdir(workdir)
    torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                  world_size=2)
    try:
        metric = METRICS.build(dict(type='Accuracy', topk=(1, 5)))
        # DefaultSampler's share of an unshuffled set: rank r takes rows r, r + 2, ...
        metric.process([], [sample.to_dict() for sample in samples(scores[rank::2],
                                                                   labels[rank::2])])
        torch.save(metric.evaluate(size=len(labels)), f'{result_file}.{rank}')
    finally:
        torch_dist.destroy_process_group()


def test_two_processes_gather_without_a_dist_test_folder_in_the_current_directory(tmp_path):
    """mmengine's CPU collection writes each rank's part under ``.dist_test`` of the current
    directory (so it must be on storage every node shares) and left the empty folder there
    after every distributed evaluation. Gathered through the process group instead, the two
    processes report the accuracy of the whole set."""
    import torch.multiprocessing as mp
    rng = np.random.default_rng(3)
    scores = rng.random((11, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 11)
    workdir = tmp_path / 'cwd'
    workdir.mkdir()
    result = str(tmp_path / 'metrics')
    # fork: pytest's importlib mode leaves this module unimportable by name in a spawned child.
    mp.start_processes(_evaluate_share_on_rank, nprocs=2, start_method='fork', args=(
        str(tmp_path / 'init'), str(workdir), scores, labels, result))
    for rank in range(2):
        metrics = torch.load(f'{result}.{rank}')
        assert metrics['accuracy/top1'] == pytest.approx(numpy_topk_accuracy(scores, labels, 1))
        assert metrics['accuracy/top5'] == pytest.approx(numpy_topk_accuracy(scores, labels, 5))
    assert list(workdir.iterdir()) == []
