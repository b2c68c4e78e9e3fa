"""Speed benchmark: NFE/face, s/face, faces/s with batching and peak memory, ``full`` vs ``fixed_start``
measured in the same run (ratios), on the CPU and — when a GPU is present — the ``difface-ffhq512``
prior with random weights (fp32 vs bf16/fp16, with and without ``torch.compile``) and the fraction of
the device's measured peak matmul throughput that the UNet reaches.

    python benchmarks/speed.py [--quick] [--gpu-only] [--budget S] [--model embedded-64] [--out docs/results/speed.md]

CPU rows run one configuration per subprocess, so that each row's peak memory (max RSS) is its own. On
the accelerator one subprocess per (precision, compile) runs both modes, resetting CUDA's peak-memory
counter between them, so ``torch.compile`` compiles the UNet once for both. Accelerator work runs cheapest
first (eager pipeline rows, eager UNet throughput, then the compiled UNet and the compiled pipeline),
and the markdown file is rewritten after every step, so a run stopped by ``--budget`` (or killed) still
leaves every finished row. ``--accel-device cpu`` runs those rows on the CPU: with ``--accel-model tiny``
the tests do that, with ``embedded-64`` it measures ``torch.compile`` for CPU users
(``docs/results/speed_cpu_compile.md``).

CPU rows restore *faces*, because the work a face gets depends on it (its DSST start step sets the NFE):
8 crops of ``skimage.data.astronaut()``'s face degraded with the ``gfpgan`` preset (seed 0), or the first
images of ``--faces DIR`` (e.g. the LQ half of a ``dynface degrade`` set). They use the model's default steps
(``--cpu-steps`` to change) and ``--cpu-precisions`` (default ``auto``: bf16 on CPUs with native bf16, as
``dynface restore`` does), and ``full`` is measured again with ``ddim250`` (DifFace's grid, the sampler's own
default) as the baseline of the same run. The model's speed target (``full``: 1 s/face for ``embedded-64``,
5 s/face for ``embedded-128`` on 2 cores) is printed as met or not. Accelerator rows restore random-noise
inputs, or the first images of ``--accel-faces DIR`` (a trained model's NFE depends on the face, as above); their
modes (``--accel-modes``, default ``fixed_start,full``) and batch sizes (``--accel-batches``) can be chosen, e.g. the
issue-10 rows of a trained model on a lent GPU (``scripts/gpu_train_embedded128.py``'s ``speed`` phase)::

    python benchmarks/speed.py --gpu-only --parts eager --accel-model src/dynface/weights/embedded-128 \
        --accel-faces LQ_DIR --accel-modes restorer_only,fixed_start,no_dgsa,full --accel-batches 1,8 \
        --precisions fp32,bf16 --compile-timeout 0
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
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# cpu: CPU rows; the rest run on an accelerator: eager pipeline rows per precision, eager UNet throughput,
# the compiled UNet forward (bf16), the compiled pipeline (bf16 or each of --precisions; not with --quick)
PARTS = ("cpu", "eager", "throughput", "compile-unet", "compile-pipeline")
CPU_TARGETS = {"embedded-64": 1.0, "embedded-128": 5.0}  # s/face of `full` on 2 CPU cores (issue 10)
BASELINE_STEPS = "ddim250"
CPU_FACES = 8  # faces every CPU row restores, at any batch size


def cpu_faces(size: int, n: int, folder: str | None = None) -> list:
    """``n`` uint8 RGB faces of ``size`` px: the first ``n`` images of ``folder`` (sorted), else crops of the
    astronaut's face (shifted windows, every other one mirrored) degraded with the ``gfpgan`` preset, seed 0."""
    import numpy as np
    from PIL import Image

    if folder:
        from dynface.imageio import IMAGE_EXTS

        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)[:n]
        if len(files) < n:
            raise SystemExit(f"speed.py: --faces {folder} has {len(files)} image(s), {n} needed")
        return [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.LANCZOS)) for p in files]
    import torch
    from skimage.data import astronaut

    from dynface.degrade import degrade

    a = astronaut()
    hq = []
    for k in range(n):
        y, x = 20 + 4 * (k % 4), 110 + 6 * (k // 4)
        crop = Image.fromarray(np.ascontiguousarray(a[y : y + 200, x : x + 200])).resize((size, size), Image.LANCZOS)
        hq.append(np.asarray(crop)[:, ::-1] if k % 2 else np.asarray(crop))
    x = torch.from_numpy(np.stack(hq).copy()).permute(0, 3, 1, 2).float() / 255
    lq, _ = degrade(x, "gfpgan", 0)
    return list((lq.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    s = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        s += f"; GPU {torch.cuda.get_device_name(0)}"
    return s


def _restorer(model: str, mode: str, steps: str | None, device: str, precision: str):
    from dynface.models.io import ModelLoadError
    from dynface.pipeline import DynFaceRestorer
    from dynface.registry import resolve

    try:
        resolve(model)
        return DynFaceRestorer.from_pretrained(model, device=device, mode=mode, steps=steps, precision=precision), model
    except ModelLoadError:  # no trained weights: random networks of the same size (speed is all we measure here)
        from dynface.pipeline import resolve_precision

        r = DynFaceRestorer.from_preset(model, mode=mode, device=device)
        return (r.with_config(steps=steps or BASELINE_STEPS, precision=resolve_precision(precision, device)),
                f"{model} (random weights)")


def worker(spec: dict) -> list[dict]:
    """Run one configuration, for each of ``spec["modes"]``, and return one row per mode.

    The warm-up call (batch 1 for eager CPU rows; otherwise the measured batch with the measured seed, so
    that a compiled UNet meets every batch shape of the timed call) is reported as ``warmup_s``; with
    ``torch.compile`` it includes the compilation.
    """
    import resource

    import numpy as np
    import torch

    from dynface.devices import synchronize

    torch.manual_seed(0)
    dev = spec["device"]
    base, label = _restorer(spec["model"], spec["modes"][0], spec["steps"], dev, spec["precision"])
    if spec.get("compile"):
        base = base.compiled()
    b = spec["batch"]
    if spec.get("faces", "noise") == "noise":
        rng = np.random.default_rng(0)
        faces = [rng.integers(0, 256, (base.size, base.size, 3), dtype=np.uint8) for _ in range(b)]
    else:  # the same CPU_FACES faces at every batch size (a smaller batch takes several calls), so rows compare
        faces = cpu_faces(base.size, max(CPU_FACES, b), spec["faces"] or None)
    calls = [faces[i : i + b] for i in range(0, len(faces), b)]
    spec = {**spec, "steps": base.cfg.sampler.steps, "precision": base.cfg.sampler.precision}  # as resolved
    rows = []
    for mode in spec["modes"]:
        r = base.with_config(mode=mode)
        t = time.perf_counter()
        r.restore(calls[0] if dev != "cpu" or spec.get("compile") else faces[:1], seed=0)
        synchronize(dev)
        warm = time.perf_counter() - t
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        records = [rec for k, chunk in enumerate(calls) for rec in r.restore(chunk, seed=k * b).records]
        synchronize(dev)
        secs = time.perf_counter() - t
        if dev == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:  # max RSS of the process: only meaningful for a process that ran one mode
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if len(spec["modes"]) == 1 else float("nan")
        nfe = float(np.mean([rec["nfe"] for rec in records]))
        rows.append({**spec, "mode": mode, "label": label, "nfe_per_face": nfe, "s_per_face": secs / len(records),
                     "faces_per_s": len(records) / secs, "peak_mib": peak, "warmup_s": warm})
        print("ROW " + json.dumps(rows[-1]), flush=True)  # kept by run_sub even if a later mode times out
    return rows


def unet_throughput(spec: dict) -> dict:
    """Peak matmul throughput (``spec["peak"]``) and the UNet forward's share of it, per precision, eager or
    compiled (``spec["compile"]``), for ``spec["model"]``'s UNet with random weights: ``{"lines": [...],
    "peak_tflops": the measured peak, or spec["peak_tflops"]}``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dynface.devices import matmul_peak_tflops, synchronize
    from dynface.models.unet import build_unet

    dev, lines = spec["device"], []
    peak = spec.get("peak_tflops")
    if spec.get("peak"):
        n = spec.get("matmul_n", 8192)
        peak = matmul_peak_tflops(dev, n)
        lines.append(f"- measured peak bf16 matmul: {peak:.3g} TFLOP/s ({n}×{n})")
    torch.manual_seed(0)
    unet = build_unet(spec["model"]).to(dev).eval()
    size = unet.cfg.image_size
    x = torch.randn(spec["batch"], 3, size, size, device=dev)
    tt = torch.full((x.shape[0],), 500, device=dev)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            unet(x, tt)
        flops = fc.get_total_flops()
        for prec in spec["precisions"]:
            m = torch.compile(unet) if spec.get("compile") else unet
            ctx = (torch.autocast(dev, dtype=getattr(torch, DTYPES[prec])) if prec != "fp32"
                   else torch.autocast(dev, enabled=False))
            with ctx:
                t = time.perf_counter()
                m(x, tt)
                synchronize(dev)
                first = time.perf_counter() - t
                for _ in range(2):
                    m(x, tt)
                synchronize(dev)
                t = time.perf_counter()
                for _ in range(5):
                    m(x, tt)
                synchronize(dev)
                dt = (time.perf_counter() - t) / 5
            kind = "torch.compile" if spec.get("compile") else "eager"
            share = f" = {100 * flops / dt / 1e12 / peak:.1f}% of measured bf16 peak" if peak else ""
            lines.append(f"- UNet forward {prec} {kind}, batch {x.shape[0]}: {dt * 1e3:.1f} ms, "
                         f"{flops / dt / 1e12:.3g} TFLOP/s{share} (first call {first:.1f} s)")
            torch._dynamo.reset()
    return {"lines": lines, "peak_tflops": peak}


def run_sub(spec: dict, timeout: float | None = None) -> dict:
    """Run ``spec`` in a subprocess: ``{"rows": [...]}`` / ``{"lines": [...]}``, or ``{"error": why}``."""
    if timeout is not None and timeout <= 1:
        return {"error": "not run (time budget spent)"}
    try:
        res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                             cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        done = [json.loads(ln[4:]) for ln in out.splitlines() if ln.startswith("ROW ")]
        return {"error": f"timed out after {timeout:.0f} s", **({"rows": done} if done else {})}
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def render(header: list[str], rows: list[dict], extra: list[str]) -> str:
    lines = [*header,
             "| model | device | precision | compile | steps | mode | batch | NFE/face | s/face | faces/s | peak MiB | warm-up s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r.get('label', r['model'])} | {r['device']} | {r['precision']} | {r.get('compile', False)} | "
                f"{r.get('steps') or 'model default'} | {r['mode']} | {r['batch']} |")
        if "error" in r:
            lines.append(f"{head} {r['error']} ||||||")
        else:
            lines.append(f"{head} {r['nfe_per_face']:.0f} | {r['s_per_face']:.3f} | {r['faces_per_s']:.2f} | "
                         f"{r['peak_mib']:.0f} | {r['warmup_s']:.1f} |".replace("| nan |", "| n/a |"))
    lines += ["", "Ratios full / fixed_start (same run, same settings):", ""]
    key = lambda r: (r["device"], r["precision"], r.get("compile", False), r["batch"], r.get("steps"))  # noqa: E731
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        base = next((b for b in ok if b["mode"] == "fixed_start" and key(b) == key(r)), None)
        if r["mode"] == "full" and base:
            mem = r["peak_mib"] / base["peak_mib"]
            lines.append(f"- {r['device']}/{r['precision']}/compile={r.get('compile', False)}/batch {r['batch']}: "
                         f"NFE ×{r['nfe_per_face'] / base['nfe_per_face']:.2f}, s/face ×{r['s_per_face'] / base['s_per_face']:.2f}"
                         + (f", peak memory ×{mem:.2f}" if mem == mem else ""))
    cpu_full = [r for r in ok if r["device"] == "cpu" and r["mode"] == "full" and not r.get("baseline")]
    for r in cpu_full:  # the model's default steps vs DifFace's ddim250, same precision and batch
        base = next((b for b in ok if b.get("baseline") and b["precision"] == r["precision"] and b["batch"] == r["batch"]), None)
        if base:
            lines.append(f"- cpu/{r['precision']}/batch {r['batch']}, full: {r['steps']} / {base['steps']}: "
                         f"NFE ×{r['nfe_per_face'] / base['nfe_per_face']:.2f}, s/face ×{r['s_per_face'] / base['s_per_face']:.2f}")
    for r in cpu_full:
        target = CPU_TARGETS.get(Path(r["model"]).name)  # an embedded name, or a candidate's folder of that name
        if target is not None:
            verdict = "met" if r["s_per_face"] <= target else "NOT met"
            lines.append(f"- target for {r['model']} `full` on the CPU, at most {target:g} s/face: {r['s_per_face']:.3f} s/face "
                         f"({r['precision']}, {r['steps']}, batch {r['batch']}, {r.get('threads', '?')} threads): **{verdict}**")
    for r in ok:  # compiled vs eager, same precision and mode
        base = next((b for b in ok if not b.get("compile") and b["mode"] == r["mode"] and b["precision"] == r["precision"]
                     and b["device"] == r["device"] and b["batch"] == r["batch"]), None)
        if r.get("compile") and base:
            lines.append(f"- torch.compile / eager, {r['device']}/{r['precision']}/{r['mode']}/batch {r['batch']}: "
                         f"s/face ×{r['s_per_face'] / base['s_per_face']:.2f}")
    if extra:
        lines += ["", "Accelerator throughput (UNet forward, random weights, no_grad):", "", *extra]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small settings (a few minutes on 2 cores)")
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--out", default=str(ROOT / "docs/results/speed.md"))
    ap.add_argument("--gpu-only", action="store_true", help="skip the default CPU rows: only the --accel-device rows (for a short lent-GPU session)")
    ap.add_argument("--parts", default=",".join(PARTS), metavar="LIST",
                    help=f"what to measure, in this order (default: all): {', '.join(PARTS)}")
    ap.add_argument("--precisions", default=None, metavar="LIST",
                    help="accelerator precisions for the eager rows and throughput (default: fp32,bf16,fp16; "
                         "fp32,bf16 with --quick)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run; steps that do not fit are reported as not run")
    ap.add_argument("--compile-timeout", type=float, default=240.0,
                    help="seconds allowed for each torch.compile step (0: skip torch.compile)")
    ap.add_argument("--accel-device", default=None, metavar="DEV",
                    help="device of the precision/compile rows (default: cuda when present, else none); "
                         "cpu measures torch.compile on the CPU")
    ap.add_argument("--accel-model", default="difface-ffhq512", metavar="NAME",
                    help="model of those rows (default: difface-ffhq512 with random weights)")
    ap.add_argument("--accel-steps", default="ddim50", metavar="STEPS", help="sampler steps of those rows (default: ddim50)")
    ap.add_argument("--accel-faces", default=None, metavar="DIR",
                    help="LQ faces for those rows (the first max(8, batch), sorted); default: random noise")
    ap.add_argument("--accel-modes", default="fixed_start,full", metavar="LIST",
                    help="modes of the accelerator pipeline rows (default: fixed_start,full)")
    ap.add_argument("--accel-batches", default=None, metavar="LIST",
                    help="batch sizes of the accelerator pipeline rows (default: 4; 2 with --quick)")
    ap.add_argument("--faces", default=None, metavar="DIR",
                    help="LQ faces for the CPU rows (the first 8, sorted); default: 8 gfpgan-degraded astronaut crops")
    ap.add_argument("--cpu-steps", default=None, metavar="STEPS", help="sampler steps of the CPU rows (default: the model's)")
    ap.add_argument("--cpu-precisions", default="auto", metavar="LIST",
                    help="precisions of the CPU rows (default: auto, the Python API's: bf16 on a CPU with native bf16, "
                         "else fp32; `dynface restore` batches in fp32 on a CPU instead; e.g. auto,fp32)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if bad := [p for p in parts if p not in PARTS]:
        ap.error(f"unknown --parts {', '.join(bad)}; choose from {', '.join(PARTS)}")
    chosen_precs = tuple(p.strip() for p in (args.precisions or "").split(",") if p.strip())
    if bad := [p for p in chosen_precs if p not in DTYPES]:
        ap.error(f"unknown --precisions {', '.join(bad)}; choose from {', '.join(DTYPES)}")
    from dynface.pipeline import MODES

    accel_modes = [m.strip() for m in args.accel_modes.split(",") if m.strip()]
    if not accel_modes or any(m not in MODES for m in accel_modes):
        ap.error(f"--accel-modes {args.accel_modes!r}: a list of {', '.join(MODES)}")
    batches = [b.strip() for b in (args.accel_batches or "").split(",") if b.strip()]
    if not all(b.isdigit() and int(b) > 0 for b in batches):
        ap.error(f"--accel-batches {args.accel_batches!r}: positive whole numbers, e.g. 1,8")
    accel_batches = [int(b) for b in batches]
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(unet_throughput(spec) if spec.get("throughput") else {"rows": worker(spec)}))
        return 0
    import torch

    start = time.perf_counter()

    def left(cap: float | None = None) -> float | None:
        rem = None if args.budget is None else args.budget - (time.perf_counter() - start)
        return cap if rem is None else (rem if cap is None else min(cap, rem))

    accel = args.accel_device or ("cuda" if torch.cuda.is_available() else None)
    steps = args.cpu_steps
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--out" and (i == 0 or sys.argv[i] != "--out")]
    cmd = " ".join(["python benchmarks/speed.py", *argv])
    cpu_rows = not args.gpu_only and "cpu" in parts
    what = ([f"sampler steps on the CPU: {f'`{steps}`' if steps else 'the model default'} (and `{BASELINE_STEPS}` as "
             f"the baseline); CPU faces: {args.faces or '8 gfpgan-degraded astronaut crops'}"] if cpu_rows else [])
    if accel:
        what.append(f"`{args.accel_steps}` on {accel} (faces: {args.accel_faces or 'random noise'})")
    header = [f"# Speed ({time.strftime('%Y-%m-%d')})", "", f"Machine: {machine()}", "",
              f"Command: `{cmd}`; " + ", ".join(what)
              + " (grid schedule: NFE grows with each face's DSST start step). Warm-up: the first call, batch 1 for "
              "eager CPU rows, else the measured batch (with torch.compile, compilation included).", ""]
    rows: list[dict] = []
    extra: list[str] = []

    def flush() -> None:
        text = render(header, rows, extra)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)

    def add(spec: dict, timeout: float | None = None) -> None:
        res = run_sub(spec, left(timeout))
        done = res.get("rows", [])
        rows.extend(done + [{**spec, "mode": m, "error": res["error"]} for m in spec["modes"][len(done):]])
        flush()

    from dynface.imageio import IMAGE_EXTS

    def n_images(d: str) -> int:
        return sum(1 for p in Path(d).iterdir() if p.suffix.lower() in IMAGE_EXTS) if Path(d).is_dir() else 0

    if args.faces and cpu_rows and (n := n_images(args.faces)) < CPU_FACES:
        ap.error(f"--faces {args.faces}: {n} image(s), {CPU_FACES} needed")
    need = max([CPU_FACES, *accel_batches])
    if args.accel_faces and (n := n_images(args.accel_faces)) < need:
        ap.error(f"--accel-faces {args.accel_faces}: {n} image(s), {need} needed")
    if cpu_rows:
        threads = torch.get_num_threads()
        cpu = {"model": args.model, "device": "cpu", "faces": args.faces or "", "threads": threads}
        for prec in [p.strip() for p in args.cpu_precisions.split(",") if p.strip()]:
            for b in ((8,) if args.quick else (1, 8)):
                for m in ("fixed_start", "full"):
                    add({**cpu, "modes": [m], "steps": steps, "precision": prec, "batch": b})
                add({**cpu, "modes": ["full"], "steps": BASELINE_STEPS, "precision": prec, "batch": b, "baseline": True})
    if accel:
        batch = 2 if args.quick else 4
        precs = ("fp32", "bf16") if args.quick else ("fp32", "bf16", "fp16")
        if args.precisions:
            precs = chosen_precs
        acc = {"model": args.accel_model, "modes": accel_modes, "steps": args.accel_steps, "device": accel,
               "batch": batch, "faces": args.accel_faces or "noise"}
        if "eager" in parts:
            for b in accel_batches or [batch]:
                for prec in precs:  # cheapest first: eager pipeline rows
                    add({**acc, "batch": b, "precision": prec, "compile": False})
        tput = {"throughput": True, "model": args.accel_model, "device": accel, "batch": 2 * batch,
                "precisions": list(precs), "matmul_n": 8192 if accel == "cuda" else 512}
        peak = None
        if "throughput" in parts or "compile-unet" in parts:  # the peak is measured here in either case
            res = run_sub({**tput, "peak": True, "compile": False,
                           "precisions": list(precs) if "throughput" in parts else []}, left())
            lines = res.get("lines", [f"- eager UNet throughput: {res.get('error')}"])
            peak = res.get("peak_tflops")
            extra.extend(lines)
            flush()
        want_compile = [p for p in ("compile-unet", "compile-pipeline") if p in parts and not (args.quick and p == "compile-pipeline")]
        if args.compile_timeout <= 0 and want_compile:
            extra.append("- torch.compile: not measured (--compile-timeout 0)")
        elif "compile-unet" in want_compile:  # compiled UNet forward (bf16)
            res = run_sub({**tput, "precisions": ["bf16"], "compile": True, "peak_tflops": peak}, left(args.compile_timeout))
            extra.extend(res.get("lines", [f"- UNet forward bf16 torch.compile: {res.get('error')}"]))
            flush()
        if args.compile_timeout > 0 and "compile-pipeline" in want_compile:  # bf16, or each of --precisions
            for prec in (precs if args.precisions else ("bf16",)):
                add({**acc, "precision": prec, "compile": True}, args.compile_timeout)
    flush()
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
