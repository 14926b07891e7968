"""PVTv2 backbone: timm's ``PyramidVisionTransformerV2`` returning its NCHW stage maps.

PVTv2 has no absolute position embedding (overlapping patch embeddings and depth-wise
convolutions in the MLP carry position), so one model runs at every input size without any
state change; strides are exact (4, 8, 16, 32) when H and W are multiples of 32.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from timm.models import pvt_v2 as timm_pvt_v2
from timm.models.pvt_v2 import PyramidVisionTransformerV2 as TimmPyramidVisionTransformerV2

from fastmim.models.utils.backbone_contract import BackboneContract, StateDict
from fastmim.models.utils.reference import (ReferenceClassifier, ReferenceEncoder,
                                            ReferenceLayout)
from fastmim.models.utils.shape_reading import (build_matching, count_indices, mlp_ratio,
                                                require_keys, tensor_at)
from fastmim.registry import MODELS
from ._arch import resolve_arch as resolve_named_arch
from ._arch import reject_keys_given_twice, timm_arch_keys
from .base import (check_drop_path_rate, constructor_default, last_out_index,
                   normalise_out_indices, plain, reject_fixed_arguments, staged_layer_id,
                   staged_stage_of)

_WIDTHS = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
ARCHS = {
    'b0': dict(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8)),
    'b1': dict(depths=(2, 2, 2, 2), **_WIDTHS),
    'b2': dict(depths=(3, 4, 6, 3), **_WIDTHS),
    'b2_li': dict(depths=(3, 4, 6, 3), linear=True, **_WIDTHS),
    'b3': dict(depths=(3, 4, 18, 3), **_WIDTHS),
    'b4': dict(depths=(3, 8, 27, 3), **_WIDTHS),
    'b5': dict(depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4), **_WIDTHS),
}
ARCH_KEYS = ('depths', 'embed_dims', 'num_heads')
FIXED_TIMM_ARGS = ('num_classes', 'global_pool')
# Arguments of timm's model this backbone sets from its own argument of the same name.
OWN_TIMM_ARGS = ('drop_path_rate', )
# What an arch dict may add to ARCH_KEYS: the other arguments of timm's model.
ARCH_OPTIONAL_KEYS = timm_arch_keys(TimmPyramidVisionTransformerV2,
                                    (*FIXED_TIMM_ARGS, *ARCH_KEYS, *OWN_TIMM_ARGS))
# Per-stage settings: timm indexes them by stage without checking their length (a single
# number for num_heads, sr_ratios or mlp_ratios is timm's, for every stage).
STAGE_KEYS = ('embed_dims', 'num_heads', 'sr_ratios', 'mlp_ratios')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Widths and depths of a published size (``'b0'`` ... ``'b5'``, ``'b2_li'``) or a dict
    (``sr_ratios``, ``mlp_ratios``, ``linear`` and the other arguments of timm's model may be
    added: :data:`ARCH_OPTIONAL_KEYS`)."""
    settings = resolve_named_arch('PyramidVisionTransformerV2', arch, ARCHS, ARCH_KEYS,
                                  optional_keys=ARCH_OPTIONAL_KEYS, own_arguments=OWN_TIMM_ARGS)
    stages = len(settings['depths'])
    for key in STAGE_KEYS:
        if isinstance(settings.get(key), (list, tuple)) and len(settings[key]) != stages:
            raise ValueError(f'PyramidVisionTransformerV2: arch dict {arch} needs one entry per '
                             f'stage in {key} ({stages} stages, as depths), got '
                             f'{len(settings[key])}')
    _check_head_split(settings)
    return settings


def _check_head_split(settings: dict) -> None:
    """Every stage's width must split evenly over its heads (timm asserts it, a bare
    ``AssertionError`` that names no arch key); a single ``num_heads`` serves every stage."""
    heads = settings['num_heads']
    if not isinstance(heads, (list, tuple)):
        heads = [heads] * len(settings['embed_dims'])
    for stage, (width, count) in enumerate(zip(settings['embed_dims'], heads)):
        if width % count:
            raise ValueError(f'PyramidVisionTransformerV2: stage {stage} width {width} (arch '
                             f'embed_dims[{stage}]) is not divisible by its {count} heads (arch '
                             f'num_heads[{stage}])')


