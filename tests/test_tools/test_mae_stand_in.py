"""tools/analysis/mae_stand_in.py: MAE's encoder is the fastmim ViT's own embedding and blocks
run on the kept tokens, checked against MAE's encoder written out from the ViT's parameters."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastmim.models.backbones.vit import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'analysis'))
from mae_stand_in import MAEStandIn  # noqa: E402  isort:skip

ARCH = dict(embed_dim=32, depth=2, num_heads=2)
DECODER = dict(decoder_dim=16, decoder_depth=1, decoder_heads=2)
SIZE = 64  # a 4x4 patch grid, 4 tokens kept


def stand_in(pos_embed_type):
    """A tiny stand-in whose class token and learned table are far from 0 (timm's start near
    0), so that an embedding that dropped either would show."""
    torch.manual_seed(0)
    encoder = VisionTransformer(arch=ARCH, img_size=SIZE, pos_embed_type=pos_embed_type,
                                embed_init='mae')
    with torch.no_grad():
        encoder.cls_token.normal_()
        if pos_embed_type == 'learned':
            encoder.pos_embed.normal_()
    return MAEStandIn(encoder, **DECODER)


def layer_norm(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, eps=norm.eps)


def expected_block(block, x, heads):
    """timm's pre-norm block from its weights: softmax attention, then the GELU MLP."""
    batch, tokens, dim = x.shape
    qkv = F.linear(layer_norm(x, block.norm1), block.attn.qkv.weight, block.attn.qkv.bias)
    q, k, v = qkv.view(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    attention = (q @ k.transpose(-2, -1) * (dim // heads)**-0.5).softmax(dim=-1)
    mixed = (attention @ v).transpose(1, 2).reshape(batch, tokens, dim)
    x = x + F.linear(mixed, block.attn.proj.weight, block.attn.proj.bias)
    hidden = F.gelu(F.linear(layer_norm(x, block.norm2), block.mlp.fc1.weight, block.mlp.fc1.bias))
    return x + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)


def expected_encode(vit, images, keep):
    """MAE's encoder: patches (a strided convolution) plus the table's patch rows, the kept ones
    gathered, the class token plus the table's class row put first, the blocks, the norm."""
    proj = vit.patch_embed.proj
    patches = F.conv2d(images, proj.weight, proj.bias, stride=proj.weight.shape[-1])
    patches = patches.flatten(2).transpose(1, 2) + vit.pos_embed[:, 1:]
    kept = patches[torch.arange(len(images))[:, None], keep]
    class_token = (vit.cls_token + vit.pos_embed[:, :1]).expand(len(images), -1, -1)
    tokens = torch.cat([class_token, kept], dim=1)
    for block in vit.blocks:
        tokens = expected_block(block, tokens, ARCH['num_heads'])
    return layer_norm(tokens, vit.norm)


def expected_prediction(model, images, seed):
    """Encoder written out, the stand-in's decoder, on the keep that ``seed`` draws (MAE's
    argsort of uniform noise); also the mask, 1 = dropped."""
    torch.manual_seed(seed)
    shuffle = torch.rand(len(images), model.num_patches).argsort(dim=1)
    keep = shuffle[:, :model.num_keep]
    mask = torch.ones(len(images), model.num_patches)
    mask.scatter_(1, keep, 0)
    return model.decode(expected_encode(model.encoder, images, keep), shuffle.argsort(dim=1)), mask


@pytest.mark.parametrize('pos_embed_type', ['learned', 'sincos'])
def test_loss_and_prediction_are_maes_encoder_on_the_vits_weights(pos_embed_type):
    model = stand_in(pos_embed_type)
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.manual_seed(1)
        prediction = model.predict(images)
        torch.manual_seed(2)
        loss = model.loss(images)
        expected, _ = expected_prediction(model, images, seed=1)
        torch.testing.assert_close(prediction, expected)
        expected, mask = expected_prediction(model, images, seed=2)
        target = model.target(images).flatten(2).transpose(1, 2)
        error = (expected - target).pow(2).mean(dim=-1)
        torch.testing.assert_close(loss, (error * mask).sum() / mask.sum())


def test_an_encoder_with_a_relative_position_bias_is_refused():
    """Its bias is over every token of the grid, which MAE's kept tokens are not (it ran
    without the bias before)."""
    encoder = VisionTransformer(arch=ARCH, img_size=SIZE, rel_pos_bias=True)
    with pytest.raises(ValueError, match=r'relative position bias \(rel_pos_bias=True\)'):
        MAEStandIn(encoder, **DECODER)


def test_an_input_of_another_grid_is_named():
    model = stand_in('sincos')
    with pytest.raises(ValueError, match=r'gives a \(6, 4\) patch grid; the encoder was built '
                                         r'for \(4, 4\)'):
        model.loss(torch.randn(1, 3, 96, SIZE))
