"""``dynface report OUT``: what a ``dynface restore`` job did, from ``OUT/manifest.jsonl``.

The manifest has one line per input and attempt (:class:`dynface.jobs.Manifest`); the last line of an input wins.
The report counts the inputs by their latest status (done / failed / no_face), lists the failures with their
reasons, and gives the seconds per face of the restored inputs (p50 / p90 / p99 / mean, measured end to end per
file: reading, detection, restoring, writing). ``--json`` prints the same as one JSON object.

Exit status: 0 when no input's latest status is a failure, 1 when some are, 2 when there is no manifest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="summarise a restore job's manifest (counts, failures, seconds per face)",
        description="Summarise OUT/manifest.jsonl written by `dynface restore -o OUT`.",
    )
    p.add_argument("output", metavar="OUT", help="the output folder of a restore job (or its manifest.jsonl)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-failures", type=int, default=50, metavar="N", help="list at most N failures (default: 50)")
    p.set_defaults(func=run)


def percentile(values: list[float], q: float) -> float:
    """``np.percentile`` (its default, linear interpolation) of a non-empty list, q in [0, 100]. numpy is imported
    here, not with the module: ``dynface --help`` imports every command module (see :mod:`dynface.cli`)."""
    import numpy as np

    return float(np.percentile(values, q))


def summarise(lines: list[dict]) -> dict:
    """The report of a manifest's lines (see the module docstring)."""
    latest: dict[str, dict] = {}
    for d in lines:
        latest[d["stem"]] = d
    counts = {"done": 0, "failed": 0, "no_face": 0}
    for d in latest.values():
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    failures = [{"path": d.get("path"), "status": d["status"], "error": d.get("error")}
                for d in latest.values() if d["status"] in ("failed", "no_face")]
    per_face = [float(d["seconds"]) / int(d["faces"]) for d in latest.values()
                if d["status"] == "done" and int(d.get("faces") or 0) > 0 and float(d.get("seconds") or 0) > 0]
    faces = sum(int(d.get("faces") or 0) for d in latest.values() if d["status"] == "done")
    rep = {
        "inputs": len(latest),
        "attempts": len(lines),
        "counts": counts,
        "faces": faces,
        "failures": failures,
        "seconds_per_face": None,
    }
    if per_face:
        rep["seconds_per_face"] = {
            "n": len(per_face),
            "p50": round(percentile(per_face, 50), 4),
            "p90": round(percentile(per_face, 90), 4),
            "p99": round(percentile(per_face, 99), 4),
            "mean": round(sum(per_face) / len(per_face), 4),
            "max": round(max(per_face), 4),
        }
    return rep


def run(args: argparse.Namespace) -> int:
    from dynface.jobs import MANIFEST_NAME, Manifest

    path = Path(args.output).expanduser()
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        print(f"error: no manifest at {path} (written by `dynface restore -o OUT`)", file=sys.stderr)
        return 2
    manifest = Manifest(path)
    rep = summarise(manifest.lines())
    rep["unreadable_lines"] = manifest.unreadable
    if manifest.unreadable:
        print(f"warning: {manifest.unreadable} unreadable line(s) in {path} skipped (torn, edited or not a "
              "manifest line)", file=sys.stderr)
        if not rep["attempts"]:
            print(f"error: {path} has no readable manifest line: not written by `dynface restore`?", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        c = rep["counts"]
        head = (f"dynface report: {rep['inputs']} input(s) ({rep['attempts']} manifest line(s)): {c.get('done', 0)} done, "
                f"{c.get('failed', 0)} failed, {c.get('no_face', 0)} without a face; {rep['faces']} face(s) restored")
        lines = [head + f" -> {path}"]
        spf = rep["seconds_per_face"]
        if spf:
            lines.append(f"  s/face  p50 {spf['p50']:.3f}  p90 {spf['p90']:.3f}  p99 {spf['p99']:.3f}  "
                         f"mean {spf['mean']:.3f}  max {spf['max']:.3f}  (n={spf['n']} inputs)")
        for f in rep["failures"][: max(0, args.max_failures)]:
            lines.append(f"  {'FAILED ' if f['status'] == 'failed' else 'NO FACE'} {f['path']}: {f['error']}")
        if len(rep["failures"]) > args.max_failures:
            lines.append(f"  ... {len(rep['failures']) - args.max_failures} more (--max-failures, --json)")
        print("\n".join(lines))
    return 1 if rep["failures"] else 0

