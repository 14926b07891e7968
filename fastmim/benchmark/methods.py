"""The pre-training methods the benchmark compares, built from fastmim's own recipes.

- ``fastmim``: the published FastMIM model of the backbone's config, unchanged: the config's
  crop size (128 px), HOG target, pixel-space block mask, every token encoded.
- ``simmim``: the same backbone at SimMIM's input size (224 px for ViT, 192 px for the others),
  a per-patch pixel target, SimMIM's masking (32-px mask patches, 60% masked, replaced in pixel
  space by a learnable colour: fastmim's masking is SimMIM's with another block size) and
  SimMIM's one-layer linear prediction head. SimMIM's L1 loss becomes fastmim's masked MSE,
  which costs the same. Swin uses SimMIM's window 6 at 192 px.
- ``mae`` (ViT only): :class:`~fastmim.benchmark.mae.MAEStandIn` at 224 px, 75% of the
  tokens dropped before the encoder, 8-block 512-wide decoder.
"""
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from mmengine.config import Config
from torch import nn

import fastmim.models  # noqa: F401  (registers the model components)
from fastmim.registry import MODELS
from .mae import MAEStandIn

CONFIG_ROOT = Path(__file__).resolve().parents[2] / 'configs'
METHODS = ('fastmim', 'simmim', 'mae')
SIMMIM_MASK = dict(mask_ratio=0.6, block_size=32)
MAE_DECODER_KEYS = ('decoder_dim', 'decoder_depth', 'decoder_heads', 'mlp_ratio')


@dataclass(frozen=True)
class BackboneRecipe:
    """What the benchmark needs to know about one backbone.

    ``config`` is the published FastMIM config (relative to ``configs/``), ``out_stride`` the
    stride of the backbone's last map (the size of a SimMIM target patch), ``simmim_size`` and
    ``simmim_backbone`` the input size and backbone keys of SimMIM's recipe, ``mae`` whether MAE
    applies (it drops tokens, which only an isotropic ViT allows).
    """
    config: str
    out_stride: int
    simmim_size: int
    simmim_backbone: Dict = field(default_factory=dict)
    mae: bool = False


RECIPES = {
    'vit_b': BackboneRecipe('fastmim/vit_b_hog_800e.py', 16, 224, dict(img_size=224), mae=True),
    'swin_b': BackboneRecipe('fastmim/swin_b_hog_400e.py', 32, 192,
                             dict(img_size=192, window_size=6)),
    'pvtv2_b2': BackboneRecipe('fastmim/pvtv2_b2_hog_800e.py', 32, 192),
    'cmt_s': BackboneRecipe('fastmim/cmt_s_hog_800e.py', 32, 192, dict(img_size=192)),
}


def methods_for(backbone: str):
    """The methods that apply to ``backbone``, in the order they are reported."""
    return tuple(name for name in METHODS if name != 'mae' or recipe_of(backbone).mae)


def recipe_of(backbone: str) -> BackboneRecipe:
    if backbone not in RECIPES:
        raise ValueError(f'unknown backbone {backbone!r}; choose from {sorted(RECIPES)}')
    return RECIPES[backbone]


@dataclass
class FastMIMRecipe:
    """The FastMIM model config, pre-training crop size and data pipeline of one config file."""
    model: dict
    input_size: int
    train_pipeline: list


def load_fastmim_recipe(backbone: str, arch_override: Optional[dict] = None,
                        config_root: Path = CONFIG_ROOT) -> FastMIMRecipe:
    """Read the backbone's published config; ``arch_override`` replaces the backbone's ``arch``
    (a dict of widths and depths, e.g. a tiny ViT for tests)."""
    path = Path(config_root) / recipe_of(backbone).config
    if not path.is_file():
        raise FileNotFoundError(f'FastMIM config for {backbone!r} not found: {path}')
    cfg = Config.fromfile(str(path))
    model = cfg.model.to_dict()
    if arch_override is not None:
        model['backbone']['arch'] = dict(arch_override)
    pipeline = cfg.get('train_pipeline')
    crops = [step for step in pipeline or [] if step.get('type') == 'RandomResizedCrop']
    if len(crops) != 1:
        raise ValueError(f'{path}: expected one RandomResizedCrop in train_pipeline (it sets the '
                         f'pre-training input size), found {len(crops)}')
    size = crops[0]['size']
    if not isinstance(size, int):
        raise ValueError(f'{path}: RandomResizedCrop size must be one int (square crops), '
                         f'got {size!r}')
    return FastMIMRecipe(model, size, [dict(step) for step in pipeline])


