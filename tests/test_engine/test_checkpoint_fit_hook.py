"""tools/test.py refuses a checkpoint without weights for whole parts of the model."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastmim.engine.hooks import CheckpointFitsModelHook
from fastmim.errors import CheckpointError


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.neck = nn.Linear(2, 2)
        self.roi_head = nn.Linear(2, 1)


def _after_load(state):
    hook = CheckpointFitsModelHook(checkpoint='pretrain.pth')
    hook.after_load_checkpoint(SimpleNamespace(model=_Detector()), {'state_dict': state})


def test_a_pretraining_checkpoint_is_refused_naming_the_modules_it_lacks():
    state = {'backbone.weight': torch.zeros(2, 2), 'backbone.bias': torch.zeros(2),
             'mask_token': torch.zeros(1), 'target_generator.kernel': torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r'pretrain.pth holds no weights for neck, roi_head '
                       r'of the _Detector \(it holds backbone, mask_token, target_generator\)'):
        _after_load(state)


def test_a_checkpoint_of_the_whole_model_passes_even_with_a_key_left_out_or_ddp_names():
    state = {f'module.{key}': value for key, value in _Detector().state_dict().items()}
    del state['module.roi_head.bias']  # single keys are not judged (rebuilt buffers)
    _after_load(state)
