"""tools/test.py refuses a checkpoint without weights for whole parts of the model."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastmim.engine.hooks import CheckpointFitsModelHook
from fastmim.errors import CheckpointError
from fastmim.models.backbones import VisionTransformer


class _Detector(nn.Module):
    def __init__(self, num_classes=1):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.neck = nn.BatchNorm1d(2)
        self.roi_head = nn.Linear(2, num_classes)


def _after_load(state, model=None):
    hook = CheckpointFitsModelHook(checkpoint='pretrain.pth')
    hook.after_load_checkpoint(SimpleNamespace(model=model or _Detector()),
                               {'state_dict': state})


def test_a_pretraining_checkpoint_is_refused_naming_the_modules_it_lacks():
    state = {'backbone.weight': torch.zeros(2, 2), 'backbone.bias': torch.zeros(2),
             'mask_token': torch.zeros(1), 'target_generator.kernel': torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r'pretrain.pth holds no weights for neck, roi_head '
                       r'of the _Detector \(it holds backbone, mask_token, target_generator\)'):
        _after_load(state)


def test_a_checkpoint_of_the_whole_model_passes_with_ddp_names():
    state = {f'module.{key}': value for key, value in _Detector().state_dict().items()}
    del state['module.neck.num_batches_tracked']  # torch fills it in (older files lack it)
    _after_load(state)


def test_a_single_weight_left_out_or_of_another_shape_is_refused():
    """A checkpoint trained with another num_classes: mmengine skipped the classifier for its
    shape and the test reported the top-1 of a random head, with exit status 0."""
    state = _Detector(num_classes=3).state_dict()
    del state['neck.running_var']
    with pytest.raises(CheckpointError, match=r'(?s)pretrain.pth does not fit _Detector.*'
                       r'missing keys .*: 1\n    neck.running_var \(2,\).*shape mismatches .*: 2'
                       r'\n    roi_head.weight: checkpoint \(3, 2\) vs model \(1, 2\).*'
                       r'Was it trained with another config'):
        _after_load(state)


def test_keys_a_backbone_rebuilds_itself_count_as_given():
    """A sin-cos ViT rebuilds its position embedding: a file without it evaluates the same."""
    model = nn.Module()
    model.backbone = VisionTransformer(arch=dict(embed_dim=32, depth=1, num_heads=2),
                                       img_size=32, pos_embed_type='sincos')
    state = model.state_dict()
    del state['backbone.pos_embed']
    _after_load(state, model)


def test_a_file_of_the_reference_release_names_its_converter():
    """The release saves MAE-style files, ``{'model': ..., 'epoch', 'args'}``, with timm names.
    finetune.md maps its ``--eval --resume CKPT`` onto ``tools/test.py CONFIG CKPT``; given so,
    it was called 'a pre-training or backbone checkpoint' that 'holds args, epoch, model'."""
    hook = CheckpointFitsModelHook(checkpoint='finetune_100e.pth')
    release = {'model': {'cls_token': torch.zeros(1, 1, 2), 'head.weight': torch.zeros(1, 2)},
               'epoch': 99}
    with pytest.raises(CheckpointError, match=r"^finetune_100e.pth holds its weights under "
                       r"'model' \(2 entries, e.g. 'cls_token'\), as the reference release .*"
                       r"tools/convert/from_reference.py finetune_100e.pth OUT --backbone "
                       r"\{cmt,pvtv2,swin,vit\} "):
        hook.after_load_checkpoint(SimpleNamespace(model=_Detector()), release)
