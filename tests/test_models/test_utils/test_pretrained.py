"""Loading pre-training checkpoints into fine-tuning / downstream backbones across resolutions."""
import logging

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch import nn

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
import fastmim.models  # noqa: F401
from fastmim.errors import CheckpointError
from fastmim.models.utils import load_pretrained
from fastmim.models.utils.backbone_contract import BackboneContract
from fastmim.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)
TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TINY_CMT = dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                stem_channels=8, mlp_ratio=2.0)


@pytest.fixture
def logger(caplog):
    caplog.set_level(logging.INFO, logger='test_pretrained')
    return logging.getLogger('test_pretrained')


def build(cfg):
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def save_pretraining_checkpoint(backbone, path, extra=None):
    """What a FastMIM pre-training run saves: backbone, decoder, mask token, geometry."""
    state = {'backbone.' + key: value for key, value in backbone.state_dict().items()}
    state['neck.decoder_embed.weight'] = torch.randn(16, 8)
    state['mask_token'] = torch.zeros(1, 3, 1, 1)
    state.update(extra or {})
    torch.save({'state_dict': state, 'meta': {'geometry': {'backbone': backbone.geometry(),
                                                           'input_size': [128, 128]}}}, path)
    return path


def bicubic_grid(pos_embed, src, dst):
    """Independent reference: the patch grid of ``pos_embed`` (``src``: a side or an (h, w)
    pair, rows major) resized to ``dst`` with torch's bicubic."""
    (src_h, src_w), (dst_h, dst_w) = ((size, size) if isinstance(size, int) else size
                                      for size in (src, dst))
    channels = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, src_h, src_w, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst_h, dst_w), mode='bicubic', align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, dst_h * dst_w, channels)


def test_vit_8x8_checkpoint_loads_at_14x14_with_bicubic_pos_embed(tmp_path, logger, caplog):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224, qkv_bias=True))
    torch.manual_seed(1)
    torch.nn.init.normal_(target.pos_embed)

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.resized == {'pos_embed': ((1, 65, 32), (1, 197, 32))}
    assert torch.equal(target.pos_embed[:, :1], source.pos_embed[:, :1])  # class token kept
    torch.testing.assert_close(target.pos_embed[:, 1:], bicubic_grid(source.pos_embed, 8, 14),
                               rtol=0, atol=1e-6)
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    # The loaded 224-px model is the pre-trained model run at 224 px (it resizes the same way).
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(target(images)[0], source(images)[0], rtol=0, atol=1e-5)
    # The decoder and the mask token are left out without fuss: one INFO line, no warning.
    records = [r for r in caplog.records if r.name == 'test_pretrained']
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert 'neck (1)' in records[0].message and 'mask_token (1)' in records[0].message
    assert 'vit.pth' in records[0].message


def test_a_non_square_checkpoint_is_resized_from_the_grid_its_geometry_records(tmp_path, logger):
    """A 32 x 128 px ViT has a 2 x 8 patch grid: 16 tokens, as many as a 4 x 4 one, so only the
    file's geometry tells the grid; the rows of the grid stay rows."""
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=(32, 128)))
    with torch.no_grad():
        source.pos_embed.normal_()
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=96))

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.resized == {'pos_embed': ((1, 17, 32), (1, 37, 32))}
    assert torch.equal(target.pos_embed[:, :1], source.pos_embed[:, :1])  # class token kept
    torch.testing.assert_close(target.pos_embed[:, 1:],
                               bicubic_grid(source.pos_embed, (2, 8), (6, 6)), rtol=0, atol=1e-6)


def test_the_summary_names_the_part_of_the_backbone_left_out(tmp_path, logger, caplog):
    """A target without a final norm names the norm it leaves out, not 'left out backbone (2)',
    which reads as if the whole backbone were skipped."""
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128, final_norm=False))
    load_pretrained(target, str(path), logger=logger)
    message = next(r.message for r in caplog.records if r.name == 'test_pretrained')
    assert 'left out backbone.norm (2), ' in message and 'backbone (' not in message


