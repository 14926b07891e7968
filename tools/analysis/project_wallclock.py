"""Projected wall-clock and GPU-hours of a published pre-training recipe, from measured speed.

    python tools/analysis/project_wallclock.py [RESULT.json ...]
        [--rate METHOD IMAGES_PER_S SOURCE] [--config configs/fastmim/vit_b_hog_800e.py]
        [--gpus N] [--dataset-size 1281167] [--scaling-efficiency 1.0]

The paper states its cost in GPU-hours (REFERENCE.md: ViT-B FastMIM 608 h, SimMIM 3307 h, MAE
2069 h); a benchmark states images per second on one GPU. This tool puts the two side by side:
it reads the recipe's schedule from its config, takes one GPU's measured rate per method and
prints a Markdown table of the iterations, the wall-clock hours on the recipe's GPUs and the
GPU-hours, beside the paper's.

Measured rates come from
- ``tools/analysis/benchmark_pretrain.py`` results (one row per method record: a training step
  on synthetic inputs already on the GPU, no data loader);
- a ``tools/analysis/train_speed.py pretrain`` result (end-to-end ``tools/train.py`` with the
  JPEG loader): a FastMIM row of its own, and a bound on the other FastMIM rows, which take
  the smaller of their rate and the end-to-end one (a step cannot outrun the loader feeding it).
  The end-to-end run has its own step too (``tools/train.py``'s precision, uncompiled unless
  asked): the share of its iterations spent waiting for data, shown in its row, says whether
  the loader is what holds it back;
- ``--rate METHOD IMAGES_PER_S SOURCE``: a rate recorded elsewhere (docs/benchmark.md), SOURCE
  saying where.

Arithmetic (the recipe's ``ResumableSampler``, an mmengine ``DefaultSampler``, pads every GPU's
share to ``ceil(N / gpus)`` images, and its loader drops the last incomplete batch)::

    iterations = epochs * floor(ceil(N / gpus) / per_gpu_batch)
    wall-clock = iterations * per_gpu_batch / (images/s per GPU * scaling efficiency)
    GPU-hours  = wall-clock hours * gpus

Scaling efficiency 1 (the default) is linear scaling: every GPU of the node trains as fast as
the one measured, gradient all-reduce and loader contention for the host's cores costing
nothing. That is an assumption, not a measurement; ``--scaling-efficiency`` discounts it.
"""
import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'
# The ILSVRC-2012 (ImageNet-1k) training set as published (Russakovsky et al., "ImageNet Large
# Scale Visual Recognition Challenge", IJCV 2015); the configs read it from data/imagenet/train,
# which a machine without the data set cannot count.
IMAGENET_TRAIN_IMAGES = 1_281_167
# Pre-training cost the paper reports for the recipe of each config file (REFERENCE.md, "Numbers
# the paper and the release report": "608 h", read as GPU-hours as issue 10 does); neither says
# which GPUs.
PAPER_GPU_HOURS = {
    'vit_b_hog_800e.py': dict(fastmim=608, simmim=3307, mae=2069),
}


@dataclass
class Schedule:
    """What the recipe trains: ``epochs`` over ``dataset_size`` images on ``gpus`` GPUs of
    ``per_gpu_batch`` images each."""
    config: Path
    epochs: int
    per_gpu_batch: int
    gpus: int
    dataset_size: int
    drop_last: bool

    @property
    def iters_per_epoch(self) -> int:
        per_gpu = math.ceil(self.dataset_size / self.gpus)
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(per_gpu / self.per_gpu_batch)

    @property
    def iterations(self) -> int:
        return self.epochs * self.iters_per_epoch

    def wall_clock_hours(self, images_per_s: float, scaling_efficiency: float = 1.0) -> float:
        """Hours for every iteration when each GPU trains ``images_per_s`` x the efficiency."""
        seconds = self.iterations * self.per_gpu_batch / (images_per_s * scaling_efficiency)
        return seconds / 3600

    def gpu_hours(self, images_per_s: float, scaling_efficiency: float = 1.0) -> float:
        return self.wall_clock_hours(images_per_s, scaling_efficiency) * self.gpus


def _config_value(cfg, config: Path, key: str):
    value = cfg
    for part in key.split('.'):
        if part not in value:
            raise ValueError(f'{config}: no {key!r}, which the projection needs')
        value = value[part]
    return value


