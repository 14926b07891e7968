"""Swin Transformer backbone: timm's ``SwinTransformer`` returning NCHW stage maps.

Subclassing timm keeps timm's parameter names. FastMIM pre-trains Swin at 128 px with window 4:
the stages see 32^2, 16^2, 8^2 and 4^2 tokens, and in the last stage the window equals the
resolution, so timm shrinks nothing and drops the shift there (as the reference release does).

Input size. The model adapts itself to the size it is fed: when a batch has another size than
the current one, timm's ``set_input_size`` recomputes every block's window, shift and attention
mask for it, giving the model timm builds at that size (no parameter changes, only the
non-persistent mask buffers). Sizes that work: H and W multiples of the total stride (32) that
keep every stage at least as large as its window, e.g. with window 4 built at 128: 128, 160,
192, 224, ... (at 160 the 5x5 last stage is padded to 8x8, four 4x4 windows, then shifted).
Smaller inputs would shrink a window and so resize the learned relative-position tables mid-run;
they are refused with an error. The model is built at such a multiple only: at another
``img_size`` (225) timm's patch convolution would leave the last pixels out without a word.

Windows of a grid that is no multiple of the window (every stage of a 1024 px detection input
with window 7) are padded before the shift, in the original Swin's order (``PadThenShiftBlock``);
timm shifts before padding, which lets the wrapped-around edge attend to the other side.

A stage no larger than its window is one window without shift, as in Microsoft's classification
Swin and timm (pre-training and fine-tuning). With ``always_partition=True`` (the detection
config) it is padded to whole windows and shifted like every other stage, as mmdet's Swin does:
then no input is too small for the windows.
"""
import copy
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from mmengine.model import BaseModule
from timm.models.swin_transformer import SwinTransformer as TimmSwinTransformer
from timm.models.swin_transformer import (SwinTransformerBlock, WindowAttention,
                                          resolve_stage_window_sizes, window_partition,
                                          window_reverse)
from torch import nn
from torch.nn import functional as F

from fastmim.models.utils.backbone_contract import BackboneContract, StateDict
from fastmim.models.utils.reference import (ReferenceClassifier, ReferenceEncoder,
                                            ReferenceLayout)
from fastmim.models.utils.relative_bias import (resample_relative_position_bias_table_geometric,
                                                square_window)
from fastmim.models.utils.shape_reading import (build_matching, check_given_size,
                                                count_indices, mlp_ratio, require_keys,
                                                square_side, tensor_at)
from fastmim.registry import MODELS
from ._arch import resolve_arch as resolve_named_arch
from ._arch import reject_keys_given_twice, timm_arch_keys
from .base import (check_drop_path_rate, check_img_size, constructor_default, last_out_index,
                   normalise_out_indices, plain, plain_size, reject_fixed_arguments,
                   staged_layer_id, staged_stage_of)

