"""EVA-02 backbone: timm's ``Eva`` (EVA-02 settings) returning NCHW token maps.

EVA-02 is a plain ViT with SwiGLU MLPs (hidden width 2/3 of 4x, the base and large sizes with a
LayerNorm inside the MLP and separate q/k/v projections) and two position encodings at once: a
learned absolute embedding added to the tokens and 2-D rotary embeddings (RoPE) applied to the
queries and keys of every block. The class subclasses timm's model, so a checkpoint of this
backbone is a timm ``Eva`` checkpoint without the head.

Patch size 16, not EVA-02's published 14: FastMIM pre-trains at 128 px, which 14 does not divide,
masks 16-px blocks as for ViT-B/16 and predicts 8-px HOG cells, so a 16-px token covers exactly
2x2 cells. timm's patch-14 EVA-02 weights still load: :meth:`EVA02.adapt_state_dict` resamples the
patch embedding kernel (timm's ``resample_patch_embed``) and the position embedding's grid.

Two tensors depend on the token grid, and they follow it differently:

- the absolute ``pos_embed`` is a parameter on the grid of ``img_size``; other grids get it
  resized bicubically, at run time and when a checkpoint of another grid is loaded (the same
  operation, so a model loaded at size S equals the checkpoint's model run at size S);
- RoPE has no weights: timm computes it per grid from token coordinates scaled so that the grid
  spans ``rope_ref_grid`` (timm's ``ref_feat_shape``). EVA-02 sets that reference to the
  pre-training grid for every fine-tuning resolution (224 / 14 = 16 for its 336 and 448 models),
  i.e. it interpolates rotary positions instead of extrapolating them, like the absolute
  embedding. Nothing in a checkpoint can carry this, so it is a constructor argument that the
  fine-tuning config sets to the pre-training grid (8 for 128-px pre-training), and
  ``geometry()`` records it so a mismatch is reported when the weights are loaded.
"""
import logging
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import resample_patch_embed
from timm.models.eva import Eva
from torch import nn

from fastmim.models.utils.backbone_contract import StateDict
from fastmim.models.utils.sizes import grid_pair
from fastmim.registry import MODELS
from ._arch import resolve_arch as resolve_named_arch
from .base import (check_drop_path_rate, check_img_size, normalise_out_indices,
                   reject_fixed_arguments, resolution_source)
from .plain_vit import PLAIN_VIT_TIMM_ARGS, PlainViTBackbone, check_head_width, fit_pos_embed

# timm's eva02_{tiny,small,base,large}_patch14 widths; MLP settings as there.
ARCHS = {
    'ti': dict(embed_dim=192, depth=12, num_heads=3),
    's': dict(embed_dim=384, depth=12, num_heads=6),
    'b': dict(embed_dim=768, depth=12, num_heads=12, qkv_fused=False, scale_mlp=True),
    'l': dict(embed_dim=1024, depth=24, num_heads=16, qkv_fused=False, scale_mlp=True),
}
ARCH_ALIASES = {'tiny': 'ti', 'small': 's', 'base': 'b', 'large': 'l'}
ARCH_KEYS = ('embed_dim', 'depth', 'num_heads')
ARCH_OPTIONAL_KEYS = ('mlp_ratio', 'swiglu_mlp', 'scale_mlp', 'qkv_fused')
# Arguments of timm's model this backbone sets from its own argument of the same name.
OWN_TIMM_ARGS = ('img_size', 'patch_size', 'drop_path_rate')
# What makes a block an EVA-02 block, for every size and for custom arch dicts that omit it.
EVA02_BLOCK = dict(mlp_ratio=4 * 2 / 3, swiglu_mlp=True)
# Arguments this backbone fixes: no head, the class token and every patch token kept, both
# position encodings on and following the input grid, the final norm chosen by final_norm.
FIXED_TIMM_ARGS = ('num_classes', 'global_pool', 'class_token', 'num_reg_tokens', 'no_embed_class',
                   'use_abs_pos_emb', 'use_rot_pos_emb', 'rope_type', 'ref_feat_shape',
                   'dynamic_img_size', 'dynamic_img_pad', 'patch_drop_rate', 'use_fc_norm',
                   'use_post_transformer_norm', 'attn_pool_num_heads', 'attn_pool_mlp_ratio')
