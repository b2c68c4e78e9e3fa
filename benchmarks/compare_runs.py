"""One table from several ``benchmarks/quality.py`` runs (e.g. a ``--fidelity`` or ``--steps`` sweep on the same pairs).

    python benchmarks/compare_runs.py docs/results/fidelity_calibration/*.json [--out TABLE.md]
    python benchmarks/compare_runs.py docs/results/steps/*.json --paired docs/results/steps/d250_unet.json --method full

One row per (run, method): the run's fidelity (``-w``; "default" when not set), sampler steps, guidance gradient,
the data it ran on, the mean of every metric (with ``(k/n)`` when a metric was computable on only k of n faces),
NFE/face and s/face. FD values of different runs are comparable only when the runs used the same HQ set (checked:
the table says which reference each FD used).

``--paired BASE``: a second table of per-face differences against that run's ``--method`` rows (default ``full``):
for each per-face metric, the mean of (run − base) over the faces both runs scored, ± its standard error, and
how many faces that is. Means over different subsets (IDA and LMD skip faces dlib does not find) can mislead;
paired differences on the same faces cannot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from dynface.metrics import mean_se

PER_FACE_SKIP = ("seed", "start_steps", "eta", "std_star", "start_step")


def _paired(runs: list[tuple[Path, dict]], base: tuple[Path, dict], method: str) -> list[str]:
    """Markdown rows: mean (run − base) ± s.e. per per-face metric, on the faces both runs scored."""
    bpath, b = base
    bfaces = b.get("per_face", {}).get(method)
    if not bfaces:
        raise SystemExit(f"compare_runs: {bpath} has no per-face results for method {method!r}")
    keys = [m for m in next(iter(bfaces.values())) if m not in PER_FACE_SKIP]
    out = [f"Paired differences against `{bpath.stem}` ({method}): mean of (run − base) ± standard error "
           "[faces scored by both]", "",
           "| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for path, r in runs:
        faces = r.get("per_face", {}).get(method)
        if not faces or path == bpath:
            continue
        cells = []
        for m in keys:
            d = [faces[f][m] - v[m] for f, v in bfaces.items()
                 if f in faces and isinstance(v.get(m), int | float) and isinstance(faces[f].get(m), int | float)
                 and math.isfinite(v[m]) and math.isfinite(faces[f][m])]
            if len(d) < 2:
                cells.append("–")
                continue
            mean, se = mean_se(d)
            cells.append(f"{mean:+.4g} ± {se:.2g} [{len(d)}]")
        out.append(f"| `{path.stem}` | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="quality.py JSON outputs")
    ap.add_argument("--paired", type=Path, metavar="BASE", help="also a table of per-face differences against this run")
    ap.add_argument("--method", default="full", help="the method of the paired table (default: full)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    runs = [(p, json.loads(p.read_text())) for p in args.runs]
    metrics = list(dict.fromkeys(m for _, r in runs for m in r["metrics"]))
    lines = ["| run | -w | steps | gradient | method | " + " | ".join(metrics) + " | NFE/face | s/face |",
             "|---|---|---|---|---|" + "---|" * (len(metrics) + 2)]
    refs = set()
    for path, r in runs:
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
            lines.append(f"| `{path.stem}` | {'default' if w is None else w} | {r.get('steps', '?')} | "
                         f"{r.get('guidance', 'unet')} | {row['method']} | " + " | ".join(cells)
                         + f" | {row.get('nfe', 0):.1f} | {row.get('s_per_face', 0):.3f} |")
    lines += ["", f"FD reference set(s): {', '.join(sorted(str(x) for x in refs)) or '–'}"
              + ("" if len(refs) <= 1 else " — DIFFERENT references: FD not comparable across them")]
    if args.paired:
        base = (args.paired, json.loads(args.paired.read_text()))
        lines += [""] + _paired(runs, base, args.method)
    cmd = " ".join(p.as_posix() for p in args.runs)
    if args.paired:
        cmd += f" --paired {args.paired.as_posix()} --method {args.method}"
    lines += ["", f"Command: `python benchmarks/compare_runs.py {cmd}`"]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
