"""Peak memory of one training step of a Swin Transformer with and without activation
checkpointing.

``with_cp=True`` (every fastmim backbone has it) recomputes each block's activations in the
backward pass instead of keeping them from the forward pass. This script measures what that
saves for one backbone, fastmim's ``SwinTransformer`` with the widths, depths and window given
as options; what it saves for another backbone is not measured here. It measures on the CPU,
where no allocator statistics exist: each setting runs in a fresh process whose glibc malloc
serves every allocation of 64 KiB or more with its own mapping (``MALLOC_MMAP_THRESHOLD_``),
so freed tensors leave the resident set at once and the peak resident set size (``VmHWM``,
reset just before the step) follows the peak of live tensors. The step's memory is that peak
minus the resident size just before it (model, gradients from a warm-up step and the input
batch already there); both runs must give the same loss.

    .venv/bin/python tools/analysis/checkpoint_memory.py               # Swin, 224 px, batch 4
    .venv/bin/python tools/analysis/checkpoint_memory.py --out checkpoint_memory.json
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(64 * 1024), 'MALLOC_TRIM_THRESHOLD_': '0'}


def parse_args(argv=None):
    from fastmim.cli import add_debug_arg, positive_int

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--img-size', type=positive_int, default=224,
                        help="input side in px, a multiple of the Swin's total stride (32)")
    parser.add_argument('--batch-size', type=positive_int, default=4)
    parser.add_argument('--embed-dim', type=positive_int, default=64)
    parser.add_argument('--depths', type=positive_int, nargs=4, default=(2, 2, 6, 2),
                        help='blocks per stage')
    parser.add_argument('--window-size', type=positive_int, default=7)
    parser.add_argument('--threads', type=positive_int, default=2, help='torch CPU threads')
    parser.add_argument('--out', help='also write the results to this JSON file')
    parser.add_argument('--child', choices=('on', 'off'), help=argparse.SUPPRESS)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def resident_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in KiB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field}: this script needs Linux')


def measured_arch(args) -> dict:
    """The measured Swin's arch: 32-wide heads (at least one per stage)."""
    heads = [max(1, args.embed_dim * 2**i // 32) for i in range(4)]
    return dict(embed_dim=args.embed_dim, depths=tuple(args.depths), num_heads=tuple(heads))


def build_model(args, with_cp: bool):
    from fastmim.models.backbones import SwinTransformer

    return SwinTransformer(
        arch=measured_arch(args), img_size=args.img_size, window_size=args.window_size,
        out_indices=(0, 1, 2, 3), drop_path_rate=0.1, with_cp=with_cp)


def check_model(args) -> None:
    """Check the options before starting the two processes, where a size the Swin refuses
    would be a child's traceback inside a RuntimeError: ``--img-size`` against the total stride
    the Swin states (its own refusal names its config key, ``model.backbone.img_size``), then
    the model built on the meta device. The heads are derived, not given, so that error says
    how."""
    import torch

    from fastmim.models.backbones import SwinTransformer

    stated = SwinTransformer.input_multiple(dict(arch=measured_arch(args)))
    if stated is not None and args.img_size % stated[1]:
        raise ValueError(f'--img-size {args.img_size} is no multiple of {stated[1]}, the total '
                         'stride of the measured Swin (its patch size, doubled by each of its '
                         'three patch mergings)')
    try:
        with torch.device('meta'):
            build_model(args, with_cp=False)
    except ValueError as error:
        raise ValueError(f'--embed-dim {args.embed_dim} --window-size {args.window_size} '
                         f'--img-size {args.img_size} do not build the measured Swin (stage i '
                         f'has max(1, embed_dim * 2^i // 32) heads: an --embed-dim that is a '
                         f'multiple of 32 divides): {error}') from None


def measure_step(args) -> dict:
    """One process, one setting: warm-up step, then the measured step."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args, with_cp=args.child == 'on').train()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)

    def step() -> float:
        torch.manual_seed(1)  # the same drop-path draws in both processes
        loss = sum(feature.square().mean() for feature in model(images))
        loss.backward()
        return float(loss)

    step()  # gradients allocated, lazy initialisation done
    model.zero_grad(set_to_none=False)
    before = resident_kib('VmRSS')
    Path('/proc/self/clear_refs').write_text('5')  # reset VmHWM to the current VmRSS
    loss = step()
    peak = resident_kib('VmHWM')
    return dict(with_cp=args.child == 'on', loss=loss, step_mib=(peak - before) / 1024,
                parameters_mib=sum(p.numel() * p.element_size()
                                   for p in model.parameters()) / 2**20)


def run_child(args, setting: str) -> dict:
    command = [sys.executable, __file__, '--child', setting, '--img-size', str(args.img_size),
               '--batch-size', str(args.batch_size), '--embed-dim', str(args.embed_dim),
               '--window-size', str(args.window_size), '--threads', str(args.threads),
               '--depths', *map(str, args.depths)]
    result = subprocess.run(command, env={**os.environ, **MALLOC_ENV}, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    if result.returncode:
        raise RuntimeError(f'checkpoint_memory: the with_cp={setting} run failed:\n'
                           f'{result.stderr[-3000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_step(args)))
        return {}
    if args.out:
        from fastmim.cli import check_output_file
        check_output_file(args.out, '--out', folders_made=True)  # the atomic write makes it
    check_model(args)
    off, on = run_child(args, 'off'), run_child(args, 'on')
    if abs(off['loss'] - on['loss']) > 1e-5 * max(1., abs(off['loss'])):
        raise RuntimeError(f'checkpoint_memory: with_cp changed the loss: {off["loss"]} vs '
                           f'{on["loss"]}')
    summary = dict(
        backbone='SwinTransformer', embed_dim=args.embed_dim, depths=list(args.depths),
        img_size=args.img_size, batch_size=args.batch_size, window_size=args.window_size,
        parameters_mib=round(off['parameters_mib'], 1), loss=off['loss'],
        step_mib_without_cp=round(off['step_mib'], 1), step_mib_with_cp=round(on['step_mib'], 1),
        ratio=round(on['step_mib'] / off['step_mib'], 3))
    print(json.dumps(summary, indent=2))
    if args.out:  # replaced atomically: a run killed while writing leaves the earlier file
        from fastmim.fileio import AtomicLocalBackend
        AtomicLocalBackend().put_text(json.dumps(summary, indent=2) + '\n', args.out)
    return summary


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
