"""One table from several ``benchmarks/quality.py`` runs (e.g. a ``--fidelity`` sweep on the same pairs).

    python benchmarks/compare_runs.py docs/results/fidelity_calibration/*.json [--out TABLE.md]

One row per (run, method): the run's fidelity (``-w``; "default" when not set), the data it ran on, and
the mean of every metric (with ``(k/n)`` when a metric was computable on only k of n faces), NFE/face.
FD values of different runs are comparable only when the runs used the same HQ set (checked: the table
says which reference each FD used).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="quality.py JSON outputs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in args.runs]
    metrics = list(dict.fromkeys(m for r in runs for m in r["metrics"]))
    lines = ["| run | -w | method | " + " | ".join(metrics) + " | NFE/face |", "|---|---|---|" + "---|" * (len(metrics) + 1)]
    refs = set()
    for path, r in zip(args.runs, runs, strict=True):
        w = r.get("fidelity")
        for row in r["rows"]:
            if "mean" not in row:
                continue
            cells = []
            for m in metrics:
                v, k = row["mean"].get(m), row.get("valid", {}).get(m, row["n"])
                cells.append("–" if v is None else f"{v:.4g}" + (f" ({k}/{row['n']})" if k != row["n"] else ""))
            fd = row.get("set", {}).get("fd", {})
            if fd:
                refs.add(fd.get("reference"))
            lines.append(f"| `{path.stem}` | {'default' if w is None else w} | {row['method']} | " + " | ".join(cells)
                         + f" | {row.get('nfe', 0):.1f} |")
    lines += ["", f"FD reference set(s): {', '.join(sorted(str(x) for x in refs)) or '–'}"
              + ("" if len(refs) <= 1 else " — DIFFERENT references: FD not comparable across them"),
              f"Command: `python benchmarks/compare_runs.py {' '.join(p.as_posix() for p in args.runs)}`"]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
