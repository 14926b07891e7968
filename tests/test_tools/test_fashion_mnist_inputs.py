"""tools/experiments/run_fashion_mnist{,_dense}.py: inputs that cannot work are refused in one
line before the study (tens of minutes of training) starts."""
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'experiments'


@pytest.fixture(scope='module')
def study(load_script):
    sys.path.insert(0, str(TOOLS))  # the dense runner imports the study by name, as it runs
    return load_script(TOOLS / 'run_fashion_mnist.py')


@pytest.fixture(scope='module')
def dense(study, load_script):
    return load_script(TOOLS / 'run_fashion_mnist_dense.py')


@pytest.fixture
def nothing_runs(study, monkeypatch):
    def fetch():
        raise AssertionError('the study started before its inputs were checked')
    import fastmim.datasets
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', fetch)


def test_a_work_dir_under_a_file_is_named(tmp_path, study, dense, nothing_runs):
    """os.makedirs ended in a NotADirectoryError traceback."""
    (tmp_path / 'notes.txt').write_text('a file')
    for tool in (study, dense):
        with pytest.raises(SystemExit, match=r'--work-dir .*notes\.txt/runs: .*notes\.txt is '
                           'a file, not a folder'):
            tool.main(['--work-dir', str(tmp_path / 'notes.txt' / 'runs'), '--jobs', '1'])


@pytest.mark.parametrize('doc, message', [
    ('missing/results.md', r'the folder of .*results\.md does not exist'),
    ('a_folder', r'a_folder is a folder; expected the markdown file'),
    ('plain.md', r'plain\.md lacks the markers <!-- fashion-mnist-results:begin -->')])
def test_a_results_doc_that_cannot_take_the_table_is_named_first(tmp_path, study, nothing_runs,
                                                                 doc, message):
    """write_doc found these only after the whole study."""
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'plain.md').write_text('# notes without markers\n')
    with pytest.raises(SystemExit, match=message):
        study.main(['--work-dir', str(tmp_path / 'runs'), '--doc', str(tmp_path / doc),
                    '--jobs', '1'])
    assert not (tmp_path / 'runs').exists()


def test_the_dense_runner_checks_its_own_markers(tmp_path, dense, nothing_runs):
    doc = tmp_path / 'plain.md'
    doc.write_text('<!-- fashion-mnist-results:begin -->\n<!-- fashion-mnist-results:end -->\n')
    with pytest.raises(SystemExit, match=r'lacks the markers <!-- fashion-mnist-dense-results'):
        dense.main(['--work-dir', str(tmp_path / 'runs'), '--docs', str(doc), '--jobs', '1'])
