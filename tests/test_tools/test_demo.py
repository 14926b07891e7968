"""tools/demo.py (`make demo`): its own help, its own work dir in the summary."""
import json
import logging
import os
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / 'tools' / 'demo.py'


@pytest.fixture
def demo(load_script, monkeypatch):
    monkeypatch.syspath_prepend(str(DEMO.parent))  # demo.py imports train.py beside it
    return load_script(DEMO)


def test_help_is_the_demo_s(demo, capsys):
    """-h printed train.py's help (a required CONFIG), which demo.py then refused."""
    with pytest.raises(SystemExit):
        demo.parse_args(['-h'])
    out = capsys.readouterr().out
    assert 'usage: demo.py [-h] [--work-dir WORK_DIR]' in out
    assert 'demo_vit_tiny_embedded.py' in out and '--cfg-options' in out and '--debug' in out


def test_a_config_given_to_the_demo_is_sent_to_train_py(demo, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(['my.py', '--amp'])
    assert capsys.readouterr().err.endswith(
        'demo.py: error: demo.py trains configs/fastmim/demo_vit_tiny_embedded.py; for another '
        'config run tools/train.py my.py\n')


@pytest.mark.parametrize('argv, work_dir', [
    (['--amp', '--work-dir=w', '--cfg-options', 'a=1'], 'w'),
    (['--work-dir', 'a', '--amp', '--cfg-options', 'a=1', '--work-dir', 'b'], 'b'),
    (['--cfg-options', 'a=1', '--amp'], None),  # the demo's default
])
def test_train_py_trains_in_the_work_dir_the_summary_reads(demo, monkeypatch, argv, work_dir):
    """The demo hands its flags on to train.py; what train.py makes of them is the demo config,
    the flags, and the work dir whose loss and checkpoint the demo's summary then reads."""
    import train  # tools/train.py, on the path the fixture added
    calls = []
    monkeypatch.setattr(train, 'main', calls.append)
    monkeypatch.setenv('LOCAL_RANK', '0')  # train.parse_args exports it
    demo.main(argv)
    trained = train.parse_args(calls[0])
    assert trained.work_dir == demo.parse_args(argv).work_dir == (work_dir or demo.WORK_DIR)
    assert trained.config == demo.CONFIG
    assert trained.amp and trained.cfg_options == {'a': 1}


@pytest.mark.parametrize('argv, error', [
    (['--bogus'], 'unrecognized arguments: --bogus'),
    (['--amp-dtype', 'fp8'], "argument --amp-dtype: invalid choice: 'fp8'"),
])
def test_a_wrong_flag_is_reported_under_the_demo_s_usage(demo, capsys, argv, error):
    """It was reported under tools/train.py's usage, whose CONFIG the demo does not take."""
    with pytest.raises(SystemExit):
        demo.parse_args(argv)
    err = capsys.readouterr().err
    assert err.startswith('usage: demo.py [-h] [--work-dir WORK_DIR]') and 'config' not in err
    assert error in err


def test_the_summary_reads_the_work_dir_the_run_wrote(demo, monkeypatch, tmp_path, capsys):
    """With --work-dir the run trained there but the summary read work_dirs/demo: an older
    demo's loss and checkpoint, or none ('checkpoint: None')."""
    work_dir = tmp_path / 'my demo'

    def fake_training(argv):  # what a finished run leaves
        scalars = work_dir / '20261205_120000' / 'vis_data'
        scalars.mkdir(parents=True)
        (scalars / 'scalars.json').write_text(
            json.dumps({'iter': 1, 'loss': 0.2}) + '\n' + json.dumps({'iter': 8, 'loss': 0.1}))
        (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
        (work_dir / 'vis').mkdir()
        (work_dir / 'vis' / 'epoch_2_0.png').write_bytes(b'')

    import train  # tools/train.py, on the path the fixture added
    monkeypatch.setattr(train, 'main', fake_training)
    baselines = []
    monkeypatch.setattr(demo, 'average_target_loss',
                        lambda options: baselines.append(options) or BASELINE)
    demo.main(['--work-dir', str(work_dir), '--amp', '--cfg-options', 'a=1'])
    out = capsys.readouterr().out
    assert 'loss: 0.2000 at iteration 1 -> 0.1000 at iteration 8 (50% lower)' in out
    assert baselines == [{'a': 1}]  # on the data the run trained on
    assert demo.compared_with_baseline(0.1, BASELINE) in out
    assert f'checkpoint: {work_dir / "epoch_2.pth"}' in out
    assert str(work_dir / 'vis' / 'epoch_2_0.png') in out


# The demo's baseline: average HOG cell predicted everywhere (tools/analysis/target_baseline.py).
BASELINE = dict(loss=0.0490, batch_spread=0.0020)


@pytest.mark.parametrize('final, said', [
    (0.0488, '0.0488 is 0.4% below it: the same within chance: the model has learned the HOG '
             'statistics, not yet what is in the image'),
    (0.0400, '0.0400 is 18.4% below it: the model predicts more than the average: it uses '
             'the image'),
    (0.0600, '0.0600 is 22.4% above it: the model has not learned even the average HOG cell '
             'yet'),
])
def test_the_summary_compares_the_loss_with_the_average_hog_cell(demo, final, said):
    """The demo's loss fell by 96% to the loss of predicting the average HOG cell everywhere
    and no further, and the summary called that a result: it now says which it is."""
    assert demo.compared_with_baseline(final, BASELINE) == (
        '  predicting the average HOG cell everywhere (no image seen) scores 0.0490 '
        f'(+-0.0020 from batch to batch); the final loss {said}')


def test_the_baseline_is_measured_on_the_demo_data(demo):
    """One pass over the demo's photos, as the run's --cfg-options changed them."""
    demo.parse_args([])  # puts tools/analysis on the path, as main does
    baseline = demo.average_target_loss({
        'train_dataloader.dataset.num_samples': 6, 'train_dataloader.batch_size': 3,
        'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False})
    assert baseline['images'] == baseline['dataset_size'] == 6
    assert baseline['target'] == 'HOGGenerator' and 0 < baseline['loss'] < 1


TINY_DATA = {'train_dataloader.dataset.num_samples': 6, 'train_dataloader.batch_size': 3,
             'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False}


def config_warnings(load):
    """The warnings the current mmengine logger (the run's, after training) is given while
    ``load()`` runs."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        load()
    finally:
        logger.removeHandler(handler)
    return [record.getMessage() for record in records if record.levelno >= logging.WARNING]


def test_the_help_s_example_options_shorten_the_schedule_too(demo):
    """The help's example, train_cfg.max_epochs=2 alone, left the cosine schedule at 12
    epochs: a schedule-length warning before training."""
    from fastmim.engine.config_loading import load_config
    options = dict(option.split('=') for option in demo.CFG_OPTIONS_EXAMPLE)
    options = {key: int(value) for key, value in options.items()}
    assert options['train_cfg.max_epochs'] == 2
    assert config_warnings(lambda: load_config(demo.CONFIG, options)) == []


def test_the_baseline_s_reload_of_the_config_prints_no_warning(demo):
    """The baseline re-loads the config after training: its warnings (already printed before
    training) came again in the middle of the summary."""
    from mmengine.logging import MMLogger
    demo.parse_args([])  # puts tools/analysis on the path, as main does
    level = MMLogger.get_current_instance().level
    warned = config_warnings(
        lambda: demo.average_target_loss({**TINY_DATA, 'train_cfg.max_epochs': 2}))
    assert [message for message in warned if 'training stops at epoch 2' in message] == []
    assert MMLogger.get_current_instance().level == level


def test_the_loss_summary_leaves_out_a_log_line_cut_short(demo, tmp_path):
    """A demo run stopped while mmengine wrote a line left half a JSON record last in its
    scalars.json; the summary ended in a JSONDecodeError traceback. A run started afresh
    replaces the runs before it."""
    for timestamp, records in (('20261205_110000', [{'iter': 1, 'loss': 0.9}]),
                               ('20261205_120000', [{'iter': 1, 'loss': 0.4},
                                                    {'accuracy/top1': 5.0},
                                                    {'iter': 4, 'loss': 0.3}])):
        scalars = tmp_path / timestamp / 'vis_data'
        scalars.mkdir(parents=True)
        (scalars / 'scalars.json').write_text(
            ''.join(json.dumps(record) + '\n' for record in records) + '{"iter": 5, "lo')
    assert demo.read_losses(str(tmp_path)) == [(1, 0.4), (4, 0.3)]
    assert demo.read_losses(str(tmp_path / 'not run yet')) == []


def test_the_loss_summary_of_a_resumed_demo_starts_at_the_first_run(demo, tmp_path):
    """A demo stopped (SIGTERM: a checkpoint at iteration 8) and resumed with --resume logs two
    runs; the summary read the resumed one alone ('0.5 at iteration 12 -> 0.05 at 16'), as if
    the demo had barely learned. The first run trained on to iteration 12 before it stopped:
    the resumed run's records from its first iteration on replace those."""
    for timestamp, records in (('20261205_110000', [(4, 1.32), (8, 0.9), (12, 0.8)]),
                               ('20261205_120000', [(12, 0.5), (16, 0.05)])):
        scalars = tmp_path / timestamp / 'vis_data'
        scalars.mkdir(parents=True)
        (scalars / 'scalars.json').write_text(''.join(
            json.dumps({'iter': iteration, 'loss': loss}) + '\n' for iteration, loss in records))
    assert demo.read_losses(str(tmp_path)) == [(4, 1.32), (8, 0.9), (12, 0.5), (16, 0.05)]


@pytest.mark.parametrize('checkpoint, shown', [
    ('epoch_10.pth', 'epoch_10'),  # the checkpoint's pictures, not the earlier run's epoch_2
    ('epoch_7.pth', 'epoch_10'),  # none drawn at the checkpoint's epoch: the newest ones
    (None, 'epoch_10'),
])
def test_the_summary_shows_the_pictures_of_the_checkpoint_s_epoch(demo, tmp_path, checkpoint,
                                                                   shown):
    """A 10-epoch run in a work dir that held a 2-epoch run's pictures showed vis/epoch_2_*.png
    (sorted after epoch_10_* as text) beside checkpoint epoch_10.pth."""
    vis = tmp_path / 'vis'
    vis.mkdir()
    for tag in ('epoch_1', 'epoch_2', 'epoch_5', 'epoch_10'):
        for index in range(4):
            (vis / f'{tag}_{index}.png').write_bytes(b'')
    checkpoint = checkpoint and str(tmp_path / checkpoint)
    assert demo.reconstruction_pictures(str(tmp_path), checkpoint) == [
        str(vis / f'{shown}_{index}.png') for index in range(4)]


def finished_run(work_dir):
    """What a finished demo leaves: its losses and its last checkpoint."""
    scalars = work_dir / '20261205_120000' / 'vis_data'
    scalars.mkdir(parents=True)
    (scalars / 'scalars.json').write_text(
        json.dumps({'iter': 1, 'loss': 0.2}) + '\n' + json.dumps({'iter': 8, 'loss': 0.1}))
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))


@pytest.mark.parametrize('training, first_line', [
    # --resume of a finished run: mmengine trains nothing, saves nothing (a warning says so)
    (lambda work_dir: None, 'FastMIM demo: nothing trained, the run in {} had already finished '
                            '(the warning above); its summary:'),
    # a run that trained: it saved a checkpoint
    (lambda work_dir: (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth')),
     'FastMIM demo finished')])
def test_the_summary_says_when_nothing_trained(demo, monkeypatch, tmp_path, capsys, training,
                                               first_line):
    """A --resume of a finished demo printed 'FastMIM demo finished' and the loss, as if it had
    trained."""
    work_dir = tmp_path / 'demo'
    finished_run(work_dir)
    earlier = (work_dir / 'last_checkpoint').stat().st_mtime
    os.utime(work_dir / 'last_checkpoint', (earlier - 10, earlier - 10))  # saved a while ago
    import train  # tools/train.py, on the path the fixture added
    monkeypatch.setattr(train, 'main', lambda argv: training(work_dir))
    monkeypatch.setattr(demo, 'average_target_loss', lambda options: BASELINE)
    demo.main(['--work-dir', str(work_dir), '--resume'])
    out = capsys.readouterr().out.splitlines()
    assert out[1] == first_line.format(work_dir)
    assert out[2] == '  loss: 0.2000 at iteration 1 -> 0.1000 at iteration 8 (50% lower)'


def test_an_interrupted_demo_names_its_own_resume_command(demo, monkeypatch, tmp_path):
    """`make demo` cannot pass --resume on: the Ctrl-C line named train.py's flag."""
    from mmengine.config import Config

    from fastmim import resume_target
    monkeypatch.setattr(resume_target, '_start', {})
    assert demo.interrupted_hint().startswith(
        '`.venv/bin/python tools/demo.py --resume` continues from the last checkpoint')
    default = tmp_path / 'default'  # the demo's own work dir (the checkout's may hold a run)
    monkeypatch.setattr(demo, 'WORK_DIR', str(default))
    resume_target.note_the_start(Config(dict(work_dir=str(default))))
    assert demo.interrupted_hint() == ('`.venv/bin/python tools/demo.py --resume` starts from '
                                       'the start: this run saved no checkpoint yet')
    resume_target.note_the_start(Config(dict(work_dir=str(tmp_path))))
    assert demo.interrupted_hint() == (
        f'`.venv/bin/python tools/demo.py --work-dir {tmp_path} --resume` starts from the '
        'start: this run saved no checkpoint yet')
