"""tools/analysis/project_wallclock.py: the published ViT-B recipe's schedule, the projection's
arithmetic against numbers worked out by hand, both kinds of result file, the loader bound,
and errors that name the file and the key."""
import json
from pathlib import Path

import pytest

from fastmim.errors import LaunchError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script(ROOT / 'tools' / 'analysis' / 'project_wallclock.py')


@pytest.fixture(scope='module')
def schedule(tool):
    return tool.read_schedule(CONFIG)


def benchmark_result(rates, compile_mode=None):
    """A benchmark_pretrain.py result with the keys docs/benchmark.md section 8 lists and that
    the projection reads; ``rates`` maps method to images/s."""
    return dict(
        settings=dict(backbone='vit_b', batch_size=256, compile=compile_mode is not None,
                      compile_mode=compile_mode, arch_override=None, mae_decoder=None,
                      config=str(CONFIG)),
        machine=dict(device='cuda', gpu='NVIDIA H100 80GB HBM3', cpu='x', precision='float16 '
                     'autocast', compile=compile_mode is not None, compile_mode=compile_mode),
        records=[dict(method=method, backbone='vit_b', input_size=128, batch_size=256,
                      images_per_s=rate) for method, rate in rates.items()])


def train_speed_result(images_per_s, task='pretrain'):
    """A train_speed.py result (its ``main`` writes these keys): batch 512 at ``images_per_s``,
    a quarter of each iteration waiting for the loader."""
    s_per_iter = 512 / images_per_s
    return dict(task=task, config='configs/fastmim/vit_b_hog_800e.py', amp=True,
                precision='float16 autocast',
                batch_size=512, iterations=30, timed=20, s_per_iter=s_per_iter,
                data_s_per_iter=s_per_iter / 4, images_per_s=images_per_s,
                peak_memory_mb=9000.0, device='NVIDIA H100 80GB HBM3')


def write(folder, name, result):
    path = folder / name
    path.write_text(json.dumps(result))
    return path


def test_schedule_is_the_published_vit_b_recipe(schedule):
    """800 epochs, 512 per GPU x 8 GPUs = the total batch of 4096 (REFERENCE.md); each GPU's
    share ceil(1,281,167 / 8) = 160,146 images makes floor(160,146 / 512) = 312 full batches."""
    assert (schedule.epochs, schedule.per_gpu_batch, schedule.gpus) == (800, 512, 8)
    assert schedule.dataset_size == 1_281_167 and schedule.drop_last
    assert schedule.iters_per_epoch == 312
    assert schedule.iterations == 249_600


def test_projection_arithmetic_by_hand(schedule):
    # 249,600 iterations x 512 images / 5765 images/s = 22,167.4 s = 6.1576 h on 8 GPUs.
    assert schedule.wall_clock_hours(5765) == pytest.approx(249_600 * 512 / 5765 / 3600)
    assert schedule.wall_clock_hours(5765) == pytest.approx(6.1576, abs=1e-4)
    assert schedule.gpu_hours(5765) == pytest.approx(49.261, abs=1e-3)
    # The padded and dropped images move it by 0.25% from 1,281,167 x 800 / (5765 x 8) s.
    assert schedule.wall_clock_hours(5765) == pytest.approx(
        1_281_167 * 800 / (5765 * 8) / 3600, rel=0.003)
    # 80% scaling efficiency: each GPU trains 0.8 x 5765 images/s.
    assert schedule.wall_clock_hours(5765, 0.8) == pytest.approx(6.1576 / 0.8, abs=1e-4)


def test_gpus_flag_keeps_the_per_gpu_batch(tool):
    """4 GPUs: ceil(1,281,167 / 4) = 320,292 images each, floor(/ 512) = 625 iterations per
    epoch, 500,000 in all: twice the wall-clock, the same GPU-hours up to the dropped tail."""
    four = tool.read_schedule(CONFIG, gpus=4)
    assert (four.gpus, four.iters_per_epoch, four.iterations) == (4, 625, 500_000)
    assert four.wall_clock_hours(5765) == pytest.approx(500_000 * 512 / 5765 / 3600)
    assert four.gpu_hours(5765) == pytest.approx(49.34, abs=0.01)


