"""Threads benchmark (issue 11 B1): seconds to restore one face with 1 thread, with torch's default (one per
core) and with ``dynface restore``'s default (:func:`dynface.jobs.default_threads`), on an idle machine and
beside a busy process, in one run. Prints ratios against 1 thread idle, measured in the same run.

    python benchmarks/threads.py [--model embedded-64] [--steps ddim25] [--faces 1] [--repeats 2] [--out FILE]

Each measurement is a fresh subprocess (its own thread pool) that loads the model, warms up on one face and
times ``restore`` of ``--faces`` faces, ``--repeats`` times (the best is kept). "busy" runs a second process
beside it that keeps every core busy with float32 matrix products (torch, one thread per core), the situation
of issue 11 B1 (a 64-px face took 236 s with torch's default, 4.1 s with OMP_NUM_THREADS=1). The "default"
column is what ``dynface restore`` picks at that moment (cores minus the 1-minute load average, at least 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, torch
from skimage import data
from PIL import Image
from dynface.jobs import default_threads
from dynface.pipeline import DynFaceRestorer
model, steps, faces, repeats, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = {"torch": torch.get_num_threads(), "default": default_threads()}.get(threads) or int(threads)
torch.set_num_threads(n)
r = DynFaceRestorer.from_pretrained(model, precision="fp32").with_config(steps=steps)
face = np.asarray(Image.fromarray(data.astronaut()[20:220, 110:310]).resize((r.size, r.size), Image.LANCZOS))
r.restore([face], seeds=[0])
best = float("inf")
for _ in range(repeats):
    t = time.perf_counter()
    r.restore([face] * faces, seeds=list(range(faces)))
    best = min(best, time.perf_counter() - t)
print(json.dumps({"threads": n, "seconds": best / faces}))
"""

BUSY = r"""
import time, torch
torch.set_num_threads(torch.get_num_threads())
a = torch.randn(768, 768)
while True:
    a = (a @ a).clamp_(-1, 1)
"""


def _env() -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the children choose their own threads
    env.pop("MKL_NUM_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def measure(args, threads: str, timeout: float) -> dict:
    cmd = [sys.executable, "-c", CHILD, args.model, args.steps, str(args.faces), str(args.repeats), threads]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"threads": threads, "seconds": None, "note": f"over {timeout:.0f} s"}
    if p.returncode != 0:
        raise SystemExit(f"child failed ({threads}): {p.stderr[-800:]}")
    d = json.loads(p.stdout.strip().splitlines()[-1])
    d["wall"] = time.perf_counter() - t0
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--steps", default="ddim25", help="sampling steps (default ddim25: a short run)")
    ap.add_argument("--faces", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement before it counts as 'over'")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = ap.parse_args()

    cols = ("1", "torch", "default")
    rows: dict[str, dict[str, dict]] = {}
    rows["idle"] = {c: measure(args, c, args.timeout) for c in cols}
    busy = subprocess.Popen([sys.executable, "-c", BUSY], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # let it load torch and start
        rows["busy"] = {c: measure(args, c, args.timeout) for c in cols}
    finally:
        busy.kill()
        busy.wait()

    base = rows["idle"]["1"]["seconds"]
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    lines = [
        f"# Threads: s/face, {args.model}, steps {args.steps}, {args.faces} face(s), best of {args.repeats}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"load average at the end {load[0]:.2f} (other processes share this machine).",
        "Ratios: against 1 thread, idle, in this run. 'torch' = torch's default (one thread per core); "
        "'default' = dynface restore's default at that moment.",
        "",
        "| machine | 1 thread | torch default | dynface default |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        cells = []
        for c in cols:
            d = r[c]
            if d["seconds"] is None:
                cells.append(f"{d['note']} ({d['threads']} thr)")
            else:
                cells.append(f"{d['seconds']:.2f} s ×{d['seconds'] / base:.2f} ({d['threads']} thr)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
