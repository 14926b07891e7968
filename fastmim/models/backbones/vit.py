"""Plain Vision Transformer backbone: timm's ``VisionTransformer`` returning NCHW token maps.

The class subclasses timm's model instead of wrapping it, so every parameter keeps its timm name
(``patch_embed.proj.weight``, ``cls_token``, ``pos_embed``, ``blocks.N...``, ``norm``): a
checkpoint of this backbone is a timm checkpoint without the head.

FastMIM pre-trains at 128 px and fine-tunes at 224 px; progressive-resolution pre-training changes
the input size mid-run. The position embedding keeps the grid of ``img_size`` and follows the input
whenever it has another grid: a learned embedding (fine-tuning, downstream) is resized on the fly
(bicubic, class-token entry kept); the fixed 2-D sin-cos embedding that MAE and the FastMIM
reference release pre-train with is recomputed exactly for the new grid. What this backbone
shares with EVA-02 (embedding, block loop, NCHW maps, layer ids, the position-embedding resize)
is :class:`~fastmim.models.backbones.plain_vit.PlainViTBackbone` in ``plain_vit.py``.

Two options rebuild the reference's segmentation ViT (``ViTBEiT`` of BEiT's code, which
pre-training and fine-tuning do not use): ``rel_pos_bias=True`` adds BEiT's relative position
bias to every block (a zero-initialised table per block over the patch grid of ``img_size``),
and timm's ``init_values`` adds layer scale to both residual branches. A table follows the input
grid the way the learned position embedding does: resized bicubically over its offset grid
(class rows kept) at run time and when a checkpoint of another grid is loaded, the same
operation, so a model loaded at size S equals the checkpoint's model run at size S (the
attention, block and table resize are in ``beit_relative_position.py``).
"""
import re
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from mmengine.model import BaseModule
from timm.layers import to_2tuple
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.models.utils.backbone_contract import StateDict
from fastmim.models.utils.reference import (ReferenceClassifier, ReferenceEncoder,
                                            ReferenceLayout)
from fastmim.models.utils.shape_reading import (build_matching, check_given_size,
                                                count_indices, mlp_ratio, require_keys,
                                                single_value, square_side)
from fastmim.registry import MODELS
from ._arch import resolve_arch as resolve_named_arch
from ._arch import reject_keys_given_twice, timm_arch_keys
from .base import (check_drop_path_rate, check_img_size, normalise_out_indices,
                   reject_fixed_arguments)
from .beit_relative_position import RelativePositionBiasBlock, fit_relative_position_bias_table
from .plain_vit import (PLAIN_VIT_TIMM_ARGS, PlainViTBackbone, check_head_width, fit_pos_embed,
                        pos_embed_source_grid)

ARCHS = {
    's': dict(embed_dim=384, depth=12, num_heads=6),
    'b': dict(embed_dim=768, depth=12, num_heads=12),
    'l': dict(embed_dim=1024, depth=24, num_heads=16),
}
ARCH_ALIASES = {'small': 's', 'base': 'b', 'large': 'l'}
ARCH_KEYS = ('embed_dim', 'depth', 'num_heads')
OUT_TYPES = ('featmap', 'cls_token')
POS_EMBED_TYPES = ('learned', 'sincos')
EMBED_INITS = ('timm', 'mae')
# Arguments this backbone fixes: the head is dropped, the class token and every patch token are
# kept and the position embedding is resized here, so timm must not be told otherwise.
FIXED_TIMM_ARGS = ('num_classes', 'global_pool', 'class_token', 'reg_tokens', 'no_embed_class',
                   'pos_embed', 'dynamic_img_size', 'dynamic_img_pad', 'patch_drop_rate')
