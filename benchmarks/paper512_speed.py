"""Speed of the paper's setting (issue 12 part 4): ``full`` at 512 px, ``ddim250``, start steps fixed by std*.

Random weights (they time the same as the published ones): DifFace's 512 UNet (``difface-ffhq512``), DifFace's
SwinIR as RM, the 512 TM, DGSA, the packaged 512-px DSST table; SDE is replaced by a constant std* so that every
face starts where the paper's range puts it (std* 2, 6, 9.5 → DSST start ≈ 713, 882, 939). Rows: s/face,
faces/s, NFE/face and peak device memory, for each precision × compile × batch × std*; ratios against the
first row of the same batch and std*. ``--profile`` adds a torch.profiler table of one UNet forward.

    python benchmarks/paper512_speed.py --device cuda --std 2,6,9.5 --batches 8,1 --variants bf16,bf16+compile
    python benchmarks/paper512_speed.py --device cpu --model tiny --steps ddim10 --std 2,9.5 --batches 1,2   # a check

``--iters K`` times only the first K sampler iterations (all faces of a batch start together, so every
iteration costs the same) and reports s/face extrapolated to the full NFE (marked "extrap.").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

from dynface.devices import synchronize


class _FixedStd(nn.Module):
    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.std, device=x.device)


class _Stop(Exception):
    pass


def build(model: str, device: str, steps: str, precision: str):
    from dynface.dsst import DSSTTable
    from dynface.models.dblm import DBLM
    from dynface.models.dblm import PRESETS as DBLM_PRESETS
    from dynface.models.dgsa import DGSA
    from dynface.models.swinir import DIFFACE_512, TINY, SwinIR
    from dynface.models.unet import PRESETS, UNetModel
    from dynface.pipeline import DEFAULT_DSST, DynFaceRestorer, RestoreConfig
    from dynface.sampler import SamplerConfig
    from dynface.training.dblm import TRAIN_PRESETS

    torch.manual_seed(0)
    if model == "difface-ffhq512":
        unet, dblm, rm = UNetModel(PRESETS[model]), DBLM(TRAIN_PRESETS["ffhq512"]), SwinIR(DIFFACE_512, io="signed")
    elif model == "tiny":  # a CPU check of this script: 32 px, tiny SwinIR layout
        unet, dblm, rm = UNetModel(PRESETS["tiny"]), DBLM(DBLM_PRESETS["tiny"]), SwinIR(TINY, io="signed")
    else:
        raise SystemExit(f"unknown --model {model!r}")
    dblm.rm = rm
    cfg = RestoreConfig(mode="full", sampler=SamplerConfig(steps=steps, precision=precision))
    return DynFaceRestorer(unet, dblm, DGSA(), DSSTTable.load(DEFAULT_DSST), cfg, device, name=f"{model}-random")


def time_rows(args) -> list[dict]:
    rows = []
    for variant in args.variants.split(","):
        precision, _, comp = variant.partition("+")
        base = build(args.model, args.device, args.steps, precision)
        r = base.compiled() if comp == "compile" else base
        for batch in [int(b) for b in args.batches.split(",")]:
            for std in [float(s) for s in args.std.split(",")]:
                r.dblm.sde = _FixedStd(std)
                faces = torch.rand(batch, 3, r.size, r.size, generator=torch.Generator().manual_seed(1))
                t_warm = time.perf_counter()
                _run(r, faces, 2, args.device)  # warm-up (and compilation): two sampler iterations
                warm = time.perf_counter() - t_warm
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                synchronize(args.device)
                t0 = time.perf_counter()
                done, total, rec = _run(r, faces, args.iters, args.device)
                synchronize(args.device)
                secs = time.perf_counter() - t0
                per_face = secs / batch * (total / done if done < total else 1.0)
                peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else float("nan")
                start = int(r.dsst.lookup(torch.tensor([std], dtype=torch.float64)).floor()[0])
                rows.append({"variant": variant, "batch": batch, "std": std, "start": rec.get("start_step", start),
                             "nfe": rec.get("nfe", total), "s_face": per_face, "faces_s": 1 / per_face,
                             "peak_mib": peak, "extrap": done < total, "warmup_s": warm})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _run(r, faces: torch.Tensor, iters: int, device: str) -> tuple[int, int, dict]:
    """Restore ``faces``; with ``iters`` > 0 stop after that many sampler iterations. (done, total, record)."""
    seen = {"done": 0, "total": 0}

    def cb(step: int, total: int) -> None:
        seen.update(done=step, total=total)
        if iters and step >= iters and step < total:
            raise _Stop

    try:
        out = r.restore(faces, seed=0, callback=cb)
        return seen["done"], seen["total"], out.records[0]
    except _Stop:
        return seen["done"], seen["total"], {}


def profile_unet(args) -> str:
    from torch.profiler import ProfilerActivity, profile

    r = build(args.model, args.device, args.steps, args.profile_precision)
    x = torch.randn(args.profile_batch, 3, r.size, r.size, device=args.device)
    t = torch.full((args.profile_batch,), 500, device=args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.profile_precision)
    ctx = torch.autocast(args.device.split(":")[0], dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with torch.no_grad(), ctx:
        for _ in range(2):
            r.unet(x, t)
        synchronize(args.device)
        with profile(activities=acts, record_shapes=True) as prof:
            for _ in range(3):
                r.unet(x, t)
            synchronize(args.device)
    key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=30)


def markdown(rows: list[dict], args) -> str:
    out = [f"`full`, `{args.steps}`, model `{args.model}` (random weights), device `{args.device}`; std* fixed "
           f"(SDE replaced by a constant); s/face = batch time / batch{'; extrap. = first ' + str(args.iters) + ' iterations timed, scaled to the NFE' if args.iters else ''}.",
           "", "| variant | batch | std* | start t | NFE/face | s/face | faces/s | peak MiB | ×first row | warm-up s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    first: dict = {}
    for r in rows:
        key = (r["batch"], r["std"])
        first.setdefault(key, r["s_face"])
        mark = " (extrap.)" if r["extrap"] else ""
        out.append(f"| {r['variant']} | {r['batch']} | {r['std']} | {r['start']} | {r['nfe']} | {r['s_face']:.3f}{mark} | "
                   f"{r['faces_s']:.3f} | {r['peak_mib']:.0f} | ×{r['s_face'] / first[key]:.2f} | {r['warmup_s']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="difface-ffhq512", help="difface-ffhq512 | tiny (CPU check)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", default="ddim250")
    ap.add_argument("--std", default="2,6,9.5", help="std* values (ref px): start steps via the DSST table")
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--variants", default="bf16,bf16+compile", help="PRECISION[+compile],… (fp32, bf16, fp16)")
    ap.add_argument("--iters", type=int, default=0, help="time only the first K iterations and extrapolate (0: all)")
    ap.add_argument("--profile", action="store_true", help="also profile one UNet forward (torch.profiler)")
    ap.add_argument("--profile-batch", type=int, default=8)
    ap.add_argument("--profile-precision", default="bf16")
    ap.add_argument("--out", help="markdown file for the table (and the profile)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    text = markdown(time_rows(args), args)
    if args.profile:
        text += f"\nUNet forward profile (batch {args.profile_batch}, {args.profile_precision}):\n\n```\n{profile_unet(args)}\n```\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
