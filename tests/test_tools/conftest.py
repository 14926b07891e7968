"""The module of tools/train.py, for the tests that fold its flags into configs; random weights
of the reference release's pre-training decoder, for the converter's tests; the runs of
test_train.py and the jobs with recording_hooks.py's hooks, for the resume tests."""
import json
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture
def train(load_script):
    return load_script(ROOT / 'tools' / 'train.py')


@pytest.fixture(scope='module')
def runs(load_script):
    """tests/test_tools/test_train.py as a module: its ``run`` of tools/train.py and
    tools/dist_train.sh, its ``TINY`` options, and its comparison of two runs: ``losses`` (and
    lr) of every iteration, ``assert_same_state`` of two checkpoints' parts."""
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