# Arguments of timm's model this backbone sets from its own argument of the same name.
OWN_TIMM_ARGS = ('img_size', 'patch_size', 'final_norm', 'drop_path_rate')
# What an arch dict may add to ARCH_KEYS: the other arguments of timm's model.
ARCH_OPTIONAL_KEYS = timm_arch_keys(TimmVisionTransformer,
                                    (*FIXED_TIMM_ARGS, *ARCH_KEYS, *OWN_TIMM_ARGS))


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Widths and depth of a published size (``'s'``, ``'b'``, ``'l'``) or of a custom dict
    (``mlp_ratio`` and the other arguments of timm's model may be added:
    :data:`ARCH_OPTIONAL_KEYS`)."""
    return check_head_width(
        'VisionTransformer', resolve_named_arch('VisionTransformer', arch, ARCHS, ARCH_KEYS,
                                                ARCH_ALIASES, optional_keys=ARCH_OPTIONAL_KEYS,
                                                own_arguments=OWN_TIMM_ARGS))


def sincos_2d_pos_embed(embed_dim: int,
                        grid_size: Sequence[int],
                        device: Optional[torch.device] = None) -> torch.Tensor:
    """The fixed 2-D sin-cos position embedding of MAE, with a zero class-token row first.

    Returns a float64 ``(1 + h * w, embed_dim)`` table for an ``(h, w)`` patch grid whose tokens
    are in row-major order. As in MAE (whose grid is ``meshgrid(w, h)``), the first half of the
    channels encodes a token's column and the second half its row; each half is ``sin`` then
    ``cos`` of ``position * omega_i`` with ``omega_i = 1 / 10000 ** (i / (embed_dim / 4))``,
    ``i < embed_dim / 4``. Computed in float64 on ``device``, like MAE's numpy table, so that
    a table made at run time for a new grid is the same table a model built for that grid holds.
    """
    if embed_dim % 4:
        raise ValueError(f'sincos_2d_pos_embed: embed_dim must be a multiple of 4 (sin and cos '
                         f'of two axes), got {embed_dim}')
    height, width = (int(s) for s in grid_size)
    quarter = embed_dim // 4
    omega = 1. / 10000**(torch.arange(quarter, dtype=torch.float64, device=device) / quarter)

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows = torch.arange(height, dtype=torch.float64, device=device).repeat_interleave(width)
    columns = torch.arange(width, dtype=torch.float64, device=device).repeat(height)
    class_row = torch.zeros(1, embed_dim, dtype=torch.float64, device=device)
    return torch.cat([class_row, torch.cat([encode(columns), encode(rows)], dim=1)], dim=0)


@MODELS.register_module()
class VisionTransformer(PlainViTBackbone, TimmVisionTransformer, BaseModule):
    """ViT whose forward returns a tuple of NCHW patch-token maps (class token dropped).

    Args:
        arch: ``'s'``, ``'b'`` (12 heads), ``'l'`` or a dict ``{embed_dim, depth, num_heads}``.
        img_size: size whose patch grid the position embedding parameter has. Inputs of any other
            size that is a multiple of ``patch_size`` work too.
        patch_size: patch (and output) stride.
        out_indices: blocks whose outputs are returned, in block order; negative values count
            from the end. Blocks after the last one listed are not run.
        drop_path_rate: stochastic depth, increasing linearly over the blocks.
        final_norm: apply the final LayerNorm to the output of the last block.
        pos_embed_type: ``'learned'`` (timm's trainable embedding, resized bicubically for other
            grids) or ``'sincos'``: MAE's fixed 2-D sin-cos table (:func:`sincos_2d_pos_embed`),
            which FastMIM pre-trains with. It stays a frozen parameter named ``pos_embed`` so
            checkpoints carry it under the same key and fine-tuning can load it as the initial
            value of a learned embedding; other grids get the exact table for that grid. To
            evaluate a pre-trained checkpoint at another size (linear probe, kNN), use
            ``'learned'``: the checkpoint's table resized as fine-tuning resizes it, since
            positions beyond the pre-training grid were never seen by the encoder.
        out_type: ``'featmap'`` gives ``(B, C, H / p, W / p)`` maps, ``'cls_token'`` gives the
            ``(B, C)`` class token (linear probing).
        embed_init: ``'timm'`` keeps timm's initialisation of the embedding; ``'mae'``, after
            it, draws the patch embedding weight Xavier-uniform on its ``(out, in * k * k)``
            view (std 0.036 for ViT-B/16 against timm's 0.021) and the class token from
            N(0, 0.02) (timm: std 1e-6), as MAE and the FastMIM reference release pre-train
            ViT. The FastMIM ViT pre-training config sets it; fine-tuning loads these weights.
        rel_pos_bias: add BEiT's relative position bias to every block's attention
            (:class:`RelativePositionBiasAttention`: a zero-initialised table per block, built
            for the grid of ``img_size``, resized for inputs of another grid as the learned
            position embedding is). The reference's segmentation ViT (``ViTBEiT``) has it;
            pre-training and fine-tuning do not.
        with_cp: activation checkpointing: in training, each block's activations are recomputed
            in the backward pass instead of kept (less memory, one more forward of the blocks;
            same results). Off by default; on in the detection and segmentation configs.
        frozen_stages: freeze the embedding (0) and the first n blocks (n), as mmpretrain's
            ViT; all of them (``depth``) freeze the final norm too. -1 (default): nothing.
            Frozen parameters get no gradient and their modules stay in eval mode.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)`` in
            mmdet / mmseg configs.
        **timm_kwargs: any other argument of timm's ``VisionTransformer`` (``mlp_ratio``,
            ``qkv_bias``, ``init_values``, ``weight_init``, ...). ``init_values`` turns on
            timm's layer scale on both residual branches (``blocks.i.ls1.gamma`` /
            ``ls2.gamma``, BEiT's ``gamma_1`` / ``gamma_2``); the reference's segmentation ViT
            uses ``init_values=1.0``.
    """

    # Where **timm_kwargs go: a key added to the config on the command line is checked against
    # it when the config is loaded (fastmim.engine.config_keys).
    keywords_passed_to = TimmVisionTransformer

    published_archs = ARCHS
    # The reference release pre-trains MAE's ViT (timm 0.3.2 names, which timm and fastmim
    # still use), its encoder at the top level of the file. Its fine-tuned classifiers
    # (models_vit.py) pool the tokens, then normalise them (``fc_norm``), then ``head``.
    reference_layout = ReferenceLayout(
        name='vit', pretraining_marker='blocks.0.attn.qkv.weight', encoder_prefix='',
        finetuned_marker='blocks.0.attn.qkv.weight',
        classifier_keys=('fc_norm.weight', 'head.weight'), decoder_sees_class_token=True)

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 128,
                 patch_size: int = 16,
                 out_indices: Sequence[int] = (-1, ),
                 drop_path_rate: float = 0.,
                 final_norm: bool = True,
                 pos_embed_type: str = 'learned',
                 out_type: str = 'featmap',
                 embed_init: str = 'timm',
                 rel_pos_bias: bool = False,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **timm_kwargs) -> None:
        check_drop_path_rate(drop_path_rate, 'VisionTransformer')
        reject_fixed_arguments('VisionTransformer', timm_kwargs, FIXED_TIMM_ARGS,
                               'no head, all tokens kept, position embedding resized per input')
        if out_type not in OUT_TYPES:
            raise ValueError(f'VisionTransformer: out_type {out_type!r} is not one of {OUT_TYPES}')
        if embed_init not in EMBED_INITS:
            raise ValueError(f'VisionTransformer: embed_init {embed_init!r} is not one of '
                             f'{EMBED_INITS}')
        if pos_embed_type not in POS_EMBED_TYPES:
            raise ValueError(f'VisionTransformer: pos_embed_type {pos_embed_type!r} is not one of '
                             f'{POS_EMBED_TYPES}')
        check_img_size('VisionTransformer', img_size,
                       type(self).input_multiple(dict(patch_size=patch_size)))
        arch_cfg = resolve_arch(arch)
        reject_keys_given_twice('VisionTransformer', arch, arch_cfg, timm_kwargs)
        out_indices = normalise_out_indices('VisionTransformer', out_indices,
                                            arch_cfg['depth'], 'blocks')
        if rel_pos_bias:
            if 'block_fn' in timm_kwargs or 'block_fn' in arch_cfg:
                raise ValueError('VisionTransformer: rel_pos_bias=True sets the block class; '
                                 'block_fn cannot be combined with it')
            grid = tuple(size // patch_size for size in to_2tuple(img_size))
            timm_kwargs['block_fn'] = partial(RelativePositionBiasBlock, grid)
        # timm's constructor initialises its weights by calling init_weights with arguments,
        # which BackboneContract.init_weights hands on to timm's scheme (weight_init included).
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            final_norm=final_norm,
            drop_path_rate=drop_path_rate,
            **PLAIN_VIT_TIMM_ARGS,
            **arch_cfg,
            **timm_kwargs)
        self.pos_embed_type = pos_embed_type
        if pos_embed_type == 'sincos':
            self._freeze_sincos_pos_embed()
        if embed_init == 'mae':
            self._mae_embed_init()
        self.out_type = out_type
        self.rel_pos_bias = rel_pos_bias
        self._finish_init(arch, arch_cfg, patch_size, out_indices, with_cp, init_cfg,
                          frozen_stages)

    def _freeze_sincos_pos_embed(self) -> None:
        """Fill ``pos_embed`` with the sin-cos table of the construction grid; no gradient, so
        no optimiser (weight decay included) ever changes it."""
        table = sincos_2d_pos_embed(self.embed_dim, self.patch_embed.grid_size)
        with torch.no_grad():
            self.pos_embed.copy_(table.unsqueeze(0))
        self.pos_embed.requires_grad_(False)

    def _mae_embed_init(self) -> None:
        """MAE's initialisation of the embedding, after timm's: the patch embedding weight
        Xavier-uniform on its ``(out, in * k * k)`` view (a linear layer over the patch's
        pixels), the class token N(0, 0.02)."""
        with torch.no_grad():
            weight = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
            nn.init.normal_(self.cls_token, std=.02)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``forward_features`` embeds through this method: the same embedding as
        :meth:`forward`'s."""
        return self._embed_tokens(x)

    def _pos_embed_for_grid(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The position embedding for an ``(h, w)`` token grid: a learned one as
        :class:`PlainViTBackbone` resizes it (MAE's / FastMIM's fine-tuning resize); sin-cos on
        another grid than the construction grid is the exact table of that grid."""
        if self.pos_embed_type == 'sincos' and tuple(grid) != tuple(self.patch_embed.grid_size):
            table = sincos_2d_pos_embed(self.embed_dim, grid, device=self.pos_embed.device)
            return table.to(self.pos_embed.dtype).unsqueeze(0)
        return super()._pos_embed_for_grid(grid)

    def _block_runner(self, grid: Tuple[int, int]) -> Callable[[nn.Module, torch.Tensor],
                                                                torch.Tensor]:
        """A block's relative position bias (when the model has one) is computed inside the
        run, so that activation checkpointing recomputes it too instead of keeping it."""
        if self.rel_pos_bias:
            return lambda block, x: block(x, attn_mask=block.attn.relative_position_bias(grid))
        return lambda block, x: block(x)

    def _format(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        if self.out_type == 'cls_token':
            return tokens[:, 0]
        return super()._format(tokens, grid)

    def fixed_parameter_names(self) -> Set[str]:
        """The sin-cos position table (:meth:`_freeze_sincos_pos_embed`)."""
        return {'pos_embed'} if self.pos_embed_type == 'sincos' else set()

    def no_weight_decay_names(self) -> Set[str]:
        """timm's (class token, position embedding) and, with ``rel_pos_bias``, every block's
        relative-position table, which BEiT's recipe exempts as well."""
        return super().no_weight_decay_names() | self._relative_position_tables()

    def checkpoint_optional_names(self) -> Set[str]:
        """What this ViT has that the pre-training and fine-tuning ViTs leave off: with
        ``rel_pos_bias``, every block's relative-position table (zero at the start: no bias),
        and with timm's ``init_values``, every block's layer scales. The segmentation recipe
        adds both to a classifier checkpoint that has neither, as BEiT's transfer does."""
        layer_scales = {f'blocks.{index}.{branch}.gamma' for index, block in enumerate(self.blocks)
                        for branch in ('ls1', 'ls2') if hasattr(getattr(block, branch), 'gamma')}
        return self._relative_position_tables() | layer_scales

    def _relative_position_tables(self) -> Set[str]:
        """Every block's BEiT table with ``rel_pos_bias``; none without."""
        if not self.rel_pos_bias:
            return set()
        return {f'blocks.{index}.attn.relative_position_bias_table'
                for index in range(len(self.blocks))}

    def geometry(self) -> Dict:
        """Plain-type description stored in pre-training checkpoints (``meta['geometry']``), so
        that fine-tuning and downstream loading can resize the position embedding."""
        return self._plain_geometry('VisionTransformer', pos_embed_type=self.pos_embed_type)

    @classmethod
    def timm_state_dict(cls, state: StateDict, geometry: dict,
                        path: str) -> Tuple[StateDict, List[str]]:
        """timm's names already. BEiT's relative-position tables (``rel_pos_bias=True``, the
        segmentation backbone) are refused: timm's ViT has no place for them, and without them
        the model computes something else, so no timm ViT takes these weights."""
        tables = [key for key in state if key.endswith('.attn.relative_position_bias_table')]
        if tables:
            raise CheckpointError(
                f'{path} holds a VisionTransformer with relative-position tables '
                f'(rel_pos_bias=True: {tables[0]}, ...): timm\'s VisionTransformer has no place '
                f'for them, and without them it would compute something else; nothing was '
                f'written')
        return dict(state), []

    @classmethod
    def rename_foreign_keys(cls, state: StateDict) -> StateDict:
        """BEiT's layout (the reference's segmentation ``ViTBEiT``) in timm's names: layer
        scales ``blocks.i.gamma_1`` / ``gamma_2`` -> ``blocks.i.ls1.gamma`` / ``ls2.gamma``;
        the relative-position index buffers left out (rebuilt from the grid)."""
        renamed = {}
        for key, value in state.items():
            if re.fullmatch(r'blocks\.\d+\.attn\.relative_position_index', key):
                continue
            renamed[re.sub(r'^(blocks\.\d+)\.gamma_([12])$', r'\1.ls\2.gamma', key)] = value
        return renamed

    @classmethod
    def from_reference_encoder(cls, state, path, img_size=None, num_heads=None):
        """The release keeps its fixed sin-cos table in ``pos_embed``, as the sincos mode does."""
        model = _reference_model(state, path, img_size, num_heads, pos_embed_type='sincos')
        return ReferenceEncoder(model, dict(state), [])

    @classmethod
    def from_reference_classifier(cls, encoder, parts, path, img_size=None, num_heads=None):
        """``fc_norm`` normalises the pooled tokens: the classifier's, as ``LinearClsHead``'s
        ``fc_norm`` (``pre_norm='ln'``) after a backbone without its final norm."""
        model = _reference_model(encoder, path, img_size, num_heads, pos_embed_type='learned',
                                 final_norm=False)
        head_state = {key: value for key, value in parts.items() if key.startswith('fc_norm.')}
        return ReferenceClassifier(model, dict(encoder), head_state,
                                   dict(type='LinearClsHead', pre_norm='ln'),
                                   dict(fc_norm='head.fc_norm'))

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """Other layouts renamed (:meth:`rename_foreign_keys`), ``pos_embed`` resized to this
        model's grid (bicubic, class token kept) and each block's relative-position-bias table
        resized to it (:func:`resize_beit_relative_position_bias_table`); the source grid is
        ``source_geometry['pos_embed_grid']`` or, without it, a square. A sin-cos model leaves
        the checkpoint's position embedding out: it computes the exact table for its own grid.

        Reads only timm's attributes, so ``VisionTransformer.adapt_state_dict(timm_vit, ...)``
        fits weights to a plain timm ViT too (``tools/convert/to_timm.py --arch``)."""
        state = VisionTransformer.rename_foreign_keys(state)
        for key, value in state.items():
            match = re.fullmatch(r'blocks\.(\d+)\.attn\.relative_position_bias_table', key)
            if match:
                state[key] = fit_relative_position_bias_table(self, value, int(match[1]),
                                                              source_geometry)
        pos_embed = state.get('pos_embed')
        if pos_embed is None:
            return state
        if getattr(self, 'pos_embed_type', 'learned') == 'sincos':  # (timm's ViT has none)
            pos_embed = state.pop('pos_embed')
            if pos_embed.shape[-1] == self.embed_dim:  # else the loader names the other size
                _refuse_a_learned_table(self, pos_embed, source_geometry,
                                        final_norm_in_file='norm.weight' in state)
            return state
        state['pos_embed'] = fit_pos_embed(self, pos_embed, source_geometry)
        return state


def _reference_model(state, path, img_size, num_heads, **settings) -> nn.Module:
    """The ViT (meta device) that a MAE-style ViT state dict describes; ``settings`` are the
    arguments the weights cannot tell (position-embedding type, final norm)."""
    require_keys(state, ('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                         'blocks.0.mlp.fc1.weight'), path, 'ViT')
    embed_dim = state['cls_token'].shape[-1]
    patch_size = state['patch_embed.proj.weight'].shape[-1]
    grid = square_side(state['pos_embed'].shape[1] - 1, 'pos_embed patch tokens', path)
    check_given_size(img_size, grid * patch_size, 'the position embedding', path)
    hidden = state['blocks.0.mlp.fc1.weight'].shape[0]
    base = dict(type='VisionTransformer', img_size=grid * patch_size, patch_size=patch_size,
                mlp_ratio=mlp_ratio(hidden, [embed_dim], path),
                qkv_bias='blocks.0.attn.qkv.bias' in state, **settings)
    custom = dict(embed_dim=embed_dim, depth=count_indices(state, r'blocks\.(\d+)\.'),
                  num_heads=single_value(num_heads, 'ViT'))
    # The weights do not fix a ViT's heads: a size no published arch has gets 64-wide ones.
    return build_matching(base, custom, state, path, try_published=num_heads is None,
                          guesses=dict(num_heads=max(1, embed_dim // 64)))


def _refuse_a_learned_table(model: nn.Module, pos_embed: torch.Tensor,
                            geometry: Optional[dict], final_norm_in_file: bool) -> None:
    """A sin-cos model computes its table, which is only right for a file whose table was the
    sin-cos one too. A learned table (a fine-tuned checkpoint in a sin-cos kNN or probing
    config) would be thrown away without a word: its geometry says ``learned``, or, in a file
    without geometry, its values are not the sin-cos table of their grid (learned tables start
    near 0; sin-cos entries reach 1, bf16 rounding stays below 0.01). A fine-tuned file pools
    through ``fc_norm`` and has no final norm: the message names that setting too, or following
    it ends in a second error, the missing ``norm`` keys. A table of another width is not
    judged: the file is of another size, which following this advice only led to."""
    learned = (geometry or {}).get('pos_embed_type') == 'learned'
    grid = pos_embed_source_grid(pos_embed.shape[1] - model.num_prefix_tokens, geometry) \
        if pos_embed.dim() == 3 else None
    if not learned and grid is not None:
        table = sincos_2d_pos_embed(model.embed_dim, grid)[1:]
        learned = not torch.allclose(pos_embed[0, model.num_prefix_tokens:].double(), table,
                                     rtol=0, atol=1e-2)
    if learned:
        no_final_norm = ('' if final_norm_in_file or isinstance(model.norm, nn.Identity) else
                         ' and model.backbone.final_norm=False (the file has no final norm)')
        raise CheckpointError(
            f"the checkpoint's pos_embed {tuple(pos_embed.shape)} is a learned table, which "
            f"this VisionTransformer (pos_embed_type='sincos') would replace by its sin-cos "
            f"table: set model.backbone.pos_embed_type='learned'{no_final_norm} to use it")