def test_sincos_target_keeps_its_own_exact_table(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128,
                        pos_embed_type='sincos'))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                        pos_embed_type='sincos'))
    table = target.pos_embed.detach().clone()

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.rebuilt == ['pos_embed']
    assert torch.equal(target.pos_embed, table)
    assert torch.equal(target.cls_token, source.cls_token)


def test_a_learned_table_is_not_dropped_by_a_sincos_target(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                        pos_embed_type='sincos'))
    with pytest.raises(CheckpointError, match=r"learned table.*pos_embed_type='learned'"):
        load_pretrained(target, str(path), logger=logger)


def test_final_norm_switched_off_for_fc_norm_is_left_out(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224, final_norm=False))

    summary = load_pretrained(target, str(path), logger=logger)

    assert 'backbone.norm.weight' in summary.left_out and 'backbone.norm.bias' in summary.left_out
    assert torch.equal(target.blocks[1].norm2.weight, source.blocks[1].norm2.weight)


def save_finetuned_checkpoint(path):
    """What fine-tuning saves (configs/finetune/vit_b_ft_100e.py): a ViT without its final norm,
    and the classifier's own norm after pooling (``head.fc_norm``) before its linear layer."""
    backbone = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                          final_norm=False))
    state = {'backbone.' + key: value for key, value in backbone.state_dict().items()}
    state.update({'head.fc_norm.weight': torch.ones(32), 'head.fc_norm.bias': torch.zeros(32),
                  'head.fc.weight': torch.zeros(5, 32), 'head.fc.bias': torch.zeros(5)})
    torch.save({'state_dict': state,
                'meta': {'geometry': {'backbone': backbone.geometry()}}}, path)
    return path


def test_a_finetuned_checkpoint_for_a_final_norm_vit_says_what_it_is_and_what_to_set(
        tmp_path, logger):
    """A kNN or linear-probe config (final norm on) given a fine-tuned checkpoint: the error
    named only the missing norm.weight and norm.bias."""
    path = save_finetuned_checkpoint(tmp_path / 'finetuned.pth')
    probe_backbone = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224))

    with pytest.raises(CheckpointError) as error:
        load_pretrained(probe_backbone, str(path), logger=logger)

    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(f'{path} does not fit VisionTransformer: a fine-tuned checkpoint')
    assert 'head.fc_norm.weight' in message and 'norm.weight, norm.bias' in message
    assert message.endswith('(--cfg-options model.backbone.final_norm=False)')
    # the setting it names loads the file
    fitting = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                         final_norm=False))
    load_pretrained(fitting, str(path), logger=logger)


