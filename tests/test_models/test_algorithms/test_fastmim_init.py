"""The initialisation of the FastMIM pre-training models, against the reference release
(ggjy/FastMIM.pytorch, mim_{vit,swin,pvtv2,cmt}_pretrain.py) and PyTorch's documented Xavier
formula: ``xavier_uniform_`` draws from U(-a, a), a = sqrt(6 / (fan_in + fan_out)), so the std
is a / sqrt(3) = sqrt(2 / (fan_in + fan_out)).

The release's pre-training wrappers re-initialise every ``nn.Linear`` of encoder and decoder with
Xavier-uniform weights and zero biases once both are built; convolutions, relative-position
tables and tokens keep their own initialisation. Its ViT also draws the patch embedding
Xavier-uniform on its (out, in * k * k) view and the class token from N(0, 0.02); its decoder
LayerNorms take the encoder's eps (1e-6) for ViT and PyTorch's 1e-5 for Swin, PVTv2 and CMT.

Each published pre-training config is built once at its real size (about 3 s each on CPU).
"""
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from fastmim.registry import MODELS

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = {
    'vit': 'configs/fastmim/vit_b_hog_800e.py',
    'swin': 'configs/fastmim/swin_b_hog_400e.py',
    'pvtv2': 'configs/fastmim/pvtv2_b2_hog_800e.py',
    'cmt': 'configs/fastmim/cmt_s_hog_800e.py',
}
# The release: norm_layer of the ViT (eps 1e-6) goes to its decoder blocks and decoder_norm;
# Swin, PVTv2 and CMT build theirs with nn.LayerNorm (eps 1e-5).
DECODER_EPS = {'vit': 1e-6, 'swin': 1e-5, 'pvtv2': 1e-5, 'cmt': 1e-5}


def xavier_bound(weight):
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    return math.sqrt(6 / (fan_in + fan_out))


def assert_xavier_uniform(weight, name, rtol=0.05):
    """Inside the bound, reaching close to it, with the std of U(-a, a)."""
    bound = xavier_bound(weight)
    weight = weight.detach().float()
    assert weight.abs().max() <= bound * (1 + 1e-6), name
    assert weight.abs().max() >= 0.95 * bound, name
    if weight.numel() >= 4096:  # the std of a smaller sample is too noisy to check at 5%
        std = weight.std().item()
        assert abs(std / (bound / math.sqrt(3)) - 1) < rtol, (name, std, bound / math.sqrt(3))


def build(config):
    init_default_scope('fastmim')
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(str(ROOT / config)).model)


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def built(request):
    """(name, model, its state right after construction)."""
    model = build(CONFIGS[request.param])
    state = {key: value.clone() for key, value in model.state_dict().items()}
    return request.param, model, state


def test_every_linear_of_encoder_and_decoder_is_xavier_uniform_with_zero_bias(built):
    name, model, _ = built
    count = 0
    for part in ('backbone', 'neck'):
        for module_name, module in getattr(model, part).named_modules():
            if isinstance(module, nn.Linear):
                count += 1
                assert_xavier_uniform(module.weight, f'{name}: {part}.{module_name}')
                if module.bias is not None:
                    assert torch.count_nonzero(module.bias) == 0, f'{part}.{module_name}'
            elif isinstance(module, nn.LayerNorm):
                assert torch.all(module.weight == 1) and torch.all(module.bias == 0), module_name
    assert count >= 20, count


def test_other_parameters_keep_their_own_initialisation(built):
    name, model, _ = built
    params = dict(model.named_parameters())
    # The mask token: 3 values from the release's N(0, 0.02) (here truncated at +-2, which
    # leaves it a normal), so well within 5 std.
    mask_token = params['mask_token'].detach()
    assert torch.count_nonzero(mask_token) == 3 and mask_token.abs().max() < 0.1
    if name == 'vit':
        # The release: xavier_uniform_ on the (768, 3 * 16 * 16) view: std sqrt(2 / 1536).
        patch = params['backbone.patch_embed.proj.weight']
        assert_xavier_uniform(patch.flatten(1), 'patch_embed', rtol=0.03)
        assert abs(patch.std().item() - math.sqrt(2 / 1536)) < 0.001
        # The release: torch.nn.init.normal_(cls_token, std=.02) (768 values).
        assert abs(params['backbone.cls_token'].std().item() / 0.02 - 1) < 0.15
    elif name == 'swin':
        tables = [value for key, value in params.items()
                  if key.endswith('relative_position_bias_table')]
        assert tables
        for table in tables:  # trunc_normal_(std=.02), as the release's Swin (196 values)
            assert abs(table.std().item() / 0.02 - 1) < 0.2
    elif name == 'pvtv2':
        dwconvs = [value for key, value in params.items() if key.endswith('dwconv.weight')]
        assert dwconvs
        for weight in dwconvs:  # normal(0, sqrt(2 / fan_out)), fan_out = 3 * 3 * 1
            assert abs(weight.std().item() / math.sqrt(2 / 9) - 1) < 0.1
    elif name == 'cmt':
        biases = [value for key, value in params.items()
                  if key.endswith('relative_position_bias')]
        assert len(biases) == 4
        for bias in biases:  # torch.randn in the release
            assert abs(bias.std().item() - 1) < 0.1


def test_decoder_layernorm_eps_follows_the_release(built):
    name, model, _ = built
    norms = [module for module in model.neck.modules()
             if isinstance(module, nn.LayerNorm) and module is not model.neck.in_norm]
    assert len(norms) == 1 + 2 * len(model.neck.blocks)
    assert {norm.eps for norm in norms} == {DECODER_EPS[name]}


