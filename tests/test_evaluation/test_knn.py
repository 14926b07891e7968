"""kNN evaluation against a plain numpy implementation of the weighted vote (Wu et al. 2018 /
DINO): on random features, across two gloo processes, and through mmengine's Runner on real
photos."""
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement

from fastmim.datasets import EmbeddedPhotos
from fastmim.engine.launch import adapt_to_device
from fastmim.evaluation import KNNClassifier, gather_bank, knn_class_scores
from fastmim.evaluation.knn import BankHoldsTestImagesWarning, BankSmallerThanKWarning

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53])
IMAGENET_STD = np.array([58.395, 57.12, 57.375])
TINY_VIT = dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=2, num_heads=2),
                img_size=64, patch_size=16)
PHOTOS = importlib.util.find_spec('skimage') is not None


def numpy_knn_scores(features, bank, bank_labels, num_classes, k, temperature):
    """Per query: cosine similarity to every bank entry, the k largest, each adding
    exp(similarity / temperature) to its label's score."""
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    scores = np.zeros((len(features), num_classes))
    for row, query in enumerate(features):
        similarity = bank @ query
        for neighbour in np.argsort(-similarity)[:k]:
            scores[row, bank_labels[neighbour]] += np.exp(similarity[neighbour] / temperature)
    return scores


@pytest.mark.parametrize('k, temperature, bank_size', [(20, 0.07, 200), (5, 0.5, 50),
                                                       (20, 0.07, 7), (20, 0.005, 200)])
def test_scores_match_numpy_reference_on_random_features(k, temperature, bank_size):
    """The normalised votes (what KNNClassifier reports); at temperature 0.005, exp(1 / T)
    overflows fp32 and the votes were inf, NaN once normalised."""
    rng = np.random.default_rng(k + bank_size)
    features = rng.normal(size=(13, 16))
    bank = rng.normal(size=(bank_size, 16))
    bank_labels = rng.integers(0, 6, size=bank_size)
    normalise = torch.nn.functional.normalize
    scores = knn_class_scores(normalise(torch.tensor(features, dtype=torch.float32), dim=1),
                              normalise(torch.tensor(bank, dtype=torch.float32), dim=1),
                              torch.tensor(bank_labels), 6, k=k, temperature=temperature)
    expected = numpy_knn_scores(features, bank, bank_labels, 6, k, temperature)
    # k larger than the bank: every bank entry votes once.
    np.testing.assert_allclose((scores / scores.sum(dim=1, keepdim=True)).numpy(),
                               expected / expected.sum(axis=1, keepdims=True), rtol=1e-4,
                               atol=1e-12)


def test_classifier_predicts_normalised_votes_of_its_bank():
    torch.manual_seed(0)
    model = KNNClassifier(backbone=TINY_VIT, k=3, temperature=0.1, num_classes=4).eval()
    images = torch.rand(6, 3, 64, 64) * 255
    bank_images = torch.rand(10, 3, 64, 64) * 255
    bank_labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        model.set_bank(model(model.data_preprocessor(dict(inputs=list(bank_images)))['inputs']),
                       bank_labels)
        inputs = model.data_preprocessor(dict(inputs=list(images)))['inputs']
        samples = model(inputs, [BaseDataElement() for _ in range(6)], mode='predict')
        # The features are those of the backbone, average-pooled (a plain reference).
        features = model.backbone(inputs)[-1].mean(dim=(2, 3)).numpy()
        bank_features = model.backbone(model.data_preprocessor(
            dict(inputs=list(bank_images)))['inputs'])[-1].mean(dim=(2, 3)).numpy()
    expected = numpy_knn_scores(features, bank_features, bank_labels.numpy(), 4, 3, 0.1)
    expected /= expected.sum(axis=1, keepdims=True)
    scores = torch.stack([sample.pred_score for sample in samples]).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    assert [int(s.pred_label) for s in samples] == expected.argmax(axis=1).tolist()


def test_classifier_errors_name_the_problem():
    model = KNNClassifier(backbone=TINY_VIT, num_classes=3)
    inputs = torch.zeros(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match='set_bank'):
        model(inputs, mode='predict')
    with pytest.raises(ValueError, match="'tensor' and 'predict'"):
        model(inputs, mode='loss')
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        model.set_bank(torch.rand(2, 32), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='k must be a positive int'):
        KNNClassifier(backbone=TINY_VIT, k=0)


