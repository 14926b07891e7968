"""Fixtures of the downstream project tests: tiny real datasets, written once per session.

``downstream_data.py`` sits next to this file; pytest runs with ``--import-mode=importlib``
(nothing is added to ``sys.path``, and site-packages may hold an unrelated ``tests`` package),
so it is loaded from its path.
"""
import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

DATA_MODULE = Path(__file__).with_name('downstream_data.py')


def load_downstream_data():
    spec = importlib.util.spec_from_file_location('fastmim_tests_downstream_data', DATA_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def downstream():
    """The data builders and config overrides of ``downstream_data.py``."""
    return load_downstream_data()


@pytest.fixture(scope='session')
def coco_instances(downstream, tmp_path_factory):
    """COCO-format instance segmentation data: ``{data_root, img_prefix, *_ann_file}``."""
    return downstream.write_coco_instances(tmp_path_factory.mktemp('coco_instances'))


@pytest.fixture(scope='session')
def ade20k_semantic(downstream, tmp_path_factory):
    """ADE20K-layout semantic segmentation data: its ``data_root``."""
    return downstream.write_ade20k_layout(tmp_path_factory.mktemp('ade20k_semantic'))


@pytest.fixture
def opens_by_path(monkeypatch):
    """How often each file is opened by name with PIL from now on in the test (mmcv decodes
    images and label maps from bytes, never by name: what is counted is the datasets' checks
    reading the files themselves)."""
    opened = Counter()
    open_image = Image.open

    def counting_open(fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):
            opened[str(fp)] += 1
        return open_image(fp, *args, **kwargs)

    monkeypatch.setattr(Image, 'open', counting_open)
    return opened
