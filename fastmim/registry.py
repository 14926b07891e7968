"""Registries of fastmim, children of mmengine's roots.

Every registry has the scope ``fastmim`` and lazy ``locations``: building ``type='fastmim.X'``
from an mmdet or mmseg config, or ``type='X'`` from a fastmim config, imports the module that
defines ``X`` on demand, so configs need no ``custom_imports`` for fastmim's own modules. A
registry's locations cover every module of fastmim that registers into it
(``tests/test_registry.py`` checks each one from a fresh interpreter).

A location may be optional: a module that needs a downstream library (``fastmim.datasets.coco``
needs mmdet, which needs mmcv's compiled ops). Pre-training needs neither, so where they are
missing such a module's classes are left out instead of breaking every look-up of the
registry, and a look-up that finds nothing names the import error.
"""
import logging
from importlib import import_module
from typing import Optional

from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

# The downstream libraries whose configs build fastmim's backbones (their default scopes): the
# backbones register into their registries, and a run in their scope is a detection or
# segmentation one.
DOWNSTREAM_SCOPES = ('mmdet', 'mmseg')


class FastMIMRegistry(Registry):
    """mmengine's ``Registry`` plus ``optional_locations`` (see the module docstring)."""

    def __init__(self, *args, optional_locations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.optional_locations = tuple(optional_locations)
        self.import_errors = {}
        self._warned_keys = set()

    def import_from_location(self):
        if self._imported:
            return
        super().import_from_location()
        for location in self.optional_locations:
            try:
                import_module(location)
            except Exception as error:  # noqa: BLE001  whatever a downstream library raises
                self.import_errors[location] = error

    def get(self, key):
        found = super().get(key)
        if found is None and self.import_errors and key not in self._warned_keys:
            self._warned_keys.add(key)  # once: ``key in registry`` looks up too
            print_log(f'{key!r} is not in the {self.scope}::{self.name} registry; modules left '
                      f'out because they could not be imported: ' + '; '.join(
                          f'{location} ({error})'
                          for location, error in self.import_errors.items()),
                      logger='current', level=logging.WARNING)
        return found


def _child(name, parent, *locations, optional_locations=()):
    return FastMIMRegistry(name, parent=parent, scope='fastmim', locations=list(locations),
                           optional_locations=optional_locations)


# fastmim.engine.fsdp (FSDP's runner), which fastmim.engine does not import.
RUNNERS = _child('runner', MMENGINE_RUNNERS, 'fastmim.engine', 'fastmim.engine.fsdp')
# fastmim.evaluation: the kNN evaluation's test loop and model (KNNTestLoop, KNNClassifier).
LOOPS = _child('loop', MMENGINE_LOOPS, 'fastmim.engine', 'fastmim.evaluation')
HOOKS = _child('hook', MMENGINE_HOOKS, 'fastmim.engine')
LOG_PROCESSORS = _child('log processor', MMENGINE_LOG_PROCESSORS, 'fastmim.engine')
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'fastmim.engine')
OPTIM_WRAPPERS = _child('optim wrapper', MMENGINE_OPTIM_WRAPPERS, 'fastmim.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, 'fastmim.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS, 'fastmim.engine')

# fastmim.datasets.coco, .ade20k and .seeded_seg subclass mmdet's and mmseg's datasets:
# optional (see the module docstring).
DATASETS = _child('dataset', MMENGINE_DATASETS, 'fastmim.datasets',
                  optional_locations=['fastmim.datasets.coco', 'fastmim.datasets.ade20k',
                                      'fastmim.datasets.seeded_seg'])
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS, 'fastmim.datasets')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'fastmim.datasets.transforms')

MODELS = _child('model', MMENGINE_MODELS, 'fastmim.models', 'fastmim.evaluation')
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS, 'fastmim.models')
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS, 'fastmim.models')

METRICS = _child('metric', MMENGINE_METRICS, 'fastmim.evaluation')
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR, 'fastmim.evaluation')

VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'fastmim.visualization')
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'fastmim.visualization')


def type_name(entry) -> str:
    """The class name a config entry builds: ``entry`` is the entry (a dict) or its ``type``,
    a class, a name, or a name in another library's scope (``'mmseg.RandomFlip'`` is
    ``'RandomFlip'``), so that code looking for a transform or a hook in a config finds it
    however the config names it."""
    kind = entry.get('type') if isinstance(entry, dict) else entry
    return getattr(kind, '__name__', str(kind)).rsplit('.', 1)[-1]


def type_class(entry, registry) -> Optional[type]:
    """The class a config entry builds: ``entry`` is the entry (a dict) or its ``type``, a
    class (new-style configs) or a name ``registry`` finds as building does, in the registry or
    its parents (``'ImageFolder'``, mmengine's ``'ConcatDataset'``) or in any scope
    (``'fastmim.ImageFolder'``); None when it names nothing (``Registry.get`` of ``''`` raises),
    or no class (a registered function), so that checks before a build can ask ``issubclass``
    of what a config names."""
    kind = entry.get('type') if isinstance(entry, dict) else entry
    if isinstance(kind, type):
        return kind
    found = registry.get(kind) if isinstance(kind, str) and kind else None
    return found if isinstance(found, type) else None