def test_a_timm_finetuned_vit_is_recognised_by_its_pooled_norm(tmp_path, logger):
    """timm's fine-tuned ViTs (global average pooling) keep the same layout at the top level:
    ``fc_norm`` and ``head`` beside the blocks, no ``norm``."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    timm_vit = TimmViT(img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                       num_classes=5, global_pool='avg', fc_norm=True)
    assert 'norm.weight' not in timm_vit.state_dict()
    torch.save(timm_vit.state_dict(), tmp_path / 'timm_ft.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224))

    with pytest.raises(CheckpointError, match=r'^\S+ does not fit VisionTransformer: a '
                       r'fine-tuned checkpoint \(it has fc_norm\.weight.*final_norm=False\)$'):
        load_pretrained(target, str(tmp_path / 'timm_ft.pth'), logger=logger)


def test_a_backbone_file_without_the_final_norm_names_final_norm_false(tmp_path, logger):
    backbone = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                          final_norm=False))
    torch.save({'state_dict': {'backbone.' + key: value
                               for key, value in backbone.state_dict().items()}},
               tmp_path / 'no_norm.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224))

    with pytest.raises(CheckpointError, match=r'a checkpoint of a backbone without a final norm '
                       r'\(no norm\.weight, norm\.bias\): build the backbone with '
                       r'final_norm=False'):
        load_pretrained(target, str(tmp_path / 'no_norm.pth'), logger=logger)


def test_other_missing_keys_besides_the_final_norm_are_listed(tmp_path, logger):
    """Only the exact layout is explained: a file that lacks more is listed key by key."""
    path = save_finetuned_checkpoint(tmp_path / 'finetuned.pth')
    state = torch.load(path, weights_only=True)
    del state['state_dict']['backbone.blocks.1.mlp.fc2.bias']
    torch.save(state, path)
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224))

    with pytest.raises(CheckpointError, match=r'(?s)missing keys.*blocks\.1\.mlp\.fc2\.bias'
                       r'.*norm\.weight'):
        load_pretrained(target, str(path), logger=logger)


def test_swin_window_4_tables_load_into_a_window_7_swin_tiny(tmp_path, logger,
                                                            release_table_resampling):
    source = build(dict(type='SwinTransformer', arch='t', img_size=128, window_size=4))
    path = save_pretraining_checkpoint(source, tmp_path / 'swin.pth')
    target = build(dict(type='SwinTransformer', arch='t', img_size=224, window_size=7))

    summary = load_pretrained(target, str(path), logger=logger)

    assert len(summary.resized) == sum(source.arch_cfg['depths'])
    source_state, target_state = source.state_dict(), target.state_dict()
    for key, (old, new) in summary.resized.items():
        assert key.endswith('relative_position_bias_table') and old[0] == 49 and new[0] == 169
        torch.testing.assert_close(target_state[key],
                                   release_table_resampling(source_state[key], 4, 7),
                                   rtol=0, atol=1e-5)
    assert torch.equal(target_state['layers.3.downsample.reduction.weight'],
                       source_state['layers.3.downsample.reduction.weight'])
    with torch.no_grad():
        assert target(torch.randn(1, 3, 224, 224))[0].shape == (1, 768, 7, 7)


def test_swin_non_square_window_tables_load_from_the_windows_the_file_records(
        tmp_path, logger, release_table_resampling):
    """A (4, 8) window has a 7 x 15 table, no square one: only the file's
    ``stage_window_sizes`` tell how to lay it out before resampling it to window 7."""
    arch = dict(embed_dim=8, depths=(1, 1, 1, 2), num_heads=(1, 1, 1, 2))
    source = build(dict(type='SwinTransformer', arch=arch, img_size=(128, 256),
                        window_size=(4, 8)))
    with torch.no_grad():
        for name, param in source.named_parameters():
            if name.endswith('relative_position_bias_table'):
                param.normal_()
    path = save_pretraining_checkpoint(source, tmp_path / 'swin.pth')
    target = build(dict(type='SwinTransformer', arch=arch, img_size=224, window_size=7))

    summary = load_pretrained(target, str(path), logger=logger)

    assert len(summary.resized) == sum(arch['depths'])
    source_state, target_state = source.state_dict(), target.state_dict()
    for key, (old, new) in summary.resized.items():
        assert key.endswith('relative_position_bias_table') and old[0] == 7 * 15 and \
            new[0] == 13 * 13
        torch.testing.assert_close(target_state[key],
                                   release_table_resampling(source_state[key], (4, 8), 7),
                                   rtol=0, atol=2e-4)


def test_cmt_128_checkpoint_loads_at_224(tmp_path, logger):
    source = build(dict(type='CMT', arch=TINY_CMT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'cmt.pth')
    target = build(dict(type='CMT', arch=TINY_CMT, img_size=224))

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.resized['stages.0.relative_position_bias'] == ((1, 1024, 16), (1, 3136, 49))
    # The loaded 224-px model is the pre-trained model run at 224 px.
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(target(images)[0], source(images)[0], rtol=0, atol=1e-5)


def test_wrong_architecture_names_the_file_keys_and_shapes(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit_tiny.pth')
    wider = build(dict(type='VisionTransformer', arch=dict(embed_dim=48, depth=3, num_heads=2),
                       img_size=128))

    with pytest.raises(CheckpointError) as error:
        load_pretrained(wider, str(path), logger=logger)
    message = str(error.value)
    assert 'vit_tiny.pth does not fit VisionTransformer' in message
    assert 'missing keys' in message and 'blocks.2.attn.qkv.weight (144, 48)' in message
    assert 'cls_token: checkpoint (1, 1, 32) vs model (1, 1, 48)' in message
    assert 'pos_embed: checkpoint (1, 65, 32) vs model (1, 65, 48)' in message
    # The last line says which sizes differ and the arch that fits the file (a ViT-S
    # checkpoint given to a ViT-B config: the shapes alone leave that to the reader).
    assert message.splitlines()[-1] == (
        "  the file's VisionTransformer has embed_dim 32, depth 2, the model's embed_dim 48, "
        "depth 3: give the model the file's arch {'embed_dim': 32, 'depth': 2, 'num_heads': 2}")

    # Another architecture altogether: one line naming both, not two models' keys.
    swin = build(dict(type='SwinTransformer', arch=TINY_SWIN, img_size=128, window_size=4))
    with pytest.raises(CheckpointError, match=r'^\S+vit_tiny\.pth holds a VisionTransformer '
                       r'backbone .*, but the model is a SwinTransformer: give it a '
                       r'SwinTransformer checkpoint \(\d+ tensors of the file [^\n]*\)$'):
        load_pretrained(swin, str(path), logger=logger)


def test_a_cmt_of_another_size_is_named_with_the_files_arch(tmp_path, logger):
    """CMT's geometry holds its sizes beside its arch name, so a CMT-S file given to a CMT-B
    config is named by its sizes, not only by a list of shapes."""
    source = build(dict(type='CMT', arch=TINY_CMT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'cmt_tiny.pth')
    deeper = build(dict(type='CMT', arch=dict(TINY_CMT, depths=[1, 1, 2, 1]), img_size=128))

    with pytest.raises(CheckpointError) as error:
        load_pretrained(deeper, str(path), logger=logger)
    assert str(error.value).splitlines()[-1] == (
        "  the file's CMT has depths [1, 1, 1, 1], the model's depths [1, 1, 2, 1]: give the "
        f"model the file's arch {source.geometry()['arch']!r}")


class Widths(BackboneContract, nn.Module):
    """A backbone whose size is set by an entry no built-in backbone has."""
    size_keys = ('width', )

    def __init__(self, width):
        super().__init__()
        self.width = width
        self.proj = nn.Linear(width, 2)

    def geometry(self):
        return dict(type='Widths', arch=f'w{self.width}', width=self.width)


def test_the_other_size_line_asks_the_backbone_which_entries_set_its_size(tmp_path, logger):
    path = save_pretraining_checkpoint(Widths(4), tmp_path / 'narrow.pth')
    with pytest.raises(CheckpointError) as error:
        load_pretrained(Widths(8), str(path), logger=logger)
    assert str(error.value).splitlines()[-1] == (
        "  the file's Widths has width 4, the model's width 8: give the model the file's arch "
        "'w4'")


def test_unexpected_key_under_the_prefix_is_an_error(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth',
                                       extra={'backbone.extra.weight': torch.zeros(2, 3)})
    with pytest.raises(CheckpointError, match=r'unexpected keys.*\n\s+extra\.weight \(2, 3\)'):
        load_pretrained(source, str(path), logger=logger)


def test_prefix_with_no_weights_names_what_the_file_has(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    with pytest.raises(CheckpointError, match=r"no weights under the prefix 'encoder\.'.*"
                       r'backbone, neck, mask_token'):
        load_pretrained(source, str(path), prefix='encoder.', logger=logger)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = MODELS.build(dict(type='VisionTransformer', arch=TINY_VIT,
                                          img_size=224))
        self.head = nn.Linear(32, 5)


def test_missing_keys_need_allow_missing(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'vit.pth')
    classifier = Classifier()

    with pytest.raises(CheckpointError, match=r'(?s)missing keys.*head\.weight \(5, 32\)'):
        load_pretrained(classifier, str(path), prefix='', logger=logger)

    summary = load_pretrained(classifier, str(path), prefix='', allow_missing=('head.*', ),
                              logger=logger)
    assert summary.missing_allowed == ['head.weight', 'head.bias']
    assert summary.resized == {'backbone.pos_embed': ((1, 65, 32), (1, 197, 32))}
    assert 'neck.decoder_embed.weight' in summary.left_out and 'mask_token' in summary.left_out
    assert torch.equal(classifier.backbone.cls_token, source.cls_token)


class Detector(nn.Module):
    """A dense model's layout: a Swin returning every stage, with a norm of its own on each
    output before the last (``out_norms``), under ``backbone``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.backbone = MODELS.build(dict(type='SwinTransformer', arch=TINY_SWIN, img_size=64,
                                          window_size=2, out_indices=(0, 1, 2, 3)))


