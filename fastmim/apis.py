"""Use a fastmim model from Python (a notebook, a script of one's own), as mmpretrain's
``get_model`` / ``inference_model`` / ``FeatureExtractor`` do for its models.

    from fastmim.apis import extract_features, get_model, reconstruct
    model = get_model('fastmim::fastmim/vit_b_hog_800e.py', 'epoch_800.pth')
    features = extract_features(model, ['a.jpg', 'b.jpg'])   # (2, 768)
    panel = reconstruct(model, 'a.jpg')   # input | masked input | HOG target | HOG prediction

Images are file paths, PIL images or ``(H, W, 3)`` uint8 RGB arrays (one, or a list). Each is
resized (shorter side, bicubic) and centre-cropped to the model's input size, then normalised by
the model's own data preprocessor, so no pipeline needs restating.
"""
import contextlib
import copy
import numbers
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import WEIGHT_INITIALIZERS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint
from PIL import Image, UnidentifiedImageError
from torch import nn

from fastmim.checks import check_positive_int
from fastmim.config_file import check_config_file
from fastmim.datasets.transforms.loading import pil_to_rgb, pil_to_upright_rgb
from fastmim.engine.config_keys import refused_keys_located
from fastmim.engine.config_loading import load_config, packaged_config_file
from fastmim.errors import CheckpointError
from fastmim.load_problems import LoadProblems, modules_without_weights, top_level_names
from fastmim.models.algorithms.image_classifier import pool_features
from fastmim.models.utils.pretrained import (backbone_geometry, size_difference,
                                             transfer_state)
from fastmim.models.utils.reference import refuse_an_unconverted_release_file
from fastmim.registry import MODELS
from fastmim.visualization import draw_reconstructions


ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

__all__ = ['get_model', 'extract_features', 'reconstruct', 'load_images']


def _load_config(config) -> Config:
    """A config object, a dict of one, a file or ``'<package>::<path>'`` (the file under the
    installed package's configs, found as the tools find it: :func:`packaged_config_file`)."""
    if isinstance(config, Config):
        return config.copy()
    if isinstance(config, dict):
        if 'model' not in config:
            raise ValueError("the config given has no 'model' (keys: "
                             f"{', '.join(map(str, config)) or 'none'})")
        return Config(copy.deepcopy(config))
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError("config must be a config file path, 'fastmim::<path under configs/>', a "
                        f'Config or a dict, got {type(config).__name__}')
    config = packaged_config_file(os.fspath(config))
    check_config_file(config)  # a FileNotFoundError, as Python's own file functions raise
    return load_config(config)  # a config that is no valid Python: named with file and line


def _device(device) -> torch.device:
    """``device`` as a torch device that exists here, checked before anything is built: torch
    refuses a misspelt name ('gpu') or CUDA on a machine without it only in ``model.to``, with
    a RuntimeError whose traceback hides which argument was wrong."""
    try:
        checked = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f'device {device!r} is not a torch device; expected e.g. cpu, cuda or '
                         'cuda:1') from None
    if checked.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (checked.index or 0) >= count:
            raise ValueError(f'device {device!r} was asked for, but torch sees {count} CUDA '
                             f'device(s) (torch {torch.__version__}); use cpu')
    return checked


def get_model(config, checkpoint: Optional[Union[str, os.PathLike]] = None, device='cpu',
              **model_options):
    """The model of ``config`` with the weights of ``checkpoint``, in eval mode on ``device``.

    Args:
        config: a config file, ``'fastmim::<path under configs/>'``, a ``Config`` or a dict
            (a config's contents, with its ``model``).
        checkpoint: a checkpoint of this model, loaded strictly: a missing or unexpected key,
            or a shape that no rule of the backbone transfers, is a
            :class:`~fastmim.errors.CheckpointError` naming both files (a reference-release
            file: the command converting it). The backbone's rules fit what they can, as the
            other loaders do: a position embedding of another grid is resized. None keeps the
            freshly initialised weights (the config's ``init_cfg`` is not applied;
            ``model.init_weights()`` applies it, in any default scope).
        device: where the model goes.
        **model_options: keys of the config's ``model`` to override, as ``--cfg-options
            model.<key>=<value>`` would (dots reach into nested dicts), e.g.
            ``head=dict(num_classes=10)`` or ``**{'backbone.drop_path_rate': 0.}``.

    The loaded config is ``model.cfg``.
    """
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError('checkpoint must be a file path (str or os.PathLike) or None, got '
                        f'{type(checkpoint).__name__} {checkpoint!r}')
    device = _device(device)
    cfg = _load_config(config)
    name = config if isinstance(config, str) else cfg.filename or 'the config given'
    options = {f'model.{key}': value for key, value in model_options.items()}
    cfg.merge_from_dict(options)
    scope = cfg.get('default_scope', 'fastmim')
    with DefaultScope.overwrite_default_scope(scope), \
            refused_keys_located(cfg, _dotted(options), _name_model_option):
        model = MODELS.build(cfg.model)
    _scope_init_types(model, scope)
    if checkpoint is not None:
        _load_strictly(model, os.fspath(checkpoint), name)
    model.cfg = cfg
    return model.to(device).eval()


