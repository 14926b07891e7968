#!/usr/bin/env bash
# Install mmcv with its compiled ops into a given Python: from the wheel cache, or built once.
#
# Usage: tools/build_mmcv.sh PYTHON MMCV_VERSION CACHE_DIR
#
# mmcv publishes no binary wheels on PyPI, so it is built from the sdist once per
# (mmcv, torch, Python, flavour) and cached under CACHE_DIR/mmcv-<v>-torch<v>-cp<py>-<flavour>/;
# later set-ups install the cached wheel in seconds. The flavour (tools/mmcv_flavour.py) is
# `cpu`, or CUDA kernels for given GPU architectures (`cu130-sm80-sm90`): FASTMIM_CUDA_OPS=1
# asks for them, a visible GPU does by default, TORCH_CUDA_ARCH_LIST picks the architectures.
# The key of the installed wheel is kept in <venv>/.fastmim-mmcv, so a venv whose mmcv is of
# another flavour gets the right one. FASTMIM_MMCV_NO_BUILD=1 takes a cached wheel or fails.
# Traps handled here:
# - build isolation hides torch from setup.py, which then silently skips the ops;
#   we build with --no-build-isolation and verify that the wheel holds mmcv/_ext*.so.
# - torch >= 2.10 headers need C++20 but mmcv 2.1.0's setup.py hard-codes -std=c++17
#   (for g++ and nvcc), which wins over CFLAGS; we patch the unpacked sdist for such torch.
# - mmcv's setup.py builds CUDA kernels whenever torch sees a GPU: a CPU build hides the GPUs.
# - `nvcc` on PATH may be a wrapper script outside the toolkit; we ask nvcc for its own TOP.
# - torch's CUDA headers need cuSPARSE/cuBLAS headers that a compiler-only toolkit lacks.
set -euo pipefail

PY="$1"; MMCV_VERSION="$2"; CACHE="$3"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
log() { printf '[build_mmcv] %s\n' "$*"; }
die() { printf '[build_mmcv] ERROR: %s\n' "$*" >&2; exit 1; }

torch_version="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
base="mmcv-${MMCV_VERSION}-torch${torch_version}-${py_tag}"
flavour_line="$("$PY" "$ROOT/tools/mmcv_flavour.py" "$CACHE/$base")"
read -r flavour torch_cuda archs <<< "$flavour_line"
key="$base-$flavour"
stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.fastmim-mmcv"

if [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] && "$PY" -c "import mmcv, mmcv._ext
assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  exit 0
fi

mkdir -p "$CACHE/$key"
# Before the flavour was part of the key, wheels were cached under "$base" and built without
# CUDA kernels unless the build machine had a GPU: one without them is this key's cpu wheel.
if [ "$flavour" = cpu ] && ls "$CACHE/$base"/mmcv-*.whl >/dev/null 2>&1; then
  for old in "$CACHE/$base"/mmcv-*.whl; do
    if "$PY" - "$old" <<'EOF'
import re, sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
ext = [name for name in wheel.namelist() if re.match(r'mmcv/_ext.*[.]so$', name)]
# nvcc puts the device code in an ELF section named .nv_fatbin; a CPU build has none.
sys.exit(not ext or b'.nv_fatbin' in wheel.read(ext[0]))
EOF
    then
      log "moving the cached CPU-ops wheel $old to $CACHE/$key/"
      mv "$old" "$CACHE/$key/"
    fi
  done
  rmdir "$CACHE/$base" 2>/dev/null || true
fi
wheel="$(ls "$CACHE/$key"/mmcv-*.whl 2>/dev/null | head -n1 || true)"

# (Not `zipfile -l | grep -q`: grep exits at the first match, the lister dies of SIGPIPE and
# pipefail turns a good wheel into a failure.)
wheel_has_ops() {
  "$PY" -c 'import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(not any(re.match(r"mmcv/_ext.*[.]so$", name) for name in names))' "$1"
}

# Prints a CUDA_HOME whose nvcc has torch's CUDA major version: $CUDA_HOME, the toolkit of the
# nvcc on PATH, /usr/local/cuda; else installs nvcc and the headers it needs from PyPI into the
# venv (nvidia/cu<major>/, the tree torch's own CUDA libraries live in).
cuda_home() {
  local major=${torch_cuda%%.*} home nvcc_top site
  nvcc_top="$(command -v nvcc >/dev/null && nvcc --dryrun -c -x cu /dev/null 2>&1 \
              | sed -n 's/^#\$ TOP=//p' || true)"
  for home in "${CUDA_HOME:-}" "$nvcc_top" /usr/local/cuda; do
    [ -n "$home" ] && [ -x "$home/bin/nvcc" ] || continue
    if [[ "$("$home/bin/nvcc" --version)" == *"release $major."* ]]; then
      (cd "$home" && pwd); return
    fi
    log "nvcc in $home is not CUDA $major.x (torch's is $torch_cuda); not using it" >&2
  done
  log "no CUDA $major.x compiler found: installing nvcc $torch_cuda from PyPI into the venv" >&2
  "$PY" -m pip install -q --disable-pip-version-check "nvidia-cuda-nvcc==$torch_cuda.*" \
    "nvidia-nvvm==$torch_cuda.*" "nvidia-cuda-crt==$torch_cuda.*" \
    "nvidia-cuda-cccl==$torch_cuda.*" >&2 \
    || die "could not install nvcc $torch_cuda from PyPI; set CUDA_HOME to a CUDA $major.x toolkit"
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  home="$site/nvidia/cu$major"
  # torch links extensions with -lcudart from CUDA_HOME/lib; the runtime wheel ships only the
  # versioned library.
  [ -e "$home/lib/libcudart.so" ] || ln -s "libcudart.so.$major" "$home/lib/libcudart.so"
  echo "$home"
}