# The original EVA-02 release's names -> timm's (facts from timm's eva.checkpoint_filter_fn).
ORIGINAL_NAMES = (('mlp.ffn_ln.', 'mlp.norm.'), ('attn.inner_attn_ln.', 'attn.norm.'),
                  ('mlp.w12.', 'mlp.fc1.'), ('mlp.w1.', 'mlp.fc1_g.'), ('mlp.w2.', 'mlp.fc1_x.'),
                  ('mlp.w3.', 'mlp.fc2.'))


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Settings of a published size (``'ti'``, ``'s'``, ``'b'``, ``'l'``) or of a custom dict
    ``{embed_dim, depth, num_heads}`` (optionally ``mlp_ratio``, ``swiglu_mlp``, ``scale_mlp``,
    ``qkv_fused``), on top of the EVA-02 block (SwiGLU, hidden 2/3 of 4x)."""
    settings = resolve_named_arch('EVA02', arch, ARCHS, ARCH_KEYS, ARCH_ALIASES,
                                  optional_keys=ARCH_OPTIONAL_KEYS, own_arguments=OWN_TIMM_ARGS)
    check_head_width('EVA02', settings, multiple=4,
                     why=' (the 2-D rotary embedding splits each head over two axes, sin and cos)')
    return {**EVA02_BLOCK, **settings}


def _resample_patch_embed(model: Eva, state: StateDict) -> None:
    """Patch-embedding kernel of another patch size (timm's patch-14 EVA-02) -> the model's,
    by timm's ``resample_patch_embed``."""
    weight = state.get('patch_embed.proj.weight')
    wanted = model.patch_embed.proj.weight.shape
    if (weight is not None and weight.dim() == 4 and weight.shape[:2] == wanted[:2]
            and weight.shape[2:] != wanted[2:]):
        state['patch_embed.proj.weight'] = resample_patch_embed(weight, list(wanted[2:]))


@MODELS.register_module()
class EVA02(PlainViTBackbone, Eva, BaseModule):
    """EVA-02 whose forward returns a tuple of NCHW patch-token maps (class token dropped).

    Args:
        arch: ``'ti'``, ``'s'``, ``'b'``, ``'l'`` (or ``'tiny'`` ... ``'large'``) or a dict
            ``{embed_dim, depth, num_heads}`` plus optional MLP / qkv settings.
        img_size: size whose patch grid the ``pos_embed`` parameter has. Inputs of any other
            size that is a multiple of ``patch_size`` work too.
        patch_size: patch (and output) stride; 16 for FastMIM (see the module docstring).
        out_indices: blocks whose outputs are returned, in block order; negative values count
            from the end. Blocks after the last one listed are not run.
        drop_path_rate: stochastic depth, increasing linearly over the blocks.
        final_norm: apply the final LayerNorm to the output of the last block (off for
            fine-tuning, where the classifier's ``fc_norm`` follows the pooling).
        rope_ref_grid: token grid whose coordinate range RoPE spans on every input grid
            (timm's ``ref_feat_shape``); default: the grid of ``img_size``. Set it to the
            pre-training grid when fine-tuning at another size (8 for 128-px pre-training).
        with_cp: activation checkpointing: in training, each block's activations are recomputed
            in the backward pass instead of kept (less memory, one more forward of the blocks;
            same results). Off by default.
        frozen_stages: freeze the embedding (0) and the first n blocks (n), as mmpretrain's
            ViT; all of them (``depth``) freeze the final norm too. -1 (default): nothing.
        init_cfg: mmengine init config, e.g. ``dict(type='FastMIMPretrained', checkpoint=...)``.
        **timm_kwargs: other arguments of timm's ``Eva`` (``init_values``, ``qk_norm``,
            ``rope_temperature``, ``attn_drop_rate``, ...).
    """

    # Where **timm_kwargs go: a key added to the config on the command line is checked against
    # it when the config is loaded (fastmim.engine.config_keys).
    keywords_passed_to = Eva

    published_archs = ARCHS
    # timm scales each block's attention and MLP output projections by 1 / sqrt(2 (block + 1))
    # (EVA's fix_init_weight); FastMIM's Xavier redraw would undo it.
    keeps_own_linear_init = True

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 128,
                 patch_size: int = 16,
                 out_indices: Sequence[int] = (-1, ),
                 drop_path_rate: float = 0.,
                 final_norm: bool = True,
                 rope_ref_grid: Optional[Union[int, Tuple[int, int]]] = None,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **timm_kwargs) -> None:
        check_drop_path_rate(drop_path_rate, 'EVA02')
        reject_fixed_arguments('EVA02', timm_kwargs, FIXED_TIMM_ARGS,
                               'no head, all tokens kept, position encodings follow the input')
        reject_fixed_arguments('EVA02', timm_kwargs, ARCH_KEYS + ARCH_OPTIONAL_KEYS,
                               'give them in arch')
        arch_cfg = resolve_arch(arch)
        out_indices = normalise_out_indices('EVA02', out_indices, arch_cfg['depth'], 'blocks')
        image_grid = grid_pair(img_size, 'EVA02', 'img_size')
        check_img_size('EVA02', img_size,
                       type(self).input_multiple(dict(patch_size=patch_size)))
        if rope_ref_grid is None:
            rope_ref_grid = (image_grid[0] // patch_size, image_grid[1] // patch_size)
        rope_ref_grid = grid_pair(rope_ref_grid, 'EVA02', 'rope_ref_grid')
        # timm's constructor initialises its weights by calling init_weights with an argument,
        # which BackboneContract.init_weights hands on to timm's EVA initialisation.
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            use_abs_pos_emb=True,
            use_rot_pos_emb=True,
            rope_type='cat',
            ref_feat_shape=rope_ref_grid,
            use_fc_norm=False,
            use_post_transformer_norm=final_norm,
            drop_path_rate=drop_path_rate,
            **PLAIN_VIT_TIMM_ARGS,
            **arch_cfg,
            **timm_kwargs)
        self.rope_ref_grid = rope_ref_grid
        self._finish_init(arch, arch_cfg, patch_size, out_indices, with_cp, init_cfg,
                          frozen_stages)

    def _pos_embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """timm's ``forward_features`` and ``forward_intermediates`` embed through this method:
        :meth:`forward`'s embedding (timm's own resizes ``pos_embed`` with anti-aliasing, which
        changes it on smaller grids) and the RoPE table of the ``(B, h, w, C)`` grid."""
        return self._embed_tokens(x), self.rope.get_embed(shape=tuple(x.shape[1:3]))

    def _block_runner(self, grid: Tuple[int, int]) -> Callable[[nn.Module, torch.Tensor],
                                                                torch.Tensor]:
        """Every block rotates its queries and keys by the same RoPE table of ``grid``."""
        rope = self.rope.get_embed(shape=grid)
        return lambda block, x: block(x, rope=rope)

    # ----------------------------------------------------------------------------------------
    # The backbone contract
    # ----------------------------------------------------------------------------------------
    def geometry(self) -> Dict:
        """Plain-type description stored in pre-training checkpoints: the grid ``pos_embed`` was
        built for and the RoPE reference grid the weights were trained with."""
        return self._plain_geometry('EVA02', rope_ref_grid=list(self.rope_ref_grid))

    @classmethod
    def rename_foreign_keys(cls, state: StateDict) -> StateDict:
        """The original EVA-02 release's names -> timm's (its separate-q/k/v sizes keep the q and
        v biases apart from the projections); its RoPE buffers are left out, since timm
        recomputes RoPE per grid and this backbone saves none."""
        renamed = {}
        for key, value in state.items():
            if key.startswith('rope.'):
                continue
            for old, new in ORIGINAL_NAMES:
                key = key.replace(old, new)
            if (key.endswith(('attn.q_bias', 'attn.v_bias'))
                    and key.rpartition('.')[0] + '.q_proj.weight' in state):
                key = key.replace('_bias', '_proj.bias')  # q_bias -> q_proj.bias
            renamed[key] = value
        return renamed

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """Other layouts renamed (:meth:`rename_foreign_keys`), the patch-embedding kernel
        resampled to this patch size and ``pos_embed`` resized to this grid (source grid from
        ``source_geometry`` or, without it, a square). A checkpoint trained with another RoPE
        reference grid is reported in the log: the weights load, but they expect other rotary
        positions.

        It reads only what timm's ``Eva`` has, so it also fits weights to a plain timm EVA-02
        (``tools/convert/to_timm.py --arch``)."""
        source = resolution_source(source_geometry, 'EVA02')
        adapted = EVA02.rename_foreign_keys(state)
        _resample_patch_embed(self, adapted)
        if 'pos_embed' in adapted:
            adapted['pos_embed'] = fit_pos_embed(self, adapted['pos_embed'], source)
        own_grid = list(self.rope.ref_feat_shape or self.patch_embed.grid_size)
        if source and source.get('rope_ref_grid') not in (None, own_grid):
            print_log(f'EVA02: the checkpoint was trained with rope_ref_grid '
                      f'{source["rope_ref_grid"]}, this model has {own_grid}; set '
                      f'rope_ref_grid={source["rope_ref_grid"]} to keep its rotary positions',
                      logger='current', level=logging.WARNING)
        return adapted
