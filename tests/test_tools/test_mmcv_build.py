"""tools/mmcv_flavour.py and tools/build_mmcv.sh's wheel cache, without building mmcv.

The flavour decides the cache key, so a wheel without CUDA kernels is never installed where they
are wanted. GPUs are mocked (``torch.cuda``); the cache test installs a stand-in wheel into a
throwaway venv that sees this environment's torch through a ``.pth`` file.
"""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def flavour(monkeypatch, load_script):
    """tools/mmcv_flavour.py, with CUDA 13.0 torch and no GPU unless a test adds some."""
    module = load_script(ROOT / 'tools' / 'mmcv_flavour.py')
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    return module


def with_gpus(monkeypatch, *capabilities):
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index: capabilities[index])


def test_cpu_ops_by_default_without_a_gpu_and_when_asked(flavour, monkeypatch):
    assert flavour.flavour({}) == 'cpu'
    with_gpus(monkeypatch, (9, 0))
    assert flavour.flavour({'FASTMIM_CUDA_OPS': '0'}) == 'cpu'


def test_cuda_kernels_when_asked_or_a_gpu_is_visible(flavour, monkeypatch):
    assert flavour.flavour({'FASTMIM_CUDA_OPS': '1'}) == 'cu130-sm80-sm90 13.0 8.0;9.0'
    assert flavour.flavour({'FASTMIM_CUDA_OPS': '1', 'TORCH_CUDA_ARCH_LIST': ' 9.0  10.0+PTX'}) \
        == 'cu130-sm90-sm100+ptx 13.0 9.0;10.0+PTX'
    with_gpus(monkeypatch, (9, 0), (8, 6), (9, 0))
    assert flavour.flavour({}) == 'cu130-sm86-sm90 13.0 8.6;9.0'


def test_impossible_requests_are_refused(flavour, monkeypatch):
    with pytest.raises(flavour.FlavourError, match='use 1 .* 0 .* unset'):
        flavour.flavour({'FASTMIM_CUDA_OPS': 'yes'})
    monkeypatch.setattr(torch.version, 'cuda', None)
    with pytest.raises(flavour.FlavourError, match='CPU-only build'):
        flavour.flavour({'FASTMIM_CUDA_OPS': '1'})


@pytest.mark.parametrize('archs, bad', [
    ('abc', 'abc'), ('11', '11'), ('9.0;sm_90', 'sm_90'), ('8.0 9.0+ptx', '9.0+ptx'),
    ('9', '9'), ('hopper', 'hopper')])
def test_an_arch_list_torch_would_refuse_is_refused_before_the_build(flavour, archs, bad):
    """It named the cache folder (cu130-abc) and went to mmcv's build, which failed well into it
    in torch or nvcc."""
    with pytest.raises(flavour.FlavourError) as error:
        flavour.flavour({'FASTMIM_CUDA_OPS': '1', 'TORCH_CUDA_ARCH_LIST': archs})
    assert str(error.value).startswith(
        f"TORCH_CUDA_ARCH_LIST={archs!r}: {bad!r} is not a CUDA architecture as torch takes them")
    assert "e.g. '8.0;9.0'" in str(error.value)
    with pytest.raises(flavour.FlavourError, match='native: leave it unset'):
        flavour.flavour({'FASTMIM_CUDA_OPS': '1', 'TORCH_CUDA_ARCH_LIST': 'native'})


def test_the_arch_forms_torch_takes_are_kept(flavour):
    assert flavour.flavour({'FASTMIM_CUDA_OPS': '1', 'TORCH_CUDA_ARCH_LIST': '9.0a;8.6+PTX 12.0'}) \
        == 'cu130-sm90a-sm86+ptx-sm120 13.0 9.0a;8.6+PTX;12.0'
    assert flavour.flavour({'FASTMIM_CUDA_OPS': '1', 'TORCH_CUDA_ARCH_LIST': 'Hopper'}) \
        == 'cu130-hopper 13.0 Hopper'


def test_main_names_a_bad_arch_list_in_one_line():
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'mmcv_flavour.py')],
                            env={**os.environ, 'FASTMIM_CUDA_OPS': '1',
                                 'TORCH_CUDA_ARCH_LIST': 'abc'},
                            capture_output=True, text=True, timeout=60)
    if 'CPU-only build' in result.stderr:
        pytest.skip('needs a CUDA build of torch')
    assert result.returncode == 1 and result.stdout == ''
    assert result.stderr.startswith("[build_mmcv] ERROR: TORCH_CUDA_ARCH_LIST='abc': 'abc' is")
    assert result.stderr.count('\n') == 1


@pytest.mark.parametrize('token, capability, runs', [
    ('sm80', (8, 0), True), ('sm80', (8, 6), True), ('sm86', (8, 0), False),
    ('sm80', (9, 0), False), ('sm90+ptx', (10, 0), True), ('sm90a', (9, 0), True),
    ('sm90a', (10, 0), False), ('hopper', (9, 0), False)])
def test_which_kernels_run_on_which_gpu(flavour, token, capability, runs):
    assert flavour.runs_on(token, capability) is runs


