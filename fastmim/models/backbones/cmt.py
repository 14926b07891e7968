"""CMT backbone: "CMT: Convolutional Neural Networks Meet Vision Transformers" (Guo et al.,
CVPR 2022, arXiv 2107.06263).

A convolutional stem and four stages. Every stage starts with a 2x2 stride-2 convolution (patch
aggregation + LayerNorm) and stacks CMT blocks::

    x = x + DWConv3x3(x)                       # local perception unit (LPU)
    x = x + DropPath(LMHSA(LN(x)))             # attention with spatially reduced keys/values
    x = x + DropPath(IRFFN(LN(x)))             # inverted residual feed-forward network

Facts taken from the paper and its reference release (Huawei Efficient-AI-Backbones):

* The stem is a 3x3 stride-2 convolution and two 3x3 convolutions, each followed by GELU then BN.
* LMHSA reduces keys and values with a k x k depthwise convolution of stride k (+ BN),
  k = 8, 4, 2, 1 per stage, and adds a learned bias ``B`` of shape (heads, N, N / k^2) to the
  attention logits. The release keeps **one bias per stage, shared by its blocks**, and so does
  this module: with the paper's classifier head, Ti / XS / B then count 9.49M / 15.25M / 45.72M
  parameters against the table's 9.5M / 15.2M / 45.7M (one bias per block would add 1.1M to
  CMT-S at 224 px). CMT-S counts 26.26M, the table says 25.1M: the table's own CMT-S settings
  give 26.26M, so that entry is off, not the model. The bias starts as a standard normal, as in
  the release.
* q, k and v are separate linear layers with bias; LayerNorm eps is 1e-6 inside the blocks and
  1e-5 after the patch aggregation.

What this module adds: the bias is tied to the token grid of the construction size, yet FastMIM
changes resolution (128 px pre-training, progressive resolution, 224 px fine-tuning), so
``forward`` accepts any size divisible by 32 and resizes the bias on the fly with
:func:`resize_relative_position_bias`, which also converts checkpoints between resolutions.
"""
import math
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from fastmim.models.utils.backbone_contract import BackboneContract, StateDict
from fastmim.models.utils.reference import (ReferenceClassifier, ReferenceEncoder,
                                            ReferenceLayout)
from fastmim.models.utils.shape_reading import (build_matching, check_given_size,
                                                count_indices, mlp_ratio, require_keys,
                                                square_side, tensor_at)
from fastmim.models.utils.sizes import grid_pair
from fastmim.registry import MODELS
from ._arch import resolve_arch as resolve_named_arch
from .base import (check_drop_path_rate, check_img_size, last_out_index,
                   normalise_out_indices, plain, plain_size, staged_layer_id, staged_stage_of)

ARCH_SETTINGS: Dict[str, dict] = {
    # Table 1 of the paper. XS uses the release's IRFFN ratio 3.77 (the table rounds it to 3.8);
    # the weight shapes of the released checkpoints follow 3.77.
    'ti': dict(embed_dims=[46, 92, 184, 368], depths=[2, 2, 10, 2], num_heads=[1, 2, 4, 8],
               stem_channels=16, mlp_ratio=3.6),
    'xs': dict(embed_dims=[52, 104, 208, 416], depths=[3, 3, 12, 3], num_heads=[1, 2, 4, 8],
               stem_channels=16, mlp_ratio=3.77),
    's': dict(embed_dims=[64, 128, 256, 512], depths=[3, 3, 16, 3], num_heads=[1, 2, 4, 8],
              stem_channels=32, mlp_ratio=4.0),
    'b': dict(embed_dims=[76, 152, 304, 608], depths=[4, 4, 20, 4], num_heads=[1, 2, 4, 8],
              stem_channels=38, mlp_ratio=4.0),
}
ARCH_ALIASES = {'tiny': 'ti', 'xsmall': 'xs', 'small': 's', 'base': 'b'}
DEFAULT_REDUCTION_RATIOS = [8, 4, 2, 1]
STAGE_STRIDES = [4, 8, 16, 32]
_REQUIRED_ARCH_KEYS = ('embed_dims', 'depths', 'num_heads', 'stem_channels', 'mlp_ratio')


