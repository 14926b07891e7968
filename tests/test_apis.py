"""fastmim.apis: a model from a config and checkpoint, its features, its reconstructions."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from PIL import Image

from fastmim.apis import extract_features, get_model, load_images, reconstruct
from fastmim.datasets import find_embedded_photos
from fastmim.errors import CheckpointError, LaunchError

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_ARCH = {'backbone.arch': dict(embed_dim=32, depth=2, num_heads=2)}
PRETRAIN = 'fastmim::fastmim/demo_vit_tiny_embedded.py'
PRETRAIN_FILE = Path(__file__).resolve().parents[1] / 'configs/fastmim/demo_vit_tiny_embedded.py'
FINETUNE = 'fastmim::finetune/demo_vit_tiny_embedded_ft.py'


@pytest.fixture(scope='module')
def photos():
    return [path for _, path in find_embedded_photos()[:3]]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A tiny demo model's weights, saved as training saves them."""
    torch.manual_seed(0)
    model = get_model(PRETRAIN, **TINY_ARCH)
    path = tmp_path_factory.mktemp('apis') / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path, model.state_dict()


def test_get_model_loads_the_checkpoint_weights(checkpoint):
    path, saved = checkpoint
    torch.manual_seed(1)  # other initial weights than the saved ones
    model = get_model(PRETRAIN, path, **TINY_ARCH)
    assert not model.training and len(model.backbone.blocks) == 2
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)


def test_get_model_refuses_a_checkpoint_of_another_model(checkpoint):
    with pytest.raises(CheckpointError, match='does not fit the model of fastmim::'):
        get_model(PRETRAIN, str(checkpoint[0]), **{'backbone.arch.depth': 3})
    with pytest.raises(FileNotFoundError, match='config file not found: nowhere.py'):
        get_model('nowhere.py')


def test_an_input_size_the_mask_blocks_do_not_tile_names_the_argument(photos):
    """The mask's message told a visualize_reconstruction.py user to change the training
    pipeline's RandomResizedCrop size."""
    model = get_model(PRETRAIN, **TINY_ARCH)
    with pytest.raises(ValueError, match=r'input_size \(--input-size\) 40 is not a multiple of '
                       r'the mask block \(16 px, model.block_size\); give e.g. 32'):
        reconstruct(model, photos[0], input_size=40)


def test_get_model_names_a_broken_config_and_a_misspelt_key(tmp_path):
    """tools/train.py's messages: mmengine's SyntaxError named '<unknown>', and a misspelt
    model key only the class that refused it."""
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')
    with pytest.raises(LaunchError, match=r'broken\.py, line 1: .* never closed'):
        get_model(str(broken))
    misspelt = tmp_path / 'misspelt.py'
    misspelt.write_text(f"_base_ = [{str(PRETRAIN_FILE)!r}]\nmodel = dict(mask_ratoi=0.5)\n")
    with pytest.raises(TypeError, match=r'model \(FastMIM\) sets mask_ratoi, which it does not '
                       r'take'):
        get_model(str(misspelt))


@pytest.mark.parametrize('options', [{'backbone.embed_dimz': 3},
                                     {'backbone': dict(embed_dimz=3)}])
def test_a_misspelt_model_option_is_named_as_given_to_get_model(options):
    """It blamed the config and told to remove the key from it with --cfg-options."""
    with pytest.raises(TypeError, match=r"model\.backbone \(VisionTransformer\) does not take "
                       r"embed_dimz, set by get_model's option 'backbone\.embed_dimz': .*did "
                       r"you mean 'embed_dim'"):
        get_model(PRETRAIN, **options)


def test_features_do_not_depend_on_how_images_are_given(photos):
    model = get_model(FINETUNE, **TINY_ARCH)
    features = extract_features(model, photos)
    assert features.shape == (3, 32) and torch.isfinite(features).all()
    arrays = load_images(photos)
    torch.testing.assert_close(extract_features(model, [Image.fromarray(a) for a in arrays]),
                               features)
    # One at a time as in a batch: nothing in eval mode mixes the images of a batch.
    singles = torch.cat([extract_features(model, array) for array in arrays])
    torch.testing.assert_close(singles, features, rtol=1e-4, atol=1e-5)


