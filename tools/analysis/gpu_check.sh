#!/usr/bin/env bash
# Everything in fastmim that needs a GPU, in one bounded pass, in order of importance:
#   1. the imports (a failure stops the script at once, leaving device time for a rerun); the
#      CUDA-only tests (HOG on CUDA under fp16 autocast against the numpy reference, a CUDA fp16
#      training step against the CPU fp32 one, masks on the GPU, nvJPEG decoding against PIL's);
#      mmcv with CUDA kernels for this machine's torch and GPU (tools/build_mmcv.sh with
#      FASTMIM_CUDA_OPS=1: a matching wheel from WHEELS/mmcv-cache in seconds, else built here,
#      unless BUDGET is set: the build takes longer than the step may; skipped without a GPU);
#      then the downstream projects at full size
#      (tools/analysis/train_speed.py): Mask R-CNN Swin-B (1024 large-scale jitter + copy-paste,
#      batch 2) and UperNet ViT-B (512 crops, batch 2), fp16, 20 iterations each on the photo
#      data of tests/test_projects/downstream_data.py, then tools/test.py: s/iteration and
#      peak memory;
#   2. the pre-training benchmark (docs/benchmark.md) at the published per-GPU batches (ViT-B
#      512, Swin-B 256) with fp16 autocast, FastMIM / SimMIM / MAE side by side; end-to-end
#      pre-training from a folder of ImageNet-sized JPEGs (the real loader against the
#      synthetic-input rate), decoded by the workers and again on the GPU (nvJPEG); FastMIM
#      and SimMIM compiled in bf16 (the MFU target), FastMIM also with CUDA graphs; the
#      recipe's projected wall-clock from these rates; bf16 without compile; a profile of the
#      FastMIM ViT-B step;
#   3. the CUDA training path: 1-GPU DDP (nccl) pre-training with fp16 AMP (loss scaling),
#      fine-tuning with AMP from that checkpoint, then resuming the pre-training compiled in
#      bf16 (no loss scaler).
# Each step has its own time limit, so one failing or slow step never hides the others: at its
# limit a step gets SIGTERM (a training run saves and stops at its next iteration), and SIGKILL
# 20 s later.
#
#   tools/analysis/gpu_check.sh [OUT_DIR]
# Default OUT_DIR: work_dirs/gpu_check, or /tmp/gpu_check where $OUT is set (a device run's
# folder of files to send back), with ARCHIVE then $OUT/gpu_check.tar.gz by default.
#
# Results: OUT_DIR/gpu_check.log (every step's output), OUT_DIR/*_cuda*.json and *.png
# (benchmark), OUT_DIR/*_speed.json (train_speed.py), OUT_DIR/projection.md.
# Environment: VIT_BATCH (512) and SWIN_BATCH (256), the published per-GPU batches, or BATCH
# for both; ITERS (20, benchmark steps), WORKERS (loader processes of the JPEG pre-training
# step: all cores but one), BENCH_ARGS (extra benchmark flags), SKIP (step names to
# leave out), TIME_SCALE (a whole number >= 1 that multiplies every step's limit; a rehearsal
# on a CPU needs ~10), BUDGET (whole seconds for the whole script, 0 for none: later steps get
# what is left), ARCHIVE (a .tar.gz file that, after every step, holds all of OUT_DIR so far:
# for a machine that sends back only a few files, or is stopped before the end).
# When a folder WHEELS (default .whl/ in the repository root; empty: none) of wheels exists (a
# machine with torch but without a package index; tools/analysis/offline_wheels.sh makes it),
# they are installed into /tmp/site first; the mmcv sdist in it lets the mmcv step build
# offline where the machine has nvcc. Its cache, WHEELS/mmcv-cache/ (WHEELS empty: the user's
# ${FASTMIM_CACHE:-~/.cache/fastmim}/wheels), is kept for a rerun on the same machine.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT_DIR=${1:-work_dirs/gpu_check}
if [ -n "${OUT:-}" ]; then
    OUT_DIR=${1:-/tmp/gpu_check}
    ARCHIVE=${ARCHIVE-$OUT/gpu_check.tar.gz}
