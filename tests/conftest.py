"""Test isolation for mmengine's process-wide default scope.

A Runner makes its config's ``default_scope`` (``mmdet``, ``mmseg``, ...) the current scope of the
whole process; registry builds by plain name in later tests would then look in that library's
registries. Every test starts in fastmim's scope, as a user's fastmim process does.
"""
import pytest
from mmengine.registry import init_default_scope


@pytest.fixture(autouse=True)
def fastmim_default_scope():
    init_default_scope('fastmim')
