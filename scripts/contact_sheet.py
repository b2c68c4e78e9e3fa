"""A contact sheet for looking at results side by side: one column per folder, one row per face name.

    python scripts/contact_sheet.py --out sheet.png --every 33 \
        input=runs/e128/work/cpu1/val128/pairs/lq shipped=runs/e128/work/cpu1/val128/restored/full \
        map=runs/maps_out/maps/{name}_dgsa.png hq=runs/e128/work/cpu1/val128/pairs/hq

A column is ``LABEL=FOLDER`` (its images by file stem) or ``LABEL=TEMPLATE`` with ``{name}`` in the path (e.g. the
DGSA maps that ``dynface restore --save-maps`` writes as ``maps/NAME_dgsa.png``). Rows: the names present in every
column, sorted, every ``--every``-th from the first (or ``--names``). Each image is resized to ``--size`` px
(Lanczos); the column labels are drawn above the first row. The sheet is written whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dynface.atomicfile import atomic_path  # noqa: E402
from dynface.imageio import is_image_name  # noqa: E402

LABEL_H = 16


def column_images(spec: str) -> dict[str, Path]:
    """name → image of one column: a folder's images by stem, or the files a ``{name}`` template matches."""
    if "{name}" not in spec:
        return {p.stem: p for p in sorted(Path(spec).iterdir()) if is_image_name(p)}
    template = Path(spec)
    head, _, tail = template.name.partition("{name}")
    return {p.name[len(head):len(p.name) - len(tail)]: p for p in sorted(template.parent.glob(head + "*" + tail))}


def contact_sheet(columns: list[tuple[str, dict[str, Path]]], names: list[str], size: int) -> Image.Image:
    sheet = Image.new("RGB", (size * len(columns), LABEL_H + size * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (label, images) in enumerate(columns):
        draw.text((c * size + 3, 2), label, fill="black")
        for r, name in enumerate(names):
            with Image.open(images[name]) as im:
                sheet.paste(im.convert("RGB").resize((size, size), Image.LANCZOS), (c * size, LABEL_H + r * size))
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("columns", nargs="+", metavar="LABEL=FOLDER|LABEL=TEMPLATE")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--names", default="", help="comma-separated names instead of --every")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    columns = []
    for col in args.columns:
        label, sep, spec = col.partition("=")
        folder = Path(spec).parent if "{name}" in spec else Path(spec)
        if not sep or not folder.is_dir():
            ap.error(f"{col!r}: expected LABEL=FOLDER or LABEL=TEMPLATE with an existing folder")
        columns.append((label, column_images(spec)))
    common = sorted(set.intersection(*(set(images) for _, images in columns)))
    names = [n for n in args.names.split(",") if n] if args.names else common[:: max(1, args.every)]
    missing = [n for n in names if n not in common]
    if not names or missing:
        ap.error(f"no faces to show (missing in some column: {', '.join(missing[:5])})" if missing else "no common faces")
    sheet = contact_sheet(columns, names, args.size)
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format=Image.registered_extensions().get(args.out.suffix.lower(), "PNG"), quality=92)
    print(f"wrote {args.out}: {len(names)} faces × {len(columns)} columns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
