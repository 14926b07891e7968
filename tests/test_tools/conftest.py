"""The module of tools/train.py, for the tests that fold its flags into configs."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def train(load_script):
    return load_script(ROOT / 'tools' / 'train.py')
