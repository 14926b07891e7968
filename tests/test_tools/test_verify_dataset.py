"""tools/misc/verify_dataset.py: every file of a config's dataset decoded up front, by the rules
training loads it with, on a folder of real photos (scikit-image's) and broken files; the
files it names are checked against PIL's own decoder and the reasons against the warnings of
``LoadImageRGB``."""
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fastmim.datasets.transforms import LoadImageRGB, UnreadableImageWarning

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'misc' / 'verify_dataset.py'
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'


@pytest.fixture(scope='module')
def photos():
    """Real photos, shrunk to keep decoding fast."""
    def small(array):
        image = Image.fromarray(array)
        return image.resize((image.width // 8, image.height // 8))

    return dict(astronaut=small(skdata.astronaut()), coffee=small(skdata.coffee()),
                chelsea=small(skdata.chelsea()), camera=small(skdata.camera()))


def save(image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return str(path)


def broken_files(folder, photos):
    """The four ways a copied dataset breaks, among the files of ``folder``: {path: kind}."""
    truncated = folder / 'truncated.jpg'
    jpeg = Path(save(photos['coffee'], folder / 'full.jpg', quality=95)).read_bytes()
    (folder / 'full.jpg').unlink()
    truncated.write_bytes(jpeg[:len(jpeg) // 2])
    (folder / 'empty.jpg').write_bytes(b'')
    (folder / 'notes.jpg').write_text('not an image, whatever its name says\n')
    (folder / 'dangling.jpg').symlink_to(folder / 'gone.jpg')
    return {str(truncated): 'truncated', str(folder / 'empty.jpg'): 'empty',
            str(folder / 'notes.jpg'): 'text', str(folder / 'dangling.jpg'): 'symlink'}


@pytest.fixture
def dataset_root(tmp_path, photos):
    """<root>/train/ with real photos (JPEG, PNG, in a sub-folder) and the four broken files;
    returns (root, good paths, {broken path: kind})."""
    train = tmp_path / 'data' / 'train'
    good = [save(photos['astronaut'], train / 'astronaut.jpg', quality=90),
            save(photos['chelsea'], train / 'cats' / 'chelsea.JPEG', quality=90),
            save(photos['camera'], train / 'camera.png')]
    return tmp_path / 'data', good, broken_files(train, photos)


def write_config(path, root, val=None):
    """A config whose training data is an ImageFolder of ``root``/train, and whose evaluation
    data (``val``: a folder name under ``root``) an ImageFolder in test mode."""
    loader = ("dict(batch_size=2, num_workers=0, dataset=dict(type='ImageFolder', "
              "data_root={root!r}, data_prefix={prefix!r}, {extra}"
              "pipeline=[dict(type='LoadImageRGB'), dict(type='PackInputs')]))")
    text = "default_scope = 'fastmim'\n"
    text += 'train_dataloader = ' + loader.format(root=str(root), prefix='train', extra='') + '\n'
    if val is not None:
        text += 'val_dataloader = ' + loader.format(root=str(root), prefix=val,
                                                    extra='test_mode=True, ') + '\n'
    path.write_text(text)
    return str(path)


@pytest.fixture
def verify(load_script):
    return load_script(TOOL)


def run_tool(*args):
    """The tool as a user runs it, with this checkout's fastmim."""
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)},
                          timeout=120)


def read_out(path):
    """--out's lines as {path: reason}."""
    lines = Path(path).read_text().splitlines()
    return dict(line.split('\t', 1) for line in lines)


def pil_refuses(path):
    """The independent reference: PIL's full decode of the file raises."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception:  # noqa: BLE001  whatever PIL raises is a refusal here
        return True
    return False


def loader_warning(path):
    """What LoadImageRGB's warning says of ``path`` when training meets it."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert LoadImageRGB()(dict(img_path=path)) is None
    messages = [str(w.message) for w in record if issubclass(w.category, UnreadableImageWarning)]
    assert len(messages) == 1, messages
    return messages[0]


def test_it_names_exactly_the_broken_files_with_the_loaders_reasons(
        verify, dataset_root, tmp_path, capsys):
    root, good, broken = dataset_root
    config = write_config(tmp_path / 'folder.py', root)
    out = tmp_path / 'reports' / 'unreadable.tsv'
    assert verify.main([config, '--num-process', '1', '--out', str(out)]) == 1
    found = read_out(out)
    assert set(found) == set(broken)
    # PIL's decoder, asked on its own, refuses exactly these and decodes the others
    assert {path for path in good + list(broken) if pil_refuses(path)} == set(broken)
    for path, reason in found.items():
        assert f'({reason})' in loader_warning(path)  # the words training would warn with
    reasons = {broken[path]: reason for path, reason in found.items()}
    assert 'truncated' in reasons['truncated']
    assert reasons['empty'] == 'OSError: the file is empty (0 bytes)'
    assert 'cannot identify image file' in reasons['text']
    assert "a symlink to '" in reasons['symlink'] and 'which does not exist' in reasons['symlink']
    printed = capsys.readouterr().out.splitlines()
    summary = [line for line in printed if line.startswith('train: ')]
    assert len(summary) == 1
    assert re.match(r"train: ImageFolder '.*train': 7 files checked, 4 unreadable, \d+\.\d s$",
                    summary[0]), summary[0]
    assert [line.strip() for line in printed if line.startswith('  ')] == [
        f'{path}: {found[path]}' for path in sorted(broken)]  # the dataset's (sorted) order


def test_two_processes_find_what_one_finds(verify, dataset_root, tmp_path, capsys):
    root, _, _ = dataset_root
    config = write_config(tmp_path / 'folder.py', root)
    results = []
    for processes in ('1', '2'):
        out = tmp_path / f'unreadable_{processes}.tsv'
        status = verify.main([config, '--num-process', processes, '--out', str(out)])
        printed = re.sub(r'\d+\.\d s\n', 'TIME\n', capsys.readouterr().out)
        results.append((status, printed, out.read_text()))
    assert results[0] == results[1]


def test_a_readable_folder_passes_and_out_is_empty(verify, tmp_path, photos, capsys):
    root = tmp_path / 'data'
    save(photos['astronaut'], root / 'train' / 'astronaut.jpg')
    save(photos['coffee'], root / 'train' / 'coffee.png')
    config = write_config(tmp_path / 'folder.py', root)
    out = tmp_path / 'unreadable.tsv'
    out.write_text('from an earlier check\n')
    assert verify.main([config, '--out', str(out)]) == 0
    assert out.read_text() == ''
    assert ': 2 files checked, 0 unreadable, ' in capsys.readouterr().out


def test_float_images_and_decompression_bombs_are_refused_as_training_refuses_them(
        verify, tmp_path, photos, monkeypatch):
    root = tmp_path / 'data'
    camera = np.asarray(photos['camera'].resize((16, 16)), dtype=np.float32) / 255
    floating = save(Image.fromarray(camera), root / 'train' / 'float.tif')
    big = save(photos['astronaut'], root / 'train' / 'big.png')
    save(photos['coffee'].resize((8, 8)), root / 'train' / 'small.png')
    # PIL refuses an image beyond twice its limit; the limit is lowered instead of writing one
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 64 * 64 // 2 - 1)
    config = write_config(tmp_path / 'folder.py', root)
    out = tmp_path / 'unreadable.tsv'
    assert verify.main([config, '--num-process', '2', '--out', str(out)]) == 1
    found = read_out(out)
    assert set(found) == {floating, big}
    assert 'floating-point' in found[floating] and 'DecompressionBombError' in found[big]
    for path, reason in found.items():
        assert f'({reason})' in loader_warning(path)


def test_splits_are_chosen_by_name(verify, dataset_root, tmp_path, photos, capsys):
    root, _, broken = dataset_root
    save(photos['chelsea'], root / 'val' / 'chelsea.jpg')
    (root / 'val' / 'empty.jpg').write_bytes(b'')
    config = write_config(tmp_path / 'folder.py', root, val='val')
    out = tmp_path / 'unreadable.tsv'
    assert verify.main([config, '--split', 'val', '--out', str(out)]) == 1
    assert list(read_out(out)) == [str(root / 'val' / 'empty.jpg')]
    assert verify.main([config, '--split', 'all', '--out', str(out)]) == 1
    assert list(read_out(out)) == sorted(broken) + [str(root / 'val' / 'empty.jpg')]
    printed = capsys.readouterr().out
    assert ': 2 files checked, 1 unreadable' in printed and 'test: ' in printed


def test_an_embedded_dataset_has_no_files_to_verify(verify, capsys):
    assert verify.main([str(DEMO), '--cfg-options', 'train_dataloader.dataset.num_samples=4']) == 0
    assert re.search(r'^train: EmbeddedPhotos: no image files to verify', capsys.readouterr().out,
                     re.MULTILINE)


@pytest.mark.parametrize('make, message', [
    (lambda root: (root / 'train').mkdir(parents=True), 'ImageFolder: no images with extensions'),
    (lambda root: root.mkdir(), 'ImageFolder: image folder'),
])
def test_a_dataset_that_cannot_be_built_is_a_usage_error(make, message, verify, tmp_path,
                                                           capsys):
    root = tmp_path / 'data'
    make(root)
    config = write_config(tmp_path / 'folder.py', root)
    with pytest.raises(SystemExit) as stop:
        verify.run([config])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith('error: ')
    with pytest.raises(SystemExit) as stop:
        verify.run([config, '--split', 'test'])
    assert stop.value.code == 2
    assert 'test_dataloader' in capsys.readouterr().err


def test_the_command_exits_1_on_broken_files(verify, dataset_root, tmp_path, capsys):
    root, _, broken = dataset_root
    config = write_config(tmp_path / 'folder.py', root)
    with pytest.raises(SystemExit) as stop:
        verify.run([config, '--num-process', '2'])
    assert stop.value.code == 1
    printed = capsys.readouterr().out
    assert all(f'  {path}: ' in printed for path in broken)


def test_the_script_exits_2_on_a_missing_config(tmp_path):
    """Refused before fastmim is imported (tools/early_checks.py), with status 2 here."""
    result = run_tool(tmp_path / 'no_such_config.py')
    assert result.returncode == 2
    assert result.stderr.startswith('error: ') and 'no_such_config.py' in result.stderr


def test_the_log_streams_are_put_back(verify, capsys):
    """mmengine's console log goes to stderr while the tool runs (stdout holds the report), then
    back: left on this test's capture, closed once it ends, it failed the next tool's start."""
    import logging

    from mmengine.logging import MMLogger
    handlers = [handler for handler in MMLogger.get_current_instance().handlers
                if type(handler) is logging.StreamHandler]
    streams = [handler.stream for handler in handlers]
    assert verify.main([str(DEMO)]) == 0
    assert [handler.stream for handler in handlers] == streams
