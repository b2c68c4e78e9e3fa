#!/usr/bin/env bash
# One lent-GPU session for the accelerator rows of the speed benchmark (the non-quick run: fp32/bf16/fp16
# eager, then torch.compile of the UNet forward and of the whole pipeline in bf16), inside a time budget.
#   device run:  bash scripts/gpu_speed_session.sh 540      (timeout_s about 50 s above the budget)
#   only some of it: bash scripts/gpu_speed_session.sh 340 --parts eager,compile-pipeline --precisions bf16 --compile-timeout 300
#   here, after: cp FILES_AT/speed_gpu.md docs/results/speed_gpu.md
# speed.py rewrites its markdown after every step, so a stopped run still returns the finished rows.
set -uo pipefail
BUDGET="${1:-540}"
shift || true
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 benchmarks/speed.py --gpu-only --budget "$BUDGET" --out "$OUT/speed_gpu.md" "$@"