def resize_relative_position_bias(bias: torch.Tensor,
                                  new_shape: Sequence[int],
                                  old_query_grid: Optional[Tuple[int, int]] = None,
                                  new_query_grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Resize a CMT attention bias of shape (heads, N, M) to ``new_shape`` = (heads, N', M').

    Why not interpolate the (N, M) matrix as an image: N and M are *flattened* 2-D token grids
    (queries h x w, keys h/k x w/k, row-major). Interpolating along the flattened index mixes the
    end of one token row with the start of the next, so a query at image position p would receive
    the bias of a query somewhere else. The bias is a function B(query position, key position) of
    two 2-D positions, so this resizes it as what it is: a 4-D table (heads, qh, qw, kh, kw),
    bicubic over the key grid and bicubic over the query grid (half-pixel token centres,
    ``align_corners=False``, like timm's position-embedding resize). Bicubic is separable, so the
    result is the tensor-product bicubic interpolation of the 4-D table.

    Args:
        bias: (heads, N, M) tensor; N / M must be k^2 for the integer reduction ratio k.
        new_shape: (heads, N', M') with the same heads and the same ratio N' / M' = k^2.
        old_query_grid, new_query_grid: (h, w) query token grids. Default: square grids
            (checkpoints of the square pre-training and fine-tuning sizes).

    Returns:
        The resized bias; ``bias`` itself when the shape and grid are unchanged.
    """
    heads, num_queries, num_keys = _check_bias_shape(bias.shape, 'bias')
    new_heads, new_num_queries, new_num_keys = _check_bias_shape(new_shape, 'new_shape')
    reduction = _reduction_ratio(num_queries, num_keys, 'bias')
    new_reduction = _reduction_ratio(new_num_queries, new_num_keys, 'new_shape')
    if new_heads != heads or new_reduction != reduction:
        raise ValueError(f'cannot resize a CMT relative position bias of shape {tuple(bias.shape)} '
                         f'to {tuple(new_shape)}: the number of heads and the key reduction '
                         f'ratio N/M must stay the same')
    old_grid = old_query_grid or _square_grid(num_queries, 'bias')
    new_grid = new_query_grid or _square_grid(new_num_queries, 'new_shape')
    _check_grid(old_grid, num_queries, reduction, 'old_query_grid')
    _check_grid(new_grid, new_num_queries, reduction, 'new_query_grid')
    if tuple(old_grid) == tuple(new_grid):
        return bias

    old_key_grid = (old_grid[0] // reduction, old_grid[1] // reduction)
    new_key_grid = (new_grid[0] // reduction, new_grid[1] // reduction)
    # Keys: the N query positions act as channels of a (kh, kw) image.
    table = bias.reshape(heads, num_queries, *old_key_grid)
    table = F.interpolate(table, size=new_key_grid, mode='bicubic', align_corners=False)
    # Queries: the M' key positions act as channels of a (qh, qw) image.
    table = table.reshape(heads, *old_grid, new_num_keys).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=tuple(new_grid), mode='bicubic', align_corners=False)
    return table.flatten(2).transpose(1, 2).contiguous()


# Reference CMT names -> fastmim CMT names, inside a block (first matching prefix wins).
_CMT_BLOCK_NAMES = (
    ('proj.', 'lpu.dwconv.'),
    ('attn.sr.', 'attn.reduce.'),
    ('mlp.conv1.', 'ffn.expand.'),
    ('mlp.proj_bn.', 'ffn.dwconv_norm.'),
    ('mlp.proj.', 'ffn.dwconv.'),
    ('mlp.conv2.', 'ffn.project.'),
)
_CMT_STAGES = 'abcd'


def cmt_reference_name(key: str) -> Optional[str]:
    """Reference CMT key -> fastmim CMT key; None for the final ``norm`` (fastmim's CMT has
    none: it returns the last stage as it is, like the CMT classifier)."""
    if key.startswith('norm.'):
        return None
    match = re.match(r'stem_(conv|norm)(\d)\.(.*)', key)
    if match:
        layer = 3 * (int(match[2]) - 1) + (0 if match[1] == 'conv' else 2)
        return f'stem.{layer}.{match[3]}'
    match = re.match(r'patch_embed_([abcd])\.(.*)', key)
    if match:
        return f'stages.{_CMT_STAGES.index(match[1])}.downsample.{match[2]}'
    match = re.fullmatch(r'relative_pos_([abcd])', key)
    if match:
        return f'stages.{_CMT_STAGES.index(match[1])}.relative_position_bias'
    match = re.match(r'blocks_([abcd])\.(\d+)\.(.*)', key)
    if match:
        rest = match[3]
        for old, new in _CMT_BLOCK_NAMES:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        return f'stages.{_CMT_STAGES.index(match[1])}.blocks.{match[2]}.{rest}'
    return key


def _check_bias_shape(shape: Sequence[int], name: str) -> Tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f'{name}: a CMT relative position bias has shape (heads, N, M), '
                         f'got {tuple(shape)}')
    return tuple(int(s) for s in shape)


def _reduction_ratio(num_queries: int, num_keys: int, name: str) -> int:
    reduction = math.isqrt(num_queries // num_keys) if num_keys else 0
    if num_keys == 0 or reduction * reduction * num_keys != num_queries:
        raise ValueError(f'{name}: N={num_queries} queries and M={num_keys} keys do not differ by '
                         f'a square factor k^2 (k = key reduction ratio)')
    return reduction


def _square_grid(num_tokens: int, name: str) -> Tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f'{name}: N={num_tokens} tokens is not a square grid; pass the query '
                         f'grids (h, w) explicitly')
    return side, side


def _check_grid(grid: Sequence[int], num_tokens: int, reduction: int, name: str) -> None:
    if len(grid) != 2 or grid[0] * grid[1] != num_tokens or grid[0] % reduction or \
            grid[1] % reduction:
        raise ValueError(f'{name}={tuple(grid)} must be (h, w) with h*w = {num_tokens} and h, w '
                         f'divisible by the key reduction ratio {reduction}')


class ConvStem(nn.Sequential):
    """Stride-2 3x3 conv then two 3x3 convs, each followed by GELU and BN (conv, GELU, BN order
    as in the paper's release): a cheap stride-2 start that keeps fine local detail."""

    def __init__(self, in_channels: int, channels: int):
        layers = []
        for index in range(3):
            layers += [
                nn.Conv2d(in_channels if index == 0 else channels, channels, 3,
                          stride=2 if index == 0 else 1, padding=1),
                nn.GELU(),
                nn.BatchNorm2d(channels),
            ]
        super().__init__(*layers)


class PatchAggregation(nn.Module):
    """2x2 stride-2 conv + LayerNorm over channels: halves the resolution when a stage starts."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LocalPerceptionUnit(nn.Module):
    """LPU(X) = DWConv3x3(X) + X: gives the block translation-equivariant local information that
    absolute position embeddings would otherwise have to provide."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dwconv(x)


class LightweightAttention(nn.Module):
    """Lightweight MHSA: keys and values come from a k x k stride-k depthwise conv (+ BN) of the
    input, cutting the attention cost by k^2; the relative position bias is added to the logits."""

    def __init__(self, dim: int, num_heads: int, reduction: int, attn_drop: float = 0.):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'CMT attention: width {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.reduction = reduction
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if reduction > 1:
            self.reduce = nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size=reduction, stride=reduction, groups=dim),
                nn.BatchNorm2d(dim))
        else:
            self.reduce = nn.Identity()

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        return tokens.reshape(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int],
                bias: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        image = tokens.transpose(1, 2).reshape(batch, dim, *grid)
        reduced = self.reduce(image).flatten(2).transpose(1, 2)
        q = self._split_heads(self.q(tokens))
        k = self._split_heads(self.k(reduced))
        v = self._split_heads(self.v(reduced))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class InvertedResidualFFN(nn.Module):
    """IRFFN: 1x1 expand (GELU, BN), 3x3 depthwise conv with a shortcut (GELU, BN), 1x1 project
    (BN). The depthwise conv adds local context inside the feed-forward path."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(dim, hidden_dim, 1), nn.GELU(),
                                    nn.BatchNorm2d(hidden_dim))
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.dwconv_act = nn.GELU()
        self.dwconv_norm = nn.BatchNorm2d(hidden_dim)
        self.project = nn.Sequential(nn.Conv2d(hidden_dim, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        batch, length, dim = tokens.shape
        x = self.expand(tokens.transpose(1, 2).reshape(batch, dim, *grid))
        x = self.dwconv_norm(self.dwconv_act(x + self.dwconv(x)))
        return self.project(x).flatten(2).transpose(1, 2)


class CMTBlock(nn.Module):
    """LPU, then pre-norm LMHSA and IRFFN residual branches with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, reduction: int, mlp_ratio: float,
                 drop_path: float = 0., attn_drop: float = 0.):
        super().__init__()
        self.lpu = LocalPerceptionUnit(dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = LightweightAttention(dim, num_heads, reduction, attn_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = InvertedResidualFFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        grid = (height, width)
        tokens = self.lpu(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens), grid, bias))
        tokens = tokens + self.drop_path(self.ffn(self.norm2(tokens), grid))
        return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class CMTStage(nn.Module):
    """Patch aggregation, then the blocks of one stage sharing one relative position bias."""

    def __init__(self, in_channels: int, dim: int, num_heads: int, reduction: int,
                 mlp_ratio: float, query_grid: Tuple[int, int], drop_paths: Sequence[float],
                 attn_drop: float = 0., with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.reduction = reduction
        self.query_grid = tuple(query_grid)
        self.downsample = PatchAggregation(in_channels, dim)
        num_queries = query_grid[0] * query_grid[1]
        self.relative_position_bias = nn.Parameter(
            torch.randn(num_heads, num_queries, num_queries // reduction ** 2))
        self.blocks = nn.ModuleList(
            CMTBlock(dim, num_heads, reduction, mlp_ratio, drop_path, attn_drop)
            for drop_path in drop_paths)

    def bias_for(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The bias for a (h, w) token grid, resized from the construction grid when needed."""
        bias = self.relative_position_bias
        heads = bias.shape[0]
        num_queries = grid[0] * grid[1]
        return resize_relative_position_bias(
            bias, (heads, num_queries, num_queries // self.reduction ** 2),
            old_query_grid=self.query_grid, new_query_grid=grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        bias = self.bias_for(tuple(x.shape[-2:]))
        for block in self.blocks:
            if self.with_cp and self.training:
                x = checkpoint(block, x, bias, use_reentrant=False)
            else:
                x = block(x, bias)
        return x


@MODELS.register_module()
class CMT(BackboneContract, BaseModule):
    """CMT backbone returning NCHW feature maps of the selected stages.

    Args:
        arch: 'ti', 'xs', 's', 'b' (or 'tiny', 'xsmall', 'small', 'base'), or a dict with keys
            embed_dims, depths, num_heads (4 entries each), stem_channels, mlp_ratio and
            optionally reduction_ratios (default 8, 4, 2, 1).
        img_size: construction size (int or (h, w)); it fixes the shape of the relative position
            biases. Any input divisible by 32 works at run time, but another size resizes the
            biases at every forward. The default is FastMIM's 128-px pre-training size, as
            for ViT, Swin and EVA-02, so that a CMT swapped into a pre-training config
            (``backbone=dict(_delete_=True, type='CMT', arch='s')``) is the CMT of
            ``fastmim_cmt_s.py``; fine-tuning and downstream configs give their size (224).
        in_channels: image channels.
        out_indices: stages (0-3) whose outputs are returned; negative values count from the
            end; default the last one.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        attn_drop_rate: dropout on the attention weights.
        with_cp: activation checkpointing: in training, each block's activations are recomputed
            in the backward pass instead of kept (less memory, one more forward of the blocks;
            same loss and gradients). Off by default. The recomputation runs the IRFFN's
            BatchNorms once more, so their running statistics take two momentum steps per
            training step (as with mmcv's ``with_cp`` in ResNet).
        frozen_stages: freeze the convolutional stem (0) and the first n stages (n), each with
            its patch aggregation and relative position bias; -1 (default): nothing. Frozen
            parameters get no gradient and their modules (BatchNorms included) stay in eval mode.
        init_cfg: mmengine initialisation config (e.g. a Pretrained checkpoint).
    """

    published_archs = ARCH_SETTINGS
    size_keys = ('embed_dims', 'depths', 'num_heads', 'stem_channels')
    # The reference release pre-trains CMT under ``encoder.`` with its own names. Its
    # fine-tuned classifiers (mim_cmt_finetune.py) end in a 1x1 conv ``_fc`` (to 1280
    # channels), BatchNorm ``_bn``, swish, pooling, dropout and ``head``: fastmim's
    # ``ConvPoolClsHead`` (``conv``, ``bn``, ``fc``), the head of the CMT fine-tuning config.
    # The relative position biases have one row per head.
    reference_layout = ReferenceLayout(
        name='cmt', pretraining_marker='encoder.stem_conv1.weight', encoder_prefix='encoder.',
        finetuned_marker='stem_conv1.weight',
        classifier_keys=('_fc.weight', '_bn.weight', 'head.weight'), heads_in_weights=True,
        decoder_input_norm='norm.')

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 img_size: Union[int, Sequence[int]] = 128,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[dict] = None):
        check_drop_path_rate(drop_path_rate, 'CMT')
        super().__init__(init_cfg=init_cfg)
        self.arch = arch
        self.arch_settings = _resolve_arch(arch)
        self.img_size = grid_pair(img_size, 'CMT', 'img_size')
        # every stage's query grid (and so its relative-position bias) is whole
        check_img_size('CMT', img_size, type(self).input_multiple({}))
        self.out_indices = normalise_out_indices('CMT', out_indices, len(STAGE_STRIDES))
        settings = self.arch_settings
        dims = settings['embed_dims']
        self.out_channels = [dims[i] for i in self.out_indices]
        self.out_strides = [STAGE_STRIDES[i] for i in self.out_indices]

        self.stem = ConvStem(in_channels, settings['stem_channels'])
        drop_paths = _linear_drop_paths(drop_path_rate, sum(settings['depths']))
        self.stages = nn.ModuleList()
        in_dim, first_block = settings['stem_channels'], 0
        for index, depth in enumerate(settings['depths']):
            stride = STAGE_STRIDES[index]
            self.stages.append(CMTStage(
                in_dim, dims[index], settings['num_heads'][index],
                settings['reduction_ratios'][index], settings['mlp_ratio'],
                (self.img_size[0] // stride, self.img_size[1] // stride),
                drop_paths[first_block:first_block + depth], attn_drop_rate, with_cp))
            in_dim, first_block = dims[index], first_block + depth
        self.apply(_init_layer)
        self.enable_state_dict_adaptation()
        self.freeze_stages(frozen_stages)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f'CMT expects (B, C, H, W) images with H and W divisible by 32, '
                             f'got shape {tuple(x.shape)}')
        x = self.stem(x)
        outs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)

    @classmethod
    def input_multiple(cls, settings: dict) -> Tuple[str, int]:
        """The total stride (32), which no setting changes: :meth:`forward` refuses another
        size, naming no config key."""
        return ('its total stride: a stride-2 stem, then a stride-2 patch aggregation opening '
                'each of the 4 stages', STAGE_STRIDES[-1])

    @classmethod
    def output_stride(cls, settings: dict) -> Optional[int]:
        """The stride of the last stage of ``out_indices`` (4, 8, 16, 32)."""
        last = last_out_index(cls, settings, len(STAGE_STRIDES))
        return None if last is None else STAGE_STRIDES[last]

    def geometry(self) -> dict:
        """Plain-type description that checkpoints store so that the biases can be resized,
        with the entries that set the size (:attr:`size_keys`), as Swin's and PVTv2's have: a
        file of another size is then named as such when it does not load."""
        settings = self.arch_settings
        return dict(type='CMT',
                    arch=self.arch if isinstance(self.arch, str) else dict(settings),
                    img_size=plain_size(self.img_size),
                    reduction_ratios=list(settings['reduction_ratios']),
                    **{key: plain(settings[key]) for key in self.size_keys})

    @classmethod
    def rename_foreign_keys(cls, state: StateDict) -> StateDict:
        """The reference release's CMT names renamed (:func:`cmt_reference_name`); its final
        ``norm`` left out (this CMT returns the last stage as it is, like the classifier)."""
        if 'stem_conv1.weight' not in state:
            return dict(state)
        renamed = {cmt_reference_name(key): value for key, value in state.items()}
        return {key: value for key, value in renamed.items() if key is not None}

    @classmethod
    def from_reference_encoder(cls, state, path, img_size=None, num_heads=None):
        """The release's final ``norm`` has no counterpart here (it is dropped). The size is
        read from the stage-0 bias's queries (stride 4), the heads from the biases' rows."""
        renamed = cls.rename_foreign_keys(state)
        dropped = [key for key in state if key.startswith('norm.')]
        require_keys(renamed, ('stem.0.weight', 'stages.0.relative_position_bias',
                               'stages.0.blocks.0.ffn.expand.0.weight'), path, 'CMT')
        num_stages = count_indices(renamed, r'stages\.(\d+)\.')
        dims = [tensor_at(renamed, f'stages.{i}.downsample.proj.weight', path).shape[0]
                for i in range(num_stages)]
        biases = [tensor_at(renamed, f'stages.{i}.relative_position_bias', path)
                  for i in range(num_stages)]
        size = STAGE_STRIDES[0] * square_side(biases[0].shape[1], 'stage-0 bias queries', path)
        check_given_size(img_size, size, 'the relative position biases', path)
        hidden = [tensor_at(renamed, f'stages.{i}.blocks.0.ffn.expand.0.weight', path).shape[0]
                  for i in range(num_stages)]
        reductions = [renamed[key].shape[-1] if key in renamed else 1
                      for key in (f'stages.{i}.blocks.0.attn.reduce.0.weight'
                                  for i in range(num_stages))]
        custom = dict(embed_dims=dims,
                      depths=[count_indices(renamed, rf'stages\.{i}\.blocks\.(\d+)\.')
                              for i in range(num_stages)],
                      num_heads=[bias.shape[0] for bias in biases],
                      stem_channels=renamed['stem.0.weight'].shape[0],
                      mlp_ratio=mlp_ratio(hidden, dims, path),
                      reduction_ratios=reductions)
        model = build_matching(dict(type='CMT', img_size=size), custom, renamed, path)
        return ReferenceEncoder(model, renamed, dropped)

    @classmethod
    def from_reference_classifier(cls, encoder, parts, path, img_size=None, num_heads=None):
        """The release's ``_fc`` (1x1 conv) and ``_bn`` are ``ConvPoolClsHead``'s ``conv`` and
        ``bn``; the conv's width (1280 for CMT-S) is read from ``_fc``. The head's dropout is
        its default, the release's 0.1."""
        model, state, _ = cls.from_reference_encoder(encoder, path, img_size, num_heads)
        names = {'_fc.': 'conv.', '_bn.': 'bn.'}
        head_state = {names[prefix] + key[len(prefix):]: value for key, value in parts.items()
                      for prefix in names if key.startswith(prefix)}
        head_cfg = dict(type='ConvPoolClsHead',
                        mid_channels=tensor_at(parts, '_fc.weight', path).shape[0])
        return ReferenceClassifier(model, state, head_state, head_cfg,
                                   dict(_fc='head.conv', _bn='head.bn'))

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """Other layouts renamed (:meth:`rename_foreign_keys`) and each stage's relative
        position bias resized to this model's grid. The source grid of stage ``s`` is
        ``img_size / stride_s`` of a CMT ``source_geometry``, or without it a square."""
        adapted = self.rename_foreign_keys(state)
        for index, stage in enumerate(self.stages):
            key = f'stages.{index}.relative_position_bias'
            bias = adapted.get(key)
            wanted = stage.relative_position_bias.shape
            if bias is None or bias.shape == wanted:
                continue
            try:
                adapted[key] = resize_relative_position_bias(
                    bias, wanted, old_query_grid=_source_query_grid(source_geometry, index, bias),
                    new_query_grid=stage.query_grid)
            except ValueError:
                continue  # no rule applies: the caller reports the shapes
        return adapted

    def layer_id(self, name: str) -> int:
        """The reference release's CMT ids (its ``util/lr_decay.py``): stem 0, block ``j`` of
        stage ``s`` ``(blocks before s) + j + 1``; the patch aggregation that opens stage ``s``
        and the bias every block of the stage reads share the id of its first block."""
        depths = [len(stage.blocks) for stage in self.stages]
        return staged_layer_id(name, ('stem', ), 'stages', depths,
                               {'relative_position_bias': 'first_block',
                                'downsample': 'first_block'})

    @property
    def num_layer_ids(self) -> int:
        return sum(len(stage.blocks) for stage in self.stages) + 2

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_of(self, name: str) -> Optional[int]:
        """The convolutional stem is the stem; ``stages.i`` (its patch aggregation, bias and
        blocks) is stage ``i + 1``. CMT has no final norm."""
        return staged_stage_of(name, ('stem', ), 'stages', len(self.stages))

    def no_weight_decay_names(self) -> Set[str]:
        """Each stage's relative position bias, as the other backbones' bias tables."""
        return {f'stages.{index}.relative_position_bias' for index in range(len(self.stages))}


def _source_query_grid(geometry: Optional[dict], stage: int,
                       bias: torch.Tensor) -> Optional[Tuple[int, int]]:
    """The query grid a checkpoint's stage bias was built for, when its CMT geometry says
    and agrees with the bias; None (square) otherwise."""
    size = (geometry or {}).get('img_size')
    if size is None or (geometry or {}).get('type') != 'CMT':
        return None
    height, width = (size, size) if isinstance(size, int) else size
    grid = (height // STAGE_STRIDES[stage], width // STAGE_STRIDES[stage])
    return grid if grid[0] * grid[1] == bias.shape[1] else None


def _linear_drop_paths(rate: float, num_blocks: int) -> List[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over all blocks (plain floats,
    so the model can also be built on the meta device, e.g. to count parameters)."""
    return [rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def _init_layer(module: nn.Module) -> None:
    """Initialisation of the reference release: truncated normal linears, fan-out Kaiming convs."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode='fan_out')
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _resolve_arch(arch: Union[str, dict]) -> dict:
    settings = resolve_named_arch('CMT', arch, ARCH_SETTINGS, _REQUIRED_ARCH_KEYS, ARCH_ALIASES,
                                  optional_keys=('reduction_ratios', ))
    settings.setdefault('reduction_ratios', DEFAULT_REDUCTION_RATIOS)
    for key in ('embed_dims', 'depths', 'num_heads', 'reduction_ratios'):
        settings[key] = list(settings[key])
        if len(settings[key]) != 4:
            raise ValueError(f'CMT arch: {key} needs 4 entries (one per stage), '
                             f'got {settings[key]}')
    for index, stride in enumerate(STAGE_STRIDES):
        if (32 // stride) % settings['reduction_ratios'][index]:
            raise ValueError(f'CMT arch: reduction_ratios[{index}] must divide {32 // stride} so '
                             f'that any input divisible by 32 works, got '
                             f"{settings['reduction_ratios'][index]}")
    return settings
