#!/usr/bin/env bash
# One lent-GPU session of prior training (run through the device tool with carry=[".gpu"]):
#   python scripts/pack_gpu_data.py --data ../shared/data/utkface/train --ema runs/prior64/ema.safetensors   # here, first
#   device run: bash scripts/gpu_prior_session.sh 9      # minutes of training; EMA comes back in $OUT
# then, here: cp /work/.device/.../ema.safetensors runs/prior64_gpu/ and continue/resume from it (init_from).
# The image's python3 already has torch (CUDA), numpy, pillow, safetensors, pyyaml, tqdm, scipy.
set -euo pipefail
MIN="${1:-9}"
export PYTHONPATH="$PWD/src"
python3 -m dynface.cli train prior --device cuda --data .gpu/faces --out /tmp/prior_gpu \
  --config configs/embedded-64/prior.yaml \
  --set init_from=.gpu/init.safetensors --set threads=0 --set batch_size=256 --set lr=4.0e-4 \
  --set max_minutes="$MIN" --set checkpoint_minutes=3 --set sample_minutes=0 --set log_every=100
cp /tmp/prior_gpu/ema.safetensors /tmp/prior_gpu/log.csv "$OUT/"
python3 - <<'PY'
import os, torch
from dynface.models.io import load_state_dict_file
from dynface.models.unet import UNetConfig, UNetModel
from dynface.diffusion import GaussianDiffusion, ScheduleConfig
from dynface.training.prior import sample_grid
from dynface.imaging import save_grid
sd, meta = load_state_dict_file("/tmp/prior_gpu/ema.safetensors")
m = UNetModel(UNetConfig.from_dict(meta["unet"])).cuda().eval(); m.load_state_dict(sd)
x = sample_grid(m, GaussianDiffusion.from_config(ScheduleConfig()), 64, m.cfg.image_size, steps=100)
save_grid(x, os.path.join(os.environ["OUT"], "samples64.png"))
PY
