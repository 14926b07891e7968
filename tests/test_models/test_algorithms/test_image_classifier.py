"""ImageClassifier: shapes of the three modes, pooling and loss against plain formulas and
timm's losses, frozen backbones, head initialisation, batch augmentation on the device, and a
short fine-tuning of the demo config that learns and evaluates through tools/test.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from timm.loss import LabelSmoothingCrossEntropy
from torch import nn

import fastmim.models  # noqa: F401  (registers the model components)
from fastmim.engine.launch import adapt_to_device
from fastmim.models.data_preprocessors import ClsDataPreprocessor
from fastmim.registry import MODELS

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
TINY_VIT = dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=2, num_heads=2),
                img_size=32, patch_size=16, final_norm=False)


@MODELS.register_module(force=True)
class ClassifierTestBackbone(nn.Module):
    """Patchify conv + BatchNorm: a map whose pooled value is easy to compute by hand."""

    def __init__(self, channels=8):
        super().__init__()
        self.patchify = nn.Conv2d(3, channels, 8, 8)
        self.norm = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout(0.5)
        self.out_channels = [channels]

    def forward(self, x):
        return (self.drop(self.norm(self.patchify(x))), )

    def geometry(self):
        return dict(type='ClassifierTestBackbone', img_size=32)


def build(backbone=TINY_VIT, num_classes=5, pre_norm='ln', **kwargs):
    return MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                             head=dict(type='LinearClsHead', num_classes=num_classes,
                                       pre_norm=pre_norm), **kwargs))


def labelled(labels):
    samples = []
    for label in labels:
        sample = BaseDataElement(metainfo=dict(img_path=f'{label}.jpg'))
        sample.gt_label = torch.tensor([label])
        samples.append(sample)
    return samples


def uint8_batch(batch_size=4, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
            for _ in range(batch_size)]


@pytest.mark.parametrize('out_type', ['featmap', 'cls_token'])
def test_three_modes_shapes(out_type):
    model = build(backbone=dict(TINY_VIT, out_type=out_type))
    inputs = torch.randn(4, 3, 32, 32)

    assert model(inputs, mode='tensor').shape == (4, 5)
    losses = model(inputs, labelled([0, 1, 2, 4]), mode='loss')
    assert set(losses) == {'loss'} and losses['loss'].dim() == 0
    assert losses['loss'].item() == pytest.approx(np.log(5), abs=1e-3)  # init std 2e-5

    model.eval()
    predictions = model(inputs, labelled([0, 1, 2, 4]), mode='predict')
    assert len(predictions) == 4
    for sample, label in zip(predictions, [0, 1, 2, 4]):
        assert sample.pred_score.shape == (5, )
        assert sample.pred_score.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert sample.pred_label.item() == sample.pred_score.argmax().item()
        assert sample.gt_label.item() == label
        assert not sample.pred_score.requires_grad


def test_logits_are_the_head_on_the_average_pooled_map():
    model = build(backbone=dict(type='ClassifierTestBackbone'), pre_norm=None).eval()
    nn.init.normal_(model.head.fc.weight)
    inputs = torch.randn(2, 3, 32, 32)

    feature_map = model.backbone(inputs)[0]  # (2, 8, 4, 4)
    pooled = feature_map.flatten(2).mean(dim=2)
    expected = pooled @ model.head.fc.weight.T + model.head.fc.bias

    torch.testing.assert_close(model(inputs, mode='tensor'), expected)


def test_fc_norm_is_a_layernorm_on_pooled_features():
    model = build(pre_norm='ln')
    assert isinstance(model.head.fc_norm, nn.LayerNorm)
    assert model.head.fc_norm.normalized_shape == (32, )
    probe = build(pre_norm='bn')
    assert isinstance(probe.head.fc_norm, nn.BatchNorm1d) and not probe.head.fc_norm.affine
    with pytest.raises(ValueError, match='pre_norm'):
        build(pre_norm='gn')



def timm_avg_pool_vit(model):
    """timm's ViT with ``global_pool='avg'`` (MAE's fine-tuning classifier: mean of the patch
    tokens, ``fc_norm``, ``head``; no final norm) holding the weights of a fine-tuning
    ``ImageClassifier`` built from ``TINY_VIT`` with ``pre_norm='ln'``."""
    from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer
    reference = TimmVisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=2,
                                      num_heads=2, num_classes=5, global_pool='avg').eval()
    state = dict(model.backbone.state_dict())
    state.update({f'fc_norm.{k}': v for k, v in model.head.fc_norm.state_dict().items()})
    state.update({f'head.{k}': v for k, v in model.head.fc.state_dict().items()})
    reference.load_state_dict(state, strict=True)
    return reference


def test_fine_tuned_vit_logits_match_timms_vit_with_global_pool_avg():
    """Average pooling, then ``fc_norm`` (LayerNorm eps 1e-6, as MAE's and timm's ViT), then the
    linear layer: the logits equal timm's ViT at ``global_pool='avg'``. The pooled features of
    real fine-tuning are not always of unit scale, so the head is also compared on tokens of
    variance ~1e-6, where the LayerNorm's eps changes the logits by a large factor."""
    torch.manual_seed(0)
    model = build(pre_norm='ln').eval()
    for param in [model.head.fc.weight, model.head.fc.bias, model.head.fc_norm.weight,
                  model.head.fc_norm.bias]:
        nn.init.normal_(param)
    reference = timm_avg_pool_vit(model)
    assert model.head.fc_norm.eps == reference.fc_norm.eps
    inputs = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs, mode='tensor'), reference(inputs))
        tokens = torch.randn(3, 1 + 4, 32) * 1e-3 + 0.2   # class token + 2x2 patch tokens
        pooled = tokens[:, 1:].mean(dim=1)
        torch.testing.assert_close(model.head(pooled), reference.forward_head(tokens))

