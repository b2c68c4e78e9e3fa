"""How much a face's restoration depends on the batch it is restored in (per-face seeds, same settings).

    OMP_NUM_THREADS=2 python benchmarks/batch_invariance.py [--model embedded-64] [--faces 16] [--out FILE.md]

Restores ``--faces`` `gfpgan`-degraded astronaut crops (seed 0, the framings of ``benchmarks/speed.py``'s CPU rows)
in each precision twice: one face per call, and ``--batch-size`` faces per call, each face seeded by its own seed
(as the job layer's ``face_seed`` does), and counts the uint8 values that differ between the two. A restorer is
batch-invariant when every count is 0. Also prints the networks' largest float difference (the UNet at t = 300 and
the DBLM's parts) between batch 1 and the batch, which is where a difference starts: CPU kernels (oneDNN
convolutions at small feature maps, GEMMs with few rows) pick their algorithm by shape, so the last bits of a face's
result can depend on how many faces share the call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def degraded_crops(n: int, size: int):
    import numpy as np
    import torch
    from PIL import Image
    from skimage.data import astronaut

    from dynface.degrade import degrade

    a = astronaut()
    hq = [np.asarray(Image.fromarray(a[20 + 5 * k : 220 + 5 * k, 150 + 3 * k : 350 + 3 * k]).resize((size, size), Image.LANCZOS))
          for k in range(n)]
    lq, _ = degrade(torch.from_numpy(np.stack(hq)).permute(0, 3, 1, 2).float() / 255, "gfpgan", seed=0)
    return [(x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for x in lq]


def network_drift(r, size: int, batch: int, precision: str) -> dict[str, float]:
    """Largest |batch result − one-at-a-time result| of the UNet (in ``precision``, as the sampler runs it) and each
    DBLM part (fp32, as the pipeline runs them) on random inputs."""
    import torch

    from dynface.sampler import _autocast

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    t = torch.full((batch,), 300)
    out: dict[str, float] = {}
    with torch.no_grad():
        with _autocast(torch.device("cpu"), precision):
            a = r.unet(x, t)
            b = torch.cat([r.unet(x[i : i + 1], t[i : i + 1]) for i in range(batch)])
        out["unet"] = float((a.float() - b.float()).abs().max())
        y = torch.rand(batch, 3, size, size)
        for name, m in r.dblm.named_children():
            oa, ob = m(y), torch.cat([m(y[i : i + 1]) for i in range(batch)])
            out[f"dblm.{name}"] = float((oa.float() - ob.float()).abs().max())
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from dynface.pipeline import DynFaceRestorer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded-64")
    p.add_argument("--faces", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--out", type=Path, help="also write the table here (markdown)")
    a = p.parse_args(argv)
    lines = [f"Batch invariance: {a.faces} gfpgan-degraded astronaut crops, {a.model} `full` (model default steps), "
             f"one face per call against {a.batch_size} per call, per-face seeds",
             f"Command: `OMP_NUM_THREADS=2 python benchmarks/batch_invariance.py --model {a.model} --faces {a.faces}`", "",
             "| precision | faces that differ | uint8 values that differ (of all) | largest difference (levels) | "
             "largest float drift of a network |", "|---|---|---|---|---|"]
    for prec in a.precisions.split(","):
        r = DynFaceRestorer.from_pretrained(a.model, precision=prec)
        faces = degraded_crops(a.faces, r.size)
        seeds = list(range(1000, 1000 + a.faces))
        batched = []
        for i in range(0, a.faces, a.batch_size):
            batched += list(r.restore(faces[i : i + a.batch_size], seeds=seeds[i : i + a.batch_size]).images)
        single = [r.restore([f], seeds=[s]).images[0] for f, s in zip(faces, seeds, strict=True)]
        diffs = [np.asarray(x, np.int16) - np.asarray(y, np.int16) for x, y in zip(batched, single, strict=True)]
        n_vals = sum(int((d != 0).sum()) for d in diffs)
        total = sum(d.size for d in diffs)
        drift = network_drift(r, r.size, a.batch_size, prec)
        worst = max(drift, key=drift.get)
        lines.append(f"| {prec} | {sum(bool((d != 0).any()) for d in diffs)} of {a.faces} | {n_vals} of {total} | "
                     f"{max(int(abs(d).max()) for d in diffs)} | {drift[worst]:.2g} ({worst}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        from dynface.atomicfile import atomic_write_text

        atomic_write_text(text, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