def test_reconstruct_draws_one_panel_per_image_with_a_seeded_mask(photos):
    model = get_model(PRETRAIN, **TINY_ARCH)
    state = torch.random.get_rng_state()
    panels = reconstruct(model, photos[:2], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # training's streams do not move
    assert len(panels) == 2 and panels[0].dtype == np.uint8 and panels[0].shape[2] == 3
    # 128 px, 16-px cells of 8 px: four 256-px wide panels side by side (input, masked, HOG x 2)
    assert panels[0].shape[1] > 4 * 256
    np.testing.assert_array_equal(reconstruct(model, photos[0], seed=3), panels[0])
    assert not np.array_equal(reconstruct(model, photos[0], seed=4), panels[0])


def test_images_that_cannot_be_used_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='image not found: .*missing.jpg'):
        load_images(tmp_path / 'missing.jpg')
    with pytest.raises(TypeError, match=r'\(H, W, 3\) uint8 RGB array'):
        load_images(np.zeros((8, 8), dtype=np.float32))
    classifier = get_model(FINETUNE, **TINY_ARCH)
    with pytest.raises(TypeError, match='ImageClassifier cannot reconstruct'):
        reconstruct(classifier, np.zeros((8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize('device, message', [
    ('gpu', r"device 'gpu' is not a torch device; expected e\.g\. cpu, cuda or cuda:1"),
    ('cuda:7', r"device 'cuda:7' was asked for, but torch sees \d CUDA device\(s\)")])
def test_a_device_that_does_not_exist_here_is_named_before_building(device, message):
    """torch's RuntimeError from model.to(device) used to reach the tools as a traceback."""
    if device == 'cuda:7' and torch.cuda.device_count() > 7:
        pytest.skip('this machine has a cuda:7')
    with pytest.raises(ValueError, match=message):
        get_model(PRETRAIN, **TINY_ARCH, device=device)


def test_a_checkpoint_of_another_model_is_summarised_with_its_backbone(checkpoint, tmp_path):
    """mmengine's strict loading used to list every key of both models in one paragraph."""
    path = tmp_path / 'swin.pth'
    torch.save(dict(state_dict=checkpoint[1],
                    meta=dict(geometry=dict(backbone=dict(type='SwinTransformer')))), path)
    with pytest.raises(CheckpointError) as error:
        get_model(PRETRAIN, path, **{'backbone.arch': dict(embed_dim=32, depth=3, num_heads=2)})
    message = str(error.value)
    assert 'missing keys (in the model, not in the checkpoint): 12\n' in message
    assert 'unexpected keys' not in message and 'shape mismatches' not in message
    assert message.endswith('the checkpoint was written by a SwinTransformer backbone; the '
                            'config builds a VisionTransformer: is it the config of this '
                            'checkpoint?')
    assert len(message.splitlines()) < 20


def test_a_checkpoint_of_another_kind_of_model_names_the_parts(checkpoint):
    """A pre-training checkpoint with the kNN config (whose model is the backbone alone):
    refused with its neck and mask token as unexpected keys, and no word of what to use."""
    with pytest.raises(CheckpointError, match=r"the checkpoint holds mask_token, neck, which the "
                       r"model of fastmim::knn/demo_vit_tiny_embedded_knn\.py \(backbone\) has "
                       r"not: a checkpoint of another kind of model\? Load it with the config "
                       r"that wrote it \(extract_features takes the backbone of any of them\)"):
        get_model('fastmim::knn/demo_vit_tiny_embedded_knn.py', checkpoint[0], **TINY_ARCH)


def test_a_reference_release_file_is_sent_to_its_converter(checkpoint, tmp_path):
    """Its 'model' and 'epoch' were listed as unexpected keys, as if of another model."""
    path = tmp_path / 'release.pth'
    torch.save(dict(model=checkpoint[1], epoch=99), path)
    with pytest.raises(CheckpointError, match=r"release\.pth holds its weights under 'model' "
                       r".*tools/convert/from_reference\.py .*release\.pth OUT --backbone "
                       r".*then load OUT$"):
        get_model(PRETRAIN, path, **TINY_ARCH)


def test_a_file_without_a_state_dict_is_named(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=r'list\.pth holds no state dict \(found a list\)'):
        get_model(PRETRAIN, path, **TINY_ARCH)


def test_a_folder_given_as_an_image_is_called_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match='image is a folder, not a file: '):
        load_images(tmp_path)


def test_configs_that_mmengine_cannot_read_are_named(tmp_path):
    """A misspelt package failed on mmengine's assertion; a checkpoint given as the config on
    an OSError that did not name it."""
    with pytest.raises(ValueError, match=r"'fastmin' is not a package whose configs mmengine "
                       r"reads; expected one of \[.*'fastmim'"):
        get_model('fastmin::fastmim/demo_vit_tiny_embedded.py')
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'')
    with pytest.raises(ValueError, match=r'config file .*epoch_1\.pth is not a '
                       r'\.py/\.json/\.yaml/\.yml file \(a checkpoint given as the config\? '):
        get_model(checkpoint)


def test_a_misspelt_packaged_config_leaves_no_temporary_file(tmp_path, monkeypatch):
    """mmengine's Config.fromstring left one .py file in the temporary folder per failure."""
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r'configs/fastmim/nope\.py'):
        get_model('fastmim::fastmim/nope.py')
    assert not list(tmp_path.iterdir())