def test_reads_both_result_kinds_and_bounds_fastmim_by_the_loader(tool, schedule, tmp_path):
    fp16 = write(tmp_path, 'vit_b_cuda.json',
                 benchmark_result(dict(fastmim=5765., simmim=2275., mae=2839.)))
    compiled = write(tmp_path, 'vit_b_compile_cuda.json',
                     benchmark_result(dict(fastmim=7232.), compile_mode='reduce-overhead'))
    loader = write(tmp_path, 'pretrain_speed.json', train_speed_result(6000.))
    measurements = [m for path in (fp16, compiled, loader)
                    for m in tool.read_measurements(path, schedule)]
    assert [(m.method, m.images_per_s, m.end_to_end) for m in measurements] == [
        ('fastmim', 5765., False), ('simmim', 2275., False), ('mae', 2839., False),
        ('fastmim', 7232., False), ('fastmim', 6000., True)]
    assert measurements[3].source == ('vit_b_compile_cuda.json: NVIDIA H100 80GB HBM3, float16 '
                                      'autocast, torch.compile (reduce-overhead), batch 256, '
                                      'synthetic inputs')
    # The precision the run trained in, not its --amp flag (off for the recipe's own fp16).
    assert ('tools/train.py, float16 autocast, batch 512, JPEG loader (waits 25%'
            in measurements[4].source)
    rows = tool.bound_by_loader(measurements)
    assert [(row.images_per_s, row.bound) for row in rows] == [
        (5765., 'the step (end-to-end run faster)'),
        (2275., 'the step (no loader)'),  # the end-to-end run is FastMIM's only
        (2839., 'the step (no loader)'),
        (6000., 'the end-to-end run (capped)'),  # the compiled step outruns the loader
        (6000., 'the end-to-end run')]


def test_command_prints_the_table_beside_the_paper(tool, tmp_path, capsys):
    fp16 = write(tmp_path, 'vit_b_cuda.json', benchmark_result(dict(fastmim=5765., mae=2839.)))
    tool.main([str(fp16), '--rate', 'simmim', '2275', 'docs/benchmark.md section 6, run 1'])
    text = capsys.readouterr().out
    assert ('800 epochs of 1,281,167 images, 8 GPUs x batch 512: 312 iterations per epoch, '
            '249,600 in all; linear scaling') in text
    lines = {line.split(' | ')[0]: line for line in text.splitlines() if line.startswith('| ')}
    # fastmim: 6.2 h x 8 = 49.3 GPU-hours against the paper's 608 (12.3x).
    assert lines['| fastmim'].endswith('| 5,765 | the step (no loader) | 249,600 | 6.2 | 49.3 '
                                       '| 608 | 12.3x |')
    # simmim: 249,600 x 512 / 2275 / 3600 = 15.60 h, 124.8 GPU-hours; the paper's 3307.
    assert lines['| simmim'] == ('| simmim | docs/benchmark.md section 6, run 1 | 2,275 | the '
                                 'step (no loader) | 249,600 | 15.6 | 124.8 | 3307 | 26.5x |')
    assert lines['| mae'].endswith('| 12.5 | 100.0 | 2069 | 20.7x |')
    tool.main(['--rate', 'fastmim', '5765', 'x', '--scaling-efficiency', '0.5'])
    text = capsys.readouterr().out
    assert '50% scaling efficiency' in text and '| 12.3 | 98.5 | 608 | 6.17x |' in text


@pytest.mark.parametrize('content, message', [
    ('{"records": [', r'bad\.json is not JSON'),
    ('[1, 2]', r'bad\.json: expected a JSON object, got list'),
    ('{"loss": 1}', r"bad\.json: neither a benchmark_pretrain\.py result \(keys 'settings' and "
     r"'records'\) nor a train_speed\.py result"),
    (json.dumps(train_speed_result(5000., task='detection')),
     r"bad\.json: a train_speed\.py 'detection' result; the projection needs the 'pretrain'"),
    (json.dumps(benchmark_result({'fastmim': -1.})),
     r'bad\.json: records\[0\]\.images_per_s must be a positive number'),
    (json.dumps({**benchmark_result({}), 'records': [dict(method='fastmim', batch_size=8)]}),
     r"bad\.json: records\[0\] has no 'images_per_s'"),
    (json.dumps(benchmark_result({'fastmim': 9.}) | dict(
        settings=dict(config='configs/fastmim/swin_b_hog_400e.py'))),
     r'bad\.json: settings\.config is configs/fastmim/swin_b_hog_400e\.py, not the recipe being '
     r'projected \(vit_b_hog_800e\.py\)'),
])
def test_a_wrong_file_is_named_with_its_key(tool, schedule, tmp_path, content, message):
    path = tmp_path / 'bad.json'
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        tool.read_measurements(path, schedule)


