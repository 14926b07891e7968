"""What the backbones over timm's plain ViTs share (``VisionTransformer`` in ``vit.py``,
``EVA02`` in ``eva02.py``): :class:`PlainViTBackbone` (the input check, the class token and
position embedding on any grid, the block loop, the NCHW maps, the common part of
``geometry()``, MAE's layer ids), the timm arguments that make a plain ViT a backbone, and the
position-embedding resize that serves both inputs of another grid and checkpoints of another
grid (:func:`resize_pos_embed`, :func:`fit_pos_embed`), so a model loaded at size S equals the
checkpoint's model run at size S.
"""
import copy
import inspect
import math
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint

from fastmim.models.utils.backbone_contract import BackboneContract, StateDict
from fastmim.models.utils.sizes import grid_pair
from .base import plain, plain_size, staged_stage_of

# What makes timm's plain ViTs (ViT, EVA-02) a backbone here: no head, the class token kept, the
# token grid following the input.
PLAIN_VIT_TIMM_ARGS = dict(num_classes=0, global_pool='', class_token=True, dynamic_img_size=True)


def check_head_width(owner: str, settings: dict, multiple: int = 1, why: str = '') -> dict:
    """``settings`` when ``embed_dim`` splits over ``num_heads`` into heads of a width that is
    a multiple of ``multiple``. timm checks only the split, with a bare ``AssertionError`` that
    names no arch key; a head width a rotary embedding cannot take fails later, in the first
    forward, as a shape error."""
    dim, heads = settings['embed_dim'], settings['num_heads']
    if dim % heads:
        raise ValueError(f'{owner}: arch embed_dim {dim} is not divisible by num_heads {heads}')
    if (dim // heads) % multiple:
        raise ValueError(f'{owner}: arch embed_dim {dim} / num_heads {heads} = {dim // heads} '
                         f'channels per head, not a multiple of {multiple}{why}')
    return settings


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_grid: Union[int, Sequence[int]],
                     dst_grid: Union[int, Sequence[int]],
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resample a ``(1, prefix + h*w, C)`` position embedding from ``src_grid`` to ``dst_grid``.

    The prefix (class token) entries are kept; the ``h x w`` grid is interpolated bicubically
    (``align_corners=False``, no anti-aliasing, in fp32, returned in the input dtype): the same
    operation the model applies at run time to other input sizes, so a model loaded at size S
    equals the pre-trained model run at size S. Returns ``pos_embed`` itself when the grids are
    equal.
    """
    src = grid_pair(src_grid, 'resize_pos_embed', 'src_grid')
    dst = grid_pair(dst_grid, 'resize_pos_embed', 'dst_grid')
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f'resize_pos_embed: expected a (1, tokens, channels) position embedding, '
                         f'got shape {tuple(pos_embed.shape)}')
    if pos_embed.shape[1] != num_prefix_tokens + src[0] * src[1]:
        raise ValueError(f'resize_pos_embed: {pos_embed.shape[1]} tokens do not match '
                         f'{num_prefix_tokens} prefix token(s) + a {src[0]}x{src[1]} grid')
    if src == dst:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=dst, old_size=src,
                                  num_prefix_tokens=num_prefix_tokens, antialias=False)


def pos_embed_source_grid(num_patches: int, geometry: Optional[dict]) -> Optional[Tuple[int, int]]:
    """The patch grid a checkpoint's position embedding was built for: the geometry's when it
    agrees with the tensor, else a square one; None when neither applies."""
    grid = (geometry or {}).get('pos_embed_grid')
    if grid and math.prod(grid) == num_patches:
        return tuple(grid)
    side = math.isqrt(num_patches)
    return (side, side) if side * side == num_patches else None


def fit_pos_embed(model: nn.Module, pos_embed: torch.Tensor,
                  geometry: Optional[dict]) -> torch.Tensor:
    """A checkpoint's ``pos_embed`` resized to ``model``'s patch grid (bicubic, class token
    kept); the source grid is ``geometry['pos_embed_grid']`` when it agrees with the tensor,
    else a square. Returned as it is when the shapes are equal or no rule applies (the caller
    reports the shapes). Reads only timm's attributes, so it serves timm's ViT-like models
    (ViT, EVA-02) alike."""
    if (pos_embed.shape == model.pos_embed.shape or pos_embed.dim() != 3
            or pos_embed.shape[-1] != model.embed_dim):
        return pos_embed
    source_grid = pos_embed_source_grid(pos_embed.shape[1] - model.num_prefix_tokens, geometry)
    if source_grid is None:
        return pos_embed
    return resize_pos_embed(pos_embed, source_grid, model.patch_embed.grid_size,
                            model.num_prefix_tokens)

# Parameters of timm's ViT-like models that embed the input: layer id 0.
EMBEDDING_NAMES = ('patch_embed', 'cls_token', 'reg_token', 'pos_embed', 'norm_pre')
# The stem for frozen_stages: the embedding, the dropouts right after it and EVA-02's rotary
# embedding (no weights), as mmpretrain's ViT freezes its ``drop_after_pos`` with it.
STEM_NAMES = (*EMBEDDING_NAMES, 'pos_drop', 'patch_drop', 'rope')


class PlainViTBackbone(BackboneContract):
    """What the backbones over timm's plain ViTs (:class:`VisionTransformer`, EVA-02) share, so
    that both run, resize and describe their tokens the same way: the input check, the class
    token and position embedding on any grid, the block loop (blocks after the last output not
    run, activation checkpointing, the final norm on the last block only), the NCHW maps, the
    common part of ``geometry()`` and MAE's layer ids. :meth:`forward` is two public steps that
    a token-dropping method runs with some patch tokens left out in between:
    :meth:`embed_tokens` and :meth:`encode_tokens`.

    It reads timm's attributes (``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``,
    ``norm``, ...). A subclass calls :meth:`_finish_init` at the end of ``__init__`` and
    says how one block runs on a grid (:meth:`_block_runner`).
    """

    size_keys = ('embed_dim', 'depth', 'num_heads')
    timm_pooled_norm = 'fc_norm'  # timm's ViT and EVA-02 normalise the pooled tokens there

    @classmethod
    def input_multiple(cls, settings: dict) -> Tuple[str, int]:
        """The patch size: the patch embedding takes whole patches and pads nothing."""
        default = inspect.signature(cls.__init__).parameters['patch_size'].default
        return 'model.backbone.patch_size', settings.get('patch_size', default)

    @classmethod
    def output_stride(cls, settings: dict) -> Optional[int]:
        """The patch size: every block keeps the patch grid."""
        return cls.input_multiple(settings)[1]

    @classmethod
    def timm_sizes(cls, model: nn.Module) -> Dict:
        """timm's ViT and EVA-02 keep the width and the blocks; each block's attention its
        heads."""
        return dict(embed_dim=model.embed_dim, depth=len(model.blocks),
                    num_heads=model.blocks[0].attn.num_heads)

    def explain_missing_keys(self, missing: Set[str], file_keys: Sequence[str]) -> Optional[str]:
        """A file that lacks exactly this backbone's final norm comes from a backbone built with
        ``final_norm=False``, as fine-tuning builds it (its classifier normalises the pooled
        tokens instead: a ``fc_norm`` in the file, by which it is recognised as fine-tuned);
        ``final_norm=False`` loads it. None for any other missing keys."""
        final_norm = [f'norm.{name}' for name, _ in self.norm.named_parameters()]
        if not final_norm or set(missing) != set(final_norm):
            return None
        norm_keys = ', '.join(final_norm)
        pooled_norms = [key for key in file_keys
                        if self.timm_pooled_norm in key.split('.')[:-1]]
        what = (f'a fine-tuned checkpoint (it has {pooled_norms[0]}, the norm of its '
                f'classifier after pooling, and its backbone has no final norm: no {norm_keys})'
                if pooled_norms else
                f'a checkpoint of a backbone without a final norm (no {norm_keys})')
        return (f'{what}: build the backbone with final_norm=False to load it '
                f'(--cfg-options model.backbone.final_norm=False)')

    def _finish_init(self, arch: Union[str, dict], arch_cfg: dict, patch_size: int,
                     out_indices: Sequence[int], with_cp: bool,
                     init_cfg: Optional[Union[dict, list]], frozen_stages: int) -> None:
        """What a subclass sets once timm's constructor has run: ``init_cfg`` (timm's
        constructor reaches ``BaseModule.__init__`` without it, which sets it to None), the
        outputs (each an ``embed_dim``-channel map at the patch stride), activation
        checkpointing, the load-state-dict hook and the frozen stages."""
        self.init_cfg = copy.deepcopy(init_cfg)
        self.arch = copy.deepcopy(arch)
        self.arch_cfg = arch_cfg
        self.patch_size = int(patch_size)
        self.out_indices = out_indices
        self.out_channels = [arch_cfg['embed_dim']] * len(out_indices)
        self.out_strides = [self.patch_size] * len(out_indices)
        self.set_grad_checkpointing(with_cp)
        self.enable_state_dict_adaptation()
        self.freeze_stages(frozen_stages)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        patches, prefix, grid = self.embed_tokens(x)
        outputs = self.encode_tokens(torch.cat([prefix, patches], dim=1), grid, self.out_indices)
        return tuple(self._format(tokens, grid) for tokens in outputs)

    def embed_tokens(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor,
                                                          Tuple[int, int]]:
        """The position-embedded tokens of a ``(B, C, H, W)`` batch, patch and prefix (class)
        tokens apart, so that a token-dropping method (MAE) can keep some patch tokens:
        ``(patches (B, h*w, C), prefix (B, 1, C), grid (h, w))``, each plus its rows of the
        position embedding of that grid (:meth:`_pos_embed_for_grid`). :meth:`forward` joins
        them (prefix first) and hands them to :meth:`encode_tokens`."""
        if images.dim() != 4 or images.shape[-2] % self.patch_size or \
                images.shape[-1] % self.patch_size:
            raise ValueError(f'{type(self).__name__}: expected a (B, C, H, W) input with H and W '
                             f'multiples of the patch size {self.patch_size}, got '
                             f'{tuple(images.shape)} (sizes are set by the pipeline\'s crop '
                             f'or resize, the data preprocessor\'s padding, or '
                             f'test_cfg.crop_size of slide inference)')
        x = self.patch_embed(images)  # (B, h, w, C): dynamic_img_size keeps the grid
        return (*self._position_embedded(x), tuple(x.shape[1:3]))

    def encode_tokens(self, tokens: torch.Tensor, grid: Tuple[int, int],
                      out_indices: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """``tokens`` (B, tokens, C) through ``pos_drop`` and ``norm_pre``, then the blocks up
        to the last of ``out_indices`` (default: the last block); returns the tokens after each
        block of ``out_indices``, the last block's through the final norm. ``pos_drop`` and
        ``norm_pre`` act on each token alone, so dropping tokens before them is dropping them
        after.

        ``tokens`` are the prefix tokens, then the patch tokens of the ``(h, w)`` ``grid``: all
        of them, or any of them (MAE's kept tokens) where the blocks do not need every token of
        the grid (no relative position bias, no rotary embedding)."""
        out_indices = (len(self.blocks) - 1, ) if out_indices is None else out_indices
        x = self.norm_pre(self.pos_drop(tokens))
        run_block = self._block_runner(grid)
        outputs = []
        last_block = len(self.blocks) - 1
        for index, block in enumerate(self.blocks[:max(out_indices) + 1]):
            if self.grad_checkpointing and self.training:
                x = checkpoint(run_block, block, x, use_reentrant=False)
            else:
                x = run_block(block, x)
            if index in out_indices:
                outputs.append(self.norm(x) if index == last_block else x)
        return outputs

    def _block_runner(self, grid: Tuple[int, int]) -> Callable[[nn.Module, torch.Tensor],
                                                                torch.Tensor]:
        """``run(block, tokens) -> tokens`` for inputs of token grid ``grid``; with activation
        checkpointing, what it computes inside is recomputed in the backward pass."""
        raise NotImplementedError(f'{type(self).__name__} must implement _block_runner(grid)')

    def _embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The class token, then the patch tokens of a ``(B, h, w, C)`` grid, position-embedded,
        through ``pos_drop``: the embedding timm's ``forward_features`` runs (``_pos_embed``)."""
        patches, prefix = self._position_embedded(x)
        return self.pos_drop(torch.cat([prefix, patches], dim=1))

    def _position_embedded(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(patches (B, h*w, C), class token (B, 1, C))`` of a ``(B, h, w, C)`` grid, each plus
        its rows of the position embedding of that grid (the class token's come first)."""
        batch, height, width, dim = x.shape
        table = self._pos_embed_for_grid((height, width))
        prefix = self.cls_token.expand(batch, -1, -1) + table[:, :self.num_prefix_tokens]
        return x.reshape(batch, -1, dim) + table[:, self.num_prefix_tokens:], prefix

    def _pos_embed_for_grid(self, grid: Tuple[int, int]) -> torch.Tensor:
        """``pos_embed`` resized to ``grid`` by :func:`resize_pos_embed`, the function
        :func:`fit_pos_embed` resizes checkpoints with: one operation, so a model run at size S
        equals the model loaded at S."""
        return resize_pos_embed(self.pos_embed, self.patch_embed.grid_size, grid,
                                self.num_prefix_tokens)

    def _format(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, prefix + h*w, C)`` tokens -> the ``(B, C, h, w)`` map of the patch tokens."""
        patches = tokens[:, self.num_prefix_tokens:]
        patch_map = patches.reshape(patches.shape[0], grid[0], grid[1], -1)
        return patch_map.permute(0, 3, 1, 2).contiguous()

    def _plain_geometry(self, type_name: str, **extra) -> Dict:
        """The plain-type description both store in pre-training checkpoints: the size and the
        grid ``pos_embed`` was built for (so fine-tuning and downstream loading can resize it),
        then ``extra``."""
        return dict(
            type=type_name,
            arch=plain(self.arch),
            img_size=plain_size(self.patch_embed.img_size),
            patch_size=self.patch_size,
            embed_dim=self.arch_cfg['embed_dim'],
            depth=self.arch_cfg['depth'],
            num_heads=self.arch_cfg['num_heads'],
            pos_embed_grid=list(self.patch_embed.grid_size),
            **extra,
            class_token=True)

    def layer_id(self, name: str) -> int:
        """MAE's ids: the embedding (patch embedding, class token, position embedding, pre-norm)
        is 0, ``blocks.i`` is ``i + 1`` (everything inside the block: relative-position-bias
        table, layer scales), the rest (final norm) ``depth + 1``; 13 for ViT-B."""
        top, _, remainder = name.partition('.')
        if top in EMBEDDING_NAMES:
            return 0
        if top == 'blocks':
            return int(remainder.split('.')[0]) + 1
        return len(self.blocks) + 1

    @property
    def num_layer_ids(self) -> int:
        return len(self.blocks) + 2

    @property
    def num_stages(self) -> int:
        """A block is a stage, as in mmpretrain's ViT (``frozen_stages=12`` freezes ViT-B)."""
        return len(self.blocks)

    def stage_of(self, name: str) -> Optional[int]:
        """mmpretrain's ViT stages: the embedding (:data:`STEM_NAMES`) is the stem,
        ``blocks.i`` stage ``i + 1``, the final norm (and timm's empty head) is frozen with
        every block only."""
        return staged_stage_of(name, STEM_NAMES, 'blocks', len(self.blocks))
