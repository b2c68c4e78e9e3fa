"""Scaling benchmark: faces/s of one ``dynface restore`` job in one process, on 1 Ray worker and on 2 Ray workers,
on the same files in one run, as ratios against the single process; and the Ray driver's overhead per file.

    python benchmarks/scale.py [--files 64] [--model embedded-64] [--steps ddim10] [--data DIR] [--out docs/results/scale.md]

Inputs: ``--files`` aligned 64-px crops, by default windows, flips and brightness changes of skimage's astronaut
(public domain; no shared data needed), or the first files of ``--data`` (e.g. UTKFace val crops).
Rows, each on a fresh output folder:

* ``single``: the CLI in a subprocess, ``dynface restore --aligned --threads 1``, before (a) and after (b) the Ray
  rows (``--single-threads 1,2`` adds other thread counts);
* ``ray xK``: :func:`dynface.engines.ray_engine.run_ray_job` (what ``--engine ray`` calls) with K workers of one
  CPU thread each, on a local Ray instance started for the row.

Per row: wall time (everything, including Python start, Ray start and model loading), the start-up part (until
the first worker has its model), faces/s end to end and in the steady part, and the ratio to ``single``.
Driver overhead per file: the driver's own CPU time / files, and the steady wall time per file of ``ray x1``
minus the worker's own time per file (the ``seconds`` of its manifest lines): what dispatching, returning
results and appending the manifest add. Results depend on free cores: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(d: Path, n: int, data: Path | None) -> str:
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    if data is not None:
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
        if len(files) < n:
            raise SystemExit(f"{data} has {len(files)} images, need {n}")
        for k, f in enumerate(files):
            Image.open(f).convert("RGB").resize((64, 64), Image.LANCZOS).save(d / f"f{k:03d}.png")
        return f"the first {n} images of {data}, resized to 64 px"
    from skimage.data import astronaut

    a = astronaut()
    for k in range(n):
        y, x = 10 + 4 * (k % 8), 100 + 4 * ((k // 8) % 8)
        crop = a[y : y + 210, x : x + 210]
        if k % 2:
            crop = crop[:, ::-1]
        im = np.clip(crop.astype(np.int16) + (k % 5 - 2) * 8, 0, 255).astype(np.uint8)
        Image.fromarray(np.ascontiguousarray(im)).resize((64, 64), Image.LANCZOS).save(d / f"f{k:03d}.png")
    return f"{n} windows/flips/brightness changes of skimage's astronaut face, 64 px"


def manifest_seconds(out: Path) -> tuple[int, float]:
    from dynface import jobs

    lines = [ln for ln in jobs.Manifest(out / "manifest.jsonl").lines() if ln["status"] == "done"]
    return len(lines), sum(float(ln.get("seconds") or 0.0) for ln in lines)


def run_single(inp: Path, out: Path, args, threads: int) -> dict:
    cmd = [sys.executable, "-m", "dynface.cli", "restore", "-q", "--aligned", "-i", str(inp), "-o", str(out),
           "--model", args.model, "--steps", args.steps, "--threads", str(threads), "--batch-size", str(args.batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"single run failed ({proc.returncode}): {proc.stderr[-1500:]}")
    n, work = manifest_seconds(out)
    startup = max(0.0, wall - work)  # Python start, imports, model load
    return {"name": f"single ({out.name.split('_')[-1]}), {threads} thread{'s' if threads > 1 else ''}", "threads": threads,
            "wall": wall, "startup": startup, "steady": work, "n": n, "work": work}


def run_ray(inp: Path, out: Path, args, workers: int) -> dict:
    from dynface import jobs
    from dynface.engines.ray_engine import RayOptions, RayStats, run_ray_job

    settings = jobs.RestoreSettings(aligned=True, model=args.model, steps=args.steps, threads=1, batch_size=args.batch_size)
    stats = RayStats()
    t0 = time.perf_counter()
    s = run_ray_job([inp], out, settings, RayOptions(workers=workers), stats=stats)
    wall = time.perf_counter() - t0
    if s.exit_code != 0:
        raise SystemExit(f"ray x{workers} failed: {[r.error for r in s.failed][:3]}")
    n, work = manifest_seconds(out)
    startup = stats.connect_s + stats.first_ready_s
    return {"name": f"ray x{workers}", "wall": wall, "startup": startup, "steady": stats.run_s - stats.first_ready_s,
            "n": n, "work": work, "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--steps", default="ddim10")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data", type=Path, default=None, help="a folder of face crops instead of the astronaut variants")
    ap.add_argument("--single-threads", type=lambda v: [int(x) for x in v.split(",")], default=[1],
                    help="also time the single process with these thread counts (default: 1 only)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    work = Path(tempfile.mkdtemp(prefix="dynface_scale_"))
    try:
        inp = work / "in"
        what = make_inputs(inp, args.files, args.data)
        load0 = os.getloadavg()
        # the single process before and after the Ray rows: their spread shows how much the load drifted
        rows = [run_single(inp, work / "single_a", args, 1), run_ray(inp, work / "ray1", args, 1),
                run_ray(inp, work / "ray2", args, 2), run_single(inp, work / "single_b", args, 1)]
        rows += [run_single(inp, work / f"single_t{t}", args, t) for t in args.single_threads if t != 1]
        load1 = os.getloadavg()
        same = all((work / "single_a" / "restored_faces" / p.name).read_bytes() == p.read_bytes()
                   for r in ("ray1", "ray2") for p in (work / r / "restored_faces").iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    singles = [r for r in rows if r.get("threads") == 1]
    base = {k: sum(r[k] for r in singles) / len(singles) for k in ("n", "wall", "steady")}
    lines = [
        f"`python benchmarks/scale.py --files {args.files} --model {args.model} --steps {args.steps} --batch-size {args.batch_size}`"
        f"{' --data ' + str(args.data) if args.data else ''}",
        "",
        f"Inputs: {what}. Model `{args.model}`, `--steps {args.steps}`, batches of {args.batch_size} crops. "
        f"{os.cpu_count()} CPU core(s); 1-minute load average {load0[0]:.1f} before, {load1[0]:.1f} after. "
        "Each Ray worker runs 1 torch thread; ratios are against the mean of the two single-process runs with 1 "
        "thread (before and after the Ray rows).",
        "",
        "| run | wall s | start-up s | faces/s end to end | × single | faces/s steady | × single |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        e2e, steady = r["n"] / r["wall"], r["n"] / max(r["steady"], 1e-9)
        lines.append(f"| {r['name']} | {r['wall']:.1f} | {r['startup']:.1f} | {e2e:.2f} | {e2e / (base['n'] / base['wall']):.2f} "
                     f"| {steady:.2f} | {steady / (base['n'] / base['steady']):.2f} |")
    r1 = rows[1]
    st = r1["stats"]
    per_file_wall = r1["steady"] / r1["n"]
    per_file_work = r1["work"] / r1["n"]
    lines += [
        "",
        f"Start-up of `ray x1`: Ray {st.connect_s:.1f} s + first worker ready {st.first_ready_s:.1f} s. "
        f"Driver overhead per file (`ray x1`): {1000 * st.driver_cpu_s / r1['n']:.1f} ms of driver CPU; steady wall "
        f"{per_file_wall:.3f} s/file vs the worker's own {per_file_work:.3f} s/file "
        f"(difference {1000 * (per_file_wall - per_file_work):.0f} ms/file, {st.tasks} tasks).",
        f"Outputs of the Ray runs byte-identical to the single process: {'yes' if same else 'NO'}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Scaling: one process vs local Ray workers\n\n" + text)


if __name__ == "__main__":
    main()