def test_head_weight_init_std():
    head = MODELS.build(dict(type='LinearClsHead', num_classes=1000, in_channels=768))
    weight = head.fc.weight.detach()
    assert weight.std().item() == pytest.approx(2e-5, rel=0.02)
    assert weight.mean().abs().item() < 1e-7
    assert not head.fc.bias.any()


def test_loss_is_cross_entropy_and_label_smoothing_is_timms():
    inputs = torch.randn(4, 3, 32, 32)
    labels = [0, 3, 1, 1]
    model = build(data_preprocessor=dict(type='ClsDataPreprocessor', label_smoothing=0.1))
    nn.init.normal_(model.head.fc.weight)
    logits = model(inputs, mode='tensor')

    plain = model(inputs, labelled(labels), mode='loss')['loss']
    torch.testing.assert_close(plain, F.cross_entropy(logits, torch.tensor(labels)))

    # The preprocessor folds smoothing into gt_score, as timm's training script does.
    data = model.data_preprocessor(dict(inputs=uint8_batch(), data_samples=labelled(labels)),
                                   training=True)
    smoothed = model(data['inputs'], data['data_samples'], mode='loss')['loss']
    expected = LabelSmoothingCrossEntropy(0.1)(model(data['inputs'], mode='tensor'),
                                               torch.tensor(labels))
    torch.testing.assert_close(smoothed, expected)


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval_mode():
    model = build(backbone=dict(type='ClassifierTestBackbone'), frozen_backbone=True,
                  pre_norm='bn')
    model.train()
    assert not model.backbone.training and not model.backbone.norm.training
    assert model.head.training
    running_mean = model.backbone.norm.running_mean.clone()

    inputs = torch.randn(4, 3, 32, 32) * 3 + 1
    model(inputs, labelled([0, 1, 2, 3]), mode='loss')['loss'].backward()

    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert model.head.fc.weight.grad is not None and model.head.fc.weight.grad.abs().sum() > 0
    torch.testing.assert_close(model.backbone.norm.running_mean, running_mean)  # eval-mode BN
    # Dropout is off: two passes give the same features.
    torch.testing.assert_close(model.extract_feat(inputs), model.extract_feat(inputs))


