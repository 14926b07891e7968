"""The pre-training methods the benchmark compares, built from fastmim's own recipes.

- ``fastmim``: the published FastMIM model of the backbone's config, unchanged: the config's
  crop size (128 px), HOG target, pixel-space block mask, every token encoded.
- ``simmim``: the same backbone at SimMIM's input size (224 px for ViT and EVA-02, which has
  no SimMIM recipe of its own, 192 px for the others), a per-patch pixel target, SimMIM's
  masking (32-px mask patches, 60% masked, replaced in pixel space by a learnable colour:
  fastmim's masking is SimMIM's with another block size) and SimMIM's one-layer linear
  prediction head. SimMIM's L1 loss becomes fastmim's masked MSE, which costs the same. Swin
  uses SimMIM's window 6 at 192 px.
- ``mae`` (ViT only): :class:`mae_stand_in.MAEStandIn` at 224 px, 75% of the tokens dropped
  before the encoder, 8-block 512-wide decoder.

Run as a script with one JSON :class:`MethodSpec`, it builds, times and counts that method in
its own process and prints one prefixed JSON record (benchmark_pretrain.py starts it once per
method, so every CPU peak-memory figure is that method's own).
"""
import copy
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from torch import nn

import fastmim.models  # noqa: F401  (registers the model components)
from fastmim.benchmark.measure import (StepOptions, count_forward_gmacs, peak_rss_mb,
                                       resolve_device, time_training_steps)
from fastmim.registry import MODELS
# This folder, first on sys.path when a script of it runs.
from mae_stand_in import MAEStandIn  # noqa: E402  isort:skip

CONFIG_ROOT = Path(__file__).resolve().parents[2] / 'configs'
RESULT_PREFIX = 'BENCHMARK_RECORD '
METHODS = ('fastmim', 'simmim', 'mae')
SIMMIM_MASK = dict(mask_ratio=0.6, block_size=32)
MAE_DECODER_KEYS = ('decoder_dim', 'decoder_depth', 'decoder_heads', 'mlp_ratio')


@dataclass(frozen=True)
class BackboneRecipe:
    """The published recipes the benchmark follows for one backbone.

    ``config`` is the published FastMIM config (relative to ``configs/``), ``simmim_size`` the
    input size of SimMIM's recipe and ``simmim_backbone`` its other backbone settings (Swin's
    window), ``mae`` whether MAE applies (it drops tokens, which only an isotropic ViT allows).
    What the backbone itself knows is read from it when built: the stride of its last map (the
    token grid, the size of a SimMIM target patch) and whether it is built for an input size.
    """
    config: str
    simmim_size: int
    simmim_backbone: Dict = field(default_factory=dict)
    mae: bool = False


