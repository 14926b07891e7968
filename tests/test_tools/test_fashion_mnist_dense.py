"""The Fashion-MNIST dense-task study (tools/experiments/run_fashion_mnist_dense.py): its UperNet
configs carry the classification study's ViT and normalisation and differ only in the
initialisation, the study's pre-training checkpoint (32 px, 8x8 grid) loads into the 64-px
backbone, and the runner reads mmseg's mIoU and writes the table between its markers.
(tests/test_configs.py trains both configs for one iteration on real canvases.)"""
import json
import os
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from fastmim.datasets.fashion_mnist_canvas import CANVAS_CLASSES

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs' / 'experiments'
UPERNET = CONFIGS / 'fashion_mnist_upernet.py'
SCRATCH = CONFIGS / 'fashion_mnist_upernet_scratch.py'


def test_configs_use_the_study_vit_and_differ_only_in_the_initialisation():
    study = Config.fromfile(str(CONFIGS / '_base_' / 'fashion_mnist.py'))
    cfg, scratch = Config.fromfile(str(UPERNET)), Config.fromfile(str(SCRATCH))
    assert cfg.default_scope == 'mmseg' and 'fastmim' in cfg.custom_imports.imports
    backbone = cfg.model.backbone
    assert backbone.type == 'fastmim.VisionTransformer'
    assert backbone.arch == study.model.backbone.arch
    assert backbone.patch_size == study.model.backbone.patch_size
    assert tuple(backbone.out_indices) == (0, 1, 2, 3) and not backbone.final_norm
    for key in ('mean', 'std'):
        assert cfg.model.data_preprocessor[key] == study.model.data_preprocessor[key]
    pretrain = Config.fromfile(str(CONFIGS / 'fashion_mnist_pretrain.py'))
    assert backbone.init_cfg.checkpoint == f'{pretrain.work_dir}/epoch_{pretrain.max_epochs}.pth'

    assert tuple(cfg.train_dataloader.dataset.metainfo.classes) == CANVAS_CLASSES
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 11
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.reduce_zero_label is False  # 0 is the background class
        # The steps take it from the dataset (mmseg deprecates setting it on the step).
        assert all('reduce_zero_label' not in step for step in loader.dataset.pipeline
                   if step.type == 'LoadAnnotations')
    assert cfg.val_dataloader.dataset.data_prefix.img_path == 'images/validation'

    assert scratch.model.backbone.init_cfg is None
    same, other = cfg.to_dict(), scratch.to_dict()
    same['model']['backbone'].pop('init_cfg')
    other['model']['backbone'].pop('init_cfg')
    assert same == other


def test_pretraining_checkpoint_loads_into_the_64px_backbone(tmp_path):
    """A checkpoint of the pre-training model (what stage 1 saves: FastMIM keys and geometry)
    initialises every block of the UperNet's ViT; the fixed sin-cos table is the 16x16 one."""
    from mmseg.registry import MODELS as SEG_MODELS

    from fastmim.engine.launch import replace_sync_bn
    from fastmim.models.backbones.vit import sincos_2d_pos_embed
    from fastmim.registry import MODELS

    init_default_scope('fastmim')
    torch.manual_seed(0)
    pretrained = MODELS.build(Config.fromfile(str(CONFIGS / 'fashion_mnist_pretrain.py')).model)
    checkpoint = tmp_path / 'epoch_3.pth'
    torch.save(dict(state_dict=pretrained.state_dict(),
                    meta=dict(geometry=pretrained.geometry())), checkpoint)

    cfg = Config.fromfile(str(UPERNET))
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    replace_sync_bn(cfg.model)
    init_default_scope('mmseg')
    model = SEG_MODELS.build(cfg.model)
    model.init_weights()
    loaded = model.backbone.state_dict()
    compared = 0
    for key, value in pretrained.backbone.state_dict().items():
        if key.startswith('norm.') or key == 'pos_embed':  # no final norm; grid-dependent
            continue
        assert torch.equal(loaded[key], value), key
        compared += 1
    assert compared > 40
    expected = sincos_2d_pos_embed(128, (16, 16)).float().unsqueeze(0)
    assert torch.allclose(loaded['pos_embed'], expected)