def check_pre_training(cfg, config: Path) -> None:
    """Refuse a config whose model is no FastMIM: the projection is of a pre-training recipe,
    whose schedule the SimMIM and MAE rates are timed on too (benchmark_pretrain.py builds them
    from FastMIM's recipe); a fine-tuning config's schedule was projected without a word."""
    from fastmim.models.algorithms.fastmim import FastMIM
    from fastmim.registry import MODELS, type_class, type_name
    found = type_class(cfg.model, MODELS)
    if found is None or not issubclass(found, FastMIM):
        raise ValueError(f'{config}: its model is {type_name(cfg.model)}, not a pre-training '
                         'algorithm (FastMIM); give a pre-training config')


def check_one_stage(cfg, config: Path) -> None:
    """Refuse a FastMIM-P config: its ``ProgressiveResolutionHook`` trains stages at other
    input sizes and per-GPU batches than ``train_dataloader``'s, and one measured rate cannot
    stand for them: a projection of its schedule would take the first stage's batch for every
    epoch and the measured size for every stage."""
    from fastmim.registry import type_name
    stages = [hook.get('stages') for hook in cfg.get('custom_hooks') or []
              if type_name(hook) == 'ProgressiveResolutionHook']
    if stages:
        raise ValueError(f'{config}: a ProgressiveResolutionHook trains stages of other input '
                         f'sizes and batches ({stages[0]}); the projection takes one rate for '
                         'one schedule: project each stage with a config of its own')


def read_schedule(config: Path, gpus: Optional[int] = None,
                  dataset_size: int = IMAGENET_TRAIN_IMAGES) -> Schedule:
    """The schedule of ``config``: epochs from ``train_cfg.max_epochs``, the per-GPU batch from
    ``train_dataloader.batch_size`` and, unless ``gpus`` is given, the GPUs from the recipe's
    total batch (``auto_scale_lr.base_batch_size``, the batch its learning rate is for) over
    the per-GPU batch."""
    from fastmim.engine.config_loading import load_config
    config = Path(config)
    cfg = load_config(str(config))
    check_pre_training(cfg, config)
    check_one_stage(cfg, config)
    epochs = _config_value(cfg, config, 'train_cfg.max_epochs')
    per_gpu_batch = _config_value(cfg, config, 'train_dataloader.batch_size')
    if gpus is None:
        total = _config_value(cfg, config, 'auto_scale_lr.base_batch_size')
        if total % per_gpu_batch:
            raise ValueError(f'{config}: the total batch (auto_scale_lr.base_batch_size '
                             f'{total}) is no multiple of train_dataloader.batch_size '
                             f'{per_gpu_batch}; give --gpus')
        gpus = total // per_gpu_batch
    for name, value in (('gpus', gpus), ('dataset size', dataset_size)):
        if value < 1:
            raise ValueError(f'{name} must be >= 1, got {value}')
    drop_last = bool(cfg.train_dataloader.get('drop_last', False))
    return Schedule(config, epochs, per_gpu_batch, gpus, dataset_size, drop_last)


@dataclass
class Measurement:
    """One GPU's training rate of one method, and where it was measured."""
    method: str
    images_per_s: float
    source: str
    end_to_end: bool = False


def _load_json(path: Path) -> dict:
    """The JSON object in ``path``; a file that is no UTF-8 text (a checkpoint, a plot given
    by mistake) is named like one that is no JSON, instead of a UnicodeDecodeError traceback."""
    try:
        result = json.loads(path.read_text(encoding='utf-8'))
    except UnicodeDecodeError as error:
        raise ValueError(f'{path} is not JSON: not UTF-8 text (byte {error.start}); expected a '
                         f'benchmark_pretrain.py or train_speed.py result') from None
    except json.JSONDecodeError as error:
        raise ValueError(f'{path} is not JSON: {error}') from None
    if not isinstance(result, dict):
        raise ValueError(f'{path}: expected a JSON object, got {type(result).__name__}')
    return result


def _field(result: dict, path: Path, key: str, where: str = ''):
    if key not in result:
        raise ValueError(f'{path}: {where or "the result"} has no {key!r}')
    return result[key]