def classifier_swin():
    """The Swin of a fine-tuned classifier: the last stage only, so no ``out_norms``."""
    return build(dict(type='SwinTransformer', arch=TINY_SWIN, img_size=64, window_size=2))


OUT_NORMS = [f'out_norms.{stage}.{part}' for stage in range(3) for part in ('weight', 'bias')]


@pytest.mark.parametrize('prefix, into', [('', 'model'), ('backbone.', 'backbone')])
def test_layers_the_backbone_declares_optional_stay_initialised_and_are_named(
        tmp_path, logger, caplog, prefix, into):
    """A classifier checkpoint into a detector: the output norms, which the backbone declares
    (``checkpoint_optional_names``), need no ``allow_missing``, keep their initialisation and
    are named in the summary, whether the load goes into the whole model or its backbone."""
    source = classifier_swin()
    path = save_pretraining_checkpoint(source, tmp_path / 'classifier.pth')
    detector = Detector()
    target = detector if into == 'model' else detector.backbone
    initial = {key: value.clone() for key, value in detector.backbone.state_dict().items()}

    summary = load_pretrained(target, str(path), prefix=prefix, logger=logger)

    under = 'backbone.' if into == 'model' else ''
    assert sorted(summary.missing_allowed) == sorted(under + key for key in OUT_NORMS)
    loaded = detector.backbone.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    for key in OUT_NORMS:
        assert torch.equal(loaded[key], initial[key]), key
    (record, ) = [r for r in caplog.records if r.name == 'test_pretrained']
    assert f'kept initialised {under}out_norms (6)' in record.message


