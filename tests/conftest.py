"""Shared fixtures.

Test isolation for mmengine's process-wide default scope: a Runner makes its config's
``default_scope`` (``mmdet``, ``mmseg``, ...) the current scope of the whole process; registry
builds by plain name in later tests would then look in that library's registries. Every test
starts in fastmim's scope, as a user's fastmim process does.
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope


@pytest.fixture(autouse=True)
def fastmim_default_scope():
    init_default_scope('fastmim')


@pytest.fixture(scope='session')
def load_script():
    """``load_script(path)``: the module of a script that is no package (a tool, a study
    runner), executed from its file; the tests run with ``--import-mode=importlib``, which puts
    no folder of the repository on ``sys.path``."""
    def load(path):
        spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope='module')
def one_thread():
    """Tiny models run ~100x faster on one thread than on two busy cores. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def load_config_log():
    """``load_config_log(config, cfg_options=None)``: what ``fastmim.engine.launch.load_config``
    logs (its warnings) while it loads ``config``."""
    from unittest.mock import patch

    from mmengine.logging import MMLogger

    from fastmim.engine.launch import load_config

    def load(config, cfg_options=None):
        logged = []
        with patch.object(MMLogger.get_current_instance(), 'log',
                          lambda level, message: logged.append(message)):
            load_config(str(config), cfg_options)
        return logged
    return load
