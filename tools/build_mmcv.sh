#!/usr/bin/env bash
# Build mmcv with its compiled ops against the torch in a given Python, cache the wheel, install it.
#
# Usage: tools/build_mmcv.sh PYTHON MMCV_VERSION CACHE_DIR
#
# mmcv publishes no binary wheels on PyPI, so it is built from the sdist once per
# (mmcv, torch, Python) triple; later set-ups install the cached wheel in seconds.
# Two traps are handled here:
# - build isolation hides torch from setup.py, which then silently skips the ops;
#   we build with --no-build-isolation and verify that the wheel holds mmcv/_ext*.so.
# - torch >= 2.10 headers need C++20 but mmcv 2.1.0's setup.py hard-codes -std=c++17,
#   which wins over CFLAGS; we patch the unpacked sdist for such torch versions.
set -euo pipefail

PY="$1"; MMCV_VERSION="$2"; CACHE="$3"
log() { printf '[build_mmcv] %s\n' "$*"; }
die() { printf '[build_mmcv] ERROR: %s\n' "$*" >&2; exit 1; }

torch_version="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
key="mmcv-${MMCV_VERSION}-torch${torch_version}-${py_tag}"
mkdir -p "$CACHE/$key"
wheel="$(ls "$CACHE/$key"/mmcv-*.whl 2>/dev/null | head -n1 || true)"

# (Not `zipfile -l | grep -q`: grep exits at the first match, the lister dies of SIGPIPE and
# pipefail turns a good wheel into a failure.)
wheel_has_ops() {
  "$PY" -c 'import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(not any(re.match(r"mmcv/_ext.*[.]so$", name) for name in names))' "$1"
}

if [ -n "$wheel" ] && ! wheel_has_ops "$wheel"; then
  log "cached wheel $wheel has no ops; rebuilding"
  rm -f "$wheel"; wheel=""
fi

if [ -z "$wheel" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "building mmcv $MMCV_VERSION with ops for torch $torch_version (about 10 min on 2 cores)"
  "$PY" -m pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$work" \
    || die "could not download the mmcv $MMCV_VERSION sdist"
  tar -xzf "$work"/mmcv-*.tar.gz -C "$work"
  src="$(ls -d "$work"/mmcv-*/ | head -n1)"
  if "$PY" -c "import sys, torch; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(v < (2, 10))"; then
    log "torch $torch_version needs C++20: patching setup.py"
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  fi
  (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$work/dist") \
    || die "mmcv build failed (see the compiler output above)"
  built="$(ls "$work"/dist/mmcv-*.whl | head -n1)"
  wheel_has_ops "$built" || die "the built mmcv wheel has no compiled ops (mmcv/_ext*.so missing)"
  # Debug symbols make the wheel 15x larger; strip them before caching.
  (cd "$work" && mkdir unpacked && cd unpacked && "$PY" -m zipfile -e "$built" . \
     && find . -name '_ext*.so' -exec strip --strip-debug {} + \
     && rm "$built" && "$PY" -m zipfile -c "$built" ./*) \
    || log "could not strip the wheel; caching it unstripped"
  [ -f "$built" ] || die "lost the built wheel while stripping it"
  cp "$built" "$CACHE/$key/.partial.whl"
  mv "$CACHE/$key/.partial.whl" "$CACHE/$key/$(basename "$built")"
  wheel="$CACHE/$key/$(basename "$built")"
  log "cached $wheel"
fi

"$PY" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
