"""Helpers shared by the datasets: pipeline building, file-name filtering, local paths."""
import copy
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

from fastmim.registry import TRANSFORMS

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def build_pipeline(pipeline: Sequence[Union[dict, Callable]]) -> List[Callable]:
    """Build the transforms of a dataset pipeline in fastmim's scope.

    mmengine's ``Compose`` builds config dicts with its root registry, which finds fastmim's
    transforms only while the Runner's default scope is ``'fastmim'``. Building them here makes a
    dataset work the same from a config, from a test, or inside an mmdet/mmseg-scoped run: names
    resolve in fastmim first, then in mmengine/mmcv (``RandomFlip``), and ``'mmdet.X'`` still
    reaches another library explicitly.
    """
    transforms = []
    for transform in pipeline:
        if isinstance(transform, dict):
            cfg = copy.deepcopy(transform)
            cfg.setdefault('_scope_', 'fastmim')
            transform = TRANSFORMS.build(cfg)
        if not callable(transform):
            raise TypeError(f'pipeline entries must be config dicts or callables, '
                            f'got {type(transform).__name__}: {transform!r}')
        transforms.append(transform)
    return transforms


def normalize_extensions(extensions: Iterable[str]) -> Tuple[str, ...]:
    """Lower-case extensions with a leading dot, so that ``'JPEG'`` and ``'.jpeg'`` both match."""
    if isinstance(extensions, str):
        extensions = (extensions, )
    normalized = tuple('.' + ext.lower().lstrip('.') for ext in extensions)
    if not normalized:
        raise ValueError('extensions must name at least one image file extension')
    return normalized


def has_extension(file_name: str, extensions: Tuple[str, ...]) -> bool:
    """Case-insensitive extension test (ImageNet's files end in ``.JPEG``)."""
    return file_name.lower().endswith(extensions)


def is_local(path: str, backend_args: Optional[dict]) -> bool:
    """Whether ``path`` is read from the local file system (checks of files skip the others)."""
    backend = (backend_args or {}).get('backend', 'local')
    return backend == 'local' and '://' not in path