def _rate(value, where: str) -> float:
    """A rate of images/s: positive and finite (an infinite one made 0 GPU-hours, and the
    table's ratio to the paper a ZeroDivisionError)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f'{where} must be a positive number of images/s, got {value!r}')
    return float(value)


def read_measurements(path: Path, schedule: Schedule) -> List[Measurement]:
    """The rates in one result file: every record of a benchmark_pretrain.py result, or the one
    end-to-end rate of a train_speed.py pretrain result. Either must have run the recipe's
    config."""
    path = Path(path)
    result = _load_json(path)
    if 'records' in result and 'settings' in result:
        return _benchmark_measurements(result, path, schedule)
    if 'task' in result and 's_per_iter' in result:
        return [_train_speed_measurement(result, path, schedule)]
    raise ValueError(f"{path}: neither a benchmark_pretrain.py result (keys 'settings' and "
                     "'records') nor a train_speed.py result (keys 'task' and 's_per_iter')")


def _check_config(measured: str, path: Path, key: str, schedule: Schedule) -> None:
    if Path(measured).name != schedule.config.name:
        raise ValueError(f'{path}: {key} is {measured}, not the recipe being projected '
                         f'({schedule.config.name}); give --config {measured}')


def _benchmark_measurements(result: dict, path: Path, schedule: Schedule) -> List[Measurement]:
    settings = result['settings']
    _check_config(_field(settings, path, 'config', 'settings'), path, 'settings.config', schedule)
    if settings.get('arch_override'):
        raise ValueError(f"{path}: settings.arch_override is {settings['arch_override']}: it "
                         "timed another backbone than the recipe's, whose time is projected")
    machine = _field(result, path, 'machine')
    device = machine.get('gpu') or machine.get('cpu') or machine.get('device', '?')
    options = (f", torch.compile ({machine.get('compile_mode') or 'default'})"
               if machine.get('compile') else '')
    if settings.get('mae_decoder'):
        options += f", MAE decoder {settings['mae_decoder']}"
    measurements = []
    for index, record in enumerate(result['records']):
        where = f'records[{index}]'
        rate = _rate(_field(record, path, 'images_per_s', where),
                     f'{path}: {where}.images_per_s')
        batch = _field(record, path, 'batch_size', where)
        measurements.append(Measurement(
            _field(record, path, 'method', where), rate,
            f"{path.name}: {device}, {machine.get('precision', '?')}{options}, "
            f'batch {batch}, synthetic inputs'))
    return measurements


def _train_speed_measurement(result: dict, path: Path, schedule: Schedule) -> Measurement:
    if result['task'] != 'pretrain':
        raise ValueError(f"{path}: a train_speed.py {result['task']!r} result; the projection "
                         "needs the 'pretrain' one")
    _check_config(_field(result, path, 'config'), path, 'config', schedule)
    rate = _rate(_field(result, path, 'images_per_s'), f'{path}: images_per_s')
    loader_wait = _field(result, path, 'data_s_per_iter') / result['s_per_iter']
    return Measurement(
        'fastmim', rate,
        # The precision the run trained in, not its --amp flag, which is off for the recipe's
        # own mixed precision ('?' for a result that records no precision).
        f"{path.name}: {result.get('device', '?')}, tools/train.py, "
        f"{result.get('precision', '?')}, batch {_field(result, path, 'batch_size')}, "
        f'JPEG loader (waits {100 * loader_wait:.0f}% of an iteration)', end_to_end=True)


@dataclass
class Row:
    """A measurement and the rate the projection uses for it."""
    measurement: Measurement
    images_per_s: float
    bound: str


def bound_by_loader(measurements: Sequence[Measurement]) -> List[Row]:
    """Each measurement with the rate to project: a FastMIM step rate on synthetic inputs is
    capped by the end-to-end FastMIM rate when one was measured. The end-to-end run trains
    FastMIM's recipe, so it bounds only FastMIM's rows."""
    end_to_end = [m for m in measurements if m.end_to_end]
    if len(end_to_end) > 1:
        raise ValueError('give at most one train_speed.py result: '
                         + ', '.join(m.source.split(':')[0] for m in end_to_end))
    rows = []
    for measurement in measurements:
        rate, bound = measurement.images_per_s, 'the step (no loader)'
        if measurement.end_to_end:
            bound = 'the end-to-end run'
        elif end_to_end and measurement.method == 'fastmim':
            if end_to_end[0].images_per_s < rate:
                rate, bound = end_to_end[0].images_per_s, 'the end-to-end run (capped)'
            else:
                bound = 'the step (end-to-end run faster)'
        rows.append(Row(measurement, rate, bound))
    return rows


def format_projection(schedule: Schedule, rows: Sequence[Row],
                      scaling_efficiency: float = 1.0) -> str:
    """The recipe, the assumptions and a Markdown table of one projection per row."""
    paper = PAPER_GPU_HOURS.get(schedule.config.name, {})
    scaling = ('linear scaling (every GPU as fast as the one measured; not measured)'
               if scaling_efficiency == 1 else
               f'{scaling_efficiency:.0%} scaling efficiency (an assumption, not measured)')
    lines = [
        f'Recipe {schedule.config.name}: {schedule.epochs} epochs of {schedule.dataset_size:,} '
        f'images, {schedule.gpus} GPUs x batch {schedule.per_gpu_batch}: '
        f'{schedule.iters_per_epoch:,} iterations per epoch, {schedule.iterations:,} in all; '
        f'{scaling}.', '',
        f'| method | measured on one GPU | images/s per GPU | bound by | iterations | '
        f'wall-clock h, {schedule.gpus} GPUs | GPU-hours | paper GPU-hours | '
        f'paper / projected |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        method = row.measurement.method
        gpu_hours = schedule.gpu_hours(row.images_per_s, scaling_efficiency)
        published = paper.get(method)
        lines.append(
            f'| {method} | {row.measurement.source} | {_rate_text(row.images_per_s)} | '
            f'{row.bound} | {schedule.iterations:,} | '
            f'{schedule.wall_clock_hours(row.images_per_s, scaling_efficiency):.1f} | '
            f'{gpu_hours:.1f} | {published if published is not None else "-"} | '
            f'{f"{published / gpu_hours:.3g}x" if published is not None else "-"} |')
    unknown = sorted({row.measurement.method for row in rows} - set(paper))
    if paper and unknown:  # a misspelt --rate method would lose its comparison without a word
        lines += ['', f'No paper figure for {", ".join(unknown)}: the paper reports '
                      f'{", ".join(sorted(paper))} for this recipe.']
    return '\n'.join(lines)


def _rate_text(images_per_s: float) -> str:
    """Whole images/s for a GPU, three significant digits for a CPU's few."""
    return f'{images_per_s:,.0f}' if images_per_s >= 100 else f'{images_per_s:.3g}'