def test_a_gpu_node_reuses_a_cached_wheel_whose_kernels_run_on_its_gpus(flavour, monkeypatch,
                                                                       tmp_path):
    prefix = tmp_path / 'mmcv-2.1.0-torch2.14.1-cp311'
    built = tmp_path / 'mmcv-2.1.0-torch2.14.1-cp311-cu130-sm80-sm90'
    built.mkdir()
    (built / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').touch()
    with_gpus(monkeypatch, (8, 6))  # an A10: sm_80 kernels run on it
    assert flavour.flavour({}, str(prefix)) == 'cu130-sm80-sm90 13.0 8.0;9.0'
    # An explicit list means exactly that list.
    assert flavour.flavour({'TORCH_CUDA_ARCH_LIST': '8.6'}, str(prefix)) \
        == 'cu130-sm86 13.0 8.6'
    with_gpus(monkeypatch, (10, 0))  # a B200: no kernel runs on it
    assert flavour.flavour({}, str(prefix)) == 'cu130-sm100 13.0 10.0'


def stand_in_wheel(path, device_code=False):
    """An installable 'mmcv 2.1.0' wheel with an ``_ext`` module and an ``_ext*.so`` file, which
    holds nvcc's section name when ``device_code``."""
    dist = 'mmcv-2.1.0.dist-info'
    with zipfile.ZipFile(path, 'w') as wheel:
        wheel.writestr('mmcv/__init__.py', "__version__ = '2.1.0'\n")
        wheel.writestr('mmcv/_ext.py', '')
        wheel.writestr('mmcv/_ext_ops.so', b'\x7fELF' + (b'.nv_fatbin' if device_code else b''))
        wheel.writestr(f'{dist}/METADATA', 'Metadata-Version: 2.1\nName: mmcv\nVersion: 2.1.0\n')
        wheel.writestr(f'{dist}/WHEEL', 'Wheel-Version: 1.0\nGenerator: test\n'
                       'Root-Is-Purelib: false\nTag: py3-none-any\n')
        wheel.writestr(f'{dist}/RECORD', '')


def test_cached_cpu_wheel_under_the_old_key_is_moved_installed_and_then_kept(tmp_path):
    """The cache key had no flavour before: its CPU-ops wheel becomes the ``-cpu`` key's,
    so the next set-up installs it instead of building for 10 minutes."""
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    purelib = subprocess.run([str(python), '-c', 'import sysconfig; '
                              'print(sysconfig.get_paths()["purelib"])'],
                             capture_output=True, text=True, check=True).stdout.strip()
    # torch and pip from this environment, after the venv's own (stand-in) mmcv.
    Path(purelib, 'outer.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    cache = tmp_path / 'cache'
    py_tag = f'cp{sys.version_info[0]}{sys.version_info[1]}'
    old = cache / f'mmcv-2.1.0-torch{torch.__version__.split("+")[0]}-{py_tag}'
    old.mkdir(parents=True)
    stand_in_wheel(old / 'mmcv-2.1.0-py3-none-any.whl')
    # One built where a GPU was visible: it has device code, so it is no CPU-ops wheel.
    stand_in_wheel(old / f'mmcv-2.1.0-{py_tag}-{py_tag}-linux_x86_64.whl', device_code=True)
    env = {**os.environ, 'FASTMIM_CUDA_OPS': '0'}

    def build():
        return subprocess.run(['bash', str(ROOT / 'tools' / 'build_mmcv.sh'), str(python),
                               '2.1.0', str(cache)], env=env, capture_output=True, text=True,
                              timeout=300)

    first = build()
    assert first.returncode == 0, first.stderr
    assert 'moving the cached CPU-ops wheel' in first.stdout
    assert 'building' not in first.stdout
    assert [path.name for path in (cache / f'{old.name}-cpu').iterdir()] \
        == ['mmcv-2.1.0-py3-none-any.whl']
    assert [path.name for path in old.iterdir()] \
        == [f'mmcv-2.1.0-{py_tag}-{py_tag}-linux_x86_64.whl']
    assert (venv / '.fastmim-mmcv').read_text().strip() == f'{old.name}-cpu'
    assert Path(purelib, 'mmcv', '_ext_ops.so').exists()

    second = build()
    assert second.returncode == 0, second.stderr
    assert second.stdout == ''  # the venv has this flavour already: nothing to do


def test_no_build_takes_a_cached_wheel_or_fails_at_once(tmp_path):
    """gpu_check.sh's mmcv step within a device budget: building for minutes would eat the time
    of the steps that need mmcv, so a missing wheel fails at once, naming the key."""
    env = {**os.environ, 'FASTMIM_MMCV_NO_BUILD': '1', 'FASTMIM_CUDA_OPS': '1',
           'TORCH_CUDA_ARCH_LIST': '9.0'}
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'build_mmcv.sh'), sys.executable,
                             '2.1.0', str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert 'no cached mmcv wheel' in result.stderr and '-sm90/' in result.stderr
    assert 'building' not in result.stdout
