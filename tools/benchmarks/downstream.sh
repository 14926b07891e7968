#!/usr/bin/env bash
# Usage: tools/benchmarks/downstream.sh PRETRAIN_CKPT GPUS [finetune|det|seg|all] [options]
# Fine-tunes PRETRAIN_CKPT on ImageNet, trains and tests the backbone's COCO / ADE20K config
# from the fine-tuned checkpoint and ends with one table of top-1, box AP, mask AP and mIoU.
# Options and the stages: tools/benchmarks/downstream.py --help, docs/downstream.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && [ "$PYTHON" = python ] && PYTHON="$ROOT/.venv/bin/python"

PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" "$ROOT/tools/benchmarks/downstream.py" "$@"
