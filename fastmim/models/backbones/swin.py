"""Swin Transformer backbone: timm's ``SwinTransformer`` returning NCHW stage maps.

Subclassing timm keeps timm's parameter names. FastMIM pre-trains Swin at 128 px with window 4:
the stages see 32^2, 16^2, 8^2 and 4^2 tokens, and in the last stage the window equals the
resolution, so timm shrinks nothing and drops the shift there (as the reference release does).

Input size. The model adapts itself to the size it is fed: when a batch has another size than
the current one, timm's ``set_input_size`` recomputes every block's window, shift and attention
mask for it, giving the model timm builds at that size (no parameter changes, only the
non-persistent mask buffers). Sizes that work: H and W multiples of the total stride (32) that
keep every stage at least as large as its window, e.g. with window 4 built at 128: 128, 160,
192, 224, ... (at 160 the 5x5 last stage is padded to 8x8, four 4x4 windows, and shifted, as
timm does). Smaller inputs would shrink a window and so resize the learned relative-position
tables mid-run; they are refused with an error.
"""
import copy
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from timm.models.swin_transformer import SwinTransformer as TimmSwinTransformer
from timm.models.swin_transformer import WindowAttention, resolve_stage_window_sizes
from torch import nn

from fastmim.registry import MODELS
from ._arch import resolve_arch as resolve_named_arch

from .vit import plain, plain_size