RECIPES = {
    'vit_b': BackboneRecipe('fastmim/vit_b_hog_800e.py', 224, mae=True),
    'swin_b': BackboneRecipe('fastmim/swin_b_hog_400e.py', 192, dict(window_size=6)),
    'pvtv2_b2': BackboneRecipe('fastmim/pvtv2_b2_hog_800e.py', 192),
    'cmt_s': BackboneRecipe('fastmim/cmt_s_hog_800e.py', 192),
    # SimMIM published no EVA-02 recipe: its ViT one (224 px), as the FastMIM config takes
    # ViT-B/16's recipe unchanged.
    'eva02_b': BackboneRecipe('fastmim/eva02_b_hog_800e.py', 224),
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


# The keys of the backbones' arch dicts that are counts: widths, depths and heads (a list of
# them, one a stage, for the hierarchical backbones).
ARCH_SIZE_KEYS = ('embed_dim', 'embed_dims', 'depth', 'depths', 'num_heads', 'stem_channels')


def _is_count(value) -> bool:
    # bool is refused: Python counts True as the int 1.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_arch_sizes(arch_override: dict) -> None:
    """Refuse a size of ``--arch-override`` that is no int >= 1, naming its key: the backbone
    met a string as 'not all arguments converted during string formatting' and a depth of 0
    as an out index out of range, neither naming the key."""
    for key in ARCH_SIZE_KEYS:
        if key not in arch_override:
            continue
        value = arch_override[key]
        if isinstance(value, list):
            if not value or not all(map(_is_count, value)):
                raise ValueError(f'--arch-override {json.dumps(arch_override)}: {key} must be '
                                 f'ints >= 1 (sizes), got {value!r}')
        elif not _is_count(value):
            raise ValueError(f'--arch-override {json.dumps(arch_override)}: {key} must be an '
                             f'int >= 1 (a size), got {value!r}')


def check_recipe_builds(recipe: FastMIMRecipe, backbone: str,
                        arch_override: Optional[dict] = None) -> None:
    """Build the recipe's model on the meta device (no memory, a fraction of a second), so that
    a wrong ``--arch-override`` is named before anything is measured: otherwise it would fail
    only in each method's fresh process, as a traceback inside the parent's, after the matmul
    peak, HOG and data pipeline had been timed."""
    if arch_override is not None:
        check_arch_sizes(arch_override)
    try:
        with torch.device('meta'):
            MODELS.build(recipe.model)
    except (ValueError, TypeError, KeyError) as error:
        if arch_override is None:
            raise
        raise ValueError(f'--arch-override {json.dumps(arch_override)} does not build a '
                         f'{backbone} model: {error}') from None


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
        (tools/analysis/get_flops.py counts the masked forward of a config)."""
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
        grid = (size // model.model.backbone.out_strides[-1])**2
        return PretrainMethod(name, backbone, size, grid, grid, model)

    size = recipe.simmim_size
    backbone_cfg, stride = simmim_backbone(recipe, fastmim_recipe.model['backbone'])
    if name == 'mae':
        model = MAEStandIn(MODELS.build(backbone_cfg), **_mae_decoder_args(mae_decoder))
        return PretrainMethod(name, backbone, size, model.num_keep, model.num_patches, model)

    model_cfg = copy.deepcopy(fastmim_recipe.model)
    model_cfg.update(
        backbone=backbone_cfg,
        target_generator=dict(type='PixelTarget', patch_size=stride, norm_pix=False),
        neck=dict(type='MIMDecoder', depth=0),
        **SIMMIM_MASK)
    simmim = MODELS.build(model_cfg)
    simmim.neck = TokenLinear(simmim.neck.in_channels, simmim.neck.out_channels)
    grid = (size // stride)**2
    return PretrainMethod(name, backbone, size, grid, grid, FastMIMStep(simmim))


def simmim_backbone(recipe: BackboneRecipe, fastmim_backbone: dict) -> Tuple[dict, int]:
    """SimMIM's backbone config (the FastMIM one with SimMIM's settings, and SimMIM's input
    size where the backbone is built for one: its ``geometry()`` records ``img_size``) and the
    stride of its last map, read from the FastMIM backbone built on the meta device."""
    with torch.device('meta'):
        built = MODELS.build(fastmim_backbone)
    cfg = {**fastmim_backbone, **recipe.simmim_backbone}
    if 'img_size' in built.geometry():
        cfg['img_size'] = recipe.simmim_size
    return cfg, built.out_strides[-1]


@dataclass
class MethodSpec:
    """Everything a fresh process needs to build and time one method (JSON-serialisable)."""
    method: str
    backbone: str
    batch_size: int
    iters: int
    warmup: int
    device: str
    amp: bool
    arch_override: Optional[dict] = None
    config_root: str = str(CONFIG_ROOT)
    mae_decoder: Optional[dict] = None
    seed: int = 0
    amp_dtype: Optional[str] = None
    compile: bool = False
    channels_last: bool = False
    compile_mode: Optional[str] = None

    def step_options(self) -> StepOptions:
        return StepOptions(self.amp, self.amp_dtype, self.compile, self.channels_last,
                           self.compile_mode)


def measure_method(spec: MethodSpec) -> dict:
    """Build, time and count one method in this process; the benchmark record without MFU
    (the caller knows the matmul peak). Call it in a fresh process for a clean CPU peak."""
    rss_after_import = peak_rss_mb()
    device = resolve_device(spec.device)
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, spec.backbone, spec.arch_override,
                          Path(spec.config_root), spec.mae_decoder)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    timings = time_training_steps(method.model, method.input_size, spec.batch_size, spec.iters,
                                  spec.warmup, device, spec.step_options())
    step_times = timings.times
    if device.type == 'cuda':
        peak_mem, peak_kind = torch.cuda.max_memory_allocated(device) / 2**20, 'cuda_max_allocated'
    else:
        peak_mem, peak_kind = peak_rss_mb(), 'cpu_peak_rss_fresh_process'
    gmacs = count_forward_gmacs(method.model, method.input_size, device)
    step_time = statistics.median(step_times)
    images_per_s = spec.batch_size / step_time
    return dict(
        method=spec.method,
        backbone=spec.backbone,
        input_size=method.input_size,
        batch_size=spec.batch_size,
        images_per_s=images_per_s,
        peak_mem_mb=peak_mem,
        gflops_per_img=2 * gmacs,
        mfu=None,
        gmacs_per_img=gmacs,
        achieved_gflops_per_s=3 * 2 * gmacs * images_per_s,
        tokens=method.tokens,
        grid_tokens=method.grid_tokens,
        step_time_s=step_time,
        step_time_min_s=min(step_times),
        step_times_s=step_times,
        peak_mem_kind=peak_kind,
        static_mem_mb=timings.static_mem_mb,
        skipped_steps=timings.skipped_steps,
        rss_after_import_mb=rss_after_import if device.type == 'cpu' else None,
        params_m=sum(p.numel() for p in method.model.parameters() if p.requires_grad) / 1e6,
        threads=torch.get_num_threads(),
    )


def main(argv: List[str]) -> None:
    """Entry point of the fresh process: one JSON spec in, one prefixed JSON record out."""
    usage = ('usage: python tools/analysis/pretrain_methods.py SPEC_JSON\n(one MethodSpec as '
             'JSON; tools/analysis/benchmark_pretrain.py runs this once per method, use that)')
    if argv in (['-h'], ['--help']):
        print(usage)
        return
    if len(argv) != 1:
        raise SystemExit(usage)
    try:
        spec = json.loads(argv[0])
    except json.JSONDecodeError as error:
        raise SystemExit(f'SPEC_JSON is no JSON ({error}): {argv[0]!r}\n{usage}') from None
    record = measure_method(MethodSpec(**spec))
    print(RESULT_PREFIX + json.dumps(record), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