def test_a_file_that_has_the_optional_layers_loads_them(tmp_path, logger):
    source = Detector().backbone
    with torch.no_grad():
        for param in source.out_norms.parameters():
            param.normal_()
    path = save_pretraining_checkpoint(source, tmp_path / 'detector_backbone.pth')
    target = Detector().backbone

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.missing_allowed == []
    loaded = target.state_dict()
    for key in OUT_NORMS:
        assert torch.equal(loaded[key], source.state_dict()[key]), key


def test_a_file_missing_a_tensor_the_backbone_does_not_declare_optional_fails(tmp_path, logger):
    source = classifier_swin()
    path = save_pretraining_checkpoint(source, tmp_path / 'classifier.pth')
    checkpoint = torch.load(path)
    del checkpoint['state_dict']['backbone.layers.1.blocks.0.attn.qkv.weight']
    torch.save(checkpoint, path)

    with pytest.raises(CheckpointError, match=r'layers\.1\.blocks\.0\.attn\.qkv\.weight') as error:
        load_pretrained(Detector(), str(path), prefix='', logger=logger)
    assert 'out_norms' not in str(error.value)


def test_truncated_file_is_named(tmp_path, logger):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'cut.pth')
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match='cut.pth is not a readable checkpoint'):
        load_pretrained(source, str(path), logger=logger)


