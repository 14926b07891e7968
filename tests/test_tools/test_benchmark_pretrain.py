"""tools/analysis/benchmark_pretrain.py (with pretrain_methods.py) and fastmim.benchmark: what
is measured, not how fast.

Timings depend on the machine and are never asserted; the tests check that the three methods
are the published recipes (input size, tokens the encoder sees, forward cost against the
published per-image estimates), that a run writes complete records, and that the verdicts
apply the claims' thresholds.
"""
import json
import math
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastmim.benchmark.measure import (COMPILE_MODES, StepOptions, count_forward_gmacs,
                                       resolve_device, time_training_steps)
from fastmim.benchmark.pipeline_speed import (plain_full_decode, variant_pipeline,
                                              write_jpeg_photos)
from fastmim.benchmark.report import format_report

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis' / 'benchmark_pretrain.py'
# The tool's modules import each other by name, as they do when the tool runs.
sys.path.insert(0, str(TOOL.parent))
import benchmark_pretrain  # noqa: E402  isort:skip
from benchmark_pretrain import evaluate_targets  # noqa: E402  isort:skip
from pretrain_methods import build_method, methods_for  # noqa: E402  isort:skip
TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)
TINY_MAE_DECODER = dict(decoder_dim=32, decoder_depth=1, decoder_heads=2)
RECORD_KEYS = {'method', 'backbone', 'input_size', 'batch_size', 'images_per_s', 'peak_mem_mb',
               'gflops_per_img', 'mfu'}


def run_tool(args):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, str(TOOL)] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """One CPU run of the command on a 2-block ViT: every method, HOG, data pipeline, plot,
    written into a folder the run makes (it was refused: '--out folder does not exist')."""
    folder = tmp_path_factory.mktemp('benchmark') / 'not made yet'
    out, plot = folder / 'results.json', folder / 'results.png'
    result = run_tool([
        '--backbone', 'vit_b', '--arch-override', json.dumps(TINY_VIT),
        '--mae-decoder', json.dumps(TINY_MAE_DECODER), '--batch-size', '2',
        '--iters', '1', '--warmup', '1', '--device', 'cpu', '--matmul-size', '128',
        '--data-sizes', '300', '--data-samples', '3', '--photo-limit', '2',
        '--out', str(out), '--plot', str(plot)])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), plot, result.stdout


def test_run_writes_one_complete_record_per_method(tiny_run):
    results, _, _ = tiny_run
    records = results['records']
    assert [r['method'] for r in records] == ['fastmim', 'simmim', 'mae']
    for record in records:
        assert RECORD_KEYS <= set(record)
        assert record['backbone'] == 'vit_b' and record['batch_size'] == 2
        for key in ('images_per_s', 'peak_mem_mb', 'gflops_per_img', 'mfu'):
            assert isinstance(record[key], float) and math.isfinite(record[key])
            assert record[key] > 0, key
        assert record['peak_mem_kind'] == 'cpu_peak_rss_fresh_process'
        assert record['peak_mem_mb'] >= record['rss_after_import_mb'] > 0
        # The issue's convention: achieved FLOP/s = 3 x forward FLOPs x images/s.
        achieved = 3 * record['gflops_per_img'] * record['images_per_s']
        assert record['achieved_gflops_per_s'] == pytest.approx(achieved)
        assert record['mfu'] == pytest.approx(achieved / results['matmul_peak']['gflops_per_s'])
    peak = results['matmul_peak']
    assert peak['gflops_per_s'] == max(peak['before_methods'], peak['after_methods']) > 0
    assert [(r['input_size'], r['tokens'], r['grid_tokens']) for r in records] == [
        (128, 64, 64), (224, 196, 196), (224, 49, 196)]