def test_linear_probe_training_batch_of_one_image_names_drop_last():
    """pre_norm='bn' has no batch statistics for one image: the last batch of an epoch whose
    size leaves 1 over (drop_last=False) stopped the run with torch's 'Expected more than 1
    value per channel'; the message now says what to change."""
    model = build(backbone=dict(type='ClassifierTestBackbone'), frozen_backbone=True,
                  pre_norm='bn').train()
    with pytest.raises(ValueError, match=r"pre_norm='bn'.*drop_last=True"):
        model(torch.randn(1, 3, 32, 32), labelled([0]), mode='loss')
    model.eval()  # evaluation uses the running statistics: one image is fine
    assert model(torch.randn(1, 3, 32, 32), mode='tensor').shape == (1, 5)


def test_fine_tuned_backbone_gets_gradients():
    model = build()
    model(torch.randn(2, 3, 32, 32), labelled([0, 1]), mode='loss')['loss'].backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def preprocess(mixup=None, random_erasing=None, label_smoothing=0.1, batch=None, labels=None,
               training=True, num_classes=5):
    preprocessor = MODELS.build(dict(type='ClsDataPreprocessor', num_classes=num_classes,
                                     label_smoothing=label_smoothing, mixup=mixup,
                                     random_erasing=random_erasing))
    batch = batch if batch is not None else uint8_batch()
    labels = labels if labels is not None else [0, 1, 2, 3][:len(batch)]
    data = preprocessor(dict(inputs=batch, data_samples=labelled(labels)), training=training)
    normalised = (torch.stack(batch).float() - MEAN) / STD
    return data, normalised


@pytest.mark.parametrize('seed', range(4))
def test_mixup_targets_sum_to_one_and_mix_the_images_with_the_same_weight(seed):
    np.random.seed(seed)
    data, clean = preprocess(mixup=dict(mixup_alpha=0.8, cutmix_alpha=0.))
    scores = torch.stack([sample.gt_score for sample in data['data_samples']])
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(4))

    # Sample 0 (label 0) is mixed with the flipped batch's sample 0 (label 3):
    # target = lam * smooth(0) + (1 - lam) * smooth(3), so lam follows from the scores.
    off = 0.1 / 5
    lam = (scores[0, 0] - off) / (1 - 0.1)
    torch.testing.assert_close(data['inputs'], lam * clean + (1 - lam) * clean.flip(0))


@pytest.mark.parametrize('seed', range(4))
def test_cutmix_pastes_a_box_whose_area_is_the_label_weight(seed):
    np.random.seed(seed)
    data, clean = preprocess(mixup=dict(mixup_alpha=0., cutmix_alpha=1.0), label_smoothing=0.)
    scores = torch.stack([sample.gt_score for sample in data['data_samples']])
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(4))

    mixed = data['inputs']
    from_partner = (mixed == clean.flip(0)).all(dim=1) & (mixed != clean).any(dim=1)
    kept = (mixed == clean).all(dim=1)
    assert (from_partner | kept).all()  # every pixel comes from one of the two images
    pasted_fraction = from_partner[0].float().mean()
    torch.testing.assert_close(scores[0, 3], pasted_fraction)  # label 3 is the partner's
    torch.testing.assert_close(scores[0, 0], 1 - pasted_fraction)


def test_random_erasing_fills_a_box_in_normalised_space_only_in_training():
    config = dict(probability=1.0, mode='const', max_count=1)
    data, clean = preprocess(random_erasing=config, label_smoothing=0.)
    erased = (data['inputs'] == 0).all(dim=1)  # 'const' erases to 0 after normalisation
    assert all(erased[i].any() for i in range(4))
    torch.testing.assert_close(data['inputs'][~erased.unsqueeze(1).expand_as(clean)],
                               clean[~erased.unsqueeze(1).expand_as(clean)])
    assert 'gt_score' not in data['data_samples'][0]  # no smoothing, no mixup: hard labels

    data, clean = preprocess(random_erasing=config, mixup=dict(mixup_alpha=0.8),
                             training=False)
    torch.testing.assert_close(data['inputs'], clean)
    assert 'gt_score' not in data['data_samples'][0]


