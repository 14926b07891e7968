from .checkpoint_meta_hook import CheckpointMetaHook

__all__ = ['CheckpointMetaHook']
