#!/usr/bin/env bash
# Everything in fastmim that needs a GPU, in one bounded pass:
#   1. the CUDA training path: 1-GPU DDP (nccl) pre-training with fp16 AMP (loss scaling),
#      then resume with torch.compile, then fine-tuning with AMP from that checkpoint;
#   2. the pre-training benchmark (docs/benchmark.md) for ViT-B and Swin-B with fp16 autocast,
#      a profile of the FastMIM ViT-B step, and the ViT-B benchmark again with torch.compile.
#   3. the CUDA-only tests (HOG on CUDA under fp16 autocast against the numpy reference, a
#      CUDA fp16 training step against the CPU fp32 one, masks on the GPU).
# Each step has its own time limit, so one failing or slow step never hides the others, and
# the steps come in order of importance.
#
#   tools/analysis/gpu_check.sh [OUT_DIR]          (default OUT_DIR: work_dirs/gpu_check)
#
# Results: OUT_DIR/gpu_check.log (every step's output), OUT_DIR/*_cuda*.json and *.png.
# Environment: BATCH (256, the published per-GPU batch of ViT-B), ITERS (20), BENCH_ARGS (extra
# benchmark flags), SKIP (step names to leave out), TIME_SCALE (multiplies every step's limit; a
# rehearsal on a CPU needs ~10), BUDGET (seconds for the whole script: later steps get what is
# left).
# When a folder .whl/ of wheels sits in the repository root (a machine with torch but without
# a package index; tools/analysis/offline_wheels.sh makes it), they are installed into /tmp/site
# first.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT_DIR=${1:-${OUT:-work_dirs/gpu_check}}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
BATCH=${BATCH:-256}
ITERS=${ITERS:-20}
BENCH_ARGS=${BENCH_ARGS:-}
SKIP=${SKIP:-}
TIME_SCALE=${TIME_SCALE:-1}
BUDGET=${BUDGET:-0}
SCRATCH=$(mktemp -d /tmp/fastmim_gpu_check.XXXX)

if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# step NAME SECONDS COMMAND...: run with a limit, log everything, print a one-line verdict.
step() {
    local name=$1 limit=$(($2 * TIME_SCALE))
    shift 2
    case " $SKIP " in *" $name "*) echo "===== $name: skipped" | tee -a "$LOG"; return ;; esac
    if [ "$BUDGET" -gt 0 ]; then
        local left=$((BUDGET - SECONDS - 20))
        [ "$left" -lt 30 ] && { echo "===== $name: no time left" | tee -a "$LOG"; return; }
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    local start=$SECONDS
    echo "===== $name: $*" >> "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "===== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

step environment 60 "$PY" -c 'import torch, timm, mmengine, mmcv, fastmim
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name() if torch.cuda.is_available() else None)
print("timm", timm.__version__, "mmengine", mmengine.__version__, "mmcv", mmcv.__version__,
      mmcv.__file__)'
step cuda_tests 90 "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_models/test_targets/test_hog.py tests/test_models/test_utils/test_block_mask.py \
    tests/test_models/test_algorithms/test_fastmim.py

PRETRAIN=configs/fastmim/demo_vit_tiny_embedded.py
step bench_vit_b 150 "$PY" tools/analysis/benchmark_pretrain.py --backbone vit_b \
    --batch-size "$BATCH" --iters "$ITERS" --warmup 5 --amp --data-sizes \
    --out "$OUT_DIR/vit_b_cuda.json" --plot "$OUT_DIR/vit_b_cuda.png" $BENCH_ARGS
step bench_swin_b 120 "$PY" tools/analysis/benchmark_pretrain.py --backbone swin_b \
    --batch-size "$BATCH" --iters "$ITERS" --warmup 5 --amp --data-sizes \
    --out "$OUT_DIR/swin_b_cuda.json" --plot "$OUT_DIR/swin_b_cuda.png" $BENCH_ARGS
step train_ddp_amp 120 env PYTHON="$PY" tools/dist_train.sh "$PRETRAIN" 1 --amp \
    --work-dir "$SCRATCH/pretrain" --cfg-options train_cfg.max_epochs=2
step finetune_amp 90 "$PY" tools/train.py configs/finetune/demo_vit_tiny_embedded_ft.py --amp \
    --work-dir "$SCRATCH/finetune" --cfg-options train_cfg.max_epochs=2 \
    model.backbone.init_cfg.checkpoint="$SCRATCH/pretrain/epoch_2.pth"
step resume_compile 120 "$PY" tools/train.py "$PRETRAIN" --amp --compile --resume \
    --work-dir "$SCRATCH/pretrain" --cfg-options train_cfg.max_epochs=3
step profile_vit_b 90 "$PY" tools/analysis/profile_pretrain_step.py --backbone vit_b \
    --batch-size "$BATCH" --amp --rows 30
step bench_vit_b_compile 240 "$PY" tools/analysis/benchmark_pretrain.py --backbone vit_b \
    --batch-size "$BATCH" --iters "$ITERS" --warmup 3 --amp --compile --methods fastmim simmim \
    --data-sizes --out "$OUT_DIR/vit_b_cuda_compile.json" $BENCH_ARGS

grep -E "passed|failed|^=====|Epoch\(train\).*\[(8|16|24)/|Epoch\(val\)|Error|error:" "$LOG" | cut -c1-240
for table in "$OUT_DIR"/*.json; do
    [ -f "$table" ] && "$PY" -c "import json, sys
from fastmim.benchmark.report import format_report
print(format_report(json.load(open(sys.argv[1]))))" "$table"
done
rm -rf "$SCRATCH"
