"""Plain Vision Transformer backbone: timm's ``VisionTransformer`` returning NCHW token maps.

The class subclasses timm's model instead of wrapping it, so every parameter keeps its timm name
(``patch_embed.proj.weight``, ``cls_token``, ``pos_embed``, ``blocks.N...``, ``norm``): a
checkpoint of this backbone is a timm checkpoint without the head.

FastMIM pre-trains at 128 px and fine-tunes at 224 px; progressive-resolution pre-training changes
the input size mid-run. The learned position embedding therefore keeps the grid of ``img_size``
and is resized on the fly (bicubic, class-token entry kept) whenever the input has another grid.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer
from torch.utils.checkpoint import checkpoint

from fastmim.registry import MODELS

ARCHS = {
    's': dict(embed_dim=384, depth=12, num_heads=6),
    'b': dict(embed_dim=768, depth=12, num_heads=12),
    'l': dict(embed_dim=1024, depth=24, num_heads=16),
}
ARCH_ALIASES = {'small': 's', 'base': 'b', 'large': 'l'}
ARCH_KEYS = ('embed_dim', 'depth', 'num_heads')
OUT_TYPES = ('featmap', 'cls_token')
# Arguments this backbone fixes: the head is dropped, the class token and every patch token are
# kept and the position embedding is resized here, so timm must not be told otherwise.
FIXED_TIMM_ARGS = ('num_classes', 'global_pool', 'class_token', 'reg_tokens', 'no_embed_class',
                   'pos_embed', 'dynamic_img_size', 'dynamic_img_pad', 'patch_drop_rate')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Widths and depth of a published size (``'s'``, ``'b'``, ``'l'``) or of a custom dict."""
    if isinstance(arch, str):
        key = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if key not in ARCHS:
            raise ValueError(f'VisionTransformer: unknown arch {arch!r}; expected one of '
                             f'{sorted(ARCHS) + sorted(ARCH_ALIASES)} or a dict with keys '
                             f'{ARCH_KEYS}')
        return dict(ARCHS[key])
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f'VisionTransformer: arch dict {arch} lacks keys {missing}; '
                         f'expected keys {ARCH_KEYS} (and optionally mlp_ratio)')
    return dict(arch)


def plain_size(size: Sequence[int]) -> Union[int, list]:
    """An (h, w) size as checkpoint metadata stores it: one int when square, else ``[h, w]``."""
    height, width = (int(s) for s in size)
    return height if height == width else [height, width]


