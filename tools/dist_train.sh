#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT (or MASTER_PORT) on every node.
# One node takes a free port unless PORT is set.
# Without a GPU the same command starts GPUS processes on the CPU (gloo backend).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: tools/dist_train.sh CONFIG GPUS [train.py args]" >&2; exit 2; }
export FASTMIM_LAUNCH_SCRIPT="$(basename "$0")"  # names it in errors
exec "$(dirname "$0")/dist_launch.sh" "$2" train.py "$1" "${@:3}"