# cuobjdump from the toolkit, else from PyPI (the pip-installed compiler comes without it).
cuobjdump_of() {
  local home=$1 major=${torch_cuda%%.*} tool
  if [ -x "$home/bin/cuobjdump" ]; then echo "$home/bin/cuobjdump"; return; fi
  if command -v cuobjdump >/dev/null; then command -v cuobjdump; return; fi
  "$PY" -m pip install -q --disable-pip-version-check \
    "nvidia-cuda-cuobjdump>=$major,<$((major + 1))" >&2 \
    || die "no cuobjdump to check the CUDA kernels with: pip install nvidia-cuda-cuobjdump"
  tool="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu$major/bin/cuobjdump"
  [ -x "$tool" ] || die "nvidia-cuda-cuobjdump installed, but $tool is missing"
  echo "$tool"
}

# Fails unless the extension holds device code (SASS) for every numeric architecture asked for.
check_cuda_kernels() {
  local so=$1 tool=$2 found arch want
  found="$("$tool" --list-elf "$so" | grep -o 'sm_[0-9]*[a-z]*' | sort -u | tr '\n' ' ')"
  log "CUDA kernels in $(basename "$so"): ${found:-none}"
  for arch in ${archs//;/ }; do
    want="sm_$(printf '%s' "${arch%%+*}" | tr -d '.' | tr 'A-Z' 'a-z')"
    [[ "$want" =~ ^sm_[0-9]+[a-z]*$ ]] || continue  # named architectures (e.g. Hopper)
    [[ " $found " == *" $want "* ]] || die "the built $(basename "$so") has no $want kernels"
  done
}

if [ -n "$wheel" ] && ! wheel_has_ops "$wheel"; then
  log "cached wheel $wheel has no ops; rebuilding"
  rm -f "$wheel"; wheel=""
fi

if [ -z "$wheel" ] && [ -n "${FASTMIM_MMCV_NO_BUILD:-}" ]; then
  die "no cached mmcv wheel $CACHE/$key/mmcv-*.whl, and FASTMIM_MMCV_NO_BUILD forbids building one"
fi

if [ -z "$wheel" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
  verbosity=-q
  if [ "$flavour" = cpu ]; then
    log "building mmcv $MMCV_VERSION with CPU ops for torch $torch_version (about 10 min on 2 cores)"
    build_env+=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
  else
    home="$(cuda_home)"
    cuobjdump="$(cuobjdump_of "$home")"  # found before the long build, not after it
    log "building mmcv $MMCV_VERSION with CPU ops and CUDA $torch_cuda kernels for $archs" \
        "with $home/bin/nvcc (an hour or more on 2 cores)"
    build_env+=(FORCE_CUDA=1 CUDA_HOME="$home" TORCH_CUDA_ARCH_LIST="$archs")
    # torch's CUDA headers include cuSPARSE's, cuBLAS's, ... (ATen/cuda/CUDAContextLight.h),
    # which a compiler-only toolkit lacks; torch's own nvidia-* wheels bring them. CPATH is
    # searched after the -I directories, so a full toolkit's headers still come first.
    nv_include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu${torch_cuda%%.*}/include"
    [ -d "$nv_include" ] && build_env+=(CPATH="$nv_include${CPATH:+:$CPATH}")
    verbosity=-v  # the compiler's [n/N] progress lines, for a build this long
  fi
  # Without build isolation: pip prepares the sdist's metadata with the venv's setuptools (< 81),
  # where an isolated build environment gets the newest one, without pkg_resources, which
  # mmcv's setup.py imports (a venv without the `wheel` package takes that path).
  "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: \
    "mmcv==$MMCV_VERSION" -d "$work" || die "could not download the mmcv $MMCV_VERSION sdist"
  tar -xzf "$work"/mmcv-*.tar.gz -C "$work"
  src="$(ls -d "$work"/mmcv-*/ | head -n1)"
  if "$PY" -c "import sys, torch; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(v < (2, 10))"; then
    log "torch $torch_version needs C++20: patching setup.py"
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  fi
  (cd "$src" && env "${build_env[@]}" \
    "$PY" -m pip wheel "$verbosity" --no-build-isolation --no-deps . -w "$work/dist") \
    || die "mmcv build failed (see the compiler output above)"
  built="$(ls "$work"/dist/mmcv-*.whl | head -n1)"
  wheel_has_ops "$built" || die "the built mmcv wheel has no compiled ops (mmcv/_ext*.so missing)"
  mkdir "$work/unpacked"
  (cd "$work/unpacked" && "$PY" -m zipfile -e "$built" .)
  if [ "$flavour" != cpu ]; then
    check_cuda_kernels "$(ls "$work"/unpacked/mmcv/_ext*.so)" "$cuobjdump"
  fi
  # Debug symbols make the wheel 15x larger; strip them (device code stays) before caching.
  (cd "$work/unpacked" && find . -name '_ext*.so' -exec strip --strip-debug {} + \
     && rm "$built" && "$PY" -m zipfile -c "$built" ./*) \
    || log "could not strip the wheel; caching it unstripped"
  [ -f "$built" ] || die "lost the built wheel while stripping it"
  cp "$built" "$CACHE/$key/.partial.whl"
  mv "$CACHE/$key/.partial.whl" "$CACHE/$key/$(basename "$built")"
  wheel="$CACHE/$key/$(basename "$built")"
  log "cached $wheel"
fi

log "installing $wheel"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
echo "$key" > "$stamp"