def parse_args(argv):
    from fastmim.cli import add_debug_arg, positive_int
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', nargs='*', type=Path,
                        help='benchmark_pretrain.py and/or train_speed.py pretrain JSON files')
    parser.add_argument('--rate', nargs=3, action='append', default=[],
                        metavar=('METHOD', 'IMAGES_PER_S', 'SOURCE'),
                        help='a rate measured elsewhere, e.g. --rate fastmim 5765 '
                        '"H100, fp16, batch 256"; repeatable')
    parser.add_argument('--config', type=Path, default=DEFAULT_CONFIG,
                        help='the recipe (default: the ViT-B 800-epoch one)')
    parser.add_argument('--gpus', type=positive_int,
                        help="GPUs (default: the config's total batch / per-GPU batch)")
    parser.add_argument('--dataset-size', type=positive_int, default=IMAGENET_TRAIN_IMAGES,
                        help='training images per epoch (default: ImageNet-1k train, 1,281,167)')
    parser.add_argument('--scaling-efficiency', type=float, default=1.0,
                        help='multi-GPU throughput per GPU over the single-GPU one (default 1: '
                        'linear scaling)')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if not 0 < args.scaling_efficiency <= 1:
        raise ValueError(f'--scaling-efficiency must be in (0, 1], got {args.scaling_efficiency}')
    if not args.results and not args.rate:
        raise ValueError('nothing to project: give result JSON files and/or --rate')
    schedule = read_schedule(args.config, args.gpus, args.dataset_size)
    measurements = [m for path in args.results for m in read_measurements(path, schedule)]
    for method, rate, source in args.rate:
        try:
            images_per_s = float(rate)
        except ValueError:
            images_per_s = rate
        measurements.append(Measurement(method, _rate(images_per_s, f'--rate {method}'),
                                        source))
    text = format_projection(schedule, bound_by_loader(measurements), args.scaling_efficiency)
    print(text)
    return text


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT / 'tools'))
    from early_checks import refuse_a_missing_config  # imports no fastmim
    refuse_a_missing_config(sys.argv[1:], flags=['--config'], first=False)
    from fastmim.cli import run_cli
    run_cli(main)