def test_runner_reads_miou_and_writes_the_table(tmp_path, load_script):
    runner = load_script(ROOT / 'tools' / 'experiments' / 'run_fashion_mnist_dense.py')
    runs = []
    for seed, (with_pretraining, scratch) in enumerate([(60.0, 40.0), (62.0, 41.0)]):
        for (name, config, pretrained), miou in zip(runner.METHODS, (with_pretraining, scratch)):
            work_dir = tmp_path / name[:6] / str(seed)
            (work_dir / '20260101_000000' / 'vis_data').mkdir(parents=True)
            (work_dir / '20260101_000000' / 'vis_data' / 'scalars.json').write_text(
                json.dumps(dict(loss=1.0, step=400)) + '\n' +
                json.dumps(dict(aAcc=90.0, mIoU=miou, step=400)) + '\n')
            run = runner.Run(name, config, pretrained, seed, str(work_dir))
            run.miou = runner.read_miou(run.work_dir)
            runs.append(run)
    assert [run.miou for run in runs] == [60.0, 40.0, 62.0, 41.0]
    assert runner.read_miou(str(tmp_path / 'unfinished')) is None

    canvases = dict(counts=dict(test=dict(canvases=1000, items=2990)))
    table = runner.results_table(runs, [0, 1], canvases)
    assert '| FastMIM pre-trained | 60.0 | 62.0 | 61.0 ± 1.4 |' in table
    assert '| random init (same recipe and budget) | 40.0 | 41.0 | 40.5 ± 0.7 |' in table
    assert '1,000 test canvases (2,990 of the 10,000 test images)' in table
    assert 'mean ± sample standard deviation over seeds 0, 1' in table
    # one seed (the longer-budget pair): no spread to speak of
    one_seed = runner.results_table([run for run in runs if run.seed == 0], [0], canvases)
    assert '| FastMIM pre-trained | 60.0 |\n' in one_seed + '\n'
    assert 'mean' not in one_seed and 'one seed (0)' in one_seed
    doc = tmp_path / 'doc.md'
    doc.write_text(f'before\n{runner.RESULTS_BEGIN}\nold\n{runner.RESULTS_END}\nafter\n')
    runner.study.write_doc(str(doc), table, runner.RESULTS_BEGIN, runner.RESULTS_END)
    assert doc.read_text() == (f'before\n{runner.RESULTS_BEGIN}\n{table}\n'
                               f'{runner.RESULTS_END}\nafter\n')


def test_a_log_line_cut_short_leaves_the_miou_before_it(tmp_path, load_script, capsys):
    """A run killed while mmengine wrote a line (out of memory, a second SIGTERM) left half a
    JSON record last in its scalars.json, and reading the mIoU ended the study in a
    JSONDecodeError traceback."""
    runner = load_script(ROOT / 'tools' / 'experiments' / 'run_fashion_mnist_dense.py')
    vis_data = tmp_path / '20260101_000000' / 'vis_data'
    vis_data.mkdir(parents=True)
    (vis_data / 'scalars.json').write_text(
        json.dumps(dict(aAcc=90.0, mIoU=55.0, step=200)) + '\n' + '{"loss": 0.9, "st')
    assert runner.read_miou(str(tmp_path)) == 55.0
    assert 'its last line is cut short; left out' in capsys.readouterr().err


def save_checkpoint(path, epoch, iteration=None, weight=0.):
    """A pre-training checkpoint as the training saves it (``meta`` with its position, named in
    ``last_checkpoint``): the runner reuses only the one of the config's last epoch (3)."""
    torch.save(dict(meta=dict(epoch=epoch, iter=iteration or 156 * epoch),
                    state_dict=dict(weight=torch.full((2,), weight))), path)
    (path.parent / 'last_checkpoint').write_text(str(path))
    return path