ARCHS = {
    't': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    's': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'b': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
ARCH_ALIASES = {'tiny': 't', 'small': 's', 'base': 'b'}
ARCH_KEYS = ('embed_dim', 'depths', 'num_heads')
# Arguments this backbone fixes: no head, and the input-size handling described above.
FIXED_TIMM_ARGS = ('num_classes', 'global_pool', 'strict_img_size', 'dynamic_img_size',
                   'always_partition')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Widths and depths of a published size (``'t'``, ``'s'``, ``'b'``) or of a custom dict."""
    settings = resolve_named_arch('SwinTransformer', arch, ARCHS, ARCH_KEYS, ARCH_ALIASES)
    if len(settings['depths']) != len(settings['num_heads']):
        raise ValueError(f'SwinTransformer: arch dict {arch} needs one num_heads entry per stage')
    return settings


@MODELS.register_module()
class SwinTransformer(TimmSwinTransformer, BaseModule):
    """Swin whose forward returns a tuple of NCHW stage maps (strides 4, 8, 16, 32).

    Args:
        arch: ``'t'``, ``'s'``, ``'b'`` (embed 128, depths 2-2-18-2, heads 4-8-16-32) or a dict
            ``{embed_dim, depths, num_heads}``.
        img_size: construction size; see the module docstring for the other sizes that work.
            Give every stage at least ``window_size`` tokens (``img_size >= 32 * window``, e.g.
            224 for window 7 in detection configs): a smaller size shrinks the windows and so
            the relative-position tables, and the model then runs at that size only.
        window_size: attention window (an int, an (h, w) pair or one per stage).
        out_indices: stages whose outputs are returned, in stage order; negative values count
            from the end. The last stage goes through timm's final ``norm``; earlier stages get
            a fresh LayerNorm each (``out_norms.<i>``), as Swin's detection release does.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)``.
        **timm_kwargs: any other argument of timm's ``SwinTransformer`` (``mlp_ratio``, ...).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 128,
                 window_size: Union[int, Sequence] = 4,
                 out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0.,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **timm_kwargs) -> None:
        fixed = sorted(set(FIXED_TIMM_ARGS) & set(timm_kwargs))
        if fixed:
            raise ValueError(f'SwinTransformer: arguments {fixed} are fixed by this backbone '
                             '(no head; it adapts itself to each input size)')
        arch_cfg = resolve_arch(arch)
        out_indices = self._normalise_indices(out_indices, len(arch_cfg['depths']))
        weight_init = timm_kwargs.pop('weight_init', '')
        # 'skip': timm's constructor would call self.init_weights(), which here is mmengine's
        # entry point; timm's own initialisation runs explicitly below (unless skipped).
        super().__init__(
            img_size=img_size,
            window_size=window_size,
            num_classes=0,
            global_pool='',
            drop_path_rate=drop_path_rate,
            weight_init='skip',
            **arch_cfg,
            **timm_kwargs)
        if weight_init != 'skip':
            self.weight_init_mode = weight_init
            TimmSwinTransformer.init_weights(self, needs_reset=False)
        self.init_cfg = copy.deepcopy(init_cfg)
        # timm marks fused attention for Swin as experimental; FastMIM uses it everywhere.
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.fused_attn = True

        self.arch = copy.deepcopy(arch)
        self.arch_cfg = arch_cfg
        self.img_size = tuple(self.patch_embed.img_size)
        self.window_size = copy.deepcopy(window_size)
        self.stage_windows = resolve_stage_window_sizes(window_size, len(self.layers))
        self.out_indices = out_indices
        self.out_channels = [self.feature_info[i]['num_chs'] for i in self.out_indices]
        self.out_strides = [self.feature_info[i]['reduction'] for i in self.out_indices]
        last_stage = len(self.layers) - 1
        self.out_norms = nn.ModuleDict({
            str(i): nn.LayerNorm(self.feature_info[i]['num_chs'])
            for i in self.out_indices if i != last_stage
        })

    @staticmethod
    def _normalise_indices(out_indices: Sequence[int], num_stages: int) -> list:
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'SwinTransformer: out index {index} is out of range for '
                                 f'{num_stages} stages')
        return sorted({index % num_stages for index in out_indices})

    def init_weights(self) -> None:
        """mmengine's entry point (the runner calls it on every sub-module): applies ``init_cfg``
        only. timm already initialised the weights in ``__init__``; re-running timm's scheme
        here would re-randomise a model that a parent has just loaded."""
        BaseModule.init_weights(self)

    @property
    def total_stride(self) -> int:
        return self.patch_embed.patch_size[0] * 2**(len(self.layers) - 1)

    def _adapt_to_input(self, size: Tuple[int, int]) -> None:
        """Rebuild windows, shifts and masks for a new input size (see the module docstring)."""
        if tuple(size) == tuple(self.patch_embed.img_size):
            return
        stride = self.total_stride
        if size[0] % stride or size[1] % stride:
            raise ValueError(f'SwinTransformer: input size {tuple(size)} must be a multiple of '
                             f'the total stride {stride}')
        patch = self.patch_embed.patch_size
        grid = (size[0] // patch[0], size[1] // patch[1])
        for index, stage in enumerate(self.layers):
            resolution = (grid[0] >> index, grid[1] >> index)
            window = tuple(min(r, w) for r, w in zip(resolution, self.stage_windows[index]))
            if window != tuple(stage.blocks[0].window_size):
                raise ValueError(
                    f'SwinTransformer: input size {tuple(size)} gives stage {index} a '
                    f'{resolution[0]}x{resolution[1]} token grid and so a {window} window instead '
                    f'of the {tuple(stage.blocks[0].window_size)} window its relative-position '
                    f'tables were built for; every stage must stay at least as large as its '
                    f'window (built at {self.img_size})')
        self.set_input_size(img_size=tuple(size), window_size=self.window_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(
                f'SwinTransformer: expected a (B, C, H, W) input, got {tuple(x.shape)}')
        self._adapt_to_input(tuple(x.shape[-2:]))
        x = self.patch_embed(x)  # (B, H / 4, W / 4, C)
        outputs = []
        last_stage = len(self.layers) - 1
        for index, stage in enumerate(self.layers[:max(self.out_indices) + 1]):
            x = stage(x)
            if index in self.out_indices:
                normed = self.norm(x) if index == last_stage else self.out_norms[str(index)](x)
                outputs.append(normed.permute(0, 3, 1, 2).contiguous())
        return tuple(outputs)

    def geometry(self) -> Dict:
        """Plain-type description stored in pre-training checkpoints (``meta['geometry']``):
        ``stage_window_sizes`` are the windows the relative-position tables were built for
        (``(2w - 1)^2`` rows each), which fine-tuning resizes to its own window."""
        return dict(
            type='SwinTransformer',
            arch=plain(self.arch),
            img_size=plain_size(self.img_size),
            patch_size=int(self.patch_embed.patch_size[0]),
            window_size=(self.window_size if isinstance(self.window_size, int) else
                         [list(window) for window in self.stage_windows]),
            stage_window_sizes=[list(stage.blocks[0].window_size) for stage in self.layers],
            embed_dim=self.arch_cfg['embed_dim'],
            depths=list(self.arch_cfg['depths']),
            num_heads=list(self.arch_cfg['num_heads']))
