"""The module of tools/train.py, for the tests that fold its flags into configs; random weights
of the reference release's pre-training decoder, for the converter's tests; the runs of
test_train.py and the jobs with recording_hooks.py's hooks, for the resume tests; the demo
recipes shrunk to seconds on a CPU, for the tests that run the tools on them."""
import json
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
DEMO_FT = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'


def _as_options(prefix: str, tree: dict) -> list:
    """``tree`` as ``--cfg-options`` below ``prefix``: ``['model.neck.embed_dim=32', ...]``."""
    return [option for key, value in tree.items()
            for option in (_as_options(f'{prefix}.{key}', value) if isinstance(value, dict)
                           else [f'{prefix}.{key}={value}'])]


class TinyDemo:
    """The demo recipes shrunk to seconds per epoch on a CPU: a 2-block, 32-wide ViT (and
    decoder), 8 photos in batches of 2, no worker processes. The same shrinking as
    ``--cfg-options`` of the pre-training demo and as the first lines of a config file, so that
    every test runs the one tiny model. One instance serves the session: read its values, do
    not change them."""

    arch = dict(embed_dim=32, depth=2, num_heads=2)
    model = dict(backbone=dict(arch=arch), neck=dict(embed_dim=32, num_heads=2))
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                  dataset=dict(num_samples=8))

    arch_options = _as_options('model.backbone.arch', arch)  # any demo's ViT
    loader_options = _as_options('train_dataloader', loader)  # any demo's training data
    options = _as_options('model', model) + loader_options
    # The shrunk run saving a checkpoint every epoch and logging every iteration's scalars: the
    # runs the resume tests compare.
    recorded_options = options + ['default_hooks.checkpoint.interval=1',
                                  'default_hooks.logger.interval=1']

    def pretraining(self, num_samples: int = 8, **loader) -> str:
        """A config file's first lines: the pre-training demo shrunk, on ``num_samples``
        photos; ``loader``: other ``train_dataloader`` keys (a sampler)."""
        train_dataloader = dict(self.loader, dataset=dict(num_samples=num_samples), **loader)
        return (f'_base_ = [{str(DEMO)!r}]\n'
                f'model = {self.model!r}\n'
                f'train_dataloader = {train_dataloader!r}\n')

    # A config file's first lines: the fine-tuning demo at 32 px (2 x 2 patches), without
    # pre-trained weights.
    finetuning = f"""_base_ = [{str(DEMO_FT)!r}]
model = dict(backbone=dict(arch={arch!r}, img_size=32, init_cfg=None))
train_pipeline = _base_.train_pipeline
train_pipeline[1].size = train_pipeline[3].img_size = 32  # the crop, RandAugment's size
test_pipeline = _base_.test_pipeline
test_pipeline[1].crop_size = 32
"""


@pytest.fixture(scope='session')
def tiny_demo():
    """:class:`TinyDemo`."""
    return TinyDemo()


@pytest.fixture
def train(load_script):
    return load_script(ROOT / 'tools' / 'train.py')


@pytest.fixture(scope='module')
def runs(load_script):
    """tests/test_tools/test_train.py as a module: its ``run`` of tools/train.py and
    tools/dist_train.sh, and its comparison of two runs: ``losses`` (and lr) of every
    iteration, ``assert_same_state`` of two checkpoints' parts."""
    return load_script(HERE / 'test_train.py')


@pytest.fixture(scope='module')
def train_job(runs):
    """``train_job(config, work_dir, *args, processes=None, port=None)``: tools/train.py on the
    file ``config``, or tools/dist_train.sh with ``processes`` processes (on ``port`` where
    given), with recording_hooks.py importable; asserts that it exits 0 and returns its output
    (stdout and stderr)."""
    def train(config, work_dir, *args, processes=None, port=None):
        env = {'PYTHONPATH': f'{ROOT}:{HERE}'}
        if port is not None:
            env['PORT'] = str(port)
        if processes is None:
            result = runs.run([str(config), '--work-dir', str(work_dir), *args], env=env)
        else:
            result = runs.run([str(config), str(processes), '--work-dir', str(work_dir), *args],
                              env=env, script='dist_train.sh')
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr
    return train


@pytest.fixture(scope='session')
def trained_samples():
    """``trained_samples(work_dir)``: {iteration: the dataset indices the job trained at it,
    over its ranks}, from the samples.rank<r> files of recording_hooks.py's hooks."""
    def trained(work_dir):
        samples = {}
        for path in sorted(work_dir.glob('samples.rank*')):
            for line in path.read_text().splitlines():
                iteration, indices = json.loads(line)
                samples.setdefault(iteration, []).extend(indices)
        return samples
    return trained


@pytest.fixture
def release_decoder():
    """``release_decoder(in_channels, rows, embed_dim=16, depth=1)``: random weights of the
    reference release's pre-training decoder as its mim_*_pretrain.py define it, in its names:
    ``decoder_embed`` (Linear from the encoder's channels), ``decoder_blocks.N`` (timm's
    ``Block``, ``embed_dim // 32`` heads, MLP ratio 4, qkv bias), ``decoder_norm`` and
    ``decoder_pred`` (Linear to ``rows`` values per token), and its RGB ``mask_token``."""
    from timm.models.vision_transformer import Block

    def make(in_channels, rows, embed_dim=16, depth=1):
        generator = torch.Generator().manual_seed(0)

        def random(shape, center=0.):
            return center + 0.2 * torch.randn(shape, generator=generator)

        state = {'decoder_embed.weight': random((embed_dim, in_channels)),
                 'decoder_embed.bias': random(embed_dim)}
        block = Block(embed_dim, max(1, embed_dim // 32), 4., qkv_bias=True)
        for index in range(depth):
            for key, value in block.state_dict().items():
                center = 1. if key.startswith('norm') and key.endswith('weight') else 0.
                state[f'decoder_blocks.{index}.{key}'] = random(value.shape, center)
        state.update({'decoder_norm.weight': random(embed_dim, 1.),
                      'decoder_norm.bias': random(embed_dim),
                      'decoder_pred.weight': random((rows, embed_dim)),
                      'decoder_pred.bias': random(rows),
                      'mask_token': random((1, 3, 1, 1))})
        return state
    return make