fi
# Checked before anything is written: a bad value skipped every step (TIME_SCALE=1.5: bash's
# arithmetic error, exit 0), lifted every limit (TIME_SCALE=0: timeout 0) or was ignored
# (BUDGET=abc). Leading zeros are refused too: bash's arithmetic reads 010 as octal.
TIME_SCALE=${TIME_SCALE:-1}
BUDGET=${BUDGET:-0}
[[ "$TIME_SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: TIME_SCALE must be a whole" \
    "number >= 1 (it multiplies every step's limit), got '$TIME_SCALE'" >&2; exit 2; }
[[ "$BUDGET" =~ ^(0|[1-9][0-9]*)$ ]] || { echo "gpu_check.sh: BUDGET must be a whole number" \
    "of seconds >= 0 (0: no budget), got '$BUDGET'" >&2; exit 2; }
# A file in OUT_DIR's place: one line, not an error from every command that writes the log.
made=$(mkdir -p "$OUT_DIR" 2>&1) || { echo "gpu_check.sh: OUT_DIR: ${made#mkdir: }" >&2; exit 2; }
LOG="$OUT_DIR/gpu_check.log"
case "$(realpath -m "${ARCHIVE:-/}")" in "$(realpath -m "$OUT_DIR")"/*)
    echo "ARCHIVE=$ARCHIVE is inside OUT_DIR=$OUT_DIR, which it packs: put it elsewhere"; exit 2 ;;
esac
: > "$LOG"
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
VIT_BATCH=${BATCH:-${VIT_BATCH:-512}}
SWIN_BATCH=${BATCH:-${SWIN_BATCH:-256}}
ITERS=${ITERS:-20}
WORKERS=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
BENCH_ARGS=${BENCH_ARGS:-}
SKIP=${SKIP:-}

WHEELS=${WHEELS-$ROOT/.whl}
if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl >> "$LOG" 2>&1 \
        || { tail -n 20 "$LOG"; echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# step NAME SECONDS COMMAND...: run with a limit, log everything, print a one-line verdict;
# returns the command's exit status (0 for a step left out).
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
    # Through bash, so that a step can be one of the (exported) functions below.
    timeout -k 20 "$limit" bash -c '"$@"' step "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "===== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    pack_results
    return "$rc"
}

# ARCHIVE, when set, always holds every result so far: written aside, then renamed.
pack_results() {
    [ -n "${ARCHIVE:-}" ] || return 0
    tar czf "$ARCHIVE.partial" -C "$OUT_DIR" . && mv "$ARCHIVE.partial" "$ARCHIVE"
}

# mmcv with CUDA kernels: built once for this torch and GPU (a few minutes on 16 cores for one
# architecture), installed over the pure-Python mmcv-lite of WHEELS (/tmp/site comes first on
# the path), then one RoIAlign and one NMS on the GPU.
mmcv_cuda() {
    "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' \
        || { echo "no GPU visible: mmcv left as it is"; return 0; }
    local cache="${FASTMIM_CACHE:-$HOME/.cache/fastmim}/wheels" key
    [ -n "$WHEELS" ] && cache="$WHEELS/mmcv-cache"
    # Offline: the mmcv sdist from WHEELS. The machine needs its own CUDA compiler then (nvcc's
    # and nvvm's wheels, 100 MB, do not fit what a device run carries).
    [ -n "$WHEELS" ] && [ -d "$WHEELS" ] && export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS"
    # Within a BUDGET only a cached wheel: the build takes minutes even on 16 cores, which the
    # downstream steps that need it could not get back.
    [ "$BUDGET" -gt 0 ] && export FASTMIM_MMCV_NO_BUILD=1
    FASTMIM_CUDA_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$ROOT/tools/build_mmcv.sh" "$PY" 2.1.0 "$cache" || return 1
    if [ -d /tmp/site/mmcv ]; then
        key="$("$PY" -c 'import sys; print(open(sys.prefix + "/.fastmim-mmcv").read().strip())')"
        "$PY" -m pip install -q --no-deps --no-compile --upgrade --target /tmp/site \
            "$cache/$key"/mmcv-*.whl || return 1
    fi
    "$PY" -c 'from fastmim.engine.mmcv_ops import probe_mmcv_ops
import mmcv, torch
probe_mmcv_ops("cuda")
print("mmcv", mmcv.__version__, mmcv.__file__, "runs RoIAlign and NMS on", torch.cuda.get_device_name())'
}

bench() {  # bench NAME BACKBONE BATCH [FLAGS...]: FastMIM and its baselines side by side
    local name=$1 backbone=$2 batch=$3
    shift 3
    "$PY" tools/analysis/benchmark_pretrain.py --backbone "$backbone" --batch-size "$batch" \
        --iters "$ITERS" --warmup 5 --amp --data-sizes --out "$OUT_DIR/${name}_cuda.json" \
        --plot "$OUT_DIR/${name}_cuda.png" "$@" $BENCH_ARGS
}

# The published ViT-B recipe's wall-clock from the rates measured so far (docs/benchmark.md,
# section 7): the ViT-B benchmarks and, where it ran, the end-to-end loader run.
projection() {
    set -o pipefail  # a step runs in its own bash: without it, tee's status would be the step's
    local results=() result
    for result in "$OUT_DIR"/vit_b*_cuda.json "$OUT_DIR/pretrain_speed.json"; do
        [ -f "$result" ] && results+=("$result")
    done
    [ ${#results[@]} -gt 0 ] || { echo "no ViT-B results to project from"; return 1; }
    "$PY" tools/analysis/project_wallclock.py "${results[@]}" | tee "$OUT_DIR/projection.md"
}

export PY ROOT OUT_DIR ITERS BENCH_ARGS WHEELS BUDGET
export -f mmcv_cuda bench projection

# Nothing below can run without these imports: stop at once, leaving the device time for a rerun.
step environment 60 "$PY" -c 'import torch, timm, mmengine, mmcv, fastmim
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name() if torch.cuda.is_available() else None)
print("timm", timm.__version__, "mmengine", mmengine.__version__, "mmcv", mmcv.__version__,
      mmcv.__file__)
import os, shutil, setuptools, subprocess
print("setuptools", setuptools.__version__, "cores", os.cpu_count(), "/dev/shm free GB",
      round(shutil.disk_usage("/dev/shm").free / 2**30, 1))
nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
print(subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip()
      .splitlines()[-1] if os.path.exists(nvcc) else "no nvcc")' || { tail -n 20 "$LOG"; exit 1; }
step cuda_tests 90 "$PY" -m pytest -q -p no:cacheprovider -rs -k cuda \
    tests/test_models/test_targets/test_hog.py tests/test_models/test_utils/test_block_mask.py \
    tests/test_models/test_algorithms/test_fastmim.py tests/test_models/test_jpeg_decoding.py
step mmcv_cuda 300 mmcv_cuda
step detection_swin_b 240 "$PY" tools/analysis/train_speed.py detection --amp --iters 20 \
    --out "$OUT_DIR/detection_speed.json"
step segmentation_vit_b 180 "$PY" tools/analysis/train_speed.py segmentation --amp --iters 20 \
    --out "$OUT_DIR/segmentation_speed.json"

step bench_vit_b 180 bench vit_b vit_b "$VIT_BATCH"
step bench_swin_b 150 bench swin_b swin_b "$SWIN_BATCH"
step pretrain_jpeg_loader 150 "$PY" tools/analysis/train_speed.py pretrain --amp --iters 30 \
    --skip 10 --out "$OUT_DIR/pretrain_speed.json" \
    --cfg-options train_dataloader.batch_size="$VIT_BATCH" \
    train_dataloader.num_workers="$WORKERS"
# The same with the JPEGs decoded on the GPU (nvJPEG, JpegDecodePreprocessor): compare the two
# results' images_per_s (the device decode counts as step time, not data time).
step pretrain_nvjpeg_loader 150 "$PY" tools/analysis/train_speed.py pretrain --amp --iters 30 \
    --skip 10 --config configs/fastmim/vit_b_hog_800e_nvjpeg.py \
    --out "$OUT_DIR/pretrain_nvjpeg_speed.json" \
    --cfg-options train_dataloader.batch_size="$VIT_BATCH" \
    train_dataloader.num_workers="$WORKERS"
# The MFU target is for a compiled step; bf16 needs no loss scaler (tools/train.py --amp-dtype).
step bench_vit_b_compile_bf16 300 bench vit_b_compile_bf16 vit_b "$VIT_BATCH" --compile \
    --amp-dtype bfloat16 --methods fastmim simmim
step bench_vit_b_compile_ro_bf16 240 bench vit_b_compile_ro_bf16 vit_b "$VIT_BATCH" --compile \
    --compile-mode reduce-overhead --amp-dtype bfloat16 --methods fastmim
step projection 60 projection
step bench_vit_b_bf16 150 bench vit_b_bf16 vit_b "$VIT_BATCH" --amp-dtype bfloat16
step bench_swin_b_bf16 150 bench swin_b_bf16 swin_b "$SWIN_BATCH" --amp-dtype bfloat16
step profile_vit_b 90 "$PY" tools/analysis/profile_pretrain_step.py --backbone vit_b \
    --batch-size "$VIT_BATCH" --amp --rows 30

PRETRAIN=configs/fastmim/demo_vit_tiny_embedded.py
SCRATCH=$(mktemp -d /tmp/fastmim_gpu_check.XXXX)  # the training steps' work dirs
step train_ddp_amp 120 env PYTHON="$PY" tools/dist_train.sh "$PRETRAIN" 1 --amp \
    --work-dir "$SCRATCH/pretrain" --cfg-options train_cfg.max_epochs=2
step finetune_amp 90 "$PY" tools/train.py configs/finetune/demo_vit_tiny_embedded_ft.py --amp \
    --work-dir "$SCRATCH/finetune" --cfg-options train_cfg.max_epochs=2 \
    model.backbone.init_cfg.checkpoint="$SCRATCH/pretrain/epoch_2.pth"
# Without the demo's reconstruction pictures, whose eval-mode forward would compile again.
step resume_compile_bf16 120 "$PY" tools/train.py "$PRETRAIN" --amp-dtype bfloat16 --compile \
    --resume --work-dir "$SCRATCH/pretrain" --cfg-options train_cfg.max_epochs=3 \
    custom_hooks=[]

grep -E "passed|failed|^=====|s/iter|runs RoIAlign|CUDA kernels in|Epoch\(train\).*\[(8|16|24)/|Epoch\(val\)|Error|error:" "$LOG" | cut -c1-240
for table in "$OUT_DIR"/*_cuda*.json; do
    [ -f "$table" ] && "$PY" -c "import json, sys
from fastmim.benchmark.report import format_report
print(format_report(json.load(open(sys.argv[1]))))" "$table"
done
rm -rf "$SCRATCH"