def test_a_toy_backbone_is_refused(tool, schedule, tmp_path):
    result = benchmark_result({'fastmim': 35.})
    result['settings']['arch_override'] = dict(embed_dim=32, depth=2, num_heads=2)
    path = write(tmp_path, 'tiny.json', result)
    with pytest.raises(ValueError, match=r'tiny\.json: settings\.arch_override is'):
        tool.read_measurements(path, schedule)


def test_command_line_errors(tool, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.json'):
        tool.main([str(tmp_path / 'missing.json')])
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')  # was a traceback ending in '<unknown>'
    with pytest.raises(LaunchError, match=r'broken\.py, line 1: .* never closed'):
        tool.read_schedule(broken)
    with pytest.raises(ValueError, match='nothing to project'):
        tool.main([])
    with pytest.raises(ValueError, match="--rate fastmim must be a positive number of "
                       "images/s, got 'fast'"):
        tool.main(['--rate', 'fastmim', 'fast', 'x'])
    with pytest.raises(ValueError, match=r'--scaling-efficiency must be in \(0, 1\]'):
        tool.main(['--rate', 'fastmim', '1', 'x', '--scaling-efficiency', '1.5'])
    loaders = [write(tmp_path, f'speed{i}.json', train_speed_result(5000.)) for i in range(2)]
    with pytest.raises(ValueError, match='at most one train_speed.py result: speed0.json, '
                       'speed1.json'):
        tool.main([str(path) for path in loaders])


def test_a_binary_file_or_an_infinite_rate_is_one_error(tool, schedule, tmp_path):
    """A checkpoint given as a result file was a UnicodeDecodeError traceback, --rate fastmim
    inf a ZeroDivisionError in the table."""
    path = tmp_path / 'epoch_1.pth'
    path.write_bytes(b'PK\x03\x04' + bytes(range(128, 256)))
    with pytest.raises(ValueError, match=r'epoch_1\.pth is not JSON: not UTF-8 text'):
        tool.read_measurements(path, schedule)
    with pytest.raises(ValueError, match='--rate fastmim must be a positive number of '
                       'images/s, got inf'):
        tool.main(['--rate', 'fastmim', 'inf', 'x'])


def test_a_progressive_config_is_refused(tool):
    """FastMIM-P's first stage trains at 96 px with batch 512 per GPU, its second at 128 px
    with 256: the projection took 512 for all 800 epochs and one rate for both sizes."""
    with pytest.raises(ValueError, match=r'vit_b_hog_800e_progressive\.py: a '
                       r'ProgressiveResolutionHook trains stages .*input_size.: 96'):
        tool.read_schedule(CONFIG.with_name('vit_b_hog_800e_progressive.py'))


def test_a_method_the_paper_does_not_report_is_named(tool, capsys):
    """A misspelt --rate method got '-' in the paper columns and no word of why."""
    tool.main(['--rate', 'fastmi', '5765', 'x', '--rate', 'mae', '2839', 'y'])
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == ('No paper figure for fastmi: the paper reports fastmim, '
                                     'mae, simmim for this recipe.')
    tool.main(['--rate', 'fastmim', '5765', 'x'])
    assert 'No paper figure' not in capsys.readouterr().out


def test_a_config_that_is_no_config_file_is_named(tool, tmp_path):
    """mmengine called a folder a file that 'does not exist' and refused a checkpoint given as
    the config with 'Only py/yml/yaml/json type are supported now!', naming no file."""
    with pytest.raises(LaunchError, match=rf'config {CONFIG.parent} is a folder; '
                       'expected a config file'):
        tool.main(['--rate', 'fastmim', '5700', 'x', '--config', f'{CONFIG.parent}/'])
    checkpoint = tmp_path / 'epoch_800.pth'
    checkpoint.write_bytes(b'PK\x03\x04')
    with pytest.raises(LaunchError, match=r'config .*epoch_800\.pth is not a \.py/'):
        tool.main(['--rate', 'fastmim', '5700', 'x', '--config', str(checkpoint)])


def test_a_config_that_does_not_pre_train_is_refused(tool):
    """A fine-tuning config was projected as a pre-training recipe without a word: its
    classifier's schedule beside FastMIM's, SimMIM's and MAE's pre-training rates."""
    fine_tune = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
    with pytest.raises(ValueError, match=r'demo_vit_tiny_embedded_ft\.py: its model is '
                       r'ImageClassifier, not a pre-training algorithm \(FastMIM\); give a '
                       r'pre-training config'):
        tool.main(['--rate', 'fastmim', '100', 'me', '--config', str(fine_tune)])
