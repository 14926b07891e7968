"""Optimiser wrapper constructors: layer-wise learning-rate decay for fine-tuning."""
from .layer_decay import (DEFAULT_NO_DECAY_NAMES, LayerDecayOptimWrapperConstructor,
                          backbone_layer_ids, model_layer_ids)

__all__ = [
    'DEFAULT_NO_DECAY_NAMES', 'LayerDecayOptimWrapperConstructor', 'backbone_layer_ids',
    'model_layer_ids'
]
