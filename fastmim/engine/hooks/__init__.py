from .checkpoint_meta_hook import CheckpointMetaHook
from .reconstruction_hook import ReconstructionVisualizationHook

__all__ = ['CheckpointMetaHook', 'ReconstructionVisualizationHook']
