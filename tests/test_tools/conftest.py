"""The module of tools/train.py, for the tests that fold its flags into configs; random weights
of the reference release's pre-training decoder, for the converter's tests."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def train(load_script):
    return load_script(ROOT / 'tools' / 'train.py')


@pytest.fixture
def release_decoder():
    """``release_decoder(in_channels, rows, embed_dim=16, depth=1)``: random weights of the
    reference release's pre-training decoder as its mim_*_pretrain.py define it, in its names:
    ``decoder_embed`` (Linear from the encoder's channels), ``decoder_blocks.N`` (timm's
    ``Block``, ``embed_dim // 32`` heads, MLP ratio 4, qkv bias), ``decoder_norm`` and
    ``decoder_pred`` (Linear to ``rows`` values per token), and its RGB ``mask_token``."""
    from timm.models.vision_transformer import Block

    def make(in_channels, rows, embed_dim=16, depth=1):
        generator = torch.Generator().manual_seed(0)

        def random(shape, center=0.):
            return center + 0.2 * torch.randn(shape, generator=generator)

        state = {'decoder_embed.weight': random((embed_dim, in_channels)),
                 'decoder_embed.bias': random(embed_dim)}
        block = Block(embed_dim, max(1, embed_dim // 32), 4., qkv_bias=True)
        for index in range(depth):
            for key, value in block.state_dict().items():
                center = 1. if key.startswith('norm') and key.endswith('weight') else 0.
                state[f'decoder_blocks.{index}.{key}'] = random(value.shape, center)
        state.update({'decoder_norm.weight': random(embed_dim, 1.),
                      'decoder_norm.bias': random(embed_dim),
                      'decoder_pred.weight': random((rows, embed_dim)),
                      'decoder_pred.bias': random(rows),
                      'mask_token': random((1, 3, 1, 1))})
        return state
    return make
