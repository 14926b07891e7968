"""tools/test.py --out: the metrics JSON is replaced whole or not at all."""
import json
import os
import zipfile
from pathlib import Path

import pytest

from fastmim.errors import CheckpointError

TEST_TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'test.py'


def test_out_holds_the_metrics_as_floats(load_script, tmp_path):
    out = tmp_path / 'new' / 'metrics.json'
    load_script(TEST_TOOL).write_metrics(str(out), {'accuracy/top1': 71.5, 'loss': 2})
    assert json.loads(out.read_text()) == {'accuracy/top1': 71.5, 'loss': 2.0}
    assert os.listdir(out.parent) == ['metrics.json']  # no temporary file left behind


@pytest.mark.parametrize('main_process', [True, False])
def test_only_the_first_process_writes_the_metrics(load_script, tmp_path, monkeypatch,
                                                   main_process):
    """dist_test.sh: every process wrote the same file."""
    import mmengine.dist
    monkeypatch.setattr(mmengine.dist, 'is_main_process', lambda: main_process)
    out = tmp_path / 'metrics.json'
    load_script(TEST_TOOL).write_metrics_once(str(out), {'accuracy/top1': 71.5})
    assert out.exists() == main_process


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


@pytest.mark.parametrize('out', ['afile/metrics.json', 'afolder'])
def test_an_out_that_cannot_be_written_is_refused_before_the_evaluation(load_script, tmp_path,
                                                                         out):
    """It was checked only when the metrics were written, after the whole test run."""
    (tmp_path / 'afile').write_text('a file')
    (tmp_path / 'afolder').mkdir()
    checkpoint = tmp_path / 'model.pth'
    with zipfile.ZipFile(checkpoint, 'w') as archive:  # a whole archive, never loaded
        archive.writestr('note', 'not loaded: --out is checked first')
    config = TEST_TOOL.parents[1] / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
    expected = {'afile/metrics.json': f'--out {tmp_path}/afile/metrics.json: {tmp_path}/afile '
                                      f'is a file, not a folder',
                'afolder': f'--out {tmp_path}/afolder is a folder; expected a file name'}[out]
    with pytest.raises(OSError, match=expected):
        load_script(TEST_TOOL).main([str(config), str(checkpoint), '--out', str(tmp_path / out)])


def test_out_in_a_folder_to_be_made_is_accepted(tmp_path):
    from fastmim.cli import check_output_file
    check_output_file(str(tmp_path / 'new' / 'metrics.json'), folders_made=True)
    with pytest.raises(FileNotFoundError, match='--out folder does not exist'):
        check_output_file(str(tmp_path / 'new' / 'metrics.json'))


@pytest.mark.parametrize('named', ['LocalVisBackend', 'mmengine.LocalVisBackend', 'class'])
def test_show_dir_points_the_configs_own_local_backend_at_the_folder(load_script, tmp_path,
                                                                     named):
    """--show-dir with a hook that draws through the visualizer (mmseg's): the config's local
    backend, however it is named, draws into the folder. A backend typed
    'mmengine.LocalVisBackend' (or the class) was not recognised, and a second one was added,
    which drew every image twice."""
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.visualization import LocalVisBackend, TensorboardVisBackend
    kind = LocalVisBackend if named == 'class' else named
    cfg = Config(dict(default_hooks=dict(visualization=dict(type=Hook)),
                      visualizer=dict(type='Visualizer', vis_backends=[
                          dict(type=kind), dict(type=TensorboardVisBackend)])))
    load_script(TEST_TOOL).draw_predictions_into(cfg, str(tmp_path / 'drawn'), 'config.py')
    backends = cfg.visualizer.vis_backends
    assert [backend['type'] for backend in backends] == [kind, TensorboardVisBackend]
    assert backends[0]['img_save_dir'] == str(tmp_path / 'drawn')
    assert 'img_save_dir' not in backends[1]


@pytest.mark.parametrize('name', ['results.pkl', 'results.pickle'])
def test_an_out_named_as_mmdets_predictions_pickle_is_refused_before_the_evaluation(
        load_script, tmp_path, name):
    """``--out results.pkl`` (mmdet's test.py dumps its predictions there) was given the metrics
    as JSON under a pickle's name, after the whole evaluation."""
    checkpoint = tmp_path / 'model.pth'
    with zipfile.ZipFile(checkpoint, 'w') as archive:  # a whole archive, never loaded
        archive.writestr('note', 'not loaded: --out is checked first')
    config = TEST_TOOL.parents[1] / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
    with pytest.raises(ValueError, match=f'--out {tmp_path / name}: .*metrics as JSON.*'
                                         r'\.json'):
        load_script(TEST_TOOL).main([str(config), str(checkpoint), '--out', str(tmp_path / name)])
    assert not (tmp_path / name).exists()