class TokenLinear(nn.Module):
    """SimMIM's prediction head: one linear map per token (SimMIM's 1x1 convolution), giving
    the ``(B, h * w, values)`` layout fastmim's ``FastMIM.decode`` returns."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.predict = nn.Linear(in_channels, out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.predict(features.flatten(2).transpose(1, 2))


class FastMIMStep(nn.Module):
    """A FastMIM model seen through the two calls the benchmark makes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.loss(images)['loss']

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder and decoder; masking and target add no matrix products and are left out
        because the tracer behind the FLOP count cannot follow the mask's ``scatter_``."""
        return self.model.predict_cells(images)


@dataclass
class PretrainMethod:
    """One method ready to time: ``model.loss(images)`` is a training forward,
    ``model.predict(images)`` the network forward whose FLOPs are counted.

    ``tokens`` is the number of patch tokens per image that the encoder's last stage processes;
    ``grid_tokens`` the size of that stage's full token grid (they differ only for MAE).
    """
    name: str
    backbone: str
    input_size: int
    tokens: int
    grid_tokens: int
    model: nn.Module


def _mae_decoder_args(mae_decoder: Optional[dict]) -> dict:
    unknown = sorted(set(mae_decoder or {}) - set(MAE_DECODER_KEYS))
    if unknown:
        raise ValueError(f'MAE decoder override has unknown keys {unknown}; expected some of '
                         f'{MAE_DECODER_KEYS}')
    return dict(mae_decoder or {})


def build_method(name: str, backbone: str, arch_override: Optional[dict] = None,
                 config_root: Path = CONFIG_ROOT,
                 mae_decoder: Optional[dict] = None) -> PretrainMethod:
    """Build ``'fastmim'``, ``'simmim'`` or ``'mae'`` for ``backbone`` (see module docstring).

    ``mae_decoder`` overrides MAE's decoder (keys ``decoder_dim``, ``decoder_depth``,
    ``decoder_heads``, ``mlp_ratio``), e.g. the lighter decoders of MAE's own ablation.
    """
    if name not in methods_for(backbone):
        raise ValueError(f'method {name!r} does not apply to {backbone!r}; choose from '
                         f'{methods_for(backbone)}')
    recipe = recipe_of(backbone)
    fastmim_recipe = load_fastmim_recipe(backbone, arch_override, config_root)
    if name == 'fastmim':
        size = fastmim_recipe.input_size
        model = FastMIMStep(MODELS.build(fastmim_recipe.model))
        grid = (size // recipe.out_stride)**2
        return PretrainMethod(name, backbone, size, grid, grid, model)

    size = recipe.simmim_size
    backbone_cfg = {**fastmim_recipe.model['backbone'], **recipe.simmim_backbone}
    if name == 'mae':
        model = MAEStandIn(MODELS.build(backbone_cfg), **_mae_decoder_args(mae_decoder))
        return PretrainMethod(name, backbone, size, model.num_keep, model.num_patches, model)

    model_cfg = copy.deepcopy(fastmim_recipe.model)
    model_cfg.update(
        backbone=backbone_cfg,
        target_generator=dict(type='PixelTarget', patch_size=recipe.out_stride, norm_pix=False),
        neck=dict(type='MIMDecoder', depth=0),
        **SIMMIM_MASK)
    simmim = MODELS.build(model_cfg)
    simmim.neck = TokenLinear(simmim.neck.in_channels, simmim.neck.out_channels)
    grid = (size // recipe.out_stride)**2
    return PretrainMethod(name, backbone, size, grid, grid, FastMIMStep(simmim))