def test_an_image_without_pixels_and_a_seed_that_is_no_int_are_named(photos):
    """A ZeroDivisionError in the resize, and torch's RuntimeError naming no argument."""
    model = get_model(PRETRAIN, **TINY_ARCH)
    with pytest.raises(ValueError, match=r'an image has no pixels: shape \(0, 5, 3\)'):
        extract_features(model, np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(TypeError, match="seed must be an int, got str 'a'"):
        reconstruct(model, photos[0], seed='a')


def test_an_empty_list_of_images_is_named():
    """It reached the data preprocessor and failed on mmengine's assertion on an empty batch."""
    model = get_model(FINETUNE, **TINY_ARCH)
    with pytest.raises(ValueError, match='no images given'):
        extract_features(model, [])


def test_a_path_is_decoded_upright_as_the_datasets_decode_it(tmp_path):
    """A phone photo stored on its side (EXIF orientation 6) came out sideways from a path,
    while the datasets turn it upright; mmcv's decoder is the independent reference."""
    import mmcv
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / 'portrait.png'
    Image.fromarray(pixels).save(path, exif=exif)
    [decoded] = load_images(path)
    expected = mmcv.imfrombytes(path.read_bytes(), backend='pillow', channel_order='rgb')
    assert decoded.shape == (50, 30, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_a_checkpoint_of_another_size_leads_with_both_sizes(checkpoint, tmp_path):
    """A ViT-tiny demo checkpoint given to a ViT-B config listed 28 lines of keys and shapes
    and never said the sizes, which fine-tuning's loader names in one line."""
    torch.manual_seed(0)
    model = get_model(PRETRAIN, **TINY_ARCH)
    path = tmp_path / 'tiny_with_meta.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(geometry=model.geometry())), path)
    with pytest.raises(CheckpointError) as error:
        get_model(PRETRAIN, path, **{'backbone.arch': dict(embed_dim=64, depth=3, num_heads=4)})
    first, *rest = str(error.value).splitlines()
    assert first == (
        f"{path} does not fit the model of {PRETRAIN}: the file's VisionTransformer has "
        "embed_dim 32, depth 2, num_heads 2, the model's embed_dim 64, depth 3, num_heads 4: "
        "give the model the file's arch {'embed_dim': 32, 'depth': 2, 'num_heads': 2}")
    assert len(rest) == 1 and 'differ in shape' in rest[0]


def test_init_weights_of_a_model_from_get_model_runs_outside_any_scope(checkpoint):
    """The fine-tuning configs' init_cfg type='FastMIMPretrained' is resolved by mmengine when
    init_weights runs: outside the fastmim scope (here mmengine's own, as in a process that
    set none) it was a KeyError of mmengine's registry."""
    path, saved = checkpoint
    torch.manual_seed(1)
    model = get_model(FINETUNE, None, **TINY_ARCH,
                      **{'backbone.img_size': 128, 'backbone.init_cfg.checkpoint': str(path)})
    with DefaultScope.overwrite_default_scope('mmengine'):
        model.init_weights()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, saved[f'backbone.{key}'], rtol=0, atol=0, msg=key)


def _classifier_checkpoint(tmp_path, num_classes=None):
    """A tiny fine-tuned classifier saved at 128 px (an 8 x 8 grid of patches)."""
    options = {'backbone.img_size': 128}
    if num_classes:
        options['head.num_classes'] = num_classes
    torch.manual_seed(0)
    state = get_model(FINETUNE, **TINY_ARCH, **options).state_dict()
    path = tmp_path / 'classifier_128.pth'
    torch.save(dict(state_dict=state, meta={}), path)
    return path, state


def test_a_checkpoint_of_another_grid_loads_with_its_pos_embed_resized(tmp_path):
    """The strict load compared shapes before the backbone's resize rule, refusing a file that
    FastMIMPretrained and tools/test.py load. Reference: torch's bicubic interpolation of the
    8 x 8 grid to 10 x 10 (the config's 160 px), the class token kept."""
    path, saved = _classifier_checkpoint(tmp_path)
    model = get_model(FINETUNE, path, **TINY_ARCH)
    table = saved['backbone.pos_embed']
    grid = table[:, 1:].reshape(1, 8, 8, 32).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(10, 10), mode='bicubic', align_corners=False)
    expected = torch.cat([table[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 100, 32)], 1)
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.head.fc.weight, saved['head.fc.weight'], rtol=0, atol=0)


