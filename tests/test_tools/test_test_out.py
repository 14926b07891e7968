"""tools/test.py --out: the metrics JSON is replaced whole or not at all."""
import json
import os
from pathlib import Path

import pytest

from fastmim.engine.checkpoint import CheckpointError

TEST_TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'test.py'


def test_out_holds_the_metrics_as_floats(load_script, tmp_path):
    out = tmp_path / 'new' / 'metrics.json'
    load_script(TEST_TOOL).write_metrics(str(out), {'accuracy/top1': 71.5, 'loss': 2})
    assert json.loads(out.read_text()) == {'accuracy/top1': 71.5, 'loss': 2.0}
    assert os.listdir(out.parent) == ['metrics.json']  # no temporary file left behind


@pytest.mark.parametrize('failure', ['unserialisable metric', 'disk full while writing'])
def test_a_failed_write_leaves_the_earlier_file(load_script, tmp_path, monkeypatch, failure):
    out = tmp_path / 'metrics.json'
    out.write_text('{"accuracy/top1": 70.0}')
    metrics = {'accuracy/top1': 71.5}
    if failure == 'unserialisable metric':
        metrics['per_class'] = [1.0, 2.0]
        expected = TypeError
    else:
        def fsync(fd):
            raise OSError(28, 'No space left on device')
        monkeypatch.setattr(os, 'fsync', fsync)
        expected = CheckpointError
    with pytest.raises(expected):
        load_script(TEST_TOOL).write_metrics(str(out), metrics)
    assert out.read_text() == '{"accuracy/top1": 70.0}'
    assert os.listdir(tmp_path) == ['metrics.json']
