"""``with_cp`` (activation checkpointing) on every fastmim backbone: off by default; with it
on the blocks really are recomputed in backward while the loss and every gradient stay those
of the same model without it."""
import re

import pytest
import torch

from fastmim.models.backbones import (CMT, EVA02, PyramidVisionTransformerV2, SwinTransformer,
                                      TimmBackbone, VisionTransformer)

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)
BUILDERS = {
    # Drop path on, so that checkpointing must replay the same random draws.
    'vit': lambda **kw: VisionTransformer(arch=TINY_VIT, img_size=64, drop_path_rate=0.2,
                                          out_indices=(0, 1), **kw),
    'vit_beit': lambda **kw: VisionTransformer(arch=TINY_VIT, img_size=64, drop_path_rate=0.2,
                                               rel_pos_bias=True, init_values=1.0, **kw),
    'swin': lambda **kw: SwinTransformer(
        arch=dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2)), img_size=64,
        window_size=2, drop_path_rate=0.2, out_indices=(0, 1, 2, 3), **kw),
    'pvtv2': lambda **kw: PyramidVisionTransformerV2(
        arch=dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 16, 32), num_heads=(1, 1, 1, 2)),
        drop_path_rate=0.2, **kw),
    'cmt': lambda **kw: CMT(
        arch=dict(embed_dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                  stem_channels=8, mlp_ratio=2.), img_size=64, drop_path_rate=0.2, **kw),
    'eva02': lambda **kw: EVA02(arch=TINY_VIT, img_size=64, drop_path_rate=0.2, **kw),
    # timm's own test-sized models: feature maps of a ResNet, pooled features of a ViT.
    'timm_resnet': lambda **kw: TimmBackbone('test_resnet', out_indices=(1, 4), **kw),
    'timm_vit': lambda **kw: TimmBackbone('test_vit', img_size=64, features_only=False,
                                          drop_path_rate=0.2, **kw),
}


def loss_and_gradients(model, images):
    torch.manual_seed(7)  # the same drop-path draws for both models
    loss = sum(feature.square().mean() for feature in model(images))
    loss.backward()
    return loss.detach(), {name: param.grad for name, param in model.named_parameters()
                           if param.grad is not None}


def is_block(name):
    parent = name.rpartition('.')[0]
    return parent.endswith('blocks') or re.fullmatch(r'model\.layer\d', parent) is not None


def count_block_calls(model):
    """A list that grows by one at every forward call of a block (``blocks.N``; ResNet's
    ``layerK.N``). The instances' ``forward`` is wrapped: checkpoint recomputation does not run
    forward hooks."""
    calls = []

    def counted(forward):
        def wrapper(*args, **kwargs):
            calls.append(1)
            return forward(*args, **kwargs)
        return wrapper

    for name, module in model.named_modules():
        if is_block(name):
            module.forward = counted(module.forward)
    return calls


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_with_cp_same_loss_and_gradients_and_blocks_recomputed(name):
    torch.manual_seed(0)
    plain = BUILDERS[name]().train()
    checkpointed = BUILDERS[name](with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 64, 64)

    plain_calls, checkpointed_calls = count_block_calls(plain), count_block_calls(checkpointed)
    loss, gradients = loss_and_gradients(plain, images)
    loss_cp, gradients_cp = loss_and_gradients(checkpointed, images)

    torch.testing.assert_close(loss_cp, loss, rtol=1e-6, atol=1e-7)
    assert gradients_cp.keys() == gradients.keys() and gradients
    for key, gradient in gradients.items():
        torch.testing.assert_close(gradients_cp[key], gradient, rtol=1e-5, atol=1e-7, msg=key)
    # Off by default: each block of the plain model ran once. On: recomputed in backward.
    blocks = sum(1 for module_name, _ in plain.named_modules() if is_block(module_name))
    assert blocks and len(plain_calls) == blocks and len(checkpointed_calls) > blocks