def test_timm_state_dict_loads_with_its_classifier_left_out(tmp_path, logger):
    import timm
    torch.manual_seed(0)
    reference = timm.create_model('vit_tiny_patch16_224', pretrained=False, depth=2,
                                  num_classes=7).eval()
    path = tmp_path / 'timm_vit.pth'
    torch.save(reference.state_dict(), path)
    target = build(dict(type='VisionTransformer', arch=dict(embed_dim=192, depth=2, num_heads=3),
                        img_size=224))

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.left_out == ['head.bias', 'head.weight']
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = reference.forward_features(images)[:, 1:]
        torch.testing.assert_close(target(images)[0].flatten(2).transpose(1, 2), tokens,
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize('features_only', [True, False])
def test_a_timm_resnet_state_dict_loads_with_its_own_classifier_left_out(tmp_path, logger,
                                                                          features_only):
    """The classifier's name is the timm family's (ResNet's ``fc``): a loader knowing only
    ViT's ``head`` would refuse a resnet18 file as 'unexpected keys: backbone.fc.weight'."""
    import timm
    torch.manual_seed(0)
    reference = timm.create_model('resnet18', pretrained=False).eval()
    path = tmp_path / 'timm_resnet18.pth'
    torch.save(reference.state_dict(), path)
    target = build(dict(type='TimmBackbone', model_name='resnet18',
                        features_only=features_only))

    summary = load_pretrained(target, str(path), logger=logger)

    assert summary.left_out == ['fc.bias', 'fc.weight']
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(images), pre_logits=True) \
            if not features_only else reference.forward_features(images)
        torch.testing.assert_close(target(images)[0], expected)


def test_end_to_end_runner_checkpoint_at_64_px_initialises_a_112_px_backbone(tmp_path):
    pipeline = [dict(type='LoadImageRGB'),
                dict(type='RandomResizedCrop', size=64, scale=(0.2, 1.0)),
                dict(type='PackInputs')]
    cfg = Config(dict(
        default_scope='fastmim',
        work_dir=str(tmp_path),
        experiment_name=str(tmp_path),
        model=dict(type='FastMIM',
                   backbone=dict(type='VisionTransformer', arch=TINY_VIT, img_size=64),
                   neck=dict(type='MIMDecoder', embed_dim=16, depth=1, num_heads=2),
                   target_generator=dict(type='HOGGenerator'), mask_ratio=0.75, block_size=16),
        train_dataloader=dict(
            batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='EmbeddedPhotos', sources='skimage', num_samples=2,
                         pipeline=pipeline)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='CheckpointMetaHook')],
        log_level='WARNING'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    trained = runner.model.backbone.eval()
    checkpoint = str(tmp_path / 'epoch_1.pth')

    backbone_cfg = dict(type='VisionTransformer', arch=TINY_VIT, img_size=112,
                        init_cfg=dict(type='FastMIMPretrained', checkpoint=checkpoint))
    with DefaultScope.overwrite_default_scope('fastmim'):
        backbone = MODELS.build(backbone_cfg).eval()
        backbone.init_weights()

    torch.testing.assert_close(backbone.pos_embed[:, 1:], bicubic_grid(trained.pos_embed, 4, 7),
                               rtol=0, atol=1e-6)
    images = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images)[0], trained(images)[0], rtol=0, atol=1e-5)

    # From mmdet / mmseg configs (another default scope) the scoped name works too.
    scoped = MODELS.build(dict(backbone_cfg, init_cfg=dict(type='fastmim.FastMIMPretrained',
                                                           checkpoint=checkpoint)))
    scoped.init_weights()
    assert torch.equal(scoped.pos_embed, backbone.pos_embed)