def _gather_on_rank(rank, init_file, parts, result_file):
    torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                  world_size=2)
    try:
        features, labels, indices = parts[rank]
        gathered = gather_bank(features, labels, indices)
        torch.save(gathered, f'{result_file}.{rank}')
    finally:
        torch_dist.destroy_process_group()


def test_bank_is_gathered_from_two_processes_once_per_sample(tmp_path):
    # 7 samples over 2 ranks the way DefaultSampler shares them (rank r takes r, r + 2, ...),
    # padded to 4 each by repeating sample 0; rank 1 also holds fewer rows than rank 0 would.
    features = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)
    labels = torch.tensor([5, 1, 4, 1, 0, 2, 6])
    shares = [[0, 2, 4, 6], [1, 3, 5, 0]]
    parts = [(features[share], labels[share], torch.tensor(share)) for share in shares]
    result = str(tmp_path / 'gathered')
    # fork: pytest's importlib mode leaves this module unimportable by name in a spawned child.
    mp.start_processes(_gather_on_rank, args=(str(tmp_path / 'init'), parts, result), nprocs=2,
                       start_method='fork')
    for rank in range(2):
        gathered_features, gathered_labels = torch.load(f'{result}.{rank}')
        torch.testing.assert_close(gathered_features, features)
        torch.testing.assert_close(gathered_labels, labels)


def real_photo_pipeline(crop_pct):
    return [dict(type='LoadImageRGB'),
            dict(type='ResizeShorterCenterCrop', crop_size=64, crop_pct=crop_pct),
            dict(type='PackInputs')]


def reference_accuracy(model, bank_set, test_set, k, temperature):
    """Top-1 / top-5 of the numpy vote on features computed here, image by image."""

    def features(dataset):
        rows, labels = [], []
        for index in range(len(dataset)):
            sample = dataset[index]
            image = (sample['inputs'].permute(1, 2, 0).numpy() - IMAGENET_MEAN) / IMAGENET_STD
            with torch.no_grad():
                tokens = model.backbone(torch.tensor(image, dtype=torch.float32)
                                        .permute(2, 0, 1)[None])[-1]
            rows.append(tokens.mean(dim=(2, 3))[0].numpy())
            labels.append(int(sample['data_samples'].gt_label))
        return np.stack(rows), np.array(labels)

    bank, bank_labels = features(bank_set)
    queries, labels = features(test_set)
    num_classes = int(bank_labels.max()) + 1
    scores = numpy_knn_scores(queries, bank, bank_labels, num_classes, k, temperature)
    order = np.argsort(-scores, axis=1)
    return (100 * np.mean(order[:, 0] == labels),
            100 * np.mean([label in row[:5] for row, label in zip(order, labels)]))


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_test_loop_on_real_photos_matches_numpy_reference(tmp_path):
    """Bank: the centre crop of each scikit-image photo; queries: a tighter crop of each. The
    Runner's kNN accuracy equals the numpy vote on independently computed features."""
    loader = dict(batch_size=5, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False))
    bank_set = dict(type='EmbeddedPhotos', sources='skimage', num_samples=16,
                    pipeline=real_photo_pipeline(0.875))
    test_set = dict(type='EmbeddedPhotos', sources='skimage', num_samples=16,
                    pipeline=real_photo_pipeline(0.5))
    cfg = Config(dict(
        default_scope='fastmim',
        work_dir=str(tmp_path),
        randomness=dict(seed=0),
        model=dict(type='KNNClassifier', backbone=TINY_VIT, k=4, temperature=0.07),
        test_dataloader=dict(loader, dataset=test_set),
        test_evaluator=dict(type='Accuracy', topk=(1, 5), prefix='knn'),
        test_cfg=dict(type='KNNTestLoop', bank_dataloader=dict(loader, dataset=bank_set)),
    ))
    adapt_to_device(cfg)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()

    top1, top5 = reference_accuracy(runner.model, EmbeddedPhotos(**{
        key: value for key, value in bank_set.items() if key != 'type'}), EmbeddedPhotos(**{
            key: value for key, value in test_set.items() if key != 'type'}), 4, 0.07)
    assert metrics['knn/top1'] == pytest.approx(top1)
    assert metrics['knn/top5'] == pytest.approx(top5)
    assert top1 > 100 / 16  # a random ViT still matches crops of the same photo above chance


def test_a_bank_of_one_class_is_refused():
    """Every query would get that class: top-1 100% on a one-class test split, a score that
    measures nothing (a data_root one level too deep or a wrong class folder)."""
    model = KNNClassifier(backbone=TINY_VIT, num_classes=3)
    with pytest.raises(ValueError, match=r'only class 2 \(4 images\).*bank_dataloader'):
        model.set_bank(torch.rand(4, 32), torch.tensor([2, 2, 2, 2]))


