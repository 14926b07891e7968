#!/usr/bin/env bash
# Create or complete the virtual environment at .venv/ with the verified stack.
#
# Idempotent: every step checks whether its result is already there, so a second run takes
# seconds. The one slow step, building mmcv with its compiled ops, is cached as a wheel under
# $FASTMIM_CACHE (default ~/.cache/fastmim), keyed by mmcv, torch and Python versions and the
# ops' flavour: CPU only, or with CUDA kernels for named GPU architectures, built when
# FASTMIM_CUDA_OPS=1 or (unset) a GPU is visible; see tools/build_mmcv.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FASTMIM_VENV:-$ROOT/.venv}"
CACHE="${FASTMIM_CACHE:-$HOME/.cache/fastmim}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"
MMCV_VERSION="2.1.0"

log() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

if [ -z "${PYTHON:-}" ]; then  # python3.11 where there is one, else python3
  PYTHON=python3.11
  command -v "$PYTHON" >/dev/null || PYTHON=python3
  command -v "$PYTHON" >/dev/null \
    || die "no python3.11 or python3 found; install Python >= 3.10 or give PYTHON=..."
fi
# A PYTHON given by name is used or refused, never replaced (python9 fell back to python3).
command -v "$PYTHON" >/dev/null \
  || die "PYTHON=$PYTHON: no such command; give an installed python (>= 3.10) or unset PYTHON"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' \
  || die "Python >= 3.10 is required, found $("$PYTHON" --version 2>&1)"

# torch's CUDA build (it runs on the CPU too) with its CUDA libraries makes a complete .venv
# about 6.1 GiB. On a fuller disk pip stops midway with "[Errno 28] No space left on device",
# so the space is asked for first, with the folder and the figures named.
needs_free_space() {  # GiB, then the folder to be filled (it need not exist yet)
  local need_gib=$1 folder=$2 free_kib
  while [ ! -d "$folder" ]; do folder="$(dirname "$folder")"; done
  free_kib="$(df -Pk "$folder" | awk 'NR == 2 { print $4 }')"
  [ "$free_kib" -ge $((need_gib * 1024 * 1024)) ] \
    || die "installing torch $TORCH_VERSION into $VENV needs about $need_gib GiB free on its disk;\
 $((free_kib / 1024)) MiB are free there: free some space (another clone's .venv takes\
 6 GiB), or give FASTMIM_VENV=<a folder on a larger disk> (make demo FASTMIM_VENV=...)"
}

if [ ! -x "$VENV/bin/python" ]; then
  needs_free_space 7 "$VENV"
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

have() { "$PY" - "$@" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, _, want = spec.partition('==')
    try:
        got = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and got != want:
        sys.exit(1)
EOF
}

# setuptools >= 81 dropped pkg_resources, which mmcv's setup.py and mmengine's
# `mmdet::`/`mmseg::` base-config lookup import.
"$PY" -c 'import pkg_resources' 2>/dev/null && have wheel \
  || { log "installing setuptools<81, wheel"; "${PIP[@]}" 'setuptools<81' wheel; }

have "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  || { needs_free_space 7 "$VENV"; \
       log "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"; \
       "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"; }

req_stamp="$VENV/.fastmim-requirements"
req_hash="$(cat "$ROOT"/requirements/*.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_hash" ]; then
  log "installing requirements"
  "${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" 'setuptools<81'
  "${PIP[@]}" --no-deps -r "$ROOT/requirements/openmmlab.txt" -r "$ROOT/requirements/data.txt"
  echo "$req_hash" > "$req_stamp"
fi

# Installs the cached wheel of the wanted flavour (CPU ops, or CUDA kernels: FASTMIM_CUDA_OPS,
# TORCH_CUDA_ARCH_LIST) unless the venv already has it, building it first when none is cached.
"$ROOT/tools/build_mmcv.sh" "$PY" "$MMCV_VERSION" "$CACHE/wheels"
"$PY" -c 'import mmcv.ops, mmcv._ext' 2>/dev/null \
  || die "mmcv installed but 'import mmcv._ext' fails: the wheel has no compiled ops"

# Checked from / so that the repository's own folder on sys.path cannot stand in for the install.
if ! (cd / && "$PY" -c 'import fastmim' 2>/dev/null); then
  log "installing fastmim (editable)"
  "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
fi

"$PY" - <<'EOF'
import os, sys
import torch, mmengine, mmcv, mmdet, mmseg, timm
from mmcv.ops import RoIAlign, nms  # noqa: F401  compiled ops must load
with open(os.path.join(sys.prefix, '.fastmim-mmcv')) as stamp:  # written by build_mmcv.sh
    mmcv_key = stamp.read().strip()
print(f'[setup_env] ready: torch {torch.__version__}, mmengine {mmengine.__version__}, '
      f'mmcv {mmcv.__version__} (ops, cache key {mmcv_key}), mmdet {mmdet.__version__}, '
      f'mmseg {mmseg.__version__}, timm {timm.__version__}')
EOF
