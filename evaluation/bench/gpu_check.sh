#!/usr/bin/env bash
# The GPU check, on the GPU machine, from the repository root (see evaluation/bench/gpu_check.py):
#   here:  python -m evaluation.bench.gpu_bundle            (the missing wheels -> .gpu_bundle/)
#   there: bash evaluation/bench/gpu_check.sh [gpu_check options]    (device tool: carry [".gpu_bundle"])
# Installs the bundle into /tmp/site with --no-index (no registry there), then runs the check; under 8 minutes on
# one H100/H200-class GPU (--budget-s skips what is left after 450 s). Writes $OUT/gpu_check.json when OUT is set.
set -euo pipefail
BUNDLE="${GPU_BUNDLE:-.gpu_bundle}"
SITE="${GPU_SITE:-/tmp/site}"
if ! ls "$BUNDLE"/*.whl >/dev/null 2>&1; then
  echo "error: no wheels in $BUNDLE: run 'python -m evaluation.bench.gpu_bundle' on a machine with pip access" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$BUNDLE"/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, diffusers, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'av', av.__version__, 'gpu', torch.cuda.get_device_name())"
exec python3 -m evaluation.bench.gpu_check "$@"