def plain(value):
    """``value`` with tuples turned into lists, as checkpoint metadata stores configs."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


@MODELS.register_module()
class VisionTransformer(TimmVisionTransformer, BaseModule):
    """ViT whose forward returns a tuple of NCHW patch-token maps (class token dropped).

    Args:
        arch: ``'s'``, ``'b'`` (12 heads), ``'l'`` or a dict ``{embed_dim, depth, num_heads}``.
        img_size: size whose patch grid the learned position embedding has. Inputs of any other
            size that is a multiple of ``patch_size`` work too.
        patch_size: patch (and output) stride.
        out_indices: blocks whose outputs are returned, in block order; negative values count
            from the end. Blocks after the last one listed are not run.
        drop_path_rate: stochastic depth, increasing linearly over the blocks.
        final_norm: apply the final LayerNorm to the output of the last block.
        out_type: ``'featmap'`` gives ``(B, C, H / p, W / p)`` maps, ``'cls_token'`` gives the
            ``(B, C)`` class token (linear probing).
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)`` in
            mmdet / mmseg configs.
        **timm_kwargs: any other argument of timm's ``VisionTransformer`` (``mlp_ratio``,
            ``qkv_bias``, ``init_values``, ``weight_init``, ...).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 128,
                 patch_size: int = 16,
                 out_indices: Sequence[int] = (-1, ),
                 drop_path_rate: float = 0.,
                 final_norm: bool = True,
                 out_type: str = 'featmap',
                 init_cfg: Optional[Union[dict, list]] = None,
                 **timm_kwargs) -> None:
        fixed = sorted(set(FIXED_TIMM_ARGS) & set(timm_kwargs))
        if fixed:
            raise ValueError(f'VisionTransformer: arguments {fixed} are fixed by this backbone '
                             '(no head, all tokens kept, position embedding resized per input)')
        if out_type not in OUT_TYPES:
            raise ValueError(f'VisionTransformer: out_type {out_type!r} is not one of {OUT_TYPES}')
        arch_cfg = resolve_arch(arch)
        out_indices = self._normalise_indices(out_indices, arch_cfg['depth'])
        weight_init = timm_kwargs.pop('weight_init', '')
        # 'skip': timm's constructor would call self.init_weights(), which here is mmengine's
        # entry point; timm's own initialisation runs explicitly below (unless skipped).
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool='',
            class_token=True,
            final_norm=final_norm,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            weight_init='skip',
            **arch_cfg,
            **timm_kwargs)
        if weight_init != 'skip':
            self.weight_init_mode = weight_init
            TimmVisionTransformer.init_weights(self, needs_reset=False)
        self.init_cfg = copy.deepcopy(init_cfg)

        self.arch = copy.deepcopy(arch)
        self.arch_cfg = arch_cfg
        self.patch_size = int(patch_size)
        self.out_type = out_type
        self.out_indices = out_indices
        self.out_channels = [arch_cfg['embed_dim']] * len(self.out_indices)
        self.out_strides = [self.patch_size] * len(self.out_indices)

    @staticmethod
    def _normalise_indices(out_indices: Sequence[int], depth: int) -> list:
        for index in out_indices:
            if not -depth <= index < depth:
                raise ValueError(f'VisionTransformer: out index {index} is out of range for '
                                 f'{depth} blocks')
        return sorted({index % depth for index in out_indices})

    def init_weights(self) -> None:
        """mmengine's entry point (the runner calls it on every sub-module): applies ``init_cfg``
        only. timm already initialised the weights in ``__init__``; re-running timm's scheme
        here would re-randomise a model that a parent has just loaded."""
        BaseModule.init_weights(self)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the class token and add the position embedding to a ``(B, h, w, C)`` grid.

        The learned grid is resized bicubically (no anti-aliasing, ``align_corners=False``) when
        ``h, w`` differ from it: the same operation that resizes a pre-training checkpoint for
        fine-tuning (MAE / FastMIM), so a model run at size S equals the model loaded at S.
        """
        batch, height, width, dim = x.shape
        pos_embed = resample_abs_pos_embed(
            self.pos_embed,
            new_size=(height, width),
            old_size=self.patch_embed.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            antialias=False)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, -1, dim)], dim=1)
        return self.pos_drop(tokens + pos_embed)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f'VisionTransformer: expected a (B, C, H, W) input with H and W '
                             f'multiples of the patch size {self.patch_size}, got {tuple(x.shape)}')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_input(x)
        x = self.patch_embed(x)  # (B, h, w, C): dynamic_img_size keeps the grid
        grid = x.shape[1:3]
        x = self.norm_pre(self.patch_drop(self._pos_embed(x)))

        outputs = []
        last_block = len(self.blocks) - 1
        for index, block in enumerate(self.blocks[:max(self.out_indices) + 1]):
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if index in self.out_indices:
                outputs.append(self._format(self.norm(x) if index == last_block else x, grid))
        return tuple(outputs)

    def _format(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        if self.out_type == 'cls_token':
            return tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens:]
        patch_map = patches.reshape(patches.shape[0], grid[0], grid[1], -1)
        return patch_map.permute(0, 3, 1, 2).contiguous()

    def geometry(self) -> Dict:
        """Plain-type description stored in pre-training checkpoints (``meta['geometry']``), so
        that fine-tuning and downstream loading can resize the position embedding."""
        return dict(
            type='VisionTransformer',
            arch=plain(self.arch),
            img_size=plain_size(self.patch_embed.img_size),
            patch_size=self.patch_size,
            embed_dim=self.arch_cfg['embed_dim'],
            depth=self.arch_cfg['depth'],
            num_heads=self.arch_cfg['num_heads'],
            pos_embed_grid=list(self.patch_embed.grid_size),
            class_token=True)