def _scope_init_types(model: nn.Module, scope: str) -> None:
    """Qualify with ``scope`` the initializer types of every ``init_cfg`` in ``model`` that
    the scope's own registry defines (``FastMIMPretrained`` -> ``fastmim.FastMIMPretrained``),
    so that ``model.init_weights()`` finds them anywhere.

    mmengine builds initializers when ``init_weights`` runs, in whatever default scope is then
    current, and outside one it looks only in its own registry, which knows no
    ``FastMIMPretrained`` (the fine-tuning configs' initializer). ``'Pretrained'`` keeps its
    name: mmengine runs that initializer after the children's initialisation only under that
    exact name, so outside the scope it is mmengine's own ``Pretrained``.
    """
    with WEIGHT_INITIALIZERS.switch_scope_and_registry(scope) as registry:
        registry.import_from_location()
        own = set(registry.module_dict) - {'Pretrained'} if registry.scope == scope else set()
    for module in model.modules():
        init_cfg = getattr(module, 'init_cfg', None)
        if own and init_cfg:
            _scope_types(init_cfg, scope, own)


def _scope_types(init_cfg, scope: str, own: set) -> None:
    """``init_cfg`` (a dict, a list of them, with ``override`` entries) with the types of
    ``own`` prefixed by ``scope``, in place."""
    for entry in init_cfg if isinstance(init_cfg, list) else [init_cfg]:
        if not isinstance(entry, dict):
            continue
        if entry.get('type') in own:
            entry['type'] = f"{scope}.{entry['type']}"
        if entry.get('override'):
            _scope_types(entry['override'], scope, own)


def _dotted(options: dict) -> dict:
    """``options`` with the keys of dict values spelt out (``model.head.num_classes``), as
    ``--cfg-options`` gives them: a refused key inside ``head=dict(...)`` is then the caller's."""
    dotted = {}
    for key, value in options.items():
        if isinstance(value, dict) and value:
            dotted.update(_dotted({f'{key}.{inner}': item for inner, item in value.items()}))
        else:
            dotted[key] = value
    return dotted


def _name_model_option(option: str) -> str:
    """A key of the config's ``model`` as the caller of :func:`get_model` gave it."""
    return f"get_model's option {option.removeprefix('model.')!r}"


def _load_strictly(model: nn.Module, path: str, name: str) -> None:
    """Load the checkpoint at ``path`` into ``model``, every key and shape checked first.

    Strict about keys: each of the model's must come from the file and each of the file's
    must have a place in the model. Shapes are compared after the backbones' own rules
    (:func:`transfer_state`: a position embedding of another grid, relative-position tables of
    another window), which the other loaders (``FastMIMPretrained``, tools/test.py) apply too.
    mmengine's strict loading puts every missing and unexpected key in one paragraph (18,000
    characters for a ViT checkpoint given to a Swin config); this names how many there are,
    the first of each, and the backbone that wrote the checkpoint when it is not the config's.
    """
    loaded = _load_checkpoint(path, map_location='cpu', logger='silent')  # no log in a notebook
    refuse_an_unconverted_release_file(loaded, path, 'load OUT')
    state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f'{path} holds no state dict (found a {type(loaded).__name__}); '
                              'expected a checkpoint written by fastmim training')
    # As mmengine's loader does: weights saved from a DDP-wrapped model.
    state = {re.sub(r'^module\.', '', str(key)): value for key, value in state.items()}
    fitted, problems = _fitted_state(state, model, _file_geometry(loaded))
    if problems:
        raise CheckpointError(
            _other_size_message(loaded, model, path, name, problems)
            or problems.message(path, f'the model of {name}', 'strict')
            + _backbone_hint(loaded, model) + _parts_hint(state, model, name))
    model.load_state_dict(fitted, strict=True)


def _file_geometry(loaded) -> Optional[dict]:
    """The backbone geometry a checkpoint's meta records (None where it records none)."""
    meta = loaded.get('meta') if isinstance(loaded, dict) else None
    return backbone_geometry(meta.get('geometry')) if isinstance(meta, dict) else None


