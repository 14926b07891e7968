#!/usr/bin/env bash
# Usage: tools/dist_launch.sh GPUS SCRIPT [SCRIPT args]
# Starts GPUS processes of tools/SCRIPT with torchrun (--launcher pytorch is added); what
# dist_train.sh and dist_test.sh share. Without a GPU the processes run on the CPU (gloo).
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (MASTER_PORT, the
# name torchrun and mmengine give it, is read where PORT is not set; one node takes a free port
# unless PORT is set).
set -euo pipefail
GPUS=$1
SCRIPT=$2
# Errors are named by the script the user ran (dist_train.sh, dist_test.sh set it).
NAME=${FASTMIM_LAUNCH_SCRIPT:-$(basename "$0")}
source "$(dirname "$0")/launch_checks.sh"
require_count GPUS "$GPUS"
NNODES=${NNODES:-1}
require_count NNODES "$NNODES"
# Several nodes: without its own NODE_RANK every node was node 0, and without MASTER_ADDR each
# waited for a master on itself, until torchrun's rendezvous timed out.
if [ "$NNODES" -gt 1 ]; then
    [ -n "${NODE_RANK:-}" ] && [ -n "${MASTER_ADDR:-}" ] || {
        echo "$NAME: NNODES=$NNODES needs NODE_RANK (0 to $((NNODES - 1)), one per" \
             "node) and MASTER_ADDR (the node-0 host) set on every node" >&2; exit 2; }
    [[ "$NODE_RANK" =~ ^[0-9]+$ ]] && [ "$NODE_RANK" -lt "$NNODES" ] || {
        echo "$NAME: NODE_RANK must be 0 to $((NNODES - 1)), got '$NODE_RANK'" >&2
        exit 2; }
    # A host name no resolver knows (a typo) makes torchrun repeat 'gai error' warnings until
    # its rendezvous times out, minutes later. ahosts resolves as torchrun does (an address
    # is itself; hosts would look its name up); without getent nothing is checked.
    ! command -v getent >/dev/null || getent ahosts "$MASTER_ADDR" >/dev/null || {
        echo "$NAME: MASTER_ADDR=$MASTER_ADDR: no such host (name resolution failed on" \
             "$(hostname)); give node 0's host name or address" >&2; exit 2; }
fi
# MASTER_PORT (what a cluster's job script or a torchrun habit exports) is honoured: ignored,
# every node but the first would wait for a master on torchrun's default port until the timeout. On one
# node it is not read: a MASTER_PORT left in the environment would take away the free port
# that lets two jobs share a machine (PORT still fixes one).
PORT_NAME=PORT
if [ "$NNODES" -gt 1 ] && [ -z "${PORT:-}" ] && [ -n "${MASTER_PORT:-}" ]; then
    PORT=$MASTER_PORT
    PORT_NAME=MASTER_PORT
fi
# A port out of range would be torchrun's 20-line traceback, one that is not a number its usage.
if [ -n "${PORT:-}" ]; then
    [[ "$PORT" =~ ^[1-9][0-9]{0,4}$ ]] && [ "$PORT" -le 65535 ] || {
        echo "$NAME: $PORT_NAME must be a whole number from 1 to 65535, got '$PORT'" >&2
        exit 2; }
fi
# Each process would refuse them in its own line, followed by torchrun's traceback: the config,
# and train.py's checkpoints: a --resume file cut short or of weights only, a load_from not there.
require_config "${3:-}"
[ "$SCRIPT" != train.py ] || require_train_checkpoints "${@:3}"
if [ "$NNODES" -eq 1 ] && [ -z "${PORT:-}" ]; then
    # One node, no PORT given: torchrun picks a free port. A fixed default (29500) would make
    # a second job on the same machine fail with torchrun's EADDRINUSE traceback.
    RENDEZVOUS=(--standalone)
else
    RENDEZVOUS=(--nnodes="$NNODES" --node_rank="${NODE_RANK:-0}"
                --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}")
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && [ "$PYTHON" = python ] && PYTHON="$ROOT/.venv/bin/python"

# torchrun through tools/torchrun.py: one line, not the launcher's traceback, when a process
# fails, a signal stops the job (status 128 + signal) or PORT is taken.
# A preempted process exits with 75 (PreemptionHook: requeue me), but torchrun reports any
# process's non-zero status as 1: each preempted process adds its local rank to this file, and
# the script exits with 75 when all of this node's processes did. SLURM signals every process of
# the job, this script and torchrun too: this script waits for torchrun instead of dying at once,
# and torchrun passes SIGUSR1 (--signal=USR1@120) on to the ranks as it does SIGTERM, waiting for
# them to save; by default it died on SIGUSR1 at once, leaving the ranks unwatched (an older
# torchrun without --signals-to-handle still does).
# torchrun waits TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds for the processes it signalled, then
# kills them: its default of 30 cut a slow checkpoint write short (no checkpoint, status 138
# and not a word), well inside the 120 s that --signal=USR1@120 leaves.
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-110}
PREEMPTED_RECORD=$(mktemp "${TMPDIR:-/tmp}/fastmim_preempted.XXXXXX")
trap 'rm -f "$PREEMPTED_RECORD"' EXIT
trap ':' TERM USR1
SIGNALS=()
if "$PYTHON" -m torch.distributed.run --help 2>/dev/null | grep -q -- --signals-to-handle; then
    SIGNALS=(--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1)
fi
status=0
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
FASTMIM_PREEMPTED_RECORD="$PREEMPTED_RECORD" \
"$PYTHON" "$ROOT/tools/torchrun.py" "${RENDEZVOUS[@]}" "${SIGNALS[@]}" --nproc_per_node="$GPUS" \
    "$ROOT/tools/$SCRIPT" "${@:3}" --launcher pytorch || status=$?
# torchrun killed outright (kill -9, the out-of-memory killer) ended first, while its
# processes, stopped by the kernel's SIGTERM, still saved: each holds a shared lock on the
# record while it lives, so wait for them (as long as torchrun would have) before counting.
if command -v flock >/dev/null; then
    flock -x -w "$TORCH_ELASTIC_SHUTDOWN_TIMEOUT" "$PREEMPTED_RECORD" true || true
fi
if [ "$status" -ne 0 ] && [ "$(sort -u "$PREEMPTED_RECORD" | wc -l)" -eq "$GPUS" ]; then
    status=75
fi
exit "$status"
