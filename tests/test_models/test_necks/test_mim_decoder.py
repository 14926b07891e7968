import pytest
import torch
import torch.nn.functional as F

from fastmim.registry import MODELS


def build_decoder(**kwargs):
    cfg = dict(type='MIMDecoder', in_channels=24, out_channels=108, embed_dim=32, num_heads=4)
    cfg.update(kwargs)
    return MODELS.build(cfg)


@pytest.mark.parametrize('depth', [0, 1, 2])
def test_output_shape_for_every_depth(depth):
    decoder = build_decoder(depth=depth)
    assert len(decoder.blocks) == depth
    assert decoder(torch.randn(2, 24, 3, 5)).shape == (2, 15, 108)


def test_depth_zero_is_linear_layernorm_linear():
    decoder = build_decoder(depth=0)
    features = torch.randn(2, 24, 2, 3)
    tokens = features.permute(0, 2, 3, 1).reshape(2, 6, 24)
    hidden = F.linear(tokens, decoder.embed.weight, decoder.embed.bias)
    hidden = F.layer_norm(hidden, (32,), decoder.norm.weight, decoder.norm.bias, eps=1e-5)
    expected = F.linear(hidden, decoder.predict.weight, decoder.predict.bias)
    torch.testing.assert_close(decoder(features), expected)


def test_block_is_pre_norm_attention_with_qkv_bias_then_mlp():
    """Recomputes one block with torch's own multi-head attention from the decoder's weights."""
    torch.manual_seed(0)
    decoder = build_decoder(depth=1).eval()
    block = decoder.blocks[0]
    assert block.attn.qkv.bias is not None
    features = torch.randn(2, 24, 2, 3)
    x = decoder.embed(features.flatten(2).transpose(1, 2))
    attention = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    attention.in_proj_weight.data.copy_(block.attn.qkv.weight)
    attention.in_proj_bias.data.copy_(block.attn.qkv.bias)
    attention.out_proj.weight.data.copy_(block.attn.proj.weight)
    attention.out_proj.bias.data.copy_(block.attn.proj.bias)
    normed = block.norm1(x)
    x = x + attention(normed, normed, normed, need_weights=False)[0]
    x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
    expected = decoder.predict(decoder.norm(x))
    torch.testing.assert_close(decoder(features), expected, atol=1e-5, rtol=1e-5)


def test_no_position_embedding_so_tokens_permute_with_positions():
    torch.manual_seed(0)
    decoder = build_decoder(depth=2).eval()
    features = torch.randn(1, 24, 3, 4)
    permutation = torch.randperm(12)
    shuffled = features.flatten(2)[:, :, permutation].reshape(1, 24, 3, 4)
    torch.testing.assert_close(decoder(shuffled), decoder(features)[:, permutation],
                               atol=1e-5, rtol=1e-5)


def test_initialisation_truncated_normal_zero_bias_unit_layernorm():
    torch.manual_seed(0)
    decoder = build_decoder(in_channels=256, out_channels=432, embed_dim=256, num_heads=8)
    for name, module in decoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert abs(module.weight.std().item() - 0.02) < 0.002, name
            assert torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, torch.nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name


@pytest.mark.parametrize('eps', [None, 1e-6])
def test_eps_of_every_layernorm(eps):
    """PyTorch's 1e-5 by default (the release's Swin / PVTv2 / CMT decoders), or the given one
    (its ViT decoder takes the encoder's 1e-6), for the blocks and the final norm alike."""
    decoder = build_decoder(depth=2) if eps is None else build_decoder(depth=2, eps=eps)
    norms = [m for m in decoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 5 and {m.eps for m in norms} == {eps or 1e-5}


def test_input_norm_is_a_layernorm_over_the_encoder_channels_before_the_projection():
    """``in_norm_eps``: the release's CMT encoder ends with a LayerNorm (eps 1e-6) over the
    channels of every token, which its decoder_embed reads; without it, no such norm."""
    assert 'in_norm.weight' not in build_decoder().state_dict()
    decoder = build_decoder(depth=0, in_norm_eps=1e-6)
    with torch.no_grad():
        decoder.in_norm.weight.uniform_(0.5, 1.5)
        decoder.in_norm.bias.uniform_(-0.5, 0.5)
    features = torch.randn(2, 24, 2, 3) * 3 + 1
    tokens = features.permute(0, 2, 3, 1).reshape(2, 6, 24)
    normed = F.layer_norm(tokens, (24,), decoder.in_norm.weight, decoder.in_norm.bias, eps=1e-6)
    hidden = F.layer_norm(F.linear(normed, decoder.embed.weight, decoder.embed.bias), (32,),
                          decoder.norm.weight, decoder.norm.bias, eps=1e-5)
    expected = F.linear(hidden, decoder.predict.weight, decoder.predict.bias)
    torch.testing.assert_close(decoder(features), expected)


def test_wrong_input_raises():
    with pytest.raises(ValueError, match=r'\(B, 24, h, w\)'):
        build_decoder()(torch.randn(2, 16, 3, 3))
    with pytest.raises(ValueError, match='num_heads'):
        build_decoder(num_heads=5)


@pytest.mark.parametrize('mlp_ratio', [4., 2.])
def test_parameter_count_of_the_decoder_in_closed_form(mlp_ratio):
    """The published decoder (one block, 256 wide, 8 heads, MLP ratio 4) counted by hand; the
    check of the block above reads its own fc1/fc2, so a decoder that ignored ``mlp_ratio``
    agreed with itself."""
    width, hidden, inputs, outputs = 256, int(256 * mlp_ratio), 768, 108
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    norm = 2 * width
    block = norm + linear(width, 3 * width) + linear(width, width) + norm + \
        linear(width, hidden) + linear(hidden, width)
    expected = linear(inputs, width) + block + norm + linear(width, outputs)
    decoder = build_decoder(in_channels=inputs, out_channels=outputs, embed_dim=width, depth=1,
                            num_heads=8, mlp_ratio=mlp_ratio)
    assert sum(p.numel() for p in decoder.parameters()) == expected


@pytest.mark.parametrize('embed_dim, heads', [(256, 8), (512, 16), (128, 4)])
def test_heads_follow_the_width_as_the_reference_derives_them(embed_dim, heads):
    """The reference release gives its decoder width / 32 heads; a width ablation kept 8
    heads of 64 channels (512 wide) without a word."""
    decoder = build_decoder(in_channels=64, out_channels=27, embed_dim=embed_dim, depth=1,
                            num_heads=None)
    assert decoder.blocks[0].attn.num_heads == heads
    assert build_decoder(in_channels=64, out_channels=27, embed_dim=embed_dim,
                         num_heads=2).blocks[0].attn.num_heads == 2