@MODELS.register_module()
class PyramidVisionTransformerV2(BackboneContract, TimmPyramidVisionTransformerV2, BaseModule):
    """PVTv2 whose forward returns a tuple of NCHW stage maps (strides 4, 8, 16, 32).

    Args:
        arch: ``'b0'`` ... ``'b5'``, ``'b2_li'`` or a dict ``{depths, embed_dims, num_heads}``.
        out_indices: stages whose outputs are returned, in stage order; negative values count
            from the end. Every stage ends with its own LayerNorm (timm's ``stages.<i>.norm``).
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        with_cp: activation checkpointing (timm's, per block): whenever gradients are on, each
            block's activations are recomputed in the backward pass instead of kept (less
            memory, one more forward of the blocks; same results). Off by default.
        frozen_stages: freeze the first patch embedding (0) and the first n stages (n), each
            with the overlapping patch embedding that opens it and its norm; -1 (default):
            nothing. Frozen parameters get no gradient and their modules stay in eval mode.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=...)``.
        **timm_kwargs: any other argument of timm's ``PyramidVisionTransformerV2``.
    """

    # Where **timm_kwargs go: a key added to the config on the command line is checked against
    # it when the config is loaded (fastmim.engine.config_keys).
    keywords_passed_to = TimmPyramidVisionTransformerV2

    published_archs = ARCHS
    size_keys = ('embed_dims', 'depths', 'num_heads')
    # The reference release pre-trains the original PVTv2 (``patch_embed1``, ``block1.0``,
    # ``norm1``) under ``encoder.``; its fine-tuned classifiers (mim_pvtv2_finetune.py) pool
    # the tokens after ``norm4`` into ``head``, as fastmim's classifier does.
    reference_layout = ReferenceLayout(
        name='pvtv2', pretraining_marker='encoder.patch_embed1.proj.weight',
        encoder_prefix='encoder.', finetuned_marker='patch_embed1.proj.weight',
        classifier_keys=('head.weight', ))

    def __init__(self,
                 arch: Union[str, dict] = 'b2',
                 out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **timm_kwargs) -> None:
        check_drop_path_rate(drop_path_rate, 'PyramidVisionTransformerV2')
        reject_fixed_arguments('PyramidVisionTransformerV2', timm_kwargs, FIXED_TIMM_ARGS,
                               'no head')
        arch_cfg = resolve_arch(arch)
        reject_keys_given_twice('PyramidVisionTransformerV2', arch, arch_cfg, timm_kwargs)
        out_indices = normalise_out_indices('PyramidVisionTransformerV2', out_indices,
                                            len(arch_cfg['depths']))
        super().__init__(
            num_classes=0, global_pool='', drop_path_rate=drop_path_rate, **arch_cfg, **timm_kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)

        self.arch = copy.deepcopy(arch)
        self.arch_cfg = arch_cfg
        self.out_indices = out_indices
        self.out_channels = [self.feature_info[i]['num_chs'] for i in self.out_indices]
        self.out_strides = [self.feature_info[i]['reduction'] for i in self.out_indices]
        self.set_grad_checkpointing(with_cp)
        self.enable_state_dict_adaptation()
        self.freeze_stages(frozen_stages)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'PyramidVisionTransformerV2: expected a (B, C, H, W) input, '
                             f'got {tuple(x.shape)}')
        x = self.patch_embed(x)  # (B, H / 4, W / 4, C); every stage returns (B, C, h, w)
        outputs = []
        for index, stage in enumerate(self.stages[:max(self.out_indices) + 1]):
            x = stage(x)
            if index in self.out_indices:
                outputs.append(x)
        return tuple(outputs)

    @classmethod
    def input_multiple(cls, settings: dict) -> None:
        """None: any size runs. Every patch embedding is a padded convolution (7x7 stride 4,
        then 3x3 stride 2, padded), so a stage map has ``ceil(side / stride)`` rows and
        columns and the image's last ones are kept."""
        return None

    @classmethod
    def output_stride(cls, settings: dict) -> Optional[int]:
        """``4 x 2^i`` for the last stage ``i`` of ``out_indices``: the first patch embedding
        has stride 4, each later one 2. None where the entry's ``arch`` is not one this class
        builds from."""
        try:
            stages = len(resolve_arch(settings.get('arch', constructor_default(cls, 'arch')))
                         ['depths'])
        except (ValueError, TypeError):
            return None
        last = last_out_index(cls, settings, stages)
        return None if last is None else 4 * 2**last

    @classmethod
    def timm_sizes(cls, model: torch.nn.Module) -> Dict:
        """timm's PVTv2 keeps its blocks in its stages; each block's attention its width and
        heads."""
        return dict(embed_dims=[stage.blocks[0].attn.dim for stage in model.stages],
                    depths=[len(stage.blocks) for stage in model.stages],
                    num_heads=[stage.blocks[0].attn.num_heads for stage in model.stages])

    def geometry(self) -> Dict:
        """Plain-type description stored in pre-training checkpoints (``meta['geometry']``).
        No entry depends on the input size: PVTv2 has nothing to resize."""
        return dict(
            type='PyramidVisionTransformerV2',
            arch=plain(self.arch),
            depths=list(self.arch_cfg['depths']),
            embed_dims=list(self.arch_cfg['embed_dims']),
            num_heads=list(self.arch_cfg['num_heads']))

    @classmethod
    def rename_foreign_keys(cls, state: StateDict) -> StateDict:
        """The original PVTv2 layout (``patch_embed1``, ``block1.0``, ``norm1``) renamed by
        timm's own filter."""
        if 'patch_embed1.proj.weight' in state:
            return timm_pvt_v2.checkpoint_filter_fn(dict(state), None)  # the model is not used
        return dict(state)

    @classmethod
    def from_reference_encoder(cls, state, path, img_size=None, num_heads=None):
        """The weights fix widths, depths, MLP and reduction ratios, not the heads: a published
        size with these shapes gives them, else ``num_heads``."""
        state = cls.rename_foreign_keys(state)
        require_keys(state, ('stages.0.blocks.0.mlp.fc1.weight', 'stages.0.norm.weight'), path,
                     'PVTv2')
        num_stages = count_indices(state, r'stages\.(\d+)\.')
        dims = [tensor_at(state, f'stages.{i}.norm.weight', path).shape[0]
                for i in range(num_stages)]
        sr_kernels = [state[key].shape[-1] if key in state else 1
                      for key in (f'stages.{i}.blocks.0.attn.sr.weight'
                                  for i in range(num_stages))]
        # Linear-attention PVTv2 (b2_li) pools keys to 7x7 and has a 1x1 `sr` in every stage;
        # the other variants have no `sr` where the reduction ratio is 1 (the last stage).
        linear = (f'stages.{num_stages - 1}.blocks.0.attn.sr.weight' in state
                  and sr_kernels[-1] == 1)
        custom = dict(
            depths=[count_indices(state, rf'stages\.{i}\.blocks\.(\d+)\.')
                    for i in range(num_stages)],
            embed_dims=dims,
            num_heads=list(num_heads) if num_heads else None,
            mlp_ratios=[mlp_ratio(state[f'stages.{i}.blocks.0.mlp.fc1.weight'].shape[0], [dim],
                                  path) for i, dim in enumerate(dims)],
            sr_ratios=[1] * num_stages if linear else sr_kernels,
            linear=linear)
        model = build_matching(dict(type='PyramidVisionTransformerV2'), custom, state, path,
                               try_published=num_heads is None)
        return ReferenceEncoder(model, state, [])

    @classmethod
    def from_reference_classifier(cls, encoder, parts, path, img_size=None, num_heads=None):
        model, state, _ = cls.from_reference_encoder(encoder, path, img_size, num_heads)
        return ReferenceClassifier(model, state, {}, dict(type='LinearClsHead', pre_norm=None),
                                   {})

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """Other layouts renamed; nothing depends on the input size, so nothing is resized.
        Reads nothing of ``self``, so it also fits weights to a plain timm PVTv2
        (``tools/convert/to_timm.py --arch``)."""
        return PyramidVisionTransformerV2.rename_foreign_keys(state)

    def layer_id(self, name: str) -> int:
        """The reference release's PVTv2 ids (its ``util/lr_decay.py``): patch embedding 0,
        block ``j`` of stage ``s`` ``(blocks before s) + j + 1``; the overlapping patch
        embedding that opens stage ``s`` (``downsample``) shares the id of the last block
        before it, the norm that closes a stage the id of its last block, except the last
        stage's norm, the final norm before the classifier: that one is the rest's, as a ViT's
        final norm."""
        depths = [len(stage.blocks) for stage in self.stages]
        if name.startswith(f'stages.{len(depths) - 1}.norm.'):
            return sum(depths) + 1
        return staged_layer_id(name, ('patch_embed', ), 'stages', depths, {'norm': 'last_block'})

    @property
    def num_layer_ids(self) -> int:
        return sum(len(stage.blocks) for stage in self.stages) + 2

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_of(self, name: str) -> Optional[int]:
        """The first overlapping patch embedding (timm's ``patch_embed``) is the stem;
        ``stages.i``, with the patch embedding that opens it and its norm, is stage ``i + 1``.
        The last stage's norm is the final one, frozen with every stage, as it should be."""
        return staged_stage_of(name, ('patch_embed', ), 'stages', len(self.stages))
