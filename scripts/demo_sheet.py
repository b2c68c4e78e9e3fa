"""Compose ``OUT/demo_sheet.png``: each demo input beside its restoration (and the DGSA map if saved)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CELL = 192


def main(out_dir: str) -> int:
    out = Path(out_dir)
    restored = sorted((out / "restored_faces").glob("*.png"))
    if not restored:
        print(f"no restored faces in {out / 'restored_faces'}", file=sys.stderr)
        return 1
    inputs = {p.stem: p for p in (Path(__file__).resolve().parents[1] / "src/dynface/examples").glob("*.png")}
    rows = []
    for r in restored:
        cells = []
        for label, path in (("input", inputs.get(r.stem)), ("restored", r)):
            im = Image.open(path).convert("RGB").resize((CELL, CELL), Image.NEAREST if label == "input" else Image.LANCZOS) if path else Image.new("RGB", (CELL, CELL), "gray")
            ImageDraw.Draw(im).text((4, 4), f"{label}: {r.stem}" if label == "input" else label, fill=(255, 255, 0))
            cells.append(np.asarray(im))
        rows.append(np.concatenate(cells, axis=1))
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet).save(out / "demo_sheet.png")
    print(f"wrote {out / 'demo_sheet.png'} ({len(rows)} faces)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