@pytest.fixture
def dense_without_training(tmp_path, load_script, monkeypatch):
    """The dense runner with its expensive parts replaced: the data, the canvases (their
    record only), the pre-training (a checkpoint file) and the training (a scalars.json with
    an mIoU). ``calls`` counts the canvases written and the runs trained."""
    runner = load_script(ROOT / 'tools' / 'experiments' / 'run_fashion_mnist_dense.py')
    calls = dict(canvases=[], trained=[])
    import fastmim.datasets
    from fastmim.datasets import fashion_mnist_canvas
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', lambda: str(tmp_path))
    monkeypatch.setattr(runner.study, 'stop_commands_on_signals', lambda: None)

    def write_canvases(root, num_train, num_test, seed=0, data_root=None):
        record = Path(root) / 'canvases.json'
        settings = dict(num_train=num_train, num_test=num_test, seed=seed)
        if record.exists() and json.loads(record.read_text())['settings'] == settings:
            return json.loads(record.read_text())  # kept, as write_canvas_segmentation does
        calls['canvases'].append((num_train, num_test))
        written = dict(settings=dict(num_train=num_train, num_test=num_test, seed=seed),
                       counts=dict(train=dict(canvases=num_train, items=3 * num_train),
                                   test=dict(canvases=num_test, items=3 * num_test)))
        Path(root).mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(written))
        return written

    def pretrain(found, jobs):
        if found.finished:
            return found.finished, {}
        Path(found.folder).mkdir(parents=True, exist_ok=True)
        return str(save_checkpoint(Path(found.folder) / 'epoch_3.pth', 3)), {}

    def execute(command, log_path, threads):
        calls['trained'].append(command)
        with open(log_path, 'w') as log:
            log.write(' '.join(command) + '\n\n')
        vis_data = Path(log_path).parent / f'2026010{len(calls["trained"])}_000000' / 'vis_data'
        vis_data.mkdir(parents=True)
        (vis_data / 'scalars.json').write_text(json.dumps(dict(mIoU=len(calls['trained']))))
        return 1.0

    monkeypatch.setattr(fashion_mnist_canvas, 'write_canvas_segmentation', write_canvases)
    monkeypatch.setattr(runner.study, 'pretrain', pretrain)
    monkeypatch.setattr(runner.study, 'execute', execute)
    return runner, calls


def test_finished_runs_of_other_settings_are_not_reported_as_these(tmp_path,
                                                                    dense_without_training):
    """After a study of 600 updates on 1,000 test canvases, a rerun with max_iters=40 and 50
    test canvases said '2 of 2 runs already done', reported the old mIoU under the new canvas
    count and had rewritten the canvases the old runs were trained on."""
    runner, calls = dense_without_training
    work_dir = tmp_path / 'study'
    study = ['--work-dir', str(work_dir), '--seeds', '0', '--jobs', '1', '--docs']
    runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    assert len(calls['trained']) == 2 and calls['canvases'] == [(40, 10)]
    runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])  # resumes: all done
    assert len(calls['trained']) == 2

    for other, message in [
            (['--train-canvases', '20', '--test-canvases', '5'],
             r'canvases: 20 train / 5 test now, 40 / 10 then'),
            (['--train-canvases', '40', '--test-canvases', '10', '--cfg-options',
              'train_cfg.max_iters=40'], r'options: train_cfg\.max_iters=40 now'),
            (['--cfg-options', 'train_cfg.max_iters=40', '--train-canvases', '100',
              '--test-canvases', '50'], r'options: .*; canvases: 100 train / 50 test now')]:
        with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 finished with other '
                           rf'settings than this command \({message}.*\); --fresh starts the '
                           r'dense runs over'):
            runner.main(study + other)
        assert calls['canvases'] == [(40, 10)]  # the canvases under the runs are left alone
        assert len(calls['trained']) == 2
    # another seed may have other options, not other canvases: seed 0's would be rewritten
    with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 finished with other '
                       r'settings than this command \(canvases: 20 train / 5 test now, 40 / 10 '
                       r'then\) \(and 1 more runs\); --fresh'):
        runner.main(['--work-dir', str(work_dir), '--seeds', '1', '--jobs', '1', '--docs',
                     '--train-canvases', '20', '--test-canvases', '5'])
    runner.main(['--work-dir', str(work_dir), '--seeds', '1', '--jobs', '1', '--docs',
                 '--train-canvases', '40', '--test-canvases', '10', '--cfg-options',
                 'train_cfg.max_iters=40'])
    assert len(calls['trained']) == 4 and calls['canvases'] == [(40, 10)]

    # no pre-training checkpoint (a new one would be made), or a new one: the pre-trained run
    # is out of date, the scratch one is not
    (work_dir / 'pretrain').rename(tmp_path / 'pretrain')
    with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 finished with other settings'
                       r' than this command \(its pre-training checkpoint is gone\); --fresh'):
        runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    (tmp_path / 'pretrain').rename(work_dir / 'pretrain')
    save_checkpoint(work_dir / 'pretrain' / 'epoch_3.pth', 3, weight=1.)  # other weights
    with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 finished with other settings'
                       r' than this command \(another pre-training checkpoint\)'):
        runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])

    runner.main(study + ['--train-canvases', '20', '--test-canvases', '5', '--fresh'])
    assert len(calls['trained']) == 6 and calls['canvases'][-1] == (20, 5)
    results = json.loads((work_dir / 'dense_results.json').read_text())
    assert [run['miou'] for run in results['runs']] == [5, 6]


