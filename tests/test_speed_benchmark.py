"""``benchmarks/speed.py``: the accelerator path (modes per process, throughput lines, budget) run on the CPU
with the ``tiny`` preset, so CI exercises what a lent GPU runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def _run(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "speed.md"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--gpu-only", "--accel-device", "cpu", "--accel-model", "tiny",
                    "--out", str(out), *args], check=True, capture_output=True, text=True, timeout=600)
    return out.read_text()


def test_accelerator_rows_ratios_and_throughput(tmp_path):
    text = _run(tmp_path, "--compile-timeout", "0", "--accel-steps", "ddim20")  # fewer steps than the default: faster
    rows = [ln.split("|")[1:-1] for ln in text.splitlines() if ln.startswith("| tiny")]
    assert [(r[2].strip(), r[5].strip()) for r in rows] == [
        ("fp32", "fixed_start"), ("fp32", "full"), ("bf16", "fixed_start"), ("bf16", "full")]
    assert all(r[4].strip() == "ddim20" for r in rows)
    nfe = {(r[2].strip(), r[5].strip()): float(r[7]) for r in rows}
    # ddim20 from t=400: calls at 400, 350 … 0 (a grid step 50 below the start is too far for DifFace's convention)
    assert nfe["fp32", "full"] > nfe["fp32", "fixed_start"] == 9
    assert all(float(r[8]) > 0 and float(r[9]) > 0 for r in rows)  # s/face, faces/s measured
    assert re.search(r"cpu/fp32/compile=False/batch 2: NFE ×\d+\.\d+, s/face ×\d+\.\d+", text)
    assert re.search(r"UNet forward bf16 eager, batch 4: [\d.]+ ms", text)
    assert re.search(r"measured peak bf16 matmul: [\d.e+-]+ TFLOP/s \(512×512\)", text)  # dynface.devices
    assert "--out" not in text and "torch.compile: not measured" in text


def test_budget_reports_what_did_not_run(tmp_path):
    text = _run(tmp_path, "--budget", "0.5")
    rows = [ln for ln in text.splitlines() if ln.startswith("| tiny")]
    assert len(rows) == 4 and all("not run (time budget spent)" in r for r in rows)  # table written all the same
    assert all("| ddim50 |" in r for r in rows)  # --accel-steps' default
    assert "eager UNet throughput: not run" in text and "bf16 torch.compile: not run" in text


def test_parts_and_precisions_select_and_bad_values_are_usage_errors(tmp_path):
    text = _run(tmp_path, "--parts", "eager", "--precisions", "fp32")
    rows = [ln for ln in text.splitlines() if ln.startswith("| tiny")]
    assert len(rows) == 2 and all("| fp32 |" in r for r in rows) and "Accelerator throughput" not in text
    for bad in (["--parts", "eager,bogus"], ["--precisions", "fp8"]):
        res = subprocess.run([sys.executable, str(SCRIPT), "--accel-device", "cpu", "--out", str(tmp_path / "x.md"), *bad],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "unknown --" in res.stderr and not (tmp_path / "x.md").exists()


def test_accelerator_faces_modes_and_batches(tmp_path):
    """--accel-faces / --accel-modes / --accel-batches: every mode of every (batch, precision), on the given faces
    (noise would give other NFEs for a trained model); restorer_only costs no NFE; bad values are usage errors."""
    import numpy as np
    from PIL import Image

    faces = tmp_path / "lq"
    faces.mkdir()
    rng = np.random.default_rng(1)
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(faces / f"{k}.png")
    text = _run(tmp_path, "--parts", "eager", "--precisions", "fp32", "--accel-faces", str(faces),
                "--accel-modes", "restorer_only,no_dgsa,full", "--accel-batches", "1,8", "--compile-timeout", "0",
                "--accel-steps", "ddim10")
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines() if ln.startswith("| tiny")]
    assert [(r[6], r[5]) for r in rows] == [(b, m) for b in ("1", "8") for m in ("restorer_only", "no_dgsa", "full")]
    nfe = {(r[6], r[5]): float(r[7]) for r in rows}
    assert nfe["1", "restorer_only"] == 0 and nfe["1", "full"] > 0 and nfe["1", "full"] == nfe["8", "full"]
    assert f"faces: {faces}" in text
    for bad in (["--accel-modes", "full,bogus"], ["--accel-batches", "0"], ["--accel-batches", "2,x"],
                ["--accel-faces", str(tmp_path / "none")]):
        res = subprocess.run([sys.executable, str(SCRIPT), "--accel-device", "cpu", "--out", str(tmp_path / "x.md"), *bad],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "--accel-" in res.stderr and not (tmp_path / "x.md").exists(), res.stderr


def test_cpu_rows_restore_faces_with_the_model_steps_and_a_ddim250_baseline(tmp_path):
    """CPU rows: faces from --faces, the given steps, resolved precision, and ``full`` again with ddim250 in the
    same run as the baseline of a printed ratio."""
    import numpy as np
    from PIL import Image

    faces = tmp_path / "lq"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for k in range(9):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(faces / f"f{k}.png")
    out = tmp_path / "speed.md"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--parts", "cpu", "--model", "tiny", "--cpu-steps", "ddim10",
                    "--cpu-precisions", "fp32", "--faces", str(faces), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    text = out.read_text()
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines() if ln.startswith("| tiny")]
    assert [(r[2], r[4], r[5], r[6]) for r in rows] == [
        ("fp32", "ddim10", "fixed_start", "8"), ("fp32", "ddim10", "full", "8"), ("fp32", "ddim250", "full", "8")]
    assert float(rows[2][7]) > float(rows[1][7])  # the finer grid makes more UNet calls
    assert re.search(r"cpu/fp32/batch 8, full: ddim10 / ddim250: NFE ×0\.\d+, s/face ×\d+\.\d+", text)
    assert f"CPU faces: {faces}" in text and "target for" not in text  # no speed target for the tiny preset
    (faces / "f0.png").unlink()
    for p in list(faces.iterdir())[:2]:
        p.unlink()
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--parts", "cpu", "--model", "tiny", "--faces", str(faces),
                          "--out", str(tmp_path / "s2.md")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "6 image(s), 8 needed" in res.stderr and not (tmp_path / "s2.md").exists()