ARCHS = {
    't': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    's': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'b': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
ARCH_ALIASES = {'tiny': 't', 'small': 's', 'base': 'b'}
ARCH_KEYS = ('embed_dim', 'depths', 'num_heads')
# Arguments this backbone fixes: no head, and the input-size handling described above.
FIXED_TIMM_ARGS = ('num_classes', 'global_pool', 'strict_img_size', 'dynamic_img_size')
# Arguments of timm's model this backbone sets from its own argument of the same name.
OWN_TIMM_ARGS = ('img_size', 'window_size', 'drop_path_rate', 'always_partition')
# What an arch dict may add to ARCH_KEYS: the other arguments of timm's model.
ARCH_OPTIONAL_KEYS = timm_arch_keys(TimmSwinTransformer,
                                    (*FIXED_TIMM_ARGS, *ARCH_KEYS, *OWN_TIMM_ARGS))


# Buffers timm computes from the window and input size; checkpoints of other layouts hold stale
# copies of them.
REBUILT_BUFFERS = ('relative_position_index', 'attn_mask')


def original_to_timm_names(state: StateDict) -> StateDict:
    """Microsoft's Swin layout -> timm's: patch merging closes stage ``s`` there
    (``layers.s.downsample``) and opens stage ``s + 1`` in timm. The weights are the same."""
    return {re.sub(r'^layers\.(\d+)\.downsample\.',
                   lambda match: f'layers.{int(match[1]) + 1}.downsample.', key): value
            for key, value in state.items()}


def is_original_layout(state: StateDict) -> bool:
    """Microsoft's layout has a patch merging in stage 0; timm's first stage has none."""
    return any(key.startswith('layers.0.downsample.') for key in state)


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Widths and depths of a published size (``'t'``, ``'s'``, ``'b'``) or of a custom dict
    (other arguments of timm's model may be added: :data:`ARCH_OPTIONAL_KEYS`)."""
    settings = resolve_named_arch('SwinTransformer', arch, ARCHS, ARCH_KEYS, ARCH_ALIASES,
                                  optional_keys=ARCH_OPTIONAL_KEYS, own_arguments=OWN_TIMM_ARGS)
    if len(settings['depths']) != len(settings['num_heads']):
        raise ValueError(f'SwinTransformer: arch dict {arch} needs one num_heads entry per stage')
    return settings


def check_head_split(settings: dict) -> None:
    """Every stage's width (``embed_dim x 2^s``) must split evenly over its heads: without
    ``head_dim`` timm floors ``width / heads`` and silently builds a narrower attention (Swin-T's
    heads 3-6-12-24 with ``embed_dim`` 64 would attend with 63 channels). (timm's other form,
    one ``embed_dim`` per stage, is left to timm.)"""
    if not isinstance(settings['embed_dim'], int):
        return
    for stage, heads in enumerate(settings['num_heads']):
        width = settings['embed_dim'] * 2**stage
        if width % heads:
            raise ValueError(
                f'SwinTransformer: stage {stage} is {width} wide (arch embed_dim '
                f"{settings['embed_dim']} x 2^{stage}), not divisible by its {heads} heads (arch "
                f'num_heads[{stage}]); change either, or set head_dim to choose the width of a '
                f'head')


def resolve_windows(window_size: Union[int, Sequence], num_stages: int) -> Tuple:
    """One ``(h, w)`` window per stage, as timm expands ``window_size`` (one size for every
    stage, or one per stage); a list of another length or a size below 1 is one error naming
    ``window_size`` (timm asserts both, a bare ``AssertionError``)."""
    try:
        return resolve_stage_window_sizes(window_size, num_stages)
    except AssertionError as error:
        raise ValueError(f'SwinTransformer: window_size {window_size!r}: {error} (one int or '
                         f'(h, w) for every stage, or one per stage)') from None


class PadThenShiftBlock(SwinTransformerBlock):
    """timm's Swin block with the original Swin's order in shifted-window attention: pad the
    map to whole windows, then shift it. timm shifts first and pads after, so where a grid is
    no multiple of the window (every stage of a 1024 px detection input with window 7) the
    rows and columns it wraps around share windows, and attend, with the other end of the image.
    The shifted-window mask timm builds is already the padded grid's. Same results as timm
    wherever no padding is needed (pre-training at 128 px, fine-tuning at 224 px)."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        height, width, channels = x.shape[1:]
        window_h, window_w = self.window_size
        x = F.pad(x, (0, 0, 0, -width % window_w, 0, -height % window_h))
        padded = x.shape[1:3]
        shift = tuple(self.shift_size)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, channels)
        mask = self.get_attn_mask(x) if self.dynamic_mask else self.attn_mask
        windows = self.attn(windows, mask=mask).view(-1, window_h, window_w, channels)
        x = window_reverse(windows, self.window_size, *padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :height, :width].contiguous()


@MODELS.register_module()
class SwinTransformer(BackboneContract, TimmSwinTransformer, BaseModule):
    """Swin whose forward returns a tuple of NCHW stage maps (strides 4, 8, 16, 32).

    Args:
        arch: ``'t'``, ``'s'``, ``'b'`` (embed 128, depths 2-2-18-2, heads 4-8-16-32) or a dict
            ``{embed_dim, depths, num_heads}``.
        img_size: construction size, an int or (h, w): multiples of the total stride (32 for
            the published sizes) only; see the module docstring for the other sizes that work.
            Give every stage at least ``window_size`` tokens (``img_size >= 32 * window``, e.g.
            224 for window 7 in detection configs): a smaller size shrinks the windows and so
            the relative-position tables, and the model then runs at that size only.
        window_size: attention window (an int, an (h, w) pair or one per stage).
        out_indices: stages whose outputs are returned, in stage order; negative values count
            from the end. The last stage goes through timm's final ``norm``; earlier stages get
            a fresh LayerNorm each (``out_norms.<i>``); Swin's detection release gives every
            returned stage a fresh one, the last included.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        always_partition: keep every window whole and shift the shifted blocks at every input
            size, padding the map to whole windows, as mmdet's Swin (the reference release's
            detection backbone) does; off (Microsoft's classification Swin, timm's default), a
            stage no larger than its window is one unshifted window and smaller inputs are
            refused (module docstring). Same results wherever every stage is larger than its
            window.
        with_cp: activation checkpointing (timm's, per block): whenever gradients are on, each
            block's activations are recomputed in the backward pass instead of kept (less
            memory, one more forward of the blocks; same results). Off by default; on in the
            detection config.
        frozen_stages: freeze the patch embedding (0) and the first n stages (n) as mmdet's
            Swin groups them: a stage with the patch merging after it and the norm of its
            output; -1 (default): nothing. Frozen parameters get no gradient and their modules
            stay in eval mode.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)``.
        **timm_kwargs: any other argument of timm's ``SwinTransformer`` (``mlp_ratio``, ...).
    """

    # Where **timm_kwargs go: a key added to the config on the command line is checked against
    # it when the config is loaded (fastmim.engine.config_keys).
    keywords_passed_to = TimmSwinTransformer

    published_archs = ARCHS
    size_keys = ('embed_dim', 'depths', 'num_heads')
    timm_classifier = 'head.fc'  # timm's Swin pools in ``head`` (a ClassifierHead)
    # The reference release pre-trains Microsoft's Swin under ``encoder.``; its fine-tuned
    # classifiers (mim_swin_finetune.py) normalise the tokens, then pool them, calling that
    # norm ``fc_norm``: Swin's own final ``norm``, renamed. The relative position bias tables
    # have one column per head.
    reference_layout = ReferenceLayout(
        name='swin',
        pretraining_marker='encoder.layers.0.blocks.0.attn.relative_position_bias_table',
        encoder_prefix='encoder.',
        finetuned_marker='layers.0.blocks.0.attn.relative_position_bias_table',
        classifier_keys=('fc_norm.weight', 'head.weight'), heads_in_weights=True)

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 128,
                 window_size: Union[int, Sequence] = 4,
                 out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0.,
                 always_partition: bool = False,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **timm_kwargs) -> None:
        check_drop_path_rate(drop_path_rate, 'SwinTransformer')
        reject_fixed_arguments('SwinTransformer', timm_kwargs, FIXED_TIMM_ARGS,
                               'no head; it adapts itself to each input size')
        arch_cfg = resolve_arch(arch)
        reject_keys_given_twice('SwinTransformer', arch, arch_cfg, timm_kwargs)
        if 'head_dim' not in timm_kwargs:
            check_head_split(arch_cfg)
        stage_windows = resolve_windows(window_size, len(arch_cfg['depths']))
        check_img_size('SwinTransformer', img_size,
                       type(self).input_multiple(dict(timm_kwargs, arch=arch)))
        out_indices = normalise_out_indices('SwinTransformer', out_indices,
                                            len(arch_cfg['depths']))
        # timm's constructor initialises its weights by calling init_weights with an argument,
        # which BackboneContract.init_weights hands on to timm's scheme (weight_init included).
        super().__init__(
            img_size=img_size,
            window_size=window_size,
            num_classes=0,
            global_pool='',
            drop_path_rate=drop_path_rate,
            always_partition=always_partition,
            **arch_cfg,
            **timm_kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)
        self.always_partition = always_partition
        # timm marks fused attention for Swin as experimental; FastMIM uses it everywhere.
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.fused_attn = True
            if type(module) is SwinTransformerBlock:
                module.__class__ = PadThenShiftBlock  # timm's stages build the block class

        self.arch = copy.deepcopy(arch)
        self.arch_cfg = arch_cfg
        self.img_size = tuple(self.patch_embed.img_size)
        self.window_size = copy.deepcopy(window_size)
        self.stage_windows = stage_windows
        self.out_indices = out_indices
        self.out_channels = [self.feature_info[i]['num_chs'] for i in self.out_indices]
        self.out_strides = [self.feature_info[i]['reduction'] for i in self.out_indices]
        last_stage = len(self.layers) - 1
        self.out_norms = nn.ModuleDict({
            str(i): nn.LayerNorm(self.feature_info[i]['num_chs'])
            for i in self.out_indices if i != last_stage
        })
        self.set_grad_checkpointing(with_cp)
        self.enable_state_dict_adaptation()
        self.freeze_stages(frozen_stages)

    @classmethod
    def input_multiple(cls, settings: dict) -> Optional[Tuple[str, int]]:
        """The total stride, ``patch_size x 2^(stages - 1)`` (32 for the published sizes):
        the sizes that work (module docstring); the constructor refuses another ``img_size``
        (:func:`~.base.check_img_size`), :meth:`_adapt_to_input` other inputs in the forward,
        naming no config key.
        None where the entry's ``arch`` or ``patch_size`` is not one this class builds from
        (building names the error)."""
        stated = cls._patch_and_stages(settings)
        if stated is None:
            return None
        patch, stages = stated
        return (f'its total stride: model.backbone.patch_size {patch} x 2^{stages - 1}, one '
                f'patch merging per stage after the first', patch * 2**(stages - 1))

    @classmethod
    def output_stride(cls, settings: dict) -> Optional[int]:
        """``patch_size x 2^i`` for the last stage ``i`` of ``out_indices``: each patch merging
        after the first stage halves the map."""
        stated = cls._patch_and_stages(settings)
        last = stated and last_out_index(cls, settings, stated[1])
        return None if last is None else stated[0] * 2**last

    @classmethod
    def _patch_and_stages(cls, settings: dict) -> Optional[Tuple[int, int]]:
        """``(patch_size, stages)`` of a config entry, read as the constructor reads them;
        None where its ``arch`` or ``patch_size`` is not one this class builds from."""
        try:
            arch = resolve_arch(settings.get('arch', constructor_default(cls, 'arch')))
        except (ValueError, TypeError):
            return None
        patch = settings.get('patch_size', arch.get(
            'patch_size', constructor_default(TimmSwinTransformer, 'patch_size')))
        if not isinstance(patch, int):
            return None
        return patch, len(arch['depths'])

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
        if not self.always_partition:  # otherwise the windows keep their size at any size
            self._check_windows_kept(size)
        self.set_input_size(img_size=tuple(size), window_size=self.window_size)

    def _check_windows_kept(self, size: Tuple[int, int]) -> None:
        """Refuse an input size that would shrink a stage's window below the one its
        relative-position tables were built for (timm's rule: a stage no larger than its window
        is one window)."""
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
                    f'window (built at {self.img_size}), or set always_partition=True')

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

    @classmethod
    def timm_sizes(cls, model: nn.Module) -> Dict:
        """timm's Swin keeps the width of its first stage as it was given (``embed_dim``, as
        the arch gives it; each later stage doubles it), and its stages (``layers``) their
        blocks; each block's attention its heads."""
        return dict(embed_dim=plain(model.embed_dim),
                    depths=[len(stage.blocks) for stage in model.layers],
                    num_heads=[stage.blocks[0].attn.num_heads for stage in model.layers])

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

    def checkpoint_optional_names(self) -> Set[str]:
        """The norms of the outputs before the last stage (``out_norms``): layers for dense
        heads, which classifier and pre-training checkpoints (one output) do not have."""
        return {name for name, _ in self.out_norms.named_parameters(prefix='out_norms')}

    @classmethod
    def timm_state_dict(cls, state: StateDict, geometry: dict,
                        path: str) -> Tuple[StateDict, List[str]]:
        """timm's names already; the norms of the extra outputs (``out_norms``, for dense
        heads) have no place in timm's Swin and are left out."""
        left_out = [key for key in state if key.startswith('out_norms.')]
        return {key: value for key, value in state.items() if key not in left_out}, left_out

    @classmethod
    def rename_foreign_keys(cls, state: StateDict) -> StateDict:
        """Microsoft's layout (the FastMIM reference release's too) renamed to timm's; the
        window and mask buffers left out (rebuilt for this model's windows and input)."""
        state = {key: value for key, value in state.items() if not key.endswith(REBUILT_BUFFERS)}
        return original_to_timm_names(state) if is_original_layout(state) else state

    @classmethod
    def from_reference_encoder(cls, state, path, img_size=None, num_heads=None):
        model, renamed = _reference_model(state, path, img_size)
        return ReferenceEncoder(model, renamed, [])

    @classmethod
    def from_reference_classifier(cls, encoder, parts, path, img_size=None, num_heads=None):
        """``fc_norm`` is the final ``norm`` (before pooling): the head has none."""
        encoder = dict(encoder)
        encoder.update({'norm.' + key[len('fc_norm.'):]: value for key, value in parts.items()
                        if key.startswith('fc_norm.')})
        model, renamed = _reference_model(encoder, path, img_size)
        return ReferenceClassifier(model, renamed, {}, dict(type='LinearClsHead', pre_norm=None),
                                   dict(fc_norm='backbone.norm'))

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """Other layouts renamed (:meth:`rename_foreign_keys`) and each relative-position-bias
        table resized to its block's window on the releases' geometric grid, as the published
        fine-tuning results were obtained (``resample_relative_position_bias_table_geometric``).
        The source window of stage ``s`` is ``source_geometry['stage_window_sizes'][s]``, or
        without it the square window whose ``(2w - 1)^2`` rows the table has. Reads only
        timm's attributes, so it also fits weights to a plain timm Swin
        (``tools/convert/to_timm.py --arch``)."""
        windows = (source_geometry or {}).get('stage_window_sizes') or []
        adapted = {}
        for key, value in SwinTransformer.rename_foreign_keys(state).items():
            match = re.fullmatch(
                r'layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table', key)
            if match:
                value = _resized_table(self, value, int(match[1]), int(match[2]), windows)
            adapted[key] = value
        return adapted

    def layer_id(self, name: str) -> int:
        """SimMIM's / FastMIM's Swin ids: patch embedding 0, block ``j`` of stage ``s``
        ``(blocks before s) + j + 1``, rest ``sum(depths) + 1`` (25 for Swin-B). timm's
        ``layers.s.downsample`` opens stage ``s``; it is Microsoft's ``layers.(s-1).downsample``
        that closes stage ``s - 1``, so it gets the id of the last block before it."""
        depths = [len(stage.blocks) for stage in self.layers]
        return staged_layer_id(name, ('patch_embed', 'absolute_pos_embed'), 'layers', depths)

    @property
    def num_layer_ids(self) -> int:
        return sum(len(stage.blocks) for stage in self.layers) + 2

    @property
    def num_stages(self) -> int:
        return len(self.layers)

    def stage_of(self, name: str) -> Optional[int]:
        """mmdet's Swin stages: the patch embedding is the stem; stage ``s`` (1-based) is
        ``layers.(s-1)``'s blocks, the patch merging after them (timm's ``layers.s.downsample``,
        which timm puts in the next stage: Microsoft's and mmdet's ``downsample`` of stage
        ``s``) and the norm of its output (``out_norms.(s-1)``; the last stage's is timm's final
        ``norm``). Layer ids are per block and give a merging its own id, so they cannot say
        this."""
        parts = name.split('.')
        if parts[0] == 'layers' and len(parts) > 2:
            return int(parts[1]) + (parts[2] != 'downsample')
        if parts[0] == 'out_norms':
            return int(parts[1]) + 1 if len(parts) > 1 else None
        if parts[0] == 'layers' and len(parts) == 2:
            # layers.s holds the merging of stage s and the blocks of stage s + 1; layers.0
            # has no merging
            return 1 if parts[1] == '0' else None
        return staged_stage_of(name, ('patch_embed', 'absolute_pos_embed', 'pos_drop'),
                               'layers', len(self.layers))