def _fitted_state(state: dict, model: nn.Module, geometry: Optional[dict]):
    """``state`` fitted to ``model`` by its backbones' rules, and what keeps it from loading
    strictly: keys the model lacks (a switched-off module's included), keys the file lacks
    (those a backbone rebuilds itself are the model's own), shapes no rule transfers."""
    stray = {key: value for key, value in state.items() if not torch.is_tensor(value)}
    transferred = transfer_state({key: value for key, value in state.items()
                                  if key not in stray}, model, geometry)
    problems = transferred.problems
    problems.unexpected += [f'{key} {type(value)}' for key, value in stray.items()]
    problems.unexpected += [f'{key} (a module the model switches off)'
                            for key in transferred.switched_off]
    own = model.state_dict()
    fitted = dict(transferred.state)
    fitted.update({key: own[key] for key in transferred.rebuilt})
    provided = fitted.keys() | set(transferred.mismatched_keys)
    problems.missing = [f'{key} {tuple(value.shape)}' for key, value in own.items()
                        if key not in provided]
    return fitted, problems


def _other_size_message(loaded, model: nn.Module, path: str, name: str,
                        problems: LoadProblems) -> Optional[str]:
    """The error for a checkpoint of the config's backbone in another size (a ViT-tiny file
    given to a ViT-B config), when its meta records the size: the sizes of both and the arch
    to give the config, which fine-tuning's loader also names (:func:`size_difference`), where
    a list of every key of other shape left the reader to work them out. None otherwise."""
    difference = size_difference(_file_geometry(loaded), model)
    if difference is None:
        return None
    return (f'{path} does not fit the model of {name}: {difference}\n'
            f'  {len(problems.mismatched)} tensors differ in shape, {len(problems.missing)} '
            f'are missing, {len(problems.unexpected)} have no place in the model')


def _backbone_hint(loaded, model: nn.Module) -> str:
    """A line naming the backbone the checkpoint's meta records, where the config builds
    another: the usual cause of a whole list of missing keys (a wrong config)."""
    written = (_file_geometry(loaded) or {}).get('type')
    built = type(getattr(model, 'backbone', None)).__name__
    if not written or written == built:
        return ''
    return (f'\n  the checkpoint was written by a {written} backbone; the config builds a '
            f'{built}: is it the config of this checkpoint?')


def _parts_hint(state: dict, model: nn.Module, name: str) -> str:
    """A line naming the top-level parts the checkpoint holds and the model has not: a
    checkpoint of another kind of model (pre-training's neck and mask token given to a kNN
    or classifier config), whose list of unexpected keys alone says nothing of what to use."""
    own = model.state_dict()
    extra = modules_without_weights(state, own)
    if not extra:
        return ''
    return (f'\n  the checkpoint holds {", ".join(sorted(extra))}, which the model of {name} '
            f'({", ".join(top_level_names(own))}) has not: a checkpoint of another kind of '
            'model? Load it with the config that wrote it (extract_features takes the backbone '
            'of any of them)')


def _is_one_image(images) -> bool:
    return isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))


def load_images(images: Union[ImageInput, Sequence[ImageInput]]) -> List[np.ndarray]:
    """``(H, W, 3)`` uint8 RGB arrays of one image or a list of images. Paths are decoded as the
    datasets decode them: grayscale, CMYK, 16-bit and palette images become RGB, and a photo
    stored on its side is turned upright by its EXIF orientation. A PIL image is taken as it
    is (``PIL.ImageOps.exif_transpose`` turns one opened by hand)."""
    if torch.is_tensor(images):
        _refuse_tensor(images)
    if _is_one_image(images):
        images = [images]
    if not len(images):
        # Caught here: the data preprocessor refuses an empty batch on an assertion of mmengine.
        raise ValueError('no images given: expected a path, a PIL image, an array or a '
                         'non-empty list of them')
    arrays = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            image = os.fspath(image)
            if osp.isdir(image):
                raise IsADirectoryError(f'image is a folder, not a file: {image}')
            if not osp.isfile(image):
                raise FileNotFoundError(f'image not found: {image}')
            try:
                with Image.open(image) as opened:
                    image = pil_to_upright_rgb(opened)
            except (UnidentifiedImageError, OSError, ValueError) as error:
                raise ValueError(f'cannot read image {image}: {error}') from None
        elif isinstance(image, Image.Image):
            image = pil_to_rgb(image)
        elif torch.is_tensor(image):
            _refuse_tensor(image)
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            raise TypeError('an image must be a file path, a PIL image or an (H, W, 3) uint8 RGB '
                            f'array, got {type(image).__name__} '
                            f'{getattr(image, "shape", "")}')
        if not image.shape[0] or not image.shape[1]:  # no side to resize: a division by zero
            raise ValueError(f'an image has no pixels: shape {image.shape}')
        arrays.append(image)
    return arrays


def _refuse_tensor(tensor: torch.Tensor) -> None:
    """A tensor's layout (CHW or HWC, 0-1 or 0-255, normalised or not) cannot be told from its
    values, and a (3, H, W) one would otherwise be taken for a list of three images."""
    raise TypeError(f'got a torch tensor of shape {tuple(tensor.shape)}; images are file paths, '
                    'PIL images or (H, W, 3) uint8 RGB arrays (one, or a list). For a batch '
                    'already normalised as the model expects, call model.backbone(inputs) '
                    'itself')