def test_runs_finished_before_settings_were_recorded(tmp_path, dense_without_training):
    """Runs of an earlier runner have no record: the command in their run.log and canvases
    and a checkpoint older than their result stand for it; anything else is refused."""
    runner, calls = dense_without_training
    work_dir = tmp_path / 'study'
    study = ['--work-dir', str(work_dir), '--seeds', '0', '--jobs', '1', '--docs']
    runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    records = sorted(work_dir.glob('upernet/*/seed0/' + runner.SETTINGS_FILE))
    assert len(records) == 2
    for record in records:
        record.unlink()
    with pytest.raises(SystemExit, match=r'seed0 finished with other settings than this '
                       r'command \(options: train_cfg\.max_iters=40 now'):
        runner.main(study + ['--train-canvases', '40', '--test-canvases', '10', '--cfg-options',
                             'train_cfg.max_iters=40'])
    runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    assert len(calls['trained']) == 2 and all(record.exists() for record in records)

    for record in records:
        record.unlink()
    later = time.time() + 60  # the canvases rewritten after the runs finished
    os.utime(work_dir / 'canvases' / 'canvases.json', (later, later))
    with pytest.raises(SystemExit, match=r'canvases: written after it finished'):
        runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    assert len(calls['trained']) == 2


def published_docs(root):
    """docs/experiments.md and README.md of a repository at ``root``, each with a published
    dense table between the markers and prose that quotes it."""
    from_runner = ('<!-- fashion-mnist-dense-results:begin -->\nthe published table\n'
                   '<!-- fashion-mnist-dense-results:end -->\nprose that quotes it\n')
    (root / 'docs').mkdir(parents=True, exist_ok=True)
    docs = [root / 'docs' / 'experiments.md', root / 'README.md']
    for doc in docs:
        doc.write_text(from_runner)
    return docs, from_runner


def test_a_dense_study_off_the_published_one_leaves_the_published_tables_alone(
        tmp_path, dense_without_training, monkeypatch, capsys):
    """Without --docs the runner rewrote the dense tables of docs/experiments.md and the README
    on any run: one seed, 40 canvases or --cfg-options train_cfg.max_iters=40 alike."""
    runner, calls = dense_without_training
    monkeypatch.setattr(runner, 'ROOT', str(tmp_path / 'repo'))
    docs, published = published_docs(tmp_path / 'repo')
    small = tmp_path / 'small'
    runner.main(['--work-dir', str(small), '--seeds', '0', '--jobs', '1',
                 '--train-canvases', '40', '--test-canvases', '10'])
    assert len(calls['trained']) == 2
    assert [doc.read_text() for doc in docs] == [published] * 2
    named = ', '.join(map(str, docs))
    assert (f'the table was not written into {named}: --seeds 0 --train-canvases 40 '
            f'--test-canvases 10 is not the published study; --doc {" ".join(map(str, docs))} '
            f'writes it there, details in') in capsys.readouterr().out

    study = ['--work-dir', str(tmp_path / 'published'), '--jobs', '1']
    runner.main(study + ['--no-doc'])
    assert len(calls['trained']) == 8 and calls['canvases'][-1] == (4000, 1000)
    assert [doc.read_text() for doc in docs] == [published] * 2
    runner.main(study)
    for doc in docs:
        assert '| FastMIM pre-trained | 3.0 | 5.0 | 7.0 | 5.0 ± 2.0 |' in doc.read_text()
        assert doc.read_text().endswith('prose that quotes it\n')
    assert len(calls['trained']) == 8


