"""`make demo`: pre-train FastMIM on the embedded real photos and show what came out.

Runs tools/train.py on configs/fastmim/demo_vit_tiny_embedded.py (work dir work_dirs/demo/),
then prints how the loss fell, where the checkpoint is and where the reconstruction pictures are.
Extra arguments are passed to tools/train.py (e.g. --amp, --cfg-options ...).
"""
import glob
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'fastmim', 'demo_vit_tiny_embedded.py')
WORK_DIR = osp.join(ROOT, 'work_dirs', 'demo')


def read_losses(work_dir):
    """(iteration, loss) pairs from the newest run's scalars.json, in training order."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        return []
    with open(runs[-1]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [(r['iter'], r['loss']) for r in records if 'loss' in r]


def main(argv):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import train
    train.main([CONFIG, '--work-dir', WORK_DIR, *argv])

    losses = read_losses(WORK_DIR)
    last_checkpoint = osp.join(WORK_DIR, 'last_checkpoint')
    checkpoint = open(last_checkpoint).read().strip() if osp.exists(last_checkpoint) else None
    pictures = sorted(glob.glob(osp.join(WORK_DIR, 'vis', '*.png')))
    print('\nFastMIM demo finished')
    if losses:
        (first_iter, first), (last_iter, last) = losses[0], losses[-1]
        print(f'  loss: {first:.4f} at iteration {first_iter} -> {last:.4f} at iteration '
              f'{last_iter} ({100 * (first - last) / first:.0f}% lower)')
    print(f'  checkpoint: {checkpoint}')
    print('  reconstructions (input | masked input | HOG target | HOG prediction):')
    for path in pictures[-4:]:
        print(f'    {path}')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    from fastmim.engine.launch import RESUME_HINT, run_cli
    run_cli(main, interrupted_hint=RESUME_HINT)
