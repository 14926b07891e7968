"""CMT backbone: contract shapes, published sizes, attention definition and bias resizing."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from fastmim.models.backbones.cmt import (CMT, DEFAULT_REDUCTION_RATIOS, STAGE_STRIDES,
                                          LightweightAttention, resize_relative_position_bias)
from fastmim.models.utils.pretrained import load_pretrained
from fastmim.registry import MODELS

TINY = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
            stem_channels=8, mlp_ratio=2.0)


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return CMT(TINY, img_size=128, out_indices=(0, 1, 2, 3))


@pytest.mark.parametrize('size', [(128, 128), (224, 224), (160, 224)])
def test_output_shapes_at_any_size_divisible_by_32(tiny_model, size):
    outs = tiny_model(torch.randn(2, 3, *size))
    assert tiny_model.out_channels == [8, 16, 32, 64]
    assert tiny_model.out_strides == [4, 8, 16, 32]
    assert [tuple(o.shape) for o in outs] == [
        (2, c, size[0] // s, size[1] // s) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]


def test_default_returns_last_stage_only():
    model = CMT(TINY, img_size=128)
    outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape == (1, 64, 2, 2)
    assert model.out_channels == [64] and model.out_strides == [32]


def test_rejects_input_not_divisible_by_32(tiny_model):
    with pytest.raises(ValueError, match='divisible by 32'):
        tiny_model(torch.randn(1, 3, 100, 128))


@pytest.mark.parametrize('arch, message', [
    ('huge', 'unknown'),
    (dict(TINY, depths=[1, 1, 1]), '4 entries'),
    ({k: v for k, v in TINY.items() if k != 'mlp_ratio'}, 'mlp_ratio'),
    (dict(TINY, reduction_ratios=[3, 4, 2, 1]), 'reduction_ratios'),
])
def test_bad_arch_names_the_problem(arch, message):
    with pytest.raises(ValueError, match=message):
        CMT(arch)


def test_bias_and_key_reduction_shapes_per_stage(tiny_model):
    """Paper: keys/values reduced by a k x k stride-k depthwise conv, k = 8, 4, 2, 1; bias
    (heads, N, N / k^2) with N the tokens of the construction size (128 px: 32^2 at stage 1)."""
    for stage, dim, heads, k, side in zip(tiny_model.stages, [8, 16, 32, 64], [1, 2, 4, 8],
                                           [8, 4, 2, 1], [32, 16, 8, 4]):
        assert stage.relative_position_bias.shape == (heads, side ** 2, (side // k) ** 2)
        for block in stage.blocks:
            if k == 1:
                assert isinstance(block.attn.reduce, torch.nn.Identity)
                continue
            conv = block.attn.reduce[0]
            assert conv.weight.shape == (dim, 1, k, k)
            assert conv.stride == (k, k) and conv.groups == dim


def _closed_form_param_count(dims, depths, heads, stem, ratio, img_size, reductions=(8, 4, 2, 1)):
    """Parameters of CMT written out layer by layer from the paper's definition."""
    conv = lambda cin, cout, k, groups=1: cout * cin // groups * k * k + cout  # noqa: E731
    norm = lambda c: 2 * c  # noqa: E731
    total = conv(3, stem, 3) + 2 * conv(stem, stem, 3) + 3 * norm(stem)
    cin = stem
    for i, (dim, depth, head, k) in enumerate(zip(dims, depths, heads, reductions)):
        tokens = (img_size // 2 ** (i + 2)) ** 2
        total += conv(cin, dim, 2) + norm(dim) + head * tokens * tokens // k ** 2
        hidden = int(dim * ratio)
        attention = 4 * (dim * dim + dim) + (conv(dim, dim, k, dim) + norm(dim) if k > 1 else 0)
        ffn = conv(dim, hidden, 1) + norm(hidden) + conv(hidden, hidden, 3, hidden) + \
            norm(hidden) + conv(hidden, dim, 1) + norm(dim)
        block = conv(dim, dim, 3, dim) + 2 * norm(dim) + attention + ffn
        total += depth * block
        cin = dim
    return total


def _paper_head_params(dim, fc_dim=1280, classes=1000):
    """The classifier the paper adds: 1x1 conv to 1280 + BN, global pool, linear classifier."""
    return dim * fc_dim + fc_dim + 2 * fc_dim + fc_dim * classes + classes


def _count(arch, img_size):
    with torch.device('meta'):
        model = CMT(arch, img_size=img_size)
    return sum(p.numel() for p in model.parameters())


def test_cmt_s_matches_closed_form_count():
    expected = _closed_form_param_count([64, 128, 256, 512], [3, 3, 16, 3], [1, 2, 4, 8], 32, 4.0,
                                        224)
    assert _count('s', 224) == expected == 24_315_960


@pytest.mark.parametrize('arch, img_size, paper_millions', [
    ('ti', 160, 9.5), ('xs', 192, 15.2), ('b', 256, 45.7)])
def test_published_sizes_match_paper_table(arch, img_size, paper_millions):
    """Backbone + the paper's classifier head at the paper's input size, within 1% of Table 1."""
    dim = {'ti': 368, 'xs': 416, 'b': 608}[arch]
    millions = (_count(arch, img_size) + _paper_head_params(dim)) / 1e6
    assert millions == pytest.approx(paper_millions, rel=0.01)


def test_cmt_s_size_against_paper_table():
    """The paper lists CMT-S at 25.1M, but its own Table 1 configuration (the release's cmt_s)
    gives 26.26M with the head; Ti/XS/B match to 0.5%, so the tolerance here is 5%."""
    millions = (_count('s', 224) + _paper_head_params(512)) / 1e6
    assert millions == pytest.approx(26.256, abs=0.001)
    assert millions == pytest.approx(25.1, rel=0.05)


def test_gradients_reach_every_parameter_after_resolution_change(
        gradient_reaches_every_parameter):
    torch.manual_seed(0)
    model = CMT(TINY, img_size=128, out_indices=(0, 1, 2, 3), drop_path_rate=0.1)
    gradient_reaches_every_parameter(model, torch.randn(2, 3, 224, 224))


def test_attention_matches_definition():
    """softmax(q k^T / sqrt(d) + B) v with keys/values from the reduced map (paper eq. 2-3)."""
    torch.manual_seed(0)
    dim, heads, k, grid = 16, 2, 2, (4, 6)
    attn = LightweightAttention(dim, heads, k).eval()
    tokens = torch.randn(3, grid[0] * grid[1], dim)
    bias = torch.randn(heads, 24, 6)
    reduced = attn.reduce(tokens.transpose(1, 2).reshape(3, dim, *grid)).flatten(2).transpose(1, 2)

    def split(x):
        return x.reshape(x.shape[0], x.shape[1], heads, dim // heads).permute(0, 2, 1, 3)

    q, key, v = split(attn.q(tokens)), split(attn.k(reduced)), split(attn.v(reduced))
    logits = torch.einsum('bhnd,bhmd->bhnm', q, key) / (dim // heads) ** 0.5 + bias
    out = torch.einsum('bhnm,bhmd->bhnd', logits.softmax(-1), v)
    expected = attn.proj(out.permute(0, 2, 1, 3).reshape(3, 24, dim))
    torch.testing.assert_close(attn(tokens, grid, bias), expected, rtol=1e-5, atol=1e-6)


def _keys_cubic_matrix(size_in, size_out, a=-0.75):
    """1-D bicubic resampling matrix from Keys' cubic convolution kernel (a = -0.75, as OpenCV and
    PyTorch), half-pixel sample centres, edge samples replicated: an independent reference."""
    def kernel(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a if x < 2 else 0.

    matrix = np.zeros((size_out, size_in))
    for out in range(size_out):
        src = (out + 0.5) * size_in / size_out - 0.5
        base = int(np.floor(src))
        for tap in range(base - 1, base + 3):
            matrix[out, min(max(tap, 0), size_in - 1)] += kernel(src - tap)
    return matrix


@pytest.mark.parametrize('old_grid, new_grid, k', [
    ((4, 4), (6, 6), 2), ((4, 4), (8, 6), 2), ((8, 8), (4, 4), 4), ((2, 2), (3, 3), 1)])
def test_bias_resize_is_bicubic_over_query_and_key_grids(old_grid, new_grid, k):
    rng = np.random.default_rng(0)
    heads = 3
    old_keys = (old_grid[0] // k, old_grid[1] // k)
    new_keys = (new_grid[0] // k, new_grid[1] // k)
    table = rng.standard_normal((heads, *old_grid, *old_keys))
    expected = np.einsum('Yy,Xx,Vv,Uu,hyxvu->hYXVU',
                         _keys_cubic_matrix(old_grid[0], new_grid[0]),
                         _keys_cubic_matrix(old_grid[1], new_grid[1]),
                         _keys_cubic_matrix(old_keys[0], new_keys[0]),
                         _keys_cubic_matrix(old_keys[1], new_keys[1]), table)
    n_old, n_new = old_grid[0] * old_grid[1], new_grid[0] * new_grid[1]
    resized = resize_relative_position_bias(
        torch.from_numpy(table.reshape(heads, n_old, -1)), (heads, n_new, n_new // k ** 2),
        old_query_grid=old_grid, new_query_grid=new_grid)
    np.testing.assert_allclose(resized.numpy(), expected.reshape(heads, n_new, -1), atol=1e-10)


def test_bias_resize_keeps_spatial_meaning():
    """A bias that depends only on the query's row must still depend only on the query's row.
    Interpolating the flattened (N, M) matrix as an image breaks this (rows bleed into rows)."""
    rows = torch.arange(4.).reshape(1, 4, 1, 1).expand(1, 4, 4, 4).reshape(1, 16, 4)
    resized = resize_relative_position_bias(rows, (1, 64, 16)).reshape(1, 8, 8, 16)
    torch.testing.assert_close(resized, resized[:, :, :1, :1].expand_as(resized))
    assert torch.all(resized[0, 1:, 0, 0] >= resized[0, :-1, 0, 0])


def test_bias_resize_identity_and_constant():
    bias = torch.randn(2, 64, 16)
    assert resize_relative_position_bias(bias, (2, 64, 16)) is bias
    constant = torch.full((2, 64, 16), 0.7)
    torch.testing.assert_close(resize_relative_position_bias(constant, (2, 196, 49)),
                               torch.full((2, 196, 49), 0.7))


@pytest.mark.parametrize('new_shape, message', [
    ((3, 196, 49), 'heads'), ((2, 196, 196), 'reduction'), ((2, 200, 50), 'square grid')])
def test_bias_resize_rejects_inconsistent_shapes(new_shape, message):
    with pytest.raises(ValueError, match=message):
        resize_relative_position_bias(torch.zeros(2, 64, 16), new_shape)


def test_checkpoint_resized_to_224_equals_on_the_fly_resize(tiny_model):
    """Fine-tuning path: a 128-px state dict resized with the public function and loaded into a
    224-px model gives the same features as the 128-px model run at 224 px."""
    state = tiny_model.state_dict()
    torch.manual_seed(1)
    model_224 = CMT(TINY, img_size=224, out_indices=(0, 1, 2, 3))
    target_shapes = {n: p.shape for n, p in model_224.state_dict().items()}
    converted = {n: resize_relative_position_bias(v, target_shapes[n])
                 if n.endswith('relative_position_bias') else v for n, v in state.items()}
    model_224.load_state_dict(converted)
    images = torch.randn(2, 3, 224, 224)
    for ours, reference in zip(model_224.eval()(images), tiny_model.eval()(images)):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_a_non_square_checkpoint_is_resized_from_the_grid_its_geometry_records(tmp_path):
    """A 64 x 128 px CMT's stage s has a (64 / stride, 128 / stride) query grid; the transposed
    grid has as many queries, so only the file's geometry (its img_size) tells them apart.
    Each stage's bias loaded at 96 px is the bicubic resize of its (heads, qh, qw, kh, kw)
    table, and the loaded model is the source model run at 96 px."""
    torch.manual_seed(0)
    source = CMT(TINY, img_size=(64, 128), out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        for stage in source.stages:
            stage.relative_position_bias.normal_()
    path = tmp_path / 'cmt.pth'
    torch.save({'state_dict': {f'backbone.{key}': value
                               for key, value in source.state_dict().items()},
                'meta': {'geometry': {'backbone': source.geometry()}}}, path)
    model = CMT(TINY, img_size=96, out_indices=(0, 1, 2, 3)).eval()
    load_pretrained(model, str(path))

    for old_stage, stage, stride, ratio, heads in zip(source.stages, model.stages, STAGE_STRIDES,
                                                      DEFAULT_REDUCTION_RATIOS, TINY['num_heads']):
        old_grid, new_grid = (64 // stride, 128 // stride), (96 // stride, 96 // stride)
        old_keys = (old_grid[0] // ratio, old_grid[1] // ratio)
        new_keys = (new_grid[0] // ratio, new_grid[1] // ratio)
        table = old_stage.relative_position_bias.detach().double().numpy()
        expected = np.einsum('Yy,Xx,Vv,Uu,hyxvu->hYXVU',
                             _keys_cubic_matrix(old_grid[0], new_grid[0]),
                             _keys_cubic_matrix(old_grid[1], new_grid[1]),
                             _keys_cubic_matrix(old_keys[0], new_keys[0]),
                             _keys_cubic_matrix(old_keys[1], new_keys[1]),
                             table.reshape(heads, *old_grid, *old_keys))
        np.testing.assert_allclose(stage.relative_position_bias.detach().numpy(),
                                   expected.reshape(stage.relative_position_bias.shape),
                                   rtol=0, atol=1e-5)
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        for ours, reference in zip(model(images), source(images)):
            torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_registered_and_geometry_is_plain():
    model = MODELS.build(dict(type='CMT', arch=TINY, img_size=128))
    geometry = model.geometry()
    assert json.loads(json.dumps(geometry)) == geometry
    assert geometry['type'] == 'CMT' and geometry['img_size'] == 128
    assert geometry['arch']['embed_dims'] == TINY['embed_dims']
    with torch.device('meta'):
        assert CMT('small', img_size=(128, 160)).geometry()['arch'] == 'small'


def test_cmt_swapped_into_a_fastmim_recipe_is_the_cmt_of_the_cmt_recipe(tmp_path):
    """``model.backbone=dict(_delete_=True, type='CMT', arch='s')`` in a 128-px pre-training
    config (the reference's ``--model mim_cmt_small``) built CMT's biases for 224 px, so every
    training step resized them to the 128-px grid, unlike cmt_s_hog_800e.py's CMT."""
    configs = Path(__file__).resolve().parents[3] / 'configs' / 'fastmim'
    swap = tmp_path / 'vit_recipe_with_cmt.py'
    swap.write_text(f"_base_ = [{str(configs / 'vit_b_hog_800e.py')!r}]\n"
                    "model = dict(backbone=dict(_delete_=True, type='CMT', arch='s'))\n")
    swapped = Config.fromfile(str(swap))
    recipe = Config.fromfile(str(configs / 'cmt_s_hog_800e.py'))
    crop = next(step['size'] for step in swapped.train_dataloader.dataset.pipeline
                if step['type'] == 'RandomResizedCrop')
    with torch.device('meta'):
        model = MODELS.build(swapped.model.backbone)
        assert model.geometry() == MODELS.build(recipe.model.backbone).geometry()
    for stage, stride in zip(model.stages, STAGE_STRIDES):
        # At the recipe's input size each stage uses its bias parameter as it is.
        assert stage.bias_for((crop // stride, crop // stride)) is stage.relative_position_bias
