#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
#
# Preemption: on SIGTERM (what SLURM sends a job it preempts or cancels, KillWait seconds before
# SIGKILL) or SIGUSR1 (`--signal=USR1@120`: two minutes before the time limit) every rank saves
# a checkpoint at the next iteration boundary, names it in WORK_DIR/last_checkpoint and exits
# with status 75 (PreemptionHook). `--resume` continues from it exactly, and starts from scratch
# when WORK_DIR has no checkpoint yet, so one command serves the first start and every restart:
#   SRUN_ARGS="--signal=USR1@120" tools/slurm_train.sh PART JOB CONFIG WORK_DIR --resume
# To have SLURM restart it, submit a batch script with `#SBATCH --requeue` that runs the line
# above and then `[ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"` (the status is 75 only
# when the checkpoint was written). See docs/long_runs.md.
set -euo pipefail
[ $# -ge 4 ] || {
    echo "usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2
    exit 2
}
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
# Checked here: srun handed them on, and the job waited for GPUs in the queue to then fail on
# every rank.
NAME=$(basename "$0")
source "$(dirname "$0")/launch_checks.sh"
require_count GPUS "$GPUS"
require_count GPUS_PER_NODE "$GPUS_PER_NODE"
require_count CPUS_PER_TASK "$CPUS_PER_TASK"
require_config "$CONFIG"
require_train_checkpoints "$CONFIG" "${@:5}"
command -v srun >/dev/null || {
    echo "$NAME: srun not found: it is SLURM's launcher and this script is for SLURM clusters;" \
         "elsewhere run tools/dist_train.sh CONFIG GPUS" >&2; exit 127; }
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && [ "$PYTHON" = python ] && PYTHON="$ROOT/.venv/bin/python"

# SLURM signals every process of a job it preempts, this script too: without the trap the shell
# would die of the SIGTERM at once (status 143, not requeued) while the ranks save and srun
# passes on their 75. With it the shell waits for srun and exits with srun's status.
trap ':' TERM USR1
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher slurm "${@:5}"
