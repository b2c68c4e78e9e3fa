"""Score DBLM restorers (RM) side by side on the same degraded val faces: L1 and PSNR of ``RM(y)`` against ``x``.

Every file is scored on the same faces and the same degradations (one seed), next to the input's own row, so a
continued RM and the shipped one are compared in one run. The numbers of docs/results/embedded-128/rm_recipe.md
("continued on the CPU") came from session 8's shipped DBLM against session 11's (the shipped one since):

    git show 5a9feb1:src/dynface/weights/embedded-128/dblm.safetensors > /tmp/dblm_session8.safetensors
    OMP_NUM_THREADS=2 python scripts/rm_val.py /tmp/dblm_session8.safetensors \\
        src/dynface/weights/embedded-128/dblm.safetensors --limit 64 --seed 123

L1 is over images in [−1, 1]; PSNR (dB, peak-to-peak 2) is the mean over faces of each face's PSNR, with its
standard error, and the paired difference against the first file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a checkout without an installed package still finds dynface

from dynface.degrade import degrade  # noqa: E402
from dynface.metrics import mean_se  # noqa: E402
from dynface.pipeline import load_dblm  # noqa: E402
from dynface.training.data import load_face_tensor, to_model_range  # noqa: E402
from dynface.training.dblm import psnr_per_sample  # noqa: E402


@dataclass(frozen=True)
class Row:
    name: str
    l1: float
    psnr: torch.Tensor  # per face, dB


def score(files: list[Path], x: torch.Tensor, y: torch.Tensor, batch: int = 16) -> list[Row]:
    """The input's row, then one row per DBLM file: ``RM(y)`` against ``x`` (both in [−1, 1])."""
    rows = [Row("input", float((y - x).abs().mean()), psnr_per_sample(y, x))]
    for f in files:
        net, _ = load_dblm(f, None, x.shape[-1], "restorer_only", f)
        net.eval()
        with torch.inference_mode():
            out = torch.cat([net.rm(y[i:i + batch]) for i in range(0, y.shape[0], batch)])
        rows.append(Row(str(f), float((out - x).abs().mean()), psnr_per_sample(out, x)))
    return rows


def _se(se: float | None, digits: int) -> str:
    return "–" if se is None else f"{se:.{digits}f}"


def table(rows: list[Row]) -> str:
    lines = ["| restorer | L1 ↓ | PSNR ↑ (dB) | Δ PSNR against the first file |", "|---|---|---|---|"]
    for i, r in enumerate(rows):  # rows[0]: the input, rows[1]: the first file (the baseline of the Δ column)
        m, se = mean_se(r.psnr.tolist())
        d, dse = mean_se((r.psnr - rows[1].psnr).tolist()) if i >= 2 else (None, None)
        delta = f"{d:+.3f} ± {_se(dse, 3)}" if d is not None else ""
        lines.append(f"| {r.name} | {r.l1:.4f} | {m:.2f} ± {_se(se, 2)} | {delta} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", type=Path, metavar="DBLM", help="dblm.safetensors files (the first is the baseline)")
    p.add_argument("--val", default=str(ROOT.parent / "shared" / "data" / "utkface" / "val"))
    p.add_argument("--cache", default="runs/rm_probe_cache", help="face-tensor cache folder ('' for none)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--limit", type=int, default=64, help="the first K val faces")
    p.add_argument("--degradation", default="diffbir")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    missing = [str(f) for f in a.files if not f.is_file()]
    if missing:
        print(f"rm_val: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    x = to_model_range(load_face_tensor(a.val, a.size, cache_dir=a.cache or None, limit=a.limit))
    y = degrade((x + 1) / 2, a.degradation, a.seed)[0] * 2 - 1
    print(f"{x.shape[0]} faces of {a.val} at {a.size} px, `{a.degradation}` seed {a.seed}\n")
    print(table(score(a.files, x, y)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