@pytest.mark.skipif(not PHOTOS, reason='the embedded photos need scikit-image')
def test_the_demo_bank_crops_do_not_depend_on_the_process_state():
    """The demo's bank is random crops. With mmengine's sampler (diff_rank_seed: a seed drawn
    from numpy when the loader is built) they, and the top-1, changed with the number of
    processes: 71.8 on two, 64.1 on one for the same checkpoint."""
    config = Config.fromfile(str(Path(__file__).resolve().parents[2] / 'configs' / 'knn' /
                                 'demo_vit_tiny_embedded_knn.py'))
    banks = []
    for numpy_seed in (0, 1):
        np.random.seed(numpy_seed)
        loader = Runner.build_dataloader(config.test_cfg.bank_dataloader, seed=0,
                                         diff_rank_seed=True)
        banks.append(next(iter(loader))['inputs'])
    assert all(torch.equal(first, second) for first, second in zip(*banks))


def demo_runner(tmp_path, bank_samples, k, bank_crop_pct=1., **settings):
    """The kNN test loop on scikit-image's 16 photos: the bank holds the first
    ``bank_samples`` of them (labels 0, 1, ...), the test split every photo once; the bank's
    centre crops take ``bank_crop_pct`` of the shorter side, the test's 0.875; ``settings``
    are further top-level config settings."""
    loader = dict(batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False))
    cfg = Config(dict(
        default_scope='fastmim',
        work_dir=str(tmp_path),
        experiment_name=str(tmp_path),  # runners built in the same second share a logger
        randomness=dict(seed=0),
        model=dict(type='KNNClassifier', backbone=TINY_VIT, k=k, temperature=0.07),
        test_dataloader=dict(loader, dataset=dict(
            type='EmbeddedPhotos', sources='skimage', num_samples=16,
            pipeline=real_photo_pipeline(0.875))),
        test_evaluator=dict(type='Accuracy', topk=(1, 5), prefix='knn'),
        test_cfg=dict(type='KNNTestLoop', bank_dataloader=dict(loader, dataset=dict(
            type='EmbeddedPhotos', sources='skimage', num_samples=bank_samples,
            pipeline=real_photo_pipeline(bank_crop_pct)))),
        **settings,
    ))
    adapt_to_device(cfg)
    return Runner.from_cfg(cfg)