def test_the_decoder_reads_normalised_tokens_as_in_the_release(built):
    """Every release encoder ends with a LayerNorm that decoder_embed reads: here ViT's, Swin's
    and PVTv2's backbones end with theirs; CMT's backbone has none (the release's fine-tuned CMT
    has none either), so the decoder normalises its input, with the release's CMT eps 1e-6
    (``norm_layer=None`` -> ``partial(nn.LayerNorm, eps=1e-6)``)."""
    name, model, _ = built
    if name == 'cmt':
        assert isinstance(model.neck.in_norm, nn.LayerNorm) and model.neck.in_norm.eps == 1e-6
        assert model.neck.in_norm.normalized_shape == (model.backbone.out_channels[-1], )
    else:
        assert isinstance(model.neck.in_norm, nn.Identity)


def test_runner_init_weights_changes_nothing(built):
    """mmengine's runner calls ``model.init_weights()`` before loading ``load_from`` / resume:
    it must not undo the construction's initialisation."""
    _, model, state = built
    model.init_weights()
    after = model.state_dict()
    changed = [key for key, value in state.items() if not torch.equal(value, after[key])]
    assert not changed


# --- the option, on a small model ------------------------------------------------------------
def small_fastmim(**kwargs):
    init_default_scope('fastmim')
    torch.manual_seed(0)
    cfg = Config.fromfile(str(ROOT / CONFIGS['vit'])).model
    cfg.backbone.arch = dict(embed_dim=64, depth=2, num_heads=4)
    cfg.neck.update(embed_dim=32, num_heads=4)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def linear_weight_names(model):
    return {f'{name}.weight' for name, module in model.named_modules()
            if isinstance(module, nn.Linear)}


def test_linear_init_own_keeps_each_modules_init_and_xavier_changes_only_linears():
    xavier, own = small_fastmim(), small_fastmim(linear_init='own')
    linears = linear_weight_names(own)
    for key, value in own.state_dict().items():
        if key in linears:
            # timm's ViT and MIMDecoder: trunc-normal std 0.02.
            assert abs(value.std().item() / 0.02 - 1) < 0.15, key
            assert not torch.equal(value, xavier.state_dict()[key]), key
        else:
            torch.testing.assert_close(value, xavier.state_dict()[key], rtol=0, atol=0,
                                       msg=key)


def test_unknown_linear_init_is_refused():
    with pytest.raises(ValueError, match="linear_init.*'xavier'"):
        small_fastmim(linear_init='trunc_normal')


def test_a_backbone_built_with_weights_keeps_them(tmp_path):
    """TimmBackbone(checkpoint_path=..., or pretrained=True) loads its weights when it is
    built, before FastMIM's Xavier redraw, which replaced every linear layer of them."""
    import timm
    torch.manual_seed(1)
    weights = timm.create_model('test_vit').state_dict()
    torch.save(weights, tmp_path / 'test_vit.pth')
    init_default_scope('fastmim')
    cfg = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'ablations' /
                              'timm_resnet50_hog_400e.py')).model
    cfg.backbone = dict(type='TimmBackbone', model_name='test_vit', dynamic_img_size=True,
                        checkpoint_path=str(tmp_path / 'test_vit.pth'))
    cfg.block_size = 16
    model = MODELS.build(cfg)
    loaded = {name.removeprefix('backbone.model.model.'): value
              for name, value in model.state_dict().items()
              if name.startswith('backbone.model.')}
    linear = 'blocks.0.attn.qkv.weight'
    assert linear in loaded and torch.equal(loaded[linear], weights[linear])
    assert_xavier_uniform(model.neck.embed.weight, 'neck.embed.weight')  # the decoder's still is


def test_eva02_keeps_its_depth_scaled_projections():
    """EVA-02 (absent from the release) divides each block's output projections by
    sqrt(2 x (block + 1)) when timm builds it: Xavier gave block 11 a 9x larger spread. Its
    linear layers keep timm's initialisation; the decoder's are Xavier-uniform."""
    xavier = build('configs/fastmim/eva02_b_hog_800e.py')
    cfg = Config.fromfile(str(ROOT / 'configs/fastmim/eva02_b_hog_800e.py')).model
    cfg.linear_init = 'own'
    torch.manual_seed(0)
    own = MODELS.build(cfg)
    for key, value in own.backbone.state_dict().items():
        assert torch.equal(value, xavier.backbone.state_dict()[key]), key
    blocks = xavier.backbone.blocks
    for name in ('attn.proj.weight', 'mlp.fc2.weight'):
        first, last = (blocks[i].get_parameter(name).std().item() for i in (0, len(blocks) - 1))
        assert first / last == pytest.approx(math.sqrt(len(blocks)), rel=0.05), name
    assert_xavier_uniform(xavier.neck.embed.weight, 'neck.embed.weight')


def test_mask_token_is_drawn_from_n_0_0_02():
    """The release draws the RGB mask token from N(0, 0.02) (trunc_normal_, cut at +-2, which
    leaves a normal). Three values per model: pooled over 40 seeds of a narrow model, their std
    is 0.02 within 20% (the sampling error of 120 values is 6.5%) and their mean near 0."""
    cfg = Config.fromfile(str(ROOT / 'configs/fastmim/demo_vit_tiny_embedded.py')).model
    cfg.backbone.arch = dict(embed_dim=32, depth=1, num_heads=1)
    cfg.neck.update(embed_dim=32, depth=0)
    init_default_scope('fastmim')
    values = []
    for seed in range(40):
        torch.manual_seed(seed)
        values.append(MODELS.build(cfg).mask_token.detach().flatten())
    values = torch.cat(values)
    assert 0.016 < values.std().item() < 0.024
    assert abs(values.mean().item()) < 3 * 0.02 / math.sqrt(len(values))
