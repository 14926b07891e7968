"""timm's pretrained weights (``TimmBackbone(pretrained=True)``, ``checkpoint_path``) load
weights-only from every source timm takes them from, fully only when trusted.

No network: each source's download is faked (torch.hub's ``download_url_to_file`` for a URL,
timm's ``hf_hub_download`` for the Hugging Face hub) to hand over a file written here. The
pickled files are built to run code when fully unpickled, which the first test shows."""
import shutil
from collections import OrderedDict

import pytest
import timm
import timm.models._hub as timm_hub
import torch
import torch.hub
from safetensors.torch import save_file

import fastmim  # noqa: F401  installs the safe checkpoint I/O
from fastmim.engine import checkpoint
from fastmim.engine.checkpoint import trust_checkpoint
from fastmim.errors import CheckpointError
from fastmim.models.backbones import TimmBackbone

MODEL = 'test_resnet'  # timm's tiny ResNet with published weights (hf-hub timm/test_resnet...)
URL = 'https://example.com/timm/test_resnet_weights.pth'


class RunsCode:
    """Unpickled fully, runs ``code``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code, )


class TypeErrorForWeightsOnly:
    """Pickled as an ``OrderedDict`` with the state ``(None, {'x': 1})``: full unpickling sets
    the attribute ``x``; the weights-only unpickler passes the whole tuple to
    ``__dict__.update`` and raises ``TypeError``, which timm's URL source answers by loading
    the file again with full unpickling."""

    def __reduce__(self):
        return OrderedDict, (), (None, {'x': 1})


class PickledStateDict(dict):
    """A state dict in a class of its own: weights-only loading refuses the file, a trusted
    one loads."""


@pytest.fixture(autouse=True)
def nothing_trusted(monkeypatch):
    monkeypatch.setattr(checkpoint, '_TRUSTED_CHECKPOINTS', set())


@pytest.fixture
def marker(tmp_path):
    return tmp_path / 'the_file_ran_code'


def code_payload(path, marker, type_error_first):
    """A file that creates ``marker`` when fully unpickled; with ``type_error_first`` the
    weights-only unpickler stops at a ``TypeError`` before reaching the code, otherwise at the
    refused global ``exec``."""
    payload = {'run': RunsCode(f'open({str(marker)!r}, "w").close()')}
    if type_error_first:
        payload = {'type_error': TypeErrorForWeightsOnly(), **payload}
    torch.save(payload, path)
    return path


def test_the_payloads_run_code_when_fully_unpickled(tmp_path, marker):
    """What the refusals below guard against: with full unpickling the files create the
    marker. The second stops the weights-only unpickler with a TypeError."""
    for type_error_first in (False, True):
        path = code_payload(tmp_path / f'payload{type_error_first}.pth', marker,
                            type_error_first)
        if type_error_first:
            with pytest.raises(TypeError):
                torch.load(path, weights_only=True)
        torch.load(path, weights_only=False)
        assert marker.exists()
        marker.unlink()


def serve(source, served, tmp_path, monkeypatch):
    """The ``TimmBackbone`` arguments that make timm take its weights from ``source``, faked
    to hand over the file ``served``; and the path the errors name (the URL's cached copy)."""
    if source == 'url':
        monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
        monkeypatch.setattr(torch.hub, 'download_url_to_file',
                            lambda url, dst, *args, **kwargs: shutil.copyfile(served, dst))
        arguments = dict(pretrained=True, pretrained_cfg_overlay=dict(url=URL, hf_hub_id=None))
        return arguments, tmp_path / 'hub' / 'checkpoints' / 'test_resnet_weights.pth'
    if source == 'hf-hub':
        hub_file = 'model.safetensors' if served.suffix == '.safetensors' else 'pytorch_model.bin'

        def hf_hub_download(repo_id, filename, *args, **kwargs):
            if filename != hub_file:
                raise timm_hub.EntryNotFoundError(f'{repo_id} has no {filename}')
            return str(served)
        monkeypatch.setattr(timm_hub, 'hf_hub_download', hf_hub_download)
        return dict(pretrained=True), served
    if source == 'local-dir':
        folder = tmp_path / 'local_dir'
        folder.mkdir()
        shutil.copyfile(served, folder / 'pytorch_model.bin')
        overlay = dict(source='local-dir', file=str(folder))
        return dict(pretrained=True, pretrained_cfg_overlay=overlay), folder / 'pytorch_model.bin'
    assert source == 'checkpoint_path'
    return dict(checkpoint_path=str(served)), served


@pytest.mark.parametrize('type_error_first', [False, True], ids=['refused_global', 'type_error'])
@pytest.mark.parametrize('source', ['url', 'hf-hub', 'local-dir', 'checkpoint_path'])
def test_pickled_code_is_refused_from_every_source(source, type_error_first, tmp_path,
                                                   monkeypatch, marker):
    """Unguarded, timm 1.0.31's URL source runs the type_error file's code (its retry after a
    TypeError uses torch.hub's default, full unpickling); the other sources refuse both files
    with timm's own RuntimeError, which for the type_error file says that this PyTorch does
    not support weights_only."""
    served = code_payload(tmp_path / 'served.pth', marker, type_error_first)
    arguments, named = serve(source, served, tmp_path, monkeypatch)
    with pytest.raises(CheckpointError) as refused:
        TimmBackbone(MODEL, **arguments)
    assert not marker.exists()
    assert torch.load is torch.serialization.load  # the guard's loader is gone after timm
    message = str(refused.value)
    assert message.startswith(f"{named} (timm's pretrained weights of {MODEL}) ")
    if type_error_first:
        assert 'is not a readable checkpoint' in message
        assert message.endswith(f'--trust-checkpoint {named})')
    else:  # the code is named, and trusting the file is not offered
        assert 'would call exec when loaded: a code-execution payload' in message
        assert '--trust-checkpoint' not in message
    assert '\n' not in message


def published_weights(seed=0):
    """The full timm model's weights, drawn afresh (the backbone's own initialisation differs)."""
    generator = torch.Generator().manual_seed(seed)
    state = timm.create_model(MODEL).state_dict()
    return {name: torch.randn(value.shape, generator=generator) if value.is_floating_point()
            else value for name, value in state.items()}


def assert_backbone_holds(backbone, weights):
    """The pooled backbone is timm's model without its classifier (``fc``)."""
    loaded = backbone.model.state_dict()
    assert set(loaded) == {name for name in weights if not name.startswith('fc.')}
    for name, value in loaded.items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)