def test_mmengine_pretrained_that_loads_nothing_is_refused(tmp_path, logger):
    """mmengine's type='Pretrained' without prefix='backbone.' finds none of a backbone's keys
    in a fastmim checkpoint (they are backbone.*): mmengine logs a warning and fine-tuning
    would go on from random weights. One error names the file, its parts and the fix; with the
    prefix it loads as mmengine's does."""
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = str(save_pretraining_checkpoint(source, tmp_path / 'vit.pth'))
    with DefaultScope.overwrite_default_scope('fastmim'):
        target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128,
                            init_cfg=dict(type='Pretrained', checkpoint=path)))
        with pytest.raises(CheckpointError, match=r"vit\.pth: type='Pretrained' \(prefix None\) "
                           r'finds none of the weights of VisionTransformer.*backbone, neck, '
                           r"mask_token.*prefix='backbone\.'.*FastMIMPretrained"):
            target.init_weights()

        target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128,
                            init_cfg=dict(type='Pretrained', checkpoint=path,
                                          prefix='backbone.')))
        target.init_weights()
    assert torch.equal(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)


@pytest.mark.parametrize('layout, prefix', [
    ('fastmim', 'backbone.'),
    ('fastmim', 'backbone'),     # mmengine adds the dot
    ('ddp', None),               # mmengine removes DDP's 'module.'
])
def test_mmengine_pretrained_reads_the_file_once_weights_only_and_loads_as_mmengine(
        tmp_path, monkeypatch, layout, prefix):
    """The check read the file, then mmengine's Pretrained read it again. Now one read, by the
    safe loader (weights_only=True), and the same weights as mmengine's own Pretrained."""
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    with torch.no_grad():  # unlike the freshly built targets
        for parameter in source.parameters():
            parameter.normal_()
    if layout == 'fastmim':
        path = str(save_pretraining_checkpoint(source, tmp_path / 'vit.pth'))
    else:
        path = str(tmp_path / 'ddp.pth')
        torch.save({'module.' + key: value for key, value in source.state_dict().items()}, path)
    expected = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224))
    PretrainedInit(checkpoint=path, prefix=prefix)(expected)  # mmengine's own

    reads = []
    torch_load = torch.load

    def counting_load(*args, **kwargs):
        reads.append(kwargs.get('weights_only'))
        return torch_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', counting_load)
    with DefaultScope.overwrite_default_scope('fastmim'):
        target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                            init_cfg=dict(type='Pretrained', checkpoint=path, prefix=prefix)))
        target.init_weights()

    assert reads == [True]
    expected_state = expected.state_dict()
    assert all(torch.equal(value, expected_state[key])
               for key, value in target.state_dict().items())
    # Loaded, not initialised: the resized table and a block's weights are the file's.
    assert torch.equal(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)


def test_mmengine_pretrained_on_a_file_without_a_dict_names_the_file(tmp_path):
    path = str(tmp_path / 'tensor.pth')
    torch.save(torch.zeros(3), path)
    with DefaultScope.overwrite_default_scope('fastmim'):
        target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128,
                            init_cfg=dict(type='Pretrained', checkpoint=path)))
        with pytest.raises(CheckpointError, match=r'tensor\.pth holds a Tensor, not a dict of '
                           r'weights'):
            target.init_weights()


def test_mmengine_pretrained_with_a_prefix_the_file_lacks_names_what_the_file_has(tmp_path):
    """prefix='backbone.' on a timm-format file (to_timm.py's output, keys without a prefix):
    mmengine's Pretrained stops on an assertion ('backbone. is not in the pretrained model'),
    which python -O leaves out, loading nothing. The fastmim scope's names the file's parts,
    and the fix: it told to give prefix='backbone.', the prefix given."""
    path = str(tmp_path / 'timm.pth')
    torch.save(build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128)).state_dict(),
               path)
    with DefaultScope.overwrite_default_scope('fastmim'):
        target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128,
                            init_cfg=dict(type='Pretrained', checkpoint=path,
                                          prefix='backbone.')))
        with pytest.raises(CheckpointError, match=r"timm\.pth: type='Pretrained' \(prefix "
                           r"'backbone\.'\) finds none of the weights of VisionTransformer in "
                           r'it \(its top-level names: cls_token, pos_embed, .*\); for a file '
                           r'whose keys have no prefix \(a timm state dict\) leave prefix out, '
                           r"or use type='FastMIMPretrained'"):
            target.init_weights()


