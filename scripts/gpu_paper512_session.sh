#!/usr/bin/env bash
# One lent-GPU session for issue 12 part 4: the paper's setting at 512 px, `full`, `ddim250`, random weights
# (DifFace's 512 UNet, DifFace's SwinIR as RM, 512 TM, DGSA, packaged DSST), start steps fixed by std* 2, 6, 9.5
# (t ≈ 713, 875, 939), batch 8 and 1, bf16 eager and bf16 + torch.compile; s/face and peak memory; then a
# torch.profiler table of one UNet forward (batch 8, bf16) and the measured matmul peak for the % of peak.
#   device run:  bash scripts/gpu_paper512_session.sh 480     (run timeout_s about 60 s above the budget)
#   a CPU check of the same commands (seconds): OUT=/tmp/p512 bash scripts/gpu_paper512_session.sh 120 --cpu-check
#   here, after: append FILES_AT/paper512_speed.md (+ the profile) to docs/results/speed_gpu.md
# Every step writes its own file under $OUT as soon as it ends, so a stopped session still returns the finished ones.
# Budget (≈ 15 min of device time in all, start-up included): eager rows first with --iters 40 (every sampler
# iteration of a batch costs the same: all faces of one std* start together), compile rows next, profile last.
set -uo pipefail
BUDGET="${1:-480}"
shift || true
OUT="${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

if [ "${1:-}" = "--cpu-check" ]; then  # the same script path on a CPU, tiny model, a few steps
  COMMON=(--device cpu --model tiny --steps ddim10 --std 2,9.5 --threads 2)
  timeout "$(left)" python3 benchmarks/paper512_speed.py "${COMMON[@]}" --batches 2,1 --variants fp32 --iters 3 \
    --out "$OUT/paper512_speed.md" || echo "eager rows: stopped (rc $?)"
  timeout "$(left)" python3 benchmarks/paper512_speed.py "${COMMON[@]}" --batches 1 --variants fp32 --iters 0 \
    --profile --profile-batch 1 --profile-precision fp32 --out "$OUT/paper512_profile.md" || echo "profile: stopped (rc $?)"
  timeout 60 python3 - <<'EOF' > "$OUT/matmul_peak.txt" 2>&1 || echo "matmul peak: stopped"
from dynface.devices import matmul_peak_tflops
print(f"measured bf16 matmul peak: {matmul_peak_tflops('cpu', 256):.3g} TFLOP/s (256x256, CPU check)")
EOF
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
# 1. eager bf16, the headline rows (≈ 10 s/face each before any speed-up: keep --iters so that all six fit)
timeout $(( $(left) - 300 )) python3 benchmarks/paper512_speed.py --device cuda --std 2,6,9.5 --batches 8,1 \
  --variants bf16 --iters 40 --out "$OUT/paper512_speed_eager.md" || echo "eager rows: stopped (rc $?)"
# 2. bf16 + torch.compile (compilation takes 1-3 minutes; the first row's warm-up column shows it)
timeout $(( $(left) - 90 )) python3 benchmarks/paper512_speed.py --device cuda --std 2,6,9.5 --batches 8,1 \
  --variants bf16+compile --iters 40 --out "$OUT/paper512_speed_compile.md" || echo "compile rows: stopped (rc $?)"
# 3. where the UNet forward spends its time (GroupNorm casts? attention layout?), and the matmul peak
timeout $(( $(left) - 10 )) python3 benchmarks/paper512_speed.py --device cuda --std 6 --batches 8 --variants bf16 \
  --iters 2 --profile --profile-batch 8 --profile-precision bf16 --out "$OUT/paper512_profile.md" || echo "profile: stopped (rc $?)"
timeout 60 python3 - <<'EOF' > "$OUT/matmul_peak.txt" 2>&1 || echo "matmul peak: stopped"
from dynface.devices import matmul_peak_tflops
print(f"measured bf16 matmul peak: {matmul_peak_tflops('cuda', 8192):.0f} TFLOP/s (8192x8192)")
EOF
cat "$OUT"/*.md "$OUT/matmul_peak.txt" 2>/dev/null | tail -80
