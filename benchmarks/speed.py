"""Speed benchmark: NFE/face, s/face, faces/s with batching and peak memory, ``full`` vs ``fixed_start``
measured in the same run (ratios), on the CPU and — when a GPU is present — the ``difface-ffhq512``
prior with random weights (fp32 vs bf16/fp16, with and without ``torch.compile``) and the fraction of
the device's measured peak matmul throughput that the UNet reaches.

    python benchmarks/speed.py [--quick] [--model embedded-64] [--out docs/results/speed.md]

Each configuration runs in its own subprocess so that its peak memory (max RSS, or CUDA max allocated)
is its own. Results are written as a markdown table naming the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import torch

    s = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        s += f"; GPU {torch.cuda.get_device_name(0)}"
    return s


def _restorer(model: str, mode: str, steps: str, device: str, precision: str):
    from dynface.models.io import ModelLoadError
    from dynface.pipeline import DynFaceRestorer
    from dynface.registry import resolve

    try:
        resolve(model)
        return DynFaceRestorer.from_pretrained(model, device=device, mode=mode, steps=steps, precision=precision), model
    except ModelLoadError:  # no trained weights: random networks of the same size (speed is all we measure here)
        r = DynFaceRestorer.from_preset(model, mode=mode, device=device)
        return r.with_config(steps=steps, precision=precision), f"{model} (random weights)"


def worker(spec: dict) -> dict:
    """Run one configuration (in a subprocess) and return its measurements."""
    import resource

    import numpy as np
    import torch

    torch.manual_seed(0)
    r, label = _restorer(spec["model"], spec["mode"], spec["steps"], spec["device"], spec["precision"])
    if spec.get("compile"):
        r.unet = torch.compile(r.unet)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (r.size, r.size, 3), dtype=np.uint8) for _ in range(spec["batch"])]
    r.restore(faces[:1], seed=0)  # warm-up (and compilation)
    if spec["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = r.restore(faces, seed=0)
    if spec["device"] == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**20 if spec["device"] == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nfe = float(np.mean([rec["nfe"] for rec in out.records]))
    return {**spec, "label": label, "nfe_per_face": nfe, "s_per_face": secs / spec["batch"], "faces_per_s": spec["batch"] / secs, "peak_mib": peak}


def run_sub(spec: dict, timeout: float | None = None) -> dict:
    try:
        res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                             cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        return {**spec, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def gpu_extras(quick: bool, compile_unet: bool = True) -> list[str]:
    """Peak bf16 matmul throughput and the UNet's share of it (difface-ffhq512, random weights)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dynface.models.unet import build_unet

    lines = []
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    peak = 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
    lines.append(f"- measured peak bf16 matmul: {peak:.0f} TFLOP/s ({n}×{n})")
    unet = build_unet("difface-ffhq512").cuda().eval()
    x = torch.randn(4 if quick else 8, 3, 512, 512, device="cuda")
    tt = torch.full((x.shape[0],), 500, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with FlopCounterMode(display=False) as fc:
            unet(x, tt)
        flops = fc.get_total_flops()
        variants = [("eager", unet)] + ([("torch.compile", torch.compile(unet))] if compile_unet else [])
        for compiled, m in variants:
            for _ in range(3):
                m(x, tt)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                m(x, tt)
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / 5
            lines.append(f"- UNet forward bf16 {compiled}, batch {x.shape[0]}: {dt * 1e3:.1f} ms, "
                         f"{flops / dt / 1e12:.1f} TFLOP/s = {100 * flops / dt / 1e12 / peak:.1f}% of measured peak")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small settings (a few minutes on 2 cores)")
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--out", default=str(ROOT / "docs/results/speed.md"))
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU rows (for a short lent-GPU session)")
    ap.add_argument("--compile-timeout", type=float, default=240.0,
                    help="seconds allowed for the torch.compile measurement before it is reported as timed out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("extras"):  # GPU throughput lines, in their own process (compilation can be slow)
            print(json.dumps({"lines": gpu_extras(spec["quick"], spec["compile"])}))
        else:
            print(json.dumps(worker(spec)))
        return 0
    import torch

    steps = "ddim50" if args.quick else "ddim250"
    batches = (1, 4) if args.quick else (1, 8)
    specs = [] if args.gpu_only else [
        {"model": args.model, "mode": m, "steps": steps, "device": "cpu", "precision": "fp32", "batch": b}
        for b in batches for m in ("fixed_start", "full")]
    if torch.cuda.is_available():
        # --quick: no whole-pipeline compile (minutes of compilation per configuration); the UNet-forward
        # lines below still compare eager and torch.compile.
        compiles = (False,) if args.quick else (False, True)
        precs = ("fp32", "bf16") if args.quick else ("fp32", "bf16", "fp16")
        specs += [{"model": "difface-ffhq512", "mode": m, "steps": steps, "device": "cuda", "precision": prec,
                   "batch": 2 if args.quick else 4, "compile": comp}
                  for prec in precs for comp in compiles for m in ("fixed_start", "full")]
    rows = [run_sub(s) for s in specs]
    lines = [f"# Speed ({time.strftime('%Y-%m-%d')})", "", f"Machine: {machine()}", "",
             f"Command: `python benchmarks/speed.py{' --quick' if args.quick else ''}{' --gpu-only' if args.gpu_only else ''} --model {args.model}`; "
             f"sampler steps `{steps}` (grid schedule: NFE grows with each face's DSST start step).", "",
             "| model | device | precision | compile | mode | batch | NFE/face | s/face | faces/s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['device']} | {r['precision']} | {r.get('compile', False)} | {r['mode']} | {r['batch']} | error: {r['error']} |||||")
            continue
        lines.append(f"| {r['label']} | {r['device']} | {r['precision']} | {r.get('compile', False)} | {r['mode']} | {r['batch']} | "
                     f"{r['nfe_per_face']:.0f} | {r['s_per_face']:.3f} | {r['faces_per_s']:.2f} | {r['peak_mib']:.0f} |")
    lines += ["", "Ratios full / fixed_start (same run, same settings):", ""]
    key = lambda r: (r["device"], r["precision"], r.get("compile", False), r["batch"])  # noqa: E731
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        if r["mode"] != "full":
            continue
        base = next((b for b in ok if b["mode"] == "fixed_start" and key(b) == key(r)), None)
        if base:
            lines.append(f"- {r['device']}/{r['precision']}/compile={r.get('compile', False)}/batch {r['batch']}: "
                         f"NFE ×{r['nfe_per_face'] / base['nfe_per_face']:.2f}, s/face ×{r['s_per_face'] / base['s_per_face']:.2f}, "
                         f"peak memory ×{r['peak_mib'] / base['peak_mib']:.2f}")
    if torch.cuda.is_available():
        ext = {"error": "skipped (--compile-timeout 0)"}
        if args.compile_timeout > 0:
            ext = run_sub({"extras": True, "quick": args.quick, "compile": True}, timeout=args.compile_timeout)
        if "error" in ext:  # compilation too slow or broken: still report eager
            why = ext["error"]
            ext = run_sub({"extras": True, "quick": args.quick, "compile": False}, timeout=300)
            ext = {"lines": ext.get("lines", [f"- error: {ext.get('error')}"])}
            ext["lines"].append(f"- torch.compile: not measured ({why})")
        lines += ["", "GPU throughput:", ""] + ext["lines"]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
