"""Pack the 64-px training faces into ``.gpu/`` (git-ignored) so a lent GPU machine can train on them.

The device tool carries at most 64 MiB of ignored paths; 8,334 faces at 64 px as JPEG q95 are ≈20 MB.
Also copies the newest EMA prior to ``.gpu/init.safetensors`` so the GPU run continues from it.

    python scripts/pack_gpu_data.py --data ../shared/data/utkface/train --ema runs/prior64/ema.safetensors
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from dynface.training.data import list_images, load_square

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ema", required=True)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    out = ROOT / ".gpu" / "faces"
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(list_images(args.data)):
        Image.fromarray(load_square(f, args.size)).save(out / f"{i:05d}.jpg", quality=95)
    shutil.copyfile(args.ema, ROOT / ".gpu" / "init.safetensors")
    total = sum(p.stat().st_size for p in (ROOT / ".gpu").rglob("*") if p.is_file())
    print(f"packed {i + 1} faces, {total / 2**20:.1f} MiB in .gpu/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
