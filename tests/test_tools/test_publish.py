"""tools/convert/publish.py: a training checkpoint -> a file to share, named with its hash.

The input is a real checkpoint: one epoch (2 iterations) of the fine-tuning demo, shrunk to a
2-block, 32-wide ViT at 32 px, so it holds what every run's checkpoint holds (optimiser,
schedulers, message hub, the run's meta)."""
import hashlib
import re
from pathlib import Path

import pytest
import torch

from fastmim.errors import CheckpointError

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = Path(__file__).resolve().parents[2]
# Added to the shrunk fine-tuning demo (tiny_demo.finetuning): one epoch of 2 iterations.
ONE_EPOCH = """
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(**loader, dataset=dict(num_samples=4, pipeline=train_pipeline))
val_dataloader = dict(**loader, dataset=dict(num_samples=2, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
                        convert_to_iter_based=True)]
"""


@pytest.fixture(scope='module')
def trained(tmp_path_factory, load_script, tiny_demo):
    """``(config, checkpoint)`` of the tiny fine-tuning after one epoch."""
    folder = tmp_path_factory.mktemp('tiny_ft')
    config = folder / 'tiny_ft.py'
    config.write_text(tiny_demo.finetuning + ONE_EPOCH)
    load_script(ROOT / 'tools' / 'train.py').main(
        [str(config), '--work-dir', str(folder / 'work_dir')])
    return config, folder / 'work_dir' / 'epoch_1.pth'


@pytest.fixture(scope='module')
def publish(load_script):
    return load_script(ROOT / 'tools' / 'convert' / 'publish.py').main


def published_file(folder, name='vit_ft'):
    """The one file publish wrote in ``folder`` for OUT ``folder/name.pth``."""
    files = list(folder.glob(f'{name}-*.pth'))
    assert len(files) == 1, files
    return files[0]


def test_publish_keeps_the_weights_and_the_meta_that_loading_reads(tmp_path, trained, publish,
                                                                   capsys):
    _, checkpoint = trained
    publish([str(checkpoint), str(tmp_path / 'vit_ft.pth')])

    out = published_file(tmp_path)
    source = torch.load(checkpoint, weights_only=True)
    result = torch.load(out, weights_only=True)
    assert {'optimizer', 'message_hub', 'param_schedulers'} <= set(source)
    assert set(result) == {'state_dict', 'meta'}
    assert set(result['meta']) == {'geometry', 'dataset_meta'}
    assert result['meta']['geometry'] == source['meta']['geometry']
    assert result['state_dict'].keys() == source['state_dict'].keys()
    for key, value in source['state_dict'].items():
        assert torch.equal(result['state_dict'][key], value), key
    printed = capsys.readouterr().out
    assert f'wrote {out}\n' in printed
    assert "left out: message_hub, optimizer, param_schedulers, meta['epoch']" in printed
    assert re.search(r'size: [\d.]+ KiB -> [\d.]+ KiB', printed)


def test_the_name_carries_the_first_digits_of_the_files_sha256(tmp_path, trained, publish,
                                                               capsys):
    publish([str(trained[1]), str(tmp_path / 'vit_ft.pth')])

    out = published_file(tmp_path)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert out.name == f'vit_ft-{digest[:8]}.pth'
    assert f'sha256: {digest}' in capsys.readouterr().out


def test_load_pretrained_gives_the_backbone_the_checkpoints_tensors(tmp_path, trained, publish):
    from mmengine.config import Config

    from fastmim.models.utils import load_pretrained
    from fastmim.registry import MODELS

    config, checkpoint = trained
    publish([str(checkpoint), str(tmp_path / 'vit_ft.pth')])
    source = torch.load(checkpoint, weights_only=True)
    backbone = MODELS.build(Config.fromfile(str(config)).model.backbone)  # the run's backbone

    load_pretrained(backbone, str(published_file(tmp_path)))

    for key, value in backbone.state_dict().items():
        assert torch.equal(value, source['state_dict'][f'backbone.{key}']), key


def test_a_pre_training_checkpoint_keeps_its_decoder_and_resizes_on_loading(tmp_path, publish):
    """A pre-training file keeps neck.* and mask_token (the reconstruction tools read them) and
    its geometry, by which loading at another size resizes the position embedding."""
    from fastmim.models.utils import load_pretrained
    from fastmim.registry import MODELS

    arch = dict(embed_dim=32, depth=2, num_heads=2)
    backbone = MODELS.build(dict(type='VisionTransformer', arch=arch, img_size=128))
    state = {f'backbone.{key}': value for key, value in backbone.state_dict().items()}
    state.update({'neck.decoder_embed.weight': torch.randn(8, 4),
                  'mask_token': torch.zeros(1, 3, 1, 1)})
    checkpoint = tmp_path / 'epoch_800.pth'
    torch.save({'state_dict': state, 'optimizer': {'state': {}, 'param_groups': []},
                'meta': {'geometry': {'backbone': backbone.geometry()}, 'epoch': 800}},
               checkpoint)
    publish([str(checkpoint), str(tmp_path / 'vit_pre.pth')])
    out = published_file(tmp_path, 'vit_pre')
    assert torch.load(out, weights_only=True)['state_dict'].keys() == state.keys()

    target = MODELS.build(dict(type='VisionTransformer', arch=arch, img_size=224))
    summary = load_pretrained(target, str(out))
    assert summary.resized == {'pos_embed': ((1, 65, 32), (1, 197, 32))}