def test_only_shapes_without_a_resize_rule_are_called_mismatches(tmp_path):
    path, _ = _classifier_checkpoint(tmp_path, num_classes=5)
    with pytest.raises(CheckpointError) as error:
        get_model(FINETUNE, path, **TINY_ARCH)
    message = str(error.value)
    assert 'shape mismatches that no resize rule transfers: 2\n' in message
    assert 'head.fc.weight: checkpoint (5, 32) vs model (39, 32)' in message
    assert 'pos_embed' not in message and 'missing keys' not in message


def test_features_of_a_model_in_train_mode_are_its_eval_features(photos):
    """A model in train() mode gave features randomised by drop path."""
    model = get_model(FINETUNE, **TINY_ARCH, **{'backbone.drop_path_rate': 0.5})
    expected = extract_features(model, photos[:2])
    model.train()
    first = extract_features(model, photos[:2])
    assert model.training and all(module.training for module in model.modules())
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(extract_features(model, photos[:2]), first, rtol=0, atol=0)
    model.backbone.eval()  # a mixed state comes back as it was too
    extract_features(model, photos[:2])
    assert model.training and not model.backbone.training


def test_a_config_given_for_the_model_is_sent_to_get_model(photos):
    """extract_features('configs/...py', images) failed with "'str' object has no attribute
    'backbone'"; reconstruct said the str had no decoder."""
    for function in (extract_features, reconstruct):
        with pytest.raises(TypeError, match=rf"{function.__name__} takes a model, got the str "
                           r"'fastmim::.*': pass get_model\(config, checkpoint\)"):
            function(PRETRAIN, photos[0])
    with pytest.raises(TypeError, match=r'extract_features takes a model, got a int: pass '
                       r'get_model\(config, checkpoint\)'):
        extract_features(3, photos[0])


def test_a_tensor_given_as_images_names_the_accepted_inputs():
    """A (3, 64, 64) tensor was iterated as a list of three images, refused as a [64, 64]."""
    model = get_model(FINETUNE, **TINY_ARCH)
    for tensor in (torch.rand(3, 64, 64), [torch.rand(3, 64, 64)]):
        with pytest.raises(TypeError, match=r'got a torch tensor of shape \(3, 64, 64\); images '
                           r'are file paths, PIL images or \(H, W, 3\) uint8 RGB arrays.*'
                           r'model\.backbone'):
            extract_features(model, tensor)


def test_a_checkpoint_that_is_no_path_is_named():
    """get_model(config, 123) failed in os.fspath with a TypeError naming no argument."""
    with pytest.raises(TypeError, match=r'checkpoint must be a file path \(str or os\.PathLike\) '
                       r'or None, got int 123'):
        get_model(PRETRAIN, 123)


def test_a_config_dict_is_taken_as_a_config(checkpoint):
    """get_model(dict(model=...)) said 'config file not found: {...}'."""
    from mmengine.config import Config
    config = Config.fromfile(str(PRETRAIN_FILE)).to_dict()
    model = get_model(config, checkpoint[0], **TINY_ARCH)
    assert len(model.backbone.blocks) == 2 and isinstance(model.cfg, Config)
    with pytest.raises(ValueError, match=r"the config given has no 'model'"):
        get_model(dict(work_dir='x'))
    with pytest.raises(TypeError, match=r'config must be a config file path, .*a Config or a '
                       r'dict, got list'):
        get_model([config])


def test_an_input_size_the_backbone_does_not_take_names_input_size(photos):
    """The ViT's own message named the patch size, not the argument that set the size."""
    model = get_model(FINETUNE, **TINY_ARCH)
    with pytest.raises(ValueError, match=r"input_size 100 is not a multiple of the backbone's "
                       r'stride \(16 px, VisionTransformer\); give e\.g\. 96 or 112'):
        extract_features(model, photos[0], input_size=100)
