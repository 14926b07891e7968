"""Checks that every backbone's tests make, written once so that each backbone is held to the
same property. They are fixtures (the tests run with ``--import-mode=importlib``, which puts no
test folder on ``sys.path``), each returning its check function."""
import pytest
import torch


def _gradient_reaches_every_parameter(model, images):
    """Back-propagate from every output of ``model`` (put in training mode) on ``images`` and
    fail naming the parameters that get no gradient or an all-zero one; returns the outputs."""
    outputs = model.train()(images)
    sum(output.square().mean() for output in outputs).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    return outputs


def _drop_path_is_applied_in_training_only(model, images):
    """``model`` (in eval mode, built with a drop-path rate) gives the same first output twice;
    in training mode two seeds give different ones."""
    with torch.no_grad():
        assert torch.equal(model(images)[0], model(images)[0])
        model.train()
        torch.manual_seed(1)
        first = model(images)[0]
        torch.manual_seed(2)
        second = model(images)[0]
    assert not torch.allclose(first, second)


def _init_weights_keeps_weights(model):
    """mmengine's runner calls ``init_weights()`` on every module after building (and after a
    parent has loaded weights): without an ``init_cfg`` it must change nothing."""
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.init_weights()
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


@pytest.fixture
def gradient_reaches_every_parameter():
    return _gradient_reaches_every_parameter


@pytest.fixture
def drop_path_is_applied_in_training_only():
    return _drop_path_is_applied_in_training_only


@pytest.fixture
def init_weights_keeps_weights():
    return _init_weights_keeps_weights
