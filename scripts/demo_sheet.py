"""Compose ``OUT/demo_sheet.png``: per demo face, the input, what the method looked at and the result.

Columns: input (nearest-neighbour, as degraded) | DBLM restorer output | guidance image ý_0 (the restorer
output re-blurred to std*) | DGSA map averaged over the sampling steps (white = full guidance) | restored.
The middle columns need ``dynface restore --save-maps``; without it they are grey.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 160
ROOT = Path(__file__).resolve().parents[1]
# Pillow's bundled TrueType font (needs FreeType, which Pillow's wheels include); its bitmap fallback has a
# space one pixel wide ("inputastronaut").
FONT = ImageFont.load_default(size=12)


def _cell(path: Path | None, label: str, nearest: bool) -> np.ndarray:
    if path is None or not path.exists():
        im = Image.new("RGB", (CELL, CELL), "gray")
    else:
        im = Image.open(path).convert("RGB").resize((CELL, CELL), Image.NEAREST if nearest else Image.LANCZOS)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((4, 3), label, font=FONT)
    draw.rectangle((0, 0, CELL, box[3] + 3), fill=(0, 0, 0))  # a dark strip: yellow on a pale face is unreadable
    draw.text((4, 3), label, fill=(255, 255, 0), font=FONT)
    return np.asarray(im)


def main(out_dir: str) -> int:
    out = Path(out_dir)
    restored = sorted((out / "restored_faces").glob("*.png"))
    if not restored:
        print(f"no restored faces in {out / 'restored_faces'}", file=sys.stderr)
        return 1
    inputs = {p.stem: p for p in (ROOT / "src/dynface/examples").glob("*.png")}
    rows = []
    for r in restored:
        maps = out / "maps"
        rec_path = out / "records" / f"{r.stem}.json"
        rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
        rec = (rec.get("faces") or [{}])[0].get("restorer", {})
        info = f"std*={rec.get('std_star', float('nan')):.1f} t0={rec.get('start_step', '?')}" if rec else ""
        cells = [
            _cell(inputs.get(r.stem), f"input {r.stem}", True),
            _cell(maps / f"{r.stem}_restorer.png", "DBLM restorer", False),
            _cell(maps / f"{r.stem}_guide0.png", "guide y'0", False),
            _cell(maps / f"{r.stem}_dgsa.png", "DGSA map", True),
            _cell(r, f"restored {info}", False),
        ]
        rows.append(np.concatenate(cells, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / "demo_sheet.png")
    print(f"wrote {out / 'demo_sheet.png'} ({len(rows)} faces)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