def test_a_copied_work_dir_trains_from_its_own_pretraining(tmp_path, dense_without_training):
    """last_checkpoint holds an absolute path: in a copied work dir (or one the pre-training
    was copied into) the runs trained from the original's checkpoint and recorded its sha256."""
    import shutil
    runner, calls = dense_without_training
    original = tmp_path / 'original' / 'pretrain'
    original.mkdir(parents=True)
    save_checkpoint(original / 'epoch_3.pth', 3)
    shutil.copytree(original, tmp_path / 'copy' / 'pretrain')
    save_checkpoint(original / 'epoch_3.pth', 3, weight=1.)  # the original trained on
    ours = tmp_path / 'copy' / 'pretrain' / 'epoch_3.pth'
    runner.main(['--work-dir', str(tmp_path / 'copy'), '--seeds', '0', '--jobs', '1', '--doc',
                 '--train-canvases', '40', '--test-canvases', '10'])
    assert len(calls['trained']) == 2
    assert not any(str(original) in part for command in calls['trained'] for part in command)
    assert f'model.backbone.init_cfg.checkpoint={ours}' in calls['trained'][0]
    from fastmim.fileio import file_sha256
    record = json.loads((tmp_path / 'copy' / 'upernet' / 'pretrained' / 'seed0' /
                         runner.SETTINGS_FILE).read_text())
    assert record['checkpoint_sha256'] == file_sha256(str(ours))


def test_a_stopped_pretraining_is_not_taken_as_pretrained(tmp_path, dense_without_training):
    """The runner took any last_checkpoint as a finished pre-training, before the pre-training
    stage ran: with a stopped one's iter_22.pth it skipped the --jobs check that resuming it
    needs (the canvases were written before the refusal), and held finished runs to that
    partial checkpoint's sha256, so runs trained from it (by the runner before 36e41ca) were
    reported as done."""
    runner, calls = dense_without_training
    work_dir = tmp_path / 'study'
    (work_dir / 'pretrain').mkdir(parents=True)
    partial = save_checkpoint(work_dir / 'pretrain' / 'iter_22.pth', 0, 22)
    study = ['--work-dir', str(work_dir), '--seeds', '0', '--doc', '--train-canvases', '40',
             '--test-canvases', '10']
    with pytest.raises(SystemExit, match=r'--jobs must divide the pre-training batch 128 \(the '
                       r'pre-training has not finished: it runs first\)'):
        runner.main(study + ['--jobs', '3'])
    assert calls == dict(canvases=[], trained=[])

    # finished runs recorded against the partial checkpoint, as the earlier runner trained them
    save_checkpoint(work_dir / 'pretrain' / 'epoch_3.pth', 3)
    runner.main(study + ['--jobs', '1'])
    from fastmim.fileio import file_sha256
    record_path = work_dir / 'upernet' / 'pretrained' / 'seed0' / runner.SETTINGS_FILE
    record = json.loads(record_path.read_text())
    record['checkpoint_sha256'] = file_sha256(str(partial))
    record_path.write_text(json.dumps(record))
    (work_dir / 'pretrain' / 'last_checkpoint').write_text(str(partial))
    with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 finished with other settings '
                       r'than this command \(the pre-training has not finished \(.*/iter_22\.pth: '
                       r'epoch 0, iteration 22\)\); --fresh starts the dense runs over'):
        runner.main(study + ['--jobs', '1'])
    assert len(calls['trained']) == 2 and len(calls['canvases']) == 1


@pytest.fixture
def stopping_training(dense_without_training, monkeypatch):
    """The dense runner whose runs train as tools/train.py does across a stop: given --resume,
    a run starts from the iteration its last_checkpoint names, else from 0 (``starts``: the
    run's folder and where it started); a run listed in ``stop`` (seed folders, e.g.
    'pretrained/seed0') saves iter_300.pth and exits 75 (PreemptionHook on SIGTERM)."""
    runner, calls = dense_without_training
    state = dict(starts=[], stop=set())
    finish = runner.study.execute

    def execute(command, log_path, threads):
        folder = Path(log_path).parent
        name = f'{folder.parent.name}/{folder.name}'
        named = folder / 'last_checkpoint'
        start = (int(torch.load(named.read_text().strip())['meta']['iter'])
                 if '--resume' in command and named.exists() else 0)
        state['starts'].append((name, start))
        if name in state['stop'] and start < 300:
            save_checkpoint(folder / 'iter_300.pth', 0, 300)
            (folder / 'last_checkpoint').write_text(str(folder / 'iter_300.pth'))
            raise RuntimeError(f'exit code 75; log {log_path}')
        return finish(command, log_path, threads)

    monkeypatch.setattr(runner.study, 'execute', execute)
    return runner, calls, state