@pytest.mark.parametrize('init_type', ['FastMIMPretrained', 'Pretrained'])
@pytest.mark.parametrize('checkpoint', [None, ''])
def test_init_cfg_without_a_checkpoint_path_names_init_cfg_none(init_type, checkpoint):
    """--cfg-options model.backbone.init_cfg.checkpoint=None (meaning: no pre-training) is
    refused with a pointer to init_cfg=None, not a TypeError traceback from inside mmengine's
    loader; '' likewise, not 'checkpoint not found: '."""
    with DefaultScope.overwrite_default_scope('fastmim'):
        backbone = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128,
                              init_cfg=dict(type=init_type, checkpoint=checkpoint)))
        with pytest.raises(ValueError, match=rf'^{init_type}: checkpoint must be the path of a '
                           rf'checkpoint file, got {checkpoint!r}; init_cfg=None'):
            backbone.init_weights()


def test_a_timm_model_file_is_named_by_its_model_name(tmp_path, logger):
    """A TimmBackbone records no arch: its file is named by its model name, not 'a TimmBackbone
    backbone (arch None)', nor the other-size line "give the model the file's arch None"."""
    resnet18 = build(dict(type='TimmBackbone', model_name='resnet18', out_indices=(3, )))
    path = save_pretraining_checkpoint(resnet18, tmp_path / 'resnet18.pth')
    resnet34 = build(dict(type='TimmBackbone', model_name='resnet34', out_indices=(3, )))
    with pytest.raises(CheckpointError) as error:
        load_pretrained(resnet34, str(path), logger=logger)
    assert str(error.value).splitlines()[-1] == (
        "  the file's TimmBackbone has model_name resnet18, the model's model_name resnet34: "
        "give the model the file's model_name 'resnet18'")
    vit = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    with pytest.raises(CheckpointError, match=r"resnet18\.pth holds a TimmBackbone backbone "
                                              r"\(model_name 'resnet18'\), but the model is a "
                                              r"VisionTransformer"):
        load_pretrained(vit, str(path), logger=logger)


def warnings_of(caplog):
    return [r.message for r in caplog.records
            if r.name == 'test_pretrained' and r.levelno == logging.WARNING]


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_a_pretraining_checkpoint_as_a_downstream_backbone_is_warned_about(tmp_path, logger,
                                                                           caplog, scope):
    """A detector's or segmentor's backbone initialised from the pre-training checkpoint (with
    its decoder and mask token) loaded with an INFO line only, though the published recipes
    start from the ImageNet fine-tuned one."""
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'pretrain.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    with DefaultScope.overwrite_default_scope(scope):
        load_pretrained(target, str(path), logger=logger)
    (warning, ) = warnings_of(caplog)
    assert warning.startswith(f'{path} is a FastMIM pre-training checkpoint (it has neck and '
                              'mask_token)')
    # The published fine-tuning config of the backbone's type (fastmim.recipes).
    assert 'fine-tuned checkpoint' in warning and '(configs/finetune/vit_b_ft_100e.py)' in warning


def test_a_pretraining_checkpoint_for_fine_tuning_is_not_warned_about(tmp_path, logger,
                                                                     caplog):
    source = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    path = save_pretraining_checkpoint(source, tmp_path / 'pretrain.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=128))
    with DefaultScope.overwrite_default_scope('fastmim'):
        load_pretrained(target, str(path), logger=logger)
    assert warnings_of(caplog) == []


def test_a_finetuned_checkpoint_as_a_downstream_backbone_is_not_warned_about(tmp_path, logger,
                                                                            caplog):
    path = save_finetuned_checkpoint(tmp_path / 'finetuned.pth')
    target = build(dict(type='VisionTransformer', arch=TINY_VIT, img_size=224,
                        final_norm=False))
    with DefaultScope.overwrite_default_scope('mmseg'):
        load_pretrained(target, str(path), logger=logger)
    assert warnings_of(caplog) == []
