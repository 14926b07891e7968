"""Registries of fastmim, children of mmengine's roots.

Every registry has the scope ``fastmim`` and lazy ``locations``: building ``type='fastmim.X'``
from an mmdet or mmseg config imports the module that defines ``X`` on demand, so downstream
configs need no ``custom_imports`` for fastmim's own modules.
"""
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


def _child(name, parent, *locations):
    return Registry(name, parent=parent, scope='fastmim', locations=list(locations))


RUNNERS = _child('runner', MMENGINE_RUNNERS, 'fastmim.engine')
LOOPS = _child('loop', MMENGINE_LOOPS, 'fastmim.engine')
HOOKS = _child('hook', MMENGINE_HOOKS, 'fastmim.engine')
LOG_PROCESSORS = _child('log processor', MMENGINE_LOG_PROCESSORS, 'fastmim.engine')
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'fastmim.engine')
OPTIM_WRAPPERS = _child('optim wrapper', MMENGINE_OPTIM_WRAPPERS, 'fastmim.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, 'fastmim.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS, 'fastmim.engine')

# Imported on the first look-up here: fastmim.datasets.coco imports mmdet's datasets.
DATASETS = _child('dataset', MMENGINE_DATASETS, 'fastmim.datasets', 'fastmim.datasets.coco')
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS, 'fastmim.datasets')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'fastmim.datasets.transforms')

MODELS = _child('model', MMENGINE_MODELS, 'fastmim.models')
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS, 'fastmim.models')
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS, 'fastmim.models')

METRICS = _child('metric', MMENGINE_METRICS, 'fastmim.evaluation')
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR, 'fastmim.evaluation')

VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'fastmim.visualization')
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'fastmim.visualization')