def test_tools_test_evaluates_the_published_classifier(tmp_path, trained, publish,
                                                       load_script, capsys):
    config, checkpoint = trained
    publish([str(checkpoint), str(tmp_path / 'vit_ft.pth')])
    load_script(ROOT / 'tools' / 'test.py').main(
        [str(config), str(published_file(tmp_path)), '--work-dir', str(tmp_path / 'test')])
    assert 'accuracy/top1' in capsys.readouterr().out


def test_a_truncated_checkpoint_is_named_and_nothing_is_written(tmp_path, trained, publish):
    cut = tmp_path / 'cut.pth'
    data = trained[1].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=rf'^{cut} is not a readable checkpoint '
                                              r'\(truncated or corrupt\?\)'):
        publish([str(cut), str(tmp_path / 'vit_ft.pth')])
    assert not list(tmp_path.glob('vit_ft*'))


def test_a_file_of_the_final_name_is_replaced_only_with_overwrite(tmp_path, trained, publish,
                                                                  capsys):
    args = [str(trained[1]), str(tmp_path / 'vit_ft.pth')]
    publish(args)
    out = published_file(tmp_path)
    content = out.read_bytes()

    publish(args)  # the same file again: nothing to do
    assert f'{out} is there already, identical: nothing written' in capsys.readouterr().out

    out.write_bytes(content[:100])  # a copy cut off
    with pytest.raises(FileExistsError, match=rf'^{out} exists with other content.*--overwrite'):
        publish(args)
    assert out.read_bytes() == content[:100]

    publish(args + ['--overwrite'])
    assert out.read_bytes() == content


@pytest.mark.parametrize('out, reason', [
    ('vit_ft.pt', 'give it a .pth name'),
    ('vit_ft.safetensors', 'give it a .pth name'),
    ('vit_ft-0123abcd.pth', r'already ends in what reads as a hash \(-0123abcd\)')])
def test_an_out_name_the_hash_cannot_follow_is_refused_before_reading(tmp_path, publish, out,
                                                                      reason):
    with pytest.raises(ValueError, match=reason):
        publish([str(tmp_path / 'missing.pth'), str(tmp_path / out)])


def test_a_file_that_is_no_training_checkpoint_is_named(tmp_path, publish):
    plain = tmp_path / 'timm.pth'
    torch.save({'head.weight': torch.zeros(2, 2)}, plain)
    with pytest.raises(CheckpointError, match=rf'^{plain} is not a fastmim checkpoint .*found: '
                                              r'head\.weight\)'):
        publish([str(plain), str(tmp_path / 'vit_ft.pth')])


def test_resume_from_a_published_file_is_refused_naming_what_it_lacks(tmp_path, trained,
                                                                      publish, load_script):
    config, checkpoint = trained
    publish([str(checkpoint), str(tmp_path / 'vit_ft.pth')])
    with pytest.raises(CheckpointError, match=r'holds weights without the state of the run '
                       r"that wrote them \(no optimizer, message_hub, param_schedulers, "
                       r"meta\['epoch'\], meta\['iter'\]\)"):
        load_script(ROOT / 'tools' / 'train.py').main(
            [str(config), '--work-dir', str(tmp_path / 'resumed'), '--resume',
             str(published_file(tmp_path))])


def test_the_hashed_bytes_are_the_saved_files(tmp_path):
    """What publish.py hashes to name a file (checkpoint_bytes) is what save_checkpoint_file
    writes, and it loads weights-only (numpy values made plain)."""
    import numpy as np

    from fastmim.engine.checkpoint import checkpoint_bytes, save_checkpoint_file
    from fastmim.fileio import file_sha256
    checkpoint = {'state_dict': {'w': torch.arange(4.)}, 'meta': {'lr': np.float64(0.5)}}
    path = tmp_path / 'ckpt.pth'
    save_checkpoint_file(checkpoint, str(path))
    assert file_sha256(str(path)) == hashlib.sha256(checkpoint_bytes(checkpoint)).hexdigest()
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta'] == {'lr': 0.5} and type(loaded['meta']['lr']) is float
    torch.testing.assert_close(loaded['state_dict']['w'], torch.arange(4.))