def test_run_has_hog_data_machine_and_verdicts(tiny_run):
    results, _, stdout = tiny_run
    assert results['hog']['target'] == 'HOGGenerator'
    assert results['hog']['input_size'] == 128 and results['hog']['time_s'] > 0
    assert results['hog']['fraction_of_fastmim_step'] == pytest.approx(
        results['hog']['time_s'] / results['records'][0]['step_time_s'])
    variants = [(r['jpeg_long_side'], r['variant']) for r in results['data_pipeline']]
    assert variants == [(300, 'full decode'), (300, 'draft decode'),
                        (300, 'full decode, same transforms')]
    assert all(r['images_per_s'] > 0 for r in results['data_pipeline'])
    assert [(r['lazy'], r['reducing_gap']) for r in results['data_pipeline']] == [
        (False, None), (True, 1.0), (False, None)]
    assert {'cpu', 'cpu_cores', 'torch_threads', 'torch', 'precision'} <= set(results['machine'])
    assert set(results['machine']['load_average_1_5_15']) == {'start', 'end'}
    names = [t['name'] for t in results['targets']]
    assert 'vit_b images/s fastmim / simmim' in names and 'vit_b images/s fastmim / mae' in names
    assert 'method' in stdout and 'claims:' in stdout


def test_plot_is_a_png(tiny_run):
    _, plot, _ = tiny_run
    with Image.open(plot) as image:
        assert image.format == 'PNG' and image.width > 300 and image.height > 200


