from .checkpoint_meta_hook import CheckpointMetaHook
from .progressive_resolution_hook import PerUpdateParamSchedulerHook, ProgressiveResolutionHook
from .reconstruction_hook import ReconstructionVisualizationHook

__all__ = [
    'CheckpointMetaHook', 'PerUpdateParamSchedulerHook', 'ProgressiveResolutionHook',
    'ReconstructionVisualizationHook'
]
