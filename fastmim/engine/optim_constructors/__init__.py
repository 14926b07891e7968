"""Optimiser wrapper constructors: layer-wise learning-rate decay for fine-tuning."""
from .layer_decay import (LayerDecayOptimWrapperConstructor, backbone_layer_ids,
                          model_layer_ids, model_no_decay_names)

__all__ = [
    'LayerDecayOptimWrapperConstructor', 'backbone_layer_ids', 'model_layer_ids',
    'model_no_decay_names'
]