def count_encoder_tokens(method):
    """Tokens entering the first encoder block and the image size entering the patch embedding,
    observed with hooks during one training forward."""
    encoder = method.model.encoder if method.name == 'mae' else method.model.model.backbone
    seen = {}

    def record(key, value):
        def hook(module, args):
            seen.setdefault(key, value(args[0]))  # the first call: the encoder's input
        return hook

    hooks = [
        encoder.patch_embed.register_forward_pre_hook(
            record('image', lambda x: tuple(x.shape[-2:]))),
        encoder.blocks[0].register_forward_pre_hook(record('tokens', lambda x: x.shape[1])),
    ]
    method.model.loss(torch.randn(2, 3, method.input_size, method.input_size))
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize('name, size, tokens', [
    ('fastmim', 128, 1 + (128 // 16)**2),  # class token + all 64 patches
    ('simmim', 224, 1 + (224 // 16)**2),  # class token + all 196 patches
    ('mae', 224, 1 + (224 // 16)**2 // 4),  # class token + the 25% kept (49)
])
def test_methods_feed_the_encoder_the_published_inputs(name, size, tokens):
    method = build_method(name, 'vit_b', TINY_VIT, mae_decoder=TINY_MAE_DECODER)
    assert count_encoder_tokens(method) == dict(image=(size, size), tokens=tokens)


def test_simmim_uses_a_linear_head_and_pixel_target():
    simmim = build_method('simmim', 'vit_b', TINY_VIT).model.model
    assert [type(m).__name__ for m in simmim.neck.modules()] == ['TokenLinear', 'Linear']
    assert simmim.neck.predict.out_features == 3 * 16 * 16
    assert type(simmim.target_generator).__name__ == 'PixelTarget'


# backbone: (FastMIM size, tokens), (SimMIM size, tokens, target patch, backbone geometry)
PUBLISHED_INPUTS = {
    'vit_b': ((128, 64), (224, 196, 16, dict(img_size=224))),
    'swin_b': ((128, 16), (192, 36, 32, dict(img_size=192, window_size=6))),
    'pvtv2_b2': ((128, 16), (192, 36, 32, {})),
    'cmt_s': ((128, 16), (192, 36, 32, dict(img_size=192))),
    'eva02_b': ((128, 64), (224, 196, 16, dict(img_size=224))),
}


@pytest.mark.parametrize('backbone', sorted(PUBLISHED_INPUTS))
def test_each_backbone_gets_its_recipes_sizes_grid_and_target_patch(backbone):
    """The stride and whether the backbone takes an input size come from the built backbone
    (they were a table beside it, which had no EVA-02). Full sizes, built on the meta device."""
    (fastmim_size, fastmim_tokens), (size, tokens, patch, geometry) = PUBLISHED_INPUTS[backbone]
    with torch.device('meta'):
        fastmim, simmim = (build_method(name, backbone) for name in ('fastmim', 'simmim'))
    assert (fastmim.input_size, fastmim.tokens) == (fastmim_size, fastmim_tokens)
    assert (simmim.input_size, simmim.tokens, simmim.grid_tokens) == (size, tokens, tokens)
    model = simmim.model.model
    assert model.target_generator.cell_size == patch
    built = model.backbone.geometry()
    assert {key: built[key] for key in geometry} == geometry


def transformer_macs(tokens, dim, depth, mlp_ratio=4):
    """Multiply-adds of ``depth`` pre-norm Transformer blocks: qkv, projection and MLP linears
    ``(4 + 2 * mlp_ratio) * N * D^2``, plus ``q k^T`` and ``attn v`` ``2 * N^2 * D``."""
    return depth * ((4 + 2 * mlp_ratio) * tokens * dim**2 + 2 * tokens**2 * dim)


def expected_macs(method, dim, depth, mae_dim=512, mae_depth=8):
    """Linear + attention multiply-adds per image of the three ViT/16 methods (the estimate
    REFERENCE.md quotes), written from the published architectures."""
    patch_values = 3 * 16 * 16
    if method == 'fastmim':  # 128 px, 64 tokens; decoder 256 x 1 predicting 108 HOG values
        n = (128 // 16)**2
        return (n * patch_values * dim + transformer_macs(n + 1, dim, depth) + n * dim * 256 +
                transformer_macs(n, 256, 1) + n * 256 * 108)
    n = (224 // 16)**2
    if method == 'simmim':  # 224 px, 196 tokens; one linear layer predicting the patch pixels
        return n * patch_values * dim + transformer_macs(n + 1, dim, depth) + n * dim * 768
    kept = n // 4  # mae: encoder on 49 tokens, decoder on all 196 (+ class token)
    return (n * patch_values * dim + transformer_macs(kept + 1, dim, depth) +
            (kept + 1) * dim * mae_dim + transformer_macs(n + 1, mae_dim, mae_depth) +
            n * mae_dim * patch_values)


def test_forward_cost_formula_gives_the_published_estimates():
    """REFERENCE.md: ViT-B about 5.7 GMACs for FastMIM at 128, 17.6 for SimMIM at 224, 9.7
    for MAE: the formula the counter is checked against below reproduces them."""
    for method, published in dict(fastmim=5.7, simmim=17.6, mae=9.7).items():
        assert expected_macs(method, 768, 12) / 1e9 == pytest.approx(published, rel=0.015)


@pytest.mark.parametrize('method', ['fastmim', 'simmim', 'mae'])
def test_forward_cost_counts_linears_and_fused_attention(method):
    """mmengine's counter plus the fused-attention handle against the formula; without the
    handle attention (8-25% of these models) would be missing. LayerNorms, which the counter
    also counts, stay under 2% at this width."""
    arch = dict(embed_dim=128, depth=2, num_heads=2)
    decoder = dict(decoder_dim=128, decoder_depth=1, decoder_heads=2)
    built = build_method(method, 'vit_b', arch, mae_decoder=decoder)
    counted = count_forward_gmacs(built.model, built.input_size, torch.device('cpu'))
    assert counted * 1e9 == pytest.approx(
        expected_macs(method, 128, 2, mae_dim=128, mae_depth=1), rel=0.02)


def test_mae_is_vit_only_and_unknown_backbones_are_named():
    assert methods_for('swin_b') == ('fastmim', 'simmim')
    with pytest.raises(ValueError, match="'mae' does not apply to 'swin_b'"):
        build_method('mae', 'swin_b')
    with pytest.raises(ValueError, match="unknown backbone 'vit_z'"):
        build_method('fastmim', 'vit_z')
    with pytest.raises(ValueError, match=r"unknown keys \['width'\]"):
        build_method('mae', 'vit_b', TINY_VIT, mae_decoder=dict(width=8))


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match='no CUDA device'):
        resolve_device('cuda')


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_measuring(tmp_path,
                                                                             monkeypatch):
    """--plot results.txt failed in savefig after the whole benchmark."""
    def measure(*args, **kwargs):
        raise AssertionError('measured before --plot was checked')
    monkeypatch.setattr(benchmark_pretrain, 'resolve_device', measure)
    with pytest.raises(ValueError, match=r"--plot .*results\.txt: matplotlib writes no 'txt' "
                       r'files; give a name ending in one of .*\.png'):
        benchmark_pretrain.main(['--backbone', 'vit_b', '--out', str(tmp_path / 'r.json'),
                                 '--plot', str(tmp_path / 'results.txt')])


@pytest.mark.parametrize('plot', ['r.png', './r.png', 'link.png'])
def test_the_same_file_for_results_and_plot_is_refused_before_measuring(tmp_path, monkeypatch,
                                                                        plot):
    """--out X --plot X wrote the results, then replaced them with the plot."""
    def measure(*args, **kwargs):
        raise AssertionError('measured before --out and --plot were compared')
    monkeypatch.setattr(benchmark_pretrain, 'resolve_device', measure)
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'link.png').symlink_to(tmp_path / 'r.png')
    with pytest.raises(ValueError, match=rf'^--out r\.png and --plot {re.escape(plot)} are the '
                       r'same file: the plot would replace the results; give two names$'):
        benchmark_pretrain.main(['--backbone', 'vit_b', '--out', 'r.png', '--plot', plot])


def test_the_results_are_replaced_atomically(tmp_path, monkeypatch):
    """open(--out, 'w') emptied an earlier result before writing: a run killed there, or a
    value JSON cannot hold, left half a file. Now a temporary file beside it replaces it."""
    monkeypatch.setattr(benchmark_pretrain, 'run_benchmark', lambda *args, **kwargs: {'a': 1})
    monkeypatch.setattr(benchmark_pretrain, 'format_report', lambda results: 'report')
    replaced = []
    replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: (replaced.append((src, dst)),
                                                         replace(src, dst)))
    out = tmp_path / 'r.json'
    benchmark_pretrain.main(['--backbone', 'vit_b', '--out', str(out)])
    ((temporary, target), ) = replaced
    assert (Path(temporary).parent, target) == (tmp_path, str(out))
    assert json.loads(out.read_text()) == {'a': 1}


def test_jpeg_photos_have_the_requested_size(tmp_path):
    paths = write_jpeg_photos(str(tmp_path), 500, limit=3)
    assert len(paths) == 3
    for path in paths:
        with Image.open(path) as image:
            assert image.format == 'JPEG' and max(image.size) == 500


def test_variant_pipeline_only_switches_lazy_decoding():
    pipeline = [dict(type='LoadImageRGB'), dict(type='RandomResizedCrop', size=128),
                dict(type='PackInputs')]
    lazy = variant_pipeline(pipeline, True)
    assert lazy == [dict(type='LoadImageRGB', lazy=True), dict(type='RandomResizedCrop', size=128),
                    dict(type='PackInputs')]
    assert pipeline[0] == dict(type='LoadImageRGB')
    with pytest.raises(ValueError, match='needs LoadImageRGB and RandomResizedCrop'):
        variant_pipeline([dict(type='PackInputs')], True)


def test_baseline_is_torchvisions_full_decode_crop(tmp_path):
    """The plain baseline draws its boxes with torchvision's sampler from the config's crop
    settings and returns the uint8 CHW tensor the pipeline ships."""
    from torchvision import transforms

    path = write_jpeg_photos(str(tmp_path), 300, limit=1)[0]
    pipeline = [dict(type='LoadImageRGB'),
                dict(type='RandomResizedCrop', size=(48, 64), scale=(0.3, 0.6),
                     interpolation='bilinear')]
    torch.manual_seed(0)
    tensor = plain_full_decode(pipeline)(path)
    torch.manual_seed(0)
    with Image.open(path) as image:
        expected = transforms.Compose([
            transforms.RandomResizedCrop((48, 64), scale=(0.3, 0.6),
                                         interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.RandomHorizontalFlip(), transforms.PILToTensor()])(image.convert('RGB'))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 48, 64)
    torch.testing.assert_close(tensor, expected)


def test_verdicts_apply_the_published_thresholds():
    def record(method, images_per_s, memory, gflops):
        return dict(method=method, images_per_s=images_per_s, peak_mem_mb=memory,
                    gflops_per_img=gflops, mfu=0.5, peak_mem_kind='cuda_max_allocated',
                    rss_after_import_mb=None)

    results = dict(
        settings=dict(backbone='vit_b'),
        records=[record('fastmim', 30., 100., 11.4), record('simmim', 10., 400., 35.2),
                 record('mae', 20., 250., 19.4)],
        hog=dict(fraction_of_fastmim_step=0.05),
        data_pipeline=[dict(variant='draft decode', jpeg_long_side=500,
                            speedup_vs_full_decode=2.5)])
    verdicts = {t['name']: t for t in evaluate_targets(results)}
    speedup = verdicts['vit_b images/s fastmim / simmim']
    assert (speedup['measured'], speedup['met']) == (3.0, True)
    assert speedup['expected_from_flops'] == pytest.approx(35.2 / 11.4)
    assert verdicts['vit_b images/s fastmim / mae']['met'] is False  # 1.5 < 1.6
    assert verdicts['vit_b peak memory fastmim / simmim']['met'] is True  # 0.25 <= 1/3
    assert verdicts['vit_b fastmim MFU (3x forward FLOPs / matmul peak)']['met'] is False
    assert verdicts['vit_b HOG time / fastmim step time']['met'] is False  # 5% > 3%
    assert verdicts['data pipeline draft / full decode, 500-px JPEGs']['met'] is True


class TinyLoss(torch.nn.Module):
    """The two calls the step timer makes, on one linear layer."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, 1)

    def loss(self, images):
        return self.linear(images.flatten(1)).square().mean()


@pytest.mark.parametrize('mode', COMPILE_MODES)
def test_compile_mode_reaches_torch_compile(monkeypatch, mode):
    """The timed loss is torch.compile'd in the asked mode, and only with --compile."""
    calls = []

    def fake_compile(function, **kwargs):
        calls.append(kwargs)
        return function

    monkeypatch.setattr(torch, 'compile', fake_compile)
    cpu = torch.device('cpu')
    time_training_steps(TinyLoss(), 8, 2, 1, 1, cpu, StepOptions(compile=True, compile_mode=mode))
    assert calls == [dict(mode=mode)]
    time_training_steps(TinyLoss(), 8, 2, 1, 0, cpu, StepOptions())
    assert len(calls) == 1


@pytest.fixture
def compile_run(monkeypatch):
    """``run_benchmark`` of fastmim alone with each method's process replaced by a fixed record:
    the specs the processes would get, and the results."""
    specs = []

    def fake_measure(spec, timeout=None):
        specs.append(spec)
        return dict(method=spec.method, backbone=spec.backbone, input_size=128,
                    batch_size=spec.batch_size, images_per_s=10., peak_mem_mb=100.,
                    gflops_per_img=1., mfu=None, achieved_gflops_per_s=30., tokens=64,
                    grid_tokens=64, step_time_s=0.1, step_time_min_s=0.1,
                    peak_mem_kind='cpu_peak_rss_fresh_process', rss_after_import_mb=50.)

    monkeypatch.setattr(benchmark_pretrain, 'measure_in_fresh_process', fake_measure)

    def run(**compile_args):
        specs.clear()
        results = benchmark_pretrain.run_benchmark(
            'vit_b', batch_size=1, iters=1, warmup=1, device='cpu', methods=['fastmim'],
            arch_override=TINY_VIT, matmul_size=64, data_sizes=(), **compile_args)
        return specs[0], results
    return run


@pytest.mark.parametrize('compile_args, mode', [
    (dict(compile=True, compile_mode='reduce-overhead'), 'reduce-overhead'),
    (dict(compile=True), 'default'),  # recorded, so a result says which mode it ran
    (dict(), None),
])
def test_compile_mode_is_recorded_and_shown(compile_run, compile_args, mode):
    spec, results = compile_run(**compile_args)
    assert spec.step_options().compile_mode == mode
    assert results['settings']['compile_mode'] == results['machine']['compile_mode'] == mode
    json.dumps(results)
    header = format_report(results).splitlines()[0]
    if mode is None:
        assert 'torch.compile' not in header
    else:
        assert header.endswith(f'torch.compile (mode {mode})')


def test_compile_mode_without_compile_is_a_clear_error(compile_run, tmp_path):
    with pytest.raises(ValueError, match='--compile-mode max-autotune needs --compile'):
        compile_run(compile_mode='max-autotune')
    with pytest.raises(ValueError, match='compile_mode must be one of'):
        compile_run(compile=True, compile_mode='fast')
    result = run_tool(['--backbone', 'vit_b', '--compile-mode', 'reduce-overhead',
                       '--out', str(tmp_path / 'results.json')])
    assert result.returncode != 0
    assert '--compile-mode reduce-overhead needs --compile' in result.stderr
    assert not (tmp_path / 'results.json').exists()


@pytest.mark.parametrize('compiled, expected', [
    (True, {'vit_b fastmim MFU (3x forward FLOPs / matmul peak), compiled': True}),
    (False, {}),  # the GPU target is for a compiled step only
])
def test_gpu_mfu_target_is_issue_10s_compiled_45_percent(compiled, expected):
    fastmim = dict(method='fastmim', images_per_s=30., peak_mem_mb=100., gflops_per_img=11.4,
                   mfu=0.47)
    verdicts = evaluate_targets(dict(settings=dict(backbone='vit_b', device='cuda',
                                                   compile=compiled), records=[fastmim]))
    assert {t['name']: t['met'] for t in verdicts if 'MFU' in t['name']} == expected


def test_a_wrong_arch_override_is_named_before_anything_is_measured(monkeypatch):
    """It failed in each method's process, as a traceback inside the parent's, after the
    matmul peak, HOG and data pipeline had been timed."""
    def measured(*args, **kwargs):
        raise AssertionError('measured before the arch was checked')
    monkeypatch.setattr(benchmark_pretrain, 'measure_matmul_peak', measured)
    with pytest.raises(ValueError, match=r'--arch-override \{"dpth": 1\} does not build a vit_b '
                       r"model: VisionTransformer: arch dict .* lacks keys \['embed_dim', "
                       r"'depth', 'num_heads'\]"):
        benchmark_pretrain.run_benchmark('vit_b', arch_override={'dpth': 1})


@pytest.mark.parametrize('backbone, override, message', [
    ('vit_b', {'embed_dim': 'x', 'depth': 1, 'num_heads': 3}, r"embed_dim must be an int >= 1 "
     r"\(a size\), got 'x'"),
    ('vit_b', {'embed_dim': 192, 'depth': 0, 'num_heads': 3}, r'depth must be an int >= 1 '
     r'\(a size\), got 0'),
    ('vit_b', {'embed_dim': 192, 'depth': True, 'num_heads': 3}, r'depth must be an int >= 1 '
     r'\(a size\), got True'),
    ('swin_b', {'embed_dim': 32, 'depths': [1, 0], 'num_heads': [1, 2]}, r'depths must be '
     r'ints >= 1 \(sizes\), got \[1, 0\]')])
def test_an_arch_override_size_that_is_no_count_is_named_with_its_key(monkeypatch, backbone,
                                                                     override, message):
    """A string ended in 'does not build a vit_b model: not all arguments converted during
    string formatting', a depth of 0 in 'out index -1 is out of range for 0 blocks': neither
    named the key."""
    def measured(*args, **kwargs):
        raise AssertionError('measured before the arch was checked')
    monkeypatch.setattr(benchmark_pretrain, 'measure_matmul_peak', measured)
    with pytest.raises(ValueError, match=rf'^--arch-override {re.escape(json.dumps(override))}: '
                       rf'{message}$'):
        benchmark_pretrain.run_benchmark(backbone, arch_override=override)


def test_a_negative_warmup_is_refused_where_it_is_typed(capsys):
    """It was refused only after the outputs were checked, as 'warmup must be an int >= 0',
    without the flag's --."""
    with pytest.raises(SystemExit):
        benchmark_pretrain.parse_args(['--backbone', 'vit_b', '--out', 'r.json', '--warmup',
                                       '-1'])
    assert 'argument --warmup: must be 0 or more, got -1' in capsys.readouterr().err


@pytest.mark.parametrize('flag, path, message', [
    ('--out', 'a_folder', r'--out .*a_folder is a folder; expected a file name'),
    ('--plot', 'a_file/plot.png', r'--plot .*a_file/plot\.png: .*a_file is a file')])
def test_outputs_that_cannot_be_written_are_named_before_measuring(tmp_path, monkeypatch, flag,
                                                                   path, message):
    """They failed only after the whole run; a bad --plot after the JSON had been written."""
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'a_file').write_text('')
    def measured(*args, **kwargs):
        raise AssertionError('measured before the outputs were checked')
    monkeypatch.setattr(benchmark_pretrain, 'run_benchmark', measured)
    outputs = {'--out': str(tmp_path / 'results.json'), flag: str(tmp_path / path)}
    with pytest.raises(OSError, match=message):
        benchmark_pretrain.main(['--backbone', 'vit_b', *sum(outputs.items(), ())])
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'a_folder']


@pytest.mark.parametrize('option, value', [('matmul_size', 0), ('photo_limit', 0),
                                           ('photo_limit', -3), ('data_sizes', [300, 0])])
def test_counts_below_one_are_named_before_anything_is_measured(monkeypatch, option, value):
    """--matmul-size 0 measured at the default size, --photo-limit 0 ended in a
    ZeroDivisionError after the matmul peak and HOG, a negative one left out the last photos,
    and --data-sizes 0 timed '0-px JPEGs', all without a word."""
    def measured(*args, **kwargs):
        raise AssertionError('measured before the counts were checked')
    monkeypatch.setattr(benchmark_pretrain, 'measure_matmul_peak', measured)
    shown = value[-1] if isinstance(value, list) else value
    with pytest.raises(ValueError, match=rf'^{option} must be an int >= 1, got {shown}$'):
        benchmark_pretrain.run_benchmark('vit_b', **{option: value})
    flag = '--' + option.replace('_', '-')
    with pytest.raises(SystemExit):
        benchmark_pretrain.parse_args(['--backbone', 'vit_b', '--out', 'r.json', flag,
                                       *map(str, value if isinstance(value, list) else [value])])


@pytest.mark.parametrize('mae_decoder, methods, message', [
    ({'decoder_dim': 0}, None, r'decoder_dim must be an int >= 1, got 0'),
    ({'decoder_dim': 32, 'decoder_heads': 3}, None,
     r'decoder_dim 32 is not divisible by decoder_heads 3'),
    ({'decoder_dm': 8}, None, r"unknown keys \['decoder_dm'\]"),
    ({'decoder_dim': 32}, ['fastmim'], r'is for MAE, which this run does not measure'),
])
def test_a_wrong_mae_decoder_is_named_before_anything_is_measured(monkeypatch, mae_decoder,
                                                                  methods, message):
    """It failed in MAE's process, the last one, as a ZeroDivisionError, timm's bare
    AssertionError or a ValueError traceback inside the parent's, after FastMIM and SimMIM had
    been measured; with no MAE in the run it was ignored without a word."""
    def measured(*args, **kwargs):
        raise AssertionError('measured before the MAE decoder was checked')
    monkeypatch.setattr(benchmark_pretrain, 'measure_matmul_peak', measured)
    with pytest.raises(ValueError, match=rf'^--mae-decoder {re.escape(json.dumps(mae_decoder))}'
                       rf'.*{message}'):
        benchmark_pretrain.run_benchmark('vit_b', arch_override=TINY_VIT, methods=methods,
                                         mae_decoder=mae_decoder)


@pytest.mark.parametrize('baseline', ['rss_after_import_mb', 'static_mem_mb'])
def test_memory_above_a_baseline_simmim_did_not_exceed_is_no_claim(baseline):
    """A small model's SimMIM step can peak at the baseline itself: the ratio was a
    ZeroDivisionError after every method had been measured, and the results were lost."""
    def record(method, peak, base):
        return {'method': method, 'images_per_s': 10., 'peak_mem_mb': peak,
                'gflops_per_img': 1., 'peak_mem_kind': 'rss', 'mfu': None,
                'rss_after_import_mb': None, 'static_mem_mb': None, baseline: base}

    results = dict(settings=dict(backbone='vit_b'),
                   records=[record('fastmim', 790., 700.), record('simmim', 776., 776.)])
    names = [t['name'] for t in evaluate_targets(results)]
    assert 'vit_b peak memory fastmim / simmim' in names
    assert not [name for name in names if 'above' in name]

    results['records'][1][baseline] = 676.
    above = [t for t in evaluate_targets(results) if 'above' in t['name']]
    assert [t['measured'] for t in above] == [pytest.approx(90 / 100)]


def test_the_method_runner_explains_itself(capsys):
    """-h of the per-method script ended in a JSONDecodeError traceback."""
    import pretrain_methods
    pretrain_methods.main(['-h'])
    assert 'benchmark_pretrain.py runs this once per method' in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"SPEC_JSON is no JSON \(.*\): 'x\{'"):
        pretrain_methods.main(['x{'])


def test_hog_is_timed_after_the_runs_warmup(monkeypatch):
    """--warmup did not reach the HOG timing: it always warmed up twice."""
    class Stop(Exception):
        pass

    def time_hog(target_cfg, batch_size, input_size, device, iters, warmup):
        assert (iters, warmup) == (3, 0)
        raise Stop
    monkeypatch.setattr(benchmark_pretrain, 'measure_matmul_peak', lambda *args: 1.)
    monkeypatch.setattr(benchmark_pretrain, 'time_hog', time_hog)
    with pytest.raises(Stop):
        benchmark_pretrain.run_benchmark('vit_b', iters=3, warmup=0, methods=('fastmim', ))
