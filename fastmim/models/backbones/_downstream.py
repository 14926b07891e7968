"""Make fastmim's backbones buildable from mmdet and mmseg configs.

Two ways, both tested:

* ``type='fastmim.SwinTransformer'`` works from any mmdet / mmseg config with no registration
  and no ``custom_imports``: mmengine imports ``fastmim.registry`` for the ``fastmim`` scope,
  whose lazy ``locations`` import these classes.
* Plain names (``type='CMT'``) need the class in the library's own ``MODELS`` registry, which
  :func:`register_downstream` provides for names the library does not use itself. mmdet already
  has ``SwinTransformer`` and ``PyramidVisionTransformerV2``, mmseg ``VisionTransformer`` and
  ``SwinTransformer``: those plain names keep meaning the library's classes.

Why not register at import time unconditionally: a library registers its own classes when its
``models`` package is imported, and raises ``KeyError`` if a name is already taken, so fastmim
must register *after* it; importing ``mmseg.models`` just for that takes about 1 s on 2 cores
(``mmdet.models`` longer) against 0.06 s for this package once torch and timm are loaded, and
would tax every fastmim import. So importing this package registers into the libraries whose
models are already loaded, e.g. with
``custom_imports=dict(imports=['mmdet.models', 'fastmim.models.backbones'])`` in a config, and
``register_downstream(import_models=True)`` loads them first when called explicitly.
"""
import importlib
import sys
from typing import Dict, List, Sequence

from fastmim.registry import DOWNSTREAM_SCOPES, MODELS


def _fastmim_backbones() -> Dict[str, type]:
    """Every class registered in fastmim's MODELS by this package (the package imports them all)."""
    return {
        name: cls
        for name, cls in MODELS.module_dict.items()
        if cls.__module__.startswith(__package__ + '.')
    }


def register_downstream(libraries: Sequence[str] = DOWNSTREAM_SCOPES,
                        import_models: bool = False) -> Dict[str, List[str]]:
    """Register fastmim's backbones under their plain names in mmdet's / mmseg's ``MODELS``.

    Args:
        libraries: which libraries to register into; ones that are not installed are skipped.
        import_models: import ``<library>.models`` first. Without it, only libraries whose
            models are already imported are served (the cheap default used at import time).

    Returns:
        ``{library: [names registered by this call]}`` for every library served. Names the
        library already uses (its own classes, or fastmim's from an earlier call) are skipped.
    """
    registered = {}
    for library in libraries:
        if not import_models and f'{library}.models' not in sys.modules:
            continue
        try:
            importlib.import_module(f'{library}.models')
            registry = importlib.import_module(f'{library}.registry').MODELS
        except ImportError:
            continue
        names = []
        for name, cls in _fastmim_backbones().items():
            if name not in registry.module_dict:
                registry.register_module(name=name, module=cls)
                names.append(name)
        registered[library] = names
    return registered
