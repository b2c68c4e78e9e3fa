#!/usr/bin/env bash
# One lent-GPU call of embedded-128 training (docs/embedded-128_plan.md):
#   bash scripts/gpu_train_embedded128.sh SECONDS [PHASES [REST_SECONDS]]
# PHASES: all (default) | prior | rest | any of prior,dsst,dblm,dgsa; REST_SECONDS: with prior, the time kept for the
# other phases (default 150).
# SECONDS is the wall time this command may use (outputs included); give the device call timeout_s = SECONDS + 40.
# Needs .gpu/e128 (carry it): `python scripts/gpu_train_embedded128.py pack ...` makes it, `... plan SECONDS PHASES`
# prints the exact call. Everything it returns is written under $OUT (≤ 8 files, ≤ 16 MiB each), refreshed at each
# checkpoint; `... unpack FILES_AT runs/e128/roundN` joins it here.
# DYNFACE_GPU_SCRIPT_SMOKE=1 runs the same path on the CPU with the tiny 32-px configs (tests/test_embedded128_script.py).
set -uo pipefail
SECONDS_BUDGET="${1:?usage: gpu_train_embedded128.sh SECONDS [PHASES]}"
PHASES="${2:-all}"
REST="${3:-150}"
export E128_T0="$(date +%s.%N)"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: "${OUT:?OUT must name the output folder (the device tool sets it)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ "${DYNFACE_GPU_SCRIPT_SMOKE:-0}" = "1" ]; then
  EXTRA=(--smoke --device cpu)
else
  EXTRA=(--device cuda)
  nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader 2>&1 | tee -a "$OUT/log.txt"
fi
"$PY" scripts/gpu_train_embedded128.py train "$SECONDS_BUDGET" "$PHASES" --rest-seconds "$REST" --out "$OUT" \
  "${EXTRA[@]}" ${E128_ARGS:-} 2>&1 \
  | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
ls -la "$OUT" | tee -a "$OUT/log.txt"
exit "$rc"