def _reference_model(state: StateDict, path, img_size) -> Tuple[nn.Module, StateDict]:
    """The Swin (meta device) that an original-layout Swin state dict describes, and the state
    dict in timm's layout. Each stage's window is read from its table's rows, the heads from its
    columns; the size from the shifted-window masks of stage 0 when the file has them."""
    require_keys(state, ('patch_embed.proj.weight', 'layers.0.blocks.0.mlp.fc1.weight'), path,
                 'Swin')
    num_stages = count_indices(state, r'layers\.(\d+)\.')
    tables = [tensor_at(state, f'layers.{i}.blocks.0.attn.relative_position_bias_table', path)
              for i in range(num_stages)]
    windows = [(square_side(table.shape[0], f'layers.{i} relative-position table rows', path)
                + 1) // 2 for i, table in enumerate(tables)]
    embed_dim, _, patch_size, _ = state['patch_embed.proj.weight'].shape
    mask = state.get('layers.0.blocks.1.attn_mask')
    if mask is not None:  # (windows, N, N) of stage 0 tells the pre-training size
        size = windows[0] * square_side(mask.shape[0], 'layers.0 attention windows', path)
        check_given_size(img_size, size * patch_size, 'the attention masks', path)
        img_size = size * patch_size
    elif img_size is None:
        img_size = patch_size * 2**(num_stages - 1) * max(windows)
    hidden = state['layers.0.blocks.0.mlp.fc1.weight'].shape[0]
    base = dict(type='SwinTransformer', img_size=img_size, patch_size=patch_size,
                window_size=windows[0] if len(set(windows)) == 1 else windows,
                mlp_ratio=mlp_ratio(hidden, [embed_dim], path),
                qkv_bias='layers.0.blocks.0.attn.qkv.bias' in state)
    custom = dict(embed_dim=embed_dim,
                  depths=[count_indices(state, rf'layers\.{i}\.blocks\.(\d+)\.')
                          for i in range(num_stages)],
                  num_heads=[table.shape[1] for table in tables])
    renamed = SwinTransformer.rename_foreign_keys(state)
    return build_matching(base, custom, renamed, path), renamed


def _resized_table(model: nn.Module, table: torch.Tensor, stage: int, block: int,
                   source_windows: Sequence) -> torch.Tensor:
    """``table`` of block ``block`` of stage ``stage`` resized to that block's window; as it is
    when the block does not exist, the heads differ or the source window is unknown."""
    if stage >= len(model.layers) or block >= len(model.layers[stage].blocks):
        return table
    attention = model.layers[stage].blocks[block].attn
    if table.shape == attention.relative_position_bias_table.shape or table.dim() != 2 or \
            table.shape[1] != attention.relative_position_bias_table.shape[1]:
        return table  # equal, or the heads differ: no rule applies
    source = tuple(source_windows[stage]) if stage < len(source_windows) else None
    if source is None or (2 * source[0] - 1) * (2 * source[1] - 1) != table.shape[0]:
        source = square_window(table.shape[0])
    if source is None:
        return table
    return resample_relative_position_bias_table_geometric(table, source,
                                                           tuple(attention.window_size))
