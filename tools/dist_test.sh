#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT (or MASTER_PORT) on every node.
# One node takes a free port unless PORT is set.
set -euo pipefail
[ $# -ge 3 ] \
    || { echo "usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]" >&2; exit 2; }
export FASTMIM_LAUNCH_SCRIPT="$(basename "$0")"  # names it in errors
exec "$(dirname "$0")/dist_launch.sh" "$3" test.py "$1" "$2" "${@:4}"