def refuse_extraction(*args):
    raise AssertionError('the bank was extracted before the check')


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_test_classes_the_bank_lacks_are_refused_before_the_bank_is_extracted(tmp_path,
                                                                               monkeypatch):
    """A bank of 8 of the 16 photos (a list file or subset that misses classes): the 8 other
    test photos can never be voted their class, and knn/top1 was reported without a word
    (at most 50 here)."""
    runner = demo_runner(tmp_path, bank_samples=8, k=4)
    monkeypatch.setattr(type(runner.test_loop), 'extract_bank', refuse_extraction)
    names = runner.test_loop.dataloader.dataset.metainfo['classes']
    with pytest.raises(ValueError, match=rf"8 of the 16 test images are of 8 classes that "
                                         rf"test_cfg\.bank_dataloader\.dataset has no image of "
                                         rf"\(8 '{names[8]}', 9 '{names[9]}'"):
        runner.test()


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_k_larger_than_the_bank_is_named(tmp_path):
    """DINO's kNN fails on k > bank size (topk out of range); here every query was silently
    voted on by the whole bank and the result reported as the kNN with that k. It is a warning,
    not an error: the config smoke tests run every kNN config on a bank of two photos."""
    runner = demo_runner(tmp_path, bank_samples=16, k=20)
    with pytest.warns(BankSmallerThanKWarning, match=r'k=20 neighbours, but test_cfg\.'
                                                     r'bank_dataloader\.dataset holds 16 images'):
        runner.test()


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_the_test_timing_leaves_the_bank_out_and_the_bank_has_its_own_eta(tmp_path,
                                                                          monkeypatch):
    """A clock that advances 10 s per forward pass of the backbone: 2 bank batches, then 2 test
    batches. mmengine's IterTimerHook starts its clock at before_test_epoch; called before the
    bank was extracted, the first test batch was logged with the bank's 20 s as its data_time,
    and the test's ETA, an average over its batches, was inflated by all of it (ImageNet's
    bank, 25x the val split, made a 1-minute test announce half an hour)."""
    import types

    import mmengine.hooks.iter_timer_hook

    import fastmim.evaluation.knn
    clock = [0.]
    fake_time = types.SimpleNamespace(time=lambda: clock[0], monotonic=lambda: clock[0])
    monkeypatch.setattr(mmengine.hooks.iter_timer_hook, 'time', fake_time)
    monkeypatch.setattr(fastmim.evaluation.knn, 'time', fake_time)
    extract_feat = KNNClassifier.extract_feat

    def ten_seconds_each(model, inputs):
        clock[0] += 10.
        return extract_feat(model, inputs)

    monkeypatch.setattr(KNNClassifier, 'extract_feat', ten_seconds_each)
    runner = demo_runner(tmp_path, bank_samples=16, k=4)  # batches of 8: 2 bank, 2 test
    runner.test()
    assert runner.message_hub.get_scalar('test/data_time').data[0].tolist() == [0., 0.]
    assert runner.message_hub.get_scalar('test/time').data[0].tolist() == [10., 10.]
    log = (Path(runner.log_dir) / f'{runner.timestamp}.log').read_text()
    assert 'kNN bank: 1/2 batches, eta 0:00:10' in log


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_a_bank_that_holds_the_test_images_is_named(tmp_path):
    """A bank pointed at the val split (the same files, the same pipeline): every test image
    found itself, and knn/top1 was reported as 100 for an untrained ViT without a word."""
    runner = demo_runner(tmp_path, bank_samples=16, k=4, bank_crop_pct=0.875)
    with pytest.warns(BankHoldsTestImagesWarning, match=r'^KNNTestLoop: 16 of the first 16 test '
                      r'images are in test_cfg\.bank_dataloader\.dataset too, read through the '
                      r'same pipeline'):
        metrics = runner.test()
    assert metrics['knn/top1'] == 100


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_the_same_photos_through_another_pipeline_are_no_copy_of_the_test_split(tmp_path):
    """The demo's bank: other crops of the photos it tests on, which it means to match."""
    runner = demo_runner(tmp_path, bank_samples=16, k=4)
    with warnings.catch_warnings():
        warnings.simplefilter('error', BankHoldsTestImagesWarning)
        runner.test()


@pytest.mark.skipif(not PHOTOS, reason='scikit-image photos are not installed')
def test_an_ema_hook_is_refused_before_the_bank_is_extracted(tmp_path, monkeypatch):
    """The loop loads the checkpoint into the backbone itself; mmengine's EMAHook then swapped
    its copy of the weights from before that load (the random initialisation) in for the
    test split alone, and knn/top1 compared those features with the checkpoint's bank."""
    runner = demo_runner(tmp_path, bank_samples=16, k=4,
                         custom_hooks=[dict(type='EMAHook', momentum=0.001)])
    monkeypatch.setattr(type(runner.test_loop), 'extract_bank', refuse_extraction)
    with pytest.raises(ValueError, match=r'^KNNTestLoop: custom_hooks has an EMAHook'):
        runner.test()


def test_a_missing_bank_folder_is_named_before_the_run(tmp_path):
    """Moving a kNN test to another dataset by its test split alone failed only when the bank
    was read, after the work dir was written, naming neither the bank nor its config key."""
    from mmengine.config import Config

    from fastmim.engine.dataset_paths import check_dataset_paths
    from fastmim.errors import LaunchError
    (tmp_path / 'val').mkdir()
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / 'configs' / 'knn' /
                              'vit_b_knn.py'))
    cfg.merge_from_dict({'test_dataloader.dataset.data_root': str(tmp_path)})
    with pytest.raises(LaunchError, match=r'^test_cfg\.bank_dataloader\.dataset\.data_root: '
                                          r'folder data/imagenet .*not found'):
        check_dataset_paths(cfg, ['test'])
    cfg.merge_from_dict({'test_cfg.bank_dataloader.dataset.data_root': str(tmp_path)})
    with pytest.raises(LaunchError, match=r'bank_dataloader\.dataset\.data_prefix: path '
                                          rf'{tmp_path}/train not found'):
        check_dataset_paths(cfg, ['test'])
    (tmp_path / 'train').mkdir()
    with pytest.raises(LaunchError, match=rf'data_prefix: folder {tmp_path}/train holds no files'):
        check_dataset_paths(cfg, ['test'])
    for split in ('train', 'val'):
        (tmp_path / split / 'n01440764').mkdir()
        (tmp_path / split / 'n01440764' / 'a.JPEG').write_bytes(b'')
    check_dataset_paths(cfg, ['test'])