@pytest.mark.parametrize('file_name', ['model.safetensors', 'pytorch_model.bin'])
def test_published_weights_load_from_the_hub(file_name, tmp_path, monkeypatch):
    weights = published_weights()
    served = tmp_path / file_name
    if file_name.endswith('.safetensors'):
        save_file(weights, served)
    else:
        torch.save(weights, served)
    arguments, _ = serve('hf-hub', served, tmp_path, monkeypatch)
    assert_backbone_holds(TimmBackbone(MODEL, features_only=False, **arguments), weights)


def test_a_trusted_file_is_unpickled_fully(tmp_path, monkeypatch):
    """Trusted by the path of its downloaded copy, which the refusal names."""
    weights = published_weights(seed=1)
    served = tmp_path / 'served.pth'
    torch.save(PickledStateDict(weights), served)
    arguments, cached_copy = serve('url', served, tmp_path, monkeypatch)
    with pytest.raises(CheckpointError, match='PickledStateDict') as refused:
        TimmBackbone(MODEL, features_only=False, **arguments)
    assert str(refused.value).endswith(f'--trust-checkpoint {cached_copy})')

    trust_checkpoint(str(cached_copy))
    assert_backbone_holds(TimmBackbone(MODEL, features_only=False, **arguments), weights)


def test_installing_again_wraps_timm_once():
    from timm.models import _builder
    guarded = _builder.load_pretrained
    checkpoint.install_timm_pretrained_loading()
    assert _builder.load_pretrained is guarded and guarded.reads_weights_only