def _check_model(model, function: str) -> None:
    """``model`` must be a model (a config given in its place named no argument)."""
    if not isinstance(model, nn.Module) or not hasattr(model, 'backbone'):
        given = (f'the {type(model).__name__} {os.fspath(model)!r}'
                 if isinstance(model, (str, os.PathLike)) else f'a {type(model).__name__}')
        raise TypeError(f'{function} takes a model, got {given}: pass '
                        'get_model(config, checkpoint)')


def _center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bicubic), then the central ``size x size`` square, uint8 HWC."""
    height, width = image.shape[:2]
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = Image.fromarray(image).resize(new_size, Image.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return np.array(resized.crop((left, top, left + size, top + size)))


def _input_size(model: nn.Module, input_size: Optional[int]) -> int:
    if input_size is None:
        size = model.backbone.geometry().get('img_size')
        if isinstance(size, (list, tuple)):
            if size[0] != size[1]:
                raise ValueError(f'the model is built for {size[0]}x{size[1]} inputs; pass '
                                 'input_size for the square crops')
            size = size[0]
        if size is None:
            raise ValueError(f'{type(model.backbone).__name__} records no img_size: pass '
                             'input_size')
        input_size = size
    check_positive_int('fastmim.apis', 'input_size', input_size)
    stride = max(model.backbone.out_strides)
    if input_size % stride:
        # the backbone's own message names its patch size or stride, not this argument
        lower = input_size // stride * stride
        nearest = f'{lower} or {lower + stride}' if lower else f'{stride}'
        raise ValueError(f"input_size {input_size} is not a multiple of the backbone's stride "
                         f'({stride} px, {type(model.backbone).__name__}); give e.g. {nearest}')
    return input_size


def _normalised_batch(model: nn.Module, images, input_size: Optional[int]) -> torch.Tensor:
    """The images as the model sees them: square crops through its data preprocessor."""
    size = _input_size(model, input_size)
    batch = [torch.from_numpy(_center_square(image, size)).permute(2, 0, 1)
             for image in load_images(images)]
    return model.data_preprocessor(dict(inputs=batch), False)['inputs']


def extract_features(model: nn.Module, images, input_size: Optional[int] = None) -> torch.Tensor:
    """Global average of the backbone's last feature map, ``(N, C)`` for N images.

    These are the features the linear probe and kNN use (``configs/finetune/
    vit_b_linear_probe_90e.py``, ``configs/knn/``); ``model.backbone(inputs)`` gives the maps
    themselves. ``input_size`` defaults to the backbone's ``img_size``. The forward runs in eval
    mode whatever the model's mode (restored afterwards), so the features are deterministic.
    """
    _check_model(model, 'extract_features')
    inputs = _normalised_batch(model, images, input_size)
    with torch.no_grad(), _eval_mode(model):
        return pool_features(model.backbone(inputs)[-1])


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """``model`` in eval mode, each module's own mode given back afterwards: a model in
    train() mode (one being trained, in a notebook) would give features randomised by dropout
    and drop path, and a mode flipped for good would change the caller's training."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def reconstruct(model: nn.Module, images, seed: int = 0, cell_px: int = 16,
                input_size: Optional[int] = None):
    """What a FastMIM model reconstructs: one uint8 RGB panel per image, input | masked input |
    target | prediction (:func:`fastmim.visualization.make_reconstruction_panel`), with the
    mask drawn from ``seed`` (the global random state is left as it was).

    Returns one panel for one image, a list of panels for a list. ``input_size`` defaults to the
    backbone's ``img_size`` (the pre-training size).
    """
    _check_model(model, 'reconstruct')
    if not hasattr(model, 'reconstruct'):
        raise TypeError(f'{type(model).__name__} cannot reconstruct (it has no decoder): give '
                        'a FastMIM pre-training config and a checkpoint that pre-training wrote; '
                        'a fine-tuned checkpoint has no decoder either')
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        # torch's manual_seed refused it with a RuntimeError that named no argument
        raise TypeError(f'seed must be an int, got {type(seed).__name__} {seed!r}')
    block = model.mask_generator.block_size
    if input_size is not None and input_size % block:
        # the mask's own message names the training pipeline's crop, not this argument
        nearest = max(block, input_size // block * block)
        raise ValueError(f'input_size (--input-size) {input_size} is not a multiple of the '
                         f'mask block ({block} px, model.block_size); give e.g. {nearest}')
    panels = draw_reconstructions(model, _normalised_batch(model, images, input_size), seed=seed,
                                  cell_px=cell_px)
    return panels[0] if _is_one_image(images) else panels