def test_bad_batches_are_named():
    with pytest.raises(ValueError, match='even batch size'):
        preprocess(mixup=dict(mixup_alpha=0.8), batch=uint8_batch(3), labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 5\)'):
        preprocess(labels=[0, 1, 7, 2])
    with pytest.raises(ValueError, match='num_classes'):
        MODELS.build(dict(type='ClsDataPreprocessor', mixup=dict(mixup_alpha=0.8)))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 5\)'):
        build()(torch.randn(2, 3, 32, 32), labelled([0, 5]), mode='loss')
    with pytest.raises(ValueError, match='gt_label'):
        build()(torch.randn(2, 3, 32, 32), [BaseDataElement(), BaseDataElement()], mode='loss')


def test_preprocessor_gets_num_classes_from_the_head():
    model = build(num_classes=7, data_preprocessor=dict(type='ClsDataPreprocessor',
                                                        label_smoothing=0.1))
    assert model.data_preprocessor.num_classes == 7
    assert model.geometry()['num_classes'] == 7


@MODELS.register_module(force=True)
class SubclassedClsDataPreprocessor(ClsDataPreprocessor):
    """A user's preprocessor built on fastmim's: it needs num_classes as much."""


@pytest.mark.parametrize('preprocessor_type', ['SubclassedClsDataPreprocessor',
                                               SubclassedClsDataPreprocessor])
def test_a_subclassed_preprocessor_gets_num_classes_from_the_head(preprocessor_type):
    """The type was compared by name: a subclass got no num_classes and refused label
    smoothing ('mixup and label smoothing need num_classes')."""
    model = build(num_classes=7, data_preprocessor=dict(type=preprocessor_type,
                                                        label_smoothing=0.1))
    assert model.data_preprocessor.num_classes == 7


def shrink_demo(cfg, work_dir):
    """The demo recipe (pipelines, augmentation, layer decay, schedule) on a 2-block ViT at
    64 px, 128 training crops in batches of 16, two epochs."""
    cfg.model.backbone.arch = dict(embed_dim=96, depth=2, num_heads=3)
    cfg.model.backbone.img_size = 64
    cfg.model.backbone.init_cfg = None
    for transform in cfg.train_dataloader.dataset.pipeline + cfg.val_dataloader.dataset.pipeline:
        for key in ('size', 'img_size', 'crop_size'):
            if key in transform:
                transform[key] = 64
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'train_dataloader.batch_size': 16,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.num_samples': 128,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': 2,
        'train_cfg.val_interval': 2,
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=2),
    })
    cfg.test_dataloader = cfg.val_dataloader
    return cfg


def test_demo_fine_tuning_learns_and_tools_test_reports_it(tmp_path):
    cfg = shrink_demo(Config.fromfile(str(DEMO)), tmp_path)
    adapt_to_device(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()

    val = runner.message_hub.get_scalar('val/accuracy/top1').current()
    chance = 100 / cfg.model.head.num_classes  # 39 photos
    assert val >= 3 * chance, f'top-1 {val:.1f}% after fine-tuning, chance {chance:.1f}%'

    config_file = tmp_path / 'demo_tiny.py'
    cfg.dump(str(config_file))
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'test.py'), str(config_file),
         str(tmp_path / 'epoch_2.pth'), '--work-dir', str(tmp_path / 'test'),
         '--out', str(tmp_path / 'metrics.json')],
        cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['accuracy/top1'] == pytest.approx(val)  # same weights, same centre crops
    assert metrics['accuracy/top5'] >= metrics['accuracy/top1']
