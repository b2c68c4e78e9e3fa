#!/usr/bin/env bash
# One lent-GPU session: train the embedded-64 prior, then the GPU rows of the speed benchmark.
#   here, first:  python scripts/pack_gpu_data.py --data ../shared/data/utkface/train --ema runs/prior64/ema.safetensors
#   device run:   bash scripts/gpu_prior_session.sh 6      (carry=[".gpu"]; 6 minutes of training)
#   here, after:  python scripts/gpu_split.py join FILES_AT/ema runs/prior64_gpu/ema.safetensors   (and model)
# Weights come back split in parts (the device returns files of at most 16 MiB). The image's python3
# already has torch (CUDA), numpy, pillow, safetensors, pyyaml, tqdm, scipy.
set -uo pipefail
MIN="${1:-6}"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m dynface.cli train prior --device cuda --data .gpu/faces --out /tmp/prior_gpu \
  --config configs/embedded-64/prior.yaml \
  --set init_from=.gpu/init.safetensors --set threads=0 --set batch_size=256 --set lr=3.0e-4 \
  --set warmup_steps=200 --set max_minutes="$MIN" --set checkpoint_minutes=2 --set sample_minutes=0 \
  --set log_every=200 2>&1 | tail -5
cp /tmp/prior_gpu/log.csv "$OUT/prior_log.csv"
tail -3 "$OUT/prior_log.csv"
python3 scripts/gpu_split.py split /tmp/prior_gpu/ema.safetensors "$OUT/ema"
python3 -m dynface.cli sample --model /tmp/prior_gpu/ema.safetensors -n 64 --steps 100 --seed 0 --batch 64 \
  --device cuda -o "$OUT/samples64.png"
timeout 170 python3 benchmarks/speed.py --quick --gpu-only --compile-timeout 90 --out "$OUT/speed_gpu.md" | tail -30