def test_a_stopped_dense_run_is_resumed_not_retrained(tmp_path, stopping_training):
    """A dense run stopped by SIGTERM saved iter_300.pth (PreemptionHook) and exited 75; the
    rerun trained it again from iteration 0, losing the 300 updates done."""
    runner, calls, state = stopping_training
    work_dir = tmp_path / 'study'
    study = ['--work-dir', str(work_dir), '--seeds', '0', '--jobs', '1', '--docs',
             '--train-canvases', '40', '--test-canvases', '10']
    state['stop'] = {'pretrained/seed0'}
    with pytest.raises(SystemExit):
        runner.main(study)
    assert state['starts'] == [('pretrained/seed0', 0), ('scratch/seed0', 0)]
    runner.main(study)
    assert state['starts'][2:] == [('pretrained/seed0', 300)]
    assert all(command[-1] == '--resume' for command in calls['trained'])
    results = json.loads((work_dir / 'dense_results.json').read_text())
    assert [run['miou'] for run in results['runs']] == [2, 1]
    # the record of the resumed run is that of a finished one: a third run has nothing to do
    runner.main(study)
    assert len(state['starts']) == 3


def test_a_stopped_dense_run_of_other_settings_is_not_resumed(tmp_path, stopping_training):
    """--resume continues whatever the work dir holds: a run stopped under other options,
    canvases or pre-training is refused as a finished one is (the runner rewrote its record
    and trained it again under the new settings)."""
    runner, calls, state = stopping_training
    work_dir = tmp_path / 'study'
    study = ['--work-dir', str(work_dir), '--seeds', '0', '--jobs', '1', '--docs']
    state['stop'] = {'pretrained/seed0', 'scratch/seed0'}
    with pytest.raises(SystemExit):
        runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    state['stop'] = set()
    for other, message in [
            (['--train-canvases', '40', '--test-canvases', '10', '--cfg-options',
              'train_cfg.max_iters=40'], r'options: train_cfg\.max_iters=40 now'),
            (['--train-canvases', '20', '--test-canvases', '5'],
             r'canvases: 20 train / 5 test now, 40 / 10 then')]:
        with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 was stopped with other '
                           rf'settings than this command \({message}\) \(and 1 more runs\); '
                           r'--fresh starts the dense runs over'):
            runner.main(study + other)
    save_checkpoint(work_dir / 'pretrain' / 'epoch_3.pth', 3, weight=1.)  # another pre-training
    with pytest.raises(SystemExit, match=r'upernet/pretrained/seed0 was stopped with other '
                       r'settings than this command \(another pre-training checkpoint\); '
                       r'--fresh'):
        runner.main(study + ['--train-canvases', '40', '--test-canvases', '10'])
    assert len(state['starts']) == 2 and calls['canvases'] == [(40, 10)]
    runner.main(study + ['--train-canvases', '20', '--test-canvases', '5', '--fresh'])
    assert state['starts'][2:] == [('pretrained/seed0', 0), ('scratch/seed0', 0)]


def test_a_rerun_keeps_the_trained_invocations_facts(tmp_path, dense_without_training):
    """A rerun of a finished dense study replaced dense_results.json's wall time and load with
    those of an invocation that trained nothing (0.1 s)."""
    runner, calls = dense_without_training
    study = ['--work-dir', str(tmp_path / 'study'), '--seeds', '0', '--jobs', '1', '--docs',
             '--train-canvases', '40', '--test-canvases', '10']
    runner.main(study)
    runner.main(study)
    assert len(calls['trained']) == 2
    results = json.loads((tmp_path / 'study' / 'dense_results.json').read_text())
    assert [facts['runs_trained'] for facts in results['invocations']] == [2, 0]
    assert [run['seconds'] for run in results['runs']] == [1.0, 1.0]
    assert results['canvases']['settings']['num_train'] == 40
