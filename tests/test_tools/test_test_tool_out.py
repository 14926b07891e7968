"""tools/test.py --out that names a folder to be made."""
import zipfile
from pathlib import Path

import pytest

TEST_TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'test.py'


def test_an_out_ending_in_a_slash_is_refused_before_the_evaluation(load_script, tmp_path):
    """``--out results/`` (no such folder yet) passed the check and failed after the whole
    evaluation: 'could not write results/: Not a directory'."""
    checkpoint = tmp_path / 'model.pth'
    with zipfile.ZipFile(checkpoint, 'w') as archive:  # a whole archive, never loaded
        archive.writestr('note', 'not loaded: --out is checked first')
    config = TEST_TOOL.parents[1] / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
    with pytest.raises(IsADirectoryError, match='names a folder; expected a file name'):
        load_script(TEST_TOOL).main([str(config), str(checkpoint), '--out',
                                     f'{tmp_path}/results/', '--work-dir', str(tmp_path / 'w')])
    assert not (tmp_path / 'w').exists()
