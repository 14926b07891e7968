"""The reference's segmentation ViT (``ViTBEiT``) as options of fastmim's ViT: BEiT's relative
position bias per block (``rel_pos_bias=True``) and timm's layer scale (``init_values``),
against timm's own BEiT with the same weights; the tables' rule for other grids."""
import pytest
import torch
import torch.nn.functional as F
from timm.models.beit import Beit

from fastmim.errors import CheckpointError
from fastmim.models.backbones import VisionTransformer
from fastmim.models.backbones.beit_relative_position import resize_beit_relative_position_bias_table
from fastmim.models.utils.pretrained import load_pretrained

TINY = dict(embed_dim=32, depth=2, num_heads=4)


def beit_vit(img_size=64, **kwargs):
    torch.manual_seed(0)
    return VisionTransformer(arch=TINY, img_size=img_size, rel_pos_bias=True, init_values=1.0,
                             **kwargs).eval()


def randomise(model, names=('relative_position_bias_table', 'gamma', 'pos_embed')):
    """Random values for the tensors under test (they start at 0 / 1 / constant)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(names):
                param.normal_()
    return model


def test_beit_checkpoint_loads_and_equals_timm_beit():
    """A state dict in BEiT's layout (timm's ``Beit``: ``gamma_1`` / ``gamma_2``, the index
    buffers the reference's checkpoints carry) loads strictly; the outputs are Beit's."""
    torch.manual_seed(1)
    reference = randomise(Beit(img_size=64, patch_size=16, num_classes=0, global_pool='token',
                               use_abs_pos_emb=True, use_rel_pos_bias=True, init_values=1.0,
                               qkv_bias=False, **TINY)).eval()
    state = reference.state_dict()
    assert 'blocks.0.gamma_1' in state
    for index, block in enumerate(reference.blocks):
        state[f'blocks.{index}.attn.relative_position_index'] = \
            block.attn.relative_position_index
    model = beit_vit(qkv_bias=False)
    model.load_state_dict(state, strict=True)

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (features, ) = model(images)
        tokens = reference.forward_features(images)[:, 1:]
    expected = tokens.reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_options_off_by_default_and_new_tensors_start_as_beit():
    plain = VisionTransformer(arch=TINY, img_size=64)
    assert not [key for key in plain.state_dict() if 'relative_position' in key or '.ls' in key]
    model = beit_vit()
    table = model.blocks[1].attn.relative_position_bias_table
    assert tuple(table.shape) == ((2 * 4 - 1)**2 + 3, 4) and not table.any()
    assert torch.equal(model.blocks[0].ls2.gamma, torch.ones(32))
    # A zero table is no bias: the model computes what the same weights without tables do.
    without = VisionTransformer(arch=TINY, img_size=64, init_values=1.0).eval()
    without.load_state_dict({key: value for key, value in model.state_dict().items()
                             if 'relative_position' not in key})
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(images)[0], without(images)[0])


def test_table_resize_keeps_class_rows_and_resizes_offsets_bicubically():
    table = torch.randn(7 * 7 + 3, 2)
    resized = resize_beit_relative_position_bias_table(table, (4, 4), (3, 5))
    assert tuple(resized.shape) == (5 * 9 + 3, 2)
    assert torch.equal(resized[-3:], table[-3:])
    image = table[:-3].t().reshape(1, 2, 7, 7)
    expected = F.interpolate(image, size=(5, 9), mode='bicubic', align_corners=False)
    torch.testing.assert_close(resized[:-3], expected.reshape(2, -1).t())
    with pytest.raises(ValueError, match='a 5x5 grid needs a \\(84, heads\\) table'):
        resize_beit_relative_position_bias_table(table, (5, 5), (4, 4))


def test_another_input_grid_equals_the_model_loaded_at_that_grid():
    """The rule for other grids: a 64 px model run on 96 x 128 inputs resizes its tables (and
    position embedding) at run time exactly as loading its weights into a 96 x 128 model does."""
    model = randomise(beit_vit())
    loaded = VisionTransformer(arch=TINY, img_size=(96, 128), rel_pos_bias=True,
                               init_values=1.0).eval()
    loaded.load_state_dict(model.state_dict())
    assert tuple(loaded.blocks[0].attn.relative_position_bias_table.shape) == (11 * 15 + 3, 4)
    images = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(images)[0], loaded(images)[0], rtol=1e-5, atol=1e-5)


def test_a_non_square_checkpoint_is_resized_from_the_grid_its_geometry_records(tmp_path):
    """A 32 x 128 px model's tables cover a 2 x 8 grid, (3 x 15) offsets; 15 x 3 offsets have
    as many rows, so only the file's geometry tells them apart. Each offset table is resized
    as an image of (dy, dx) to the 96 px model's 11 x 11, and the loaded model is the source
    model run at 96 px (which knows its grid from its construction)."""
    source = randomise(beit_vit(img_size=(32, 128)))
    path = tmp_path / 'beit.pth'
    torch.save({'state_dict': {f'backbone.{key}': value
                               for key, value in source.state_dict().items()},
                'meta': {'geometry': {'backbone': source.geometry()}}}, path)
    model = beit_vit(img_size=96)
    load_pretrained(model, str(path))

    heads = TINY['num_heads']
    for index, block in enumerate(source.blocks):
        table = block.attn.relative_position_bias_table.detach()
        offsets = table[:-3].t().reshape(1, heads, 3, 15)
        expected = F.interpolate(offsets, size=(11, 11), mode='bicubic', align_corners=False)
        loaded = model.blocks[index].attn.relative_position_bias_table.detach()
        torch.testing.assert_close(loaded[:-3], expected.reshape(heads, -1).t())
        assert torch.equal(loaded[-3:], table[-3:])
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(images)[0], source(images)[0], rtol=1e-5, atol=1e-5)


def test_the_new_tables_and_scales_are_declared_optional_with_their_options_only():
    assert VisionTransformer(arch=TINY, img_size=64).checkpoint_optional_names() == set()
    tables = {f'blocks.{i}.attn.relative_position_bias_table' for i in range(TINY['depth'])}
    scales = {f'blocks.{i}.ls{branch}.gamma' for i in range(TINY['depth']) for branch in (1, 2)}
    assert VisionTransformer(arch=TINY, img_size=64,
                             rel_pos_bias=True).checkpoint_optional_names() == tables
    assert VisionTransformer(arch=TINY, img_size=64,
                             init_values=1.0).checkpoint_optional_names() == scales
    assert beit_vit().checkpoint_optional_names() == tables | scales


def test_checkpoint_without_tables_reports_them_as_new(tmp_path):
    """A fine-tuned plain ViT into the BEiT-style ViT, as the segmentation config loads it
    (no ``allow_missing``): the tables and scales the backbone declares optional stay
    initialised and are reported; a tensor the file lacks besides them is still an error."""
    plain = VisionTransformer(arch=TINY, img_size=64)
    path = tmp_path / 'plain.pth'
    state = {f'backbone.{key}': value for key, value in plain.state_dict().items()}
    torch.save(state, path)
    model = beit_vit()
    summary = load_pretrained(model, str(path))
    assert sorted(summary.missing_allowed) == sorted(model.checkpoint_optional_names())
    assert torch.equal(model.blocks[0].attn.qkv.weight, plain.blocks[0].attn.qkv.weight)
    assert not model.blocks[0].attn.relative_position_bias_table.any()
    assert torch.equal(model.blocks[1].ls1.gamma, torch.ones(TINY['embed_dim']))

    del state['backbone.blocks.1.mlp.fc1.weight']
    torch.save(state, path)
    with pytest.raises(CheckpointError, match='blocks.1.mlp.fc1.weight') as error:
        load_pretrained(beit_vit(), str(path))
    assert 'relative_position_bias_table' not in str(error.value)


def test_a_checkpoint_with_tables_and_scales_loads_them(tmp_path):
    source = randomise(beit_vit())
    path = tmp_path / 'beit.pth'
    torch.save({f'backbone.{key}': value for key, value in source.state_dict().items()}, path)
    model = beit_vit()
    summary = load_pretrained(model, str(path))
    assert summary.missing_allowed == []
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_tables_and_scales_take_their_block_id():
    model = beit_vit()
    assert model.layer_id('blocks.1.attn.relative_position_bias_table') == 2
    assert model.layer_id('blocks.0.ls1.gamma') == model.layer_id('blocks.0.ls2.gamma') == 1


def test_rel_pos_bias_with_another_block_class_is_refused():
    with pytest.raises(ValueError, match='block_fn cannot be combined'):
        VisionTransformer(arch=TINY, img_size=64, rel_pos_bias=True, block_fn=torch.nn.Identity)
