#!/usr/bin/env bash
# Wheels that let tools/analysis/gpu_check.sh run on a GPU machine that has torch but no package
# index: everything fastmim and the downstream projects (mmdet, mmseg) import that such a
# machine's image lacks. All but two are pure Python; pycocotools and shapely are fetched for
# the GPU machine's Python, TARGET_PYTHON (default 3.12, the lent machines' image). mmcv is
# built from its sdist without its compiled ops ("mmcv-lite"): the ops are compiled against
# one torch build and only the mmdet/mmseg projects need them; pre-training, fine-tuning and
# the benchmark use mmcv's pure-Python transforms. The sdist stays in DIR: gpu_check.sh builds
# mmcv with CUDA kernels from it on the GPU machine, unless a CUDA-ops wheel built here fits
# that machine (copied to DIR/mmcv-cache/).
#
#   tools/analysis/offline_wheels.sh [DIR]     (default DIR: .whl in the repository root)
#
# gpu_check.sh installs the wheels of .whl (or of WHEELS=DIR) into /tmp/site when it finds them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR=${1:-$ROOT/.whl}
PY=${PYTHON:-$ROOT/.venv/bin/python}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
mkdir -p "$DIR"
# setuptools < 81: mmengine finds the `mmdet::` / `mmseg::` base configs through pkg_resources,
# which an image with setuptools >= 81 lacks (and mmcv's setup.py imports it).
"$PY" -m pip download -q --no-deps -d "$DIR" mmengine==0.10.7 timm==1.0.31 addict==2.4.0 \
    yapf==0.43.0 termcolor==3.3.0 platformdirs==4.14.8 foolbox==3.3.4 imgviz==2.1.0 \
    mmdet==3.3.0 mmsegmentation==1.2.2 terminaltables==3.1.10 ftfy==6.3.1 wcwidth==0.9.4 \
    prettytable==3.19.0 setuptools==80.10.2
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DIR" pycocotools==2.0.11 shapely==2.2.0
[ -f "$DIR"/mmcv-2.1.0.tar.gz ] \
    || "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$DIR" \
        mmcv==2.1.0
if ! ls "$DIR"/mmcv_lite-2.1.0-*.whl > /dev/null 2>&1; then
    BUILD=$(mktemp -d)
    tar xzf "$DIR"/mmcv-2.1.0.tar.gz -C "$BUILD"
    MMCV_WITH_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" \
        "$BUILD"/mmcv-2.1.0
    rm -rf "$BUILD"
fi
# CUDA-ops mmcv wheels this machine has built for TARGET_PYTHON (FASTMIM_CUDA_OPS=1
# tools/setup_env.sh, or tools/build_mmcv.sh with a venv of the GPU machine's torch), under the
# cache layout gpu_check.sh's mmcv step reads: a GPU machine with the same torch, Python and an
# architecture they cover installs one in seconds instead of compiling for minutes.
rm -rf "$DIR/mmcv-cache"
for built in "${FASTMIM_CACHE:-$HOME/.cache/fastmim}"/wheels/mmcv-*-cp${TARGET_PYTHON/./}-cu*/; do
    [ -d "$built" ] && ls "$built"mmcv-*.whl > /dev/null 2>&1 || continue
    mkdir -p "$DIR/mmcv-cache"
    cp -r "$built" "$DIR/mmcv-cache/"
done
ls -1 "$DIR" "$DIR"/mmcv-cache/* 2>/dev/null
