"""Optimiser wrapper constructors: layer-wise learning-rate decay for fine-tuning, and the
weight-decay exemptions the model declares for pre-training."""
from .declared_no_decay import (DeclaredNoDecayOptimWrapperConstructor,
                                declared_no_decay_parameters)
from .layer_decay import (LayerDecayOptimWrapperConstructor, backbone_layer_ids,
                          model_layer_ids, model_no_decay_names)

__all__ = [
    'DeclaredNoDecayOptimWrapperConstructor', 'LayerDecayOptimWrapperConstructor',
    'backbone_layer_ids', 'declared_no_decay_parameters', 'model_layer_ids',
    'model_no_decay_names'
]
