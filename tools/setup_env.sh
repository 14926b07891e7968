#!/usr/bin/env bash
# Create or complete the virtual environment at .venv/ with the verified stack.
#
# Idempotent: every step checks whether its result is already there, so a second run takes
# seconds. The one slow step, building mmcv with its compiled ops, is cached as a wheel under
# $FASTMIM_CACHE (default ~/.cache/fastmim), keyed by mmcv, torch and Python versions.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FASTMIM_VENV:-$ROOT/.venv}"
CACHE="${FASTMIM_CACHE:-$HOME/.cache/fastmim}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"
MMCV_VERSION="2.1.0"

log() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' \
  || die "Python >= 3.10 is required, found $("$PYTHON" --version 2>&1)"

if [ ! -x "$VENV/bin/python" ]; then
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
  || { log "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"; \
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

mmcv_has_ops() { "$PY" -c 'import mmcv.ops, mmcv._ext' 2>/dev/null; }
if ! (have "mmcv==$MMCV_VERSION" && mmcv_has_ops); then
  "$ROOT/tools/build_mmcv.sh" "$PY" "$MMCV_VERSION" "$CACHE/wheels"
  mmcv_has_ops || die "mmcv installed but 'import mmcv._ext' fails: the wheel has no compiled ops"
fi

# Checked from / so that the repository's own folder on sys.path cannot stand in for the install.
if ! (cd / && "$PY" -c 'import fastmim' 2>/dev/null); then
  log "installing fastmim (editable)"
  "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
fi

"$PY" - <<'EOF'
import torch, mmengine, mmcv, mmdet, mmseg, timm
from mmcv.ops import RoIAlign, nms  # noqa: F401  compiled ops must load
print(f'[setup_env] ready: torch {torch.__version__}, mmengine {mmengine.__version__}, '
      f'mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, '
      f'timm {timm.__version__}')
EOF
