"""Which kind of mmcv ops the set-up builds for the torch running this script.

    python tools/mmcv_flavour.py [CACHE_DIR/KEY_PREFIX]

prints one line for ``tools/build_mmcv.sh``: ``cpu``, or ``<flavour> <cuda> <arch list>`` such
as ``cu130-sm80-sm90 13.0 8.0;9.0``. The flavour ends the wheel cache's directory name, so a
wheel without CUDA kernels (built on a login node without a GPU, say) is never reused where CUDA
kernels are wanted, nor one built for other GPU architectures. When the architectures are those
of the visible GPUs, a wheel cached under ``CACHE_DIR/KEY_PREFIX-<flavour>`` whose kernels run on
all of them is reused (a GPU node finds the wheel a login node built for the default list).

CUDA kernels are built when torch is a CUDA build and either ``FASTMIM_CUDA_OPS=1`` or, with
``FASTMIM_CUDA_OPS`` unset, a GPU is visible; ``FASTMIM_CUDA_OPS=0`` keeps the CPU-only build.
The architectures are ``TORCH_CUDA_ARCH_LIST`` (torch's own variable, which mmcv's build
honours) if set, else those of the visible GPUs, else :data:`DEFAULT_ARCHS`.
"""
import glob
import os
import re
import sys

import torch

# A100 (sm_80; its SASS also runs on the sm_86/sm_89 cards) and H100/H200 (sm_90). nvcc 13 no
# longer targets sm_70 and older. Add "10.0" for B200, or "+PTX" to JIT on newer GPUs.
DEFAULT_ARCHS = '8.0;9.0'


class FlavourError(ValueError):
    """The environment asks for a flavour this torch cannot build."""


def wants_cuda_ops(env=os.environ):
    """True when mmcv should be built with CUDA kernels (see the module docstring)."""
    setting = env.get('FASTMIM_CUDA_OPS', '')
    if setting not in ('', '0', '1'):
        raise FlavourError(f'FASTMIM_CUDA_OPS={setting!r}: use 1 (build CUDA kernels), 0 (CPU '
                           'ops only) or leave it unset (CUDA kernels when a GPU is visible)')
    if setting == '1' and torch.version.cuda is None:
        raise FlavourError(f'FASTMIM_CUDA_OPS=1 but torch {torch.__version__} is a CPU-only '
                           'build: install a CUDA build of torch first')
    if setting == '':
        return torch.version.cuda is not None and torch.cuda.device_count() > 0
    return setting == '1'


# An entry of TORCH_CUDA_ARCH_LIST in a form torch.utils.cpp_extension takes: a compute capability
# (8.0, 9.0a, 8.6+PTX; torch then checks it against the ones it supports), or one of its named
# architectures (Hopper, Ampere+Tegra), which it expands.
ARCH_ENTRY = re.compile(r'\d+\.\d+[a-z]?(\+PTX)?|[A-Z][a-z]+(\+[A-Z][a-z]+)?')


def arch_list(env=os.environ):
    """The ``TORCH_CUDA_ARCH_LIST`` to build for, normalised to ``;``-separated entries.

    An entry not in a form torch takes is refused here, in one line: passed to mmcv's build,
    it would fail in torch or nvcc well into it."""
    value = env.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if value:
        entries = re.split(r'[;\s]+', value)
        if value == 'native':
            raise FlavourError('TORCH_CUDA_ARCH_LIST=native: leave it unset to build for the '
                               "visible GPUs' architectures, which then name the cached wheel")
        for entry in entries:
            if not ARCH_ENTRY.fullmatch(entry):
                raise FlavourError(
                    f'TORCH_CUDA_ARCH_LIST={value!r}: {entry!r} is not a CUDA architecture as '
                    'torch takes them: a compute capability such as 9.0, 9.0a or 8.6+PTX, or a '
                    "name such as Hopper; separate several with ';' or spaces, e.g. '8.0;9.0'")
        return ';'.join(entries)
    if torch.cuda.device_count() > 0:
        capabilities = {torch.cuda.get_device_capability(index)
                        for index in range(torch.cuda.device_count())}
        return ';'.join(f'{major}.{minor}' for major, minor in sorted(capabilities))
    return DEFAULT_ARCHS


def arch_key(archs):
    """``8.0;9.0+PTX`` -> ``sm80-sm90+ptx``: the architectures as a directory-name part."""
    parts = []
    for arch in archs.split(';'):
        name = re.sub(r'[^0-9a-z+]', '', arch.lower())
        parts.append(f'sm{name}' if name[:1].isdigit() else name)
    return '-'.join(parts)


def runs_on(arch_token, capability):
    """Whether kernels built for ``arch_token`` (a part of :func:`arch_key`, e.g. ``sm80``) run
    on a GPU of ``capability`` (major, minor): SASS runs on its own major version at the same or
    a higher minor (sm_80 on an sm_86 card), ``a`` variants only on their exact GPU, and PTX
    (``+ptx``) is compiled by the driver for any newer GPU."""
    match = re.fullmatch(r'sm(\d+)(\d)([a-z]*)(\+ptx)?', arch_token)
    if match is None:
        return False
    major, minor, variant, ptx = int(match[1]), int(match[2]), match[3], match[4]
    if variant:
        return (major, minor) == tuple(capability)
    if ptx:
        return (major, minor) <= tuple(capability)
    return major == capability[0] and minor <= capability[1]


def cached_flavour(prefix, cuda, capabilities):
    """The flavour of a wheel cached under ``prefix-cu<cuda>-...`` whose kernels run on every
    one of ``capabilities``, or None."""
    head = f'{prefix}-cu{cuda.replace(".", "")}-'
    for folder in sorted(glob.glob(glob.escape(head) + '*')):
        tokens = folder[len(head):].split('-')
        if (glob.glob(os.path.join(folder, 'mmcv-*.whl'))
                and all(any(runs_on(token, cap) for token in tokens) for cap in capabilities)):
            return folder[len(prefix) + 1:]
    return None


def flavour(env=os.environ, cache_prefix=None):
    """The line :func:`main` prints."""
    if not wants_cuda_ops(env):
        return 'cpu'
    archs = arch_list(env)
    cuda = torch.version.cuda
    wanted = f'cu{cuda.replace(".", "")}-{arch_key(archs)}'
    if cache_prefix and not env.get('TORCH_CUDA_ARCH_LIST', '').strip() \
            and torch.cuda.device_count() > 0:
        capabilities = [tuple(map(int, arch.split('.'))) for arch in archs.split(';')]
        cached = cached_flavour(cache_prefix, cuda, capabilities)
        if cached:
            archs = ';'.join(re.sub(r'^sm(\d+)(\d)', r'\1.\2', token).replace('+ptx', '+PTX')
                             for token in cached.split('-')[1:])
            return f'{cached} {cuda} {archs}'
    return f'{wanted} {cuda} {archs}'


def main():
    try:
        print(flavour(cache_prefix=sys.argv[1] if len(sys.argv) > 1 else None))
    except FlavourError as error:
        print(f'[build_mmcv] ERROR: {error}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
