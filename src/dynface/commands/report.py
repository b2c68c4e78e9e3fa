"""``dynface report OUT``: what a ``dynface restore`` job did, from ``OUT/manifest.jsonl``.

The manifest has one line per input and attempt (:class:`dynface.jobs.Manifest`); the last line of an input wins.
The report counts the inputs by their latest status (done / failed / no_face), lists the failures with their
reasons, and gives the seconds per face of the restored inputs (p50 / p90 / p99 / mean, measured end to end per
file: reading, detection, restoring, writing). ``--json`` prints the same as one JSON object.

It also says how the last job ended, from ``OUT/jobs.jsonl`` (a start and an end line per job): finished, stopped (Ctrl-C, SIGTERM, a time
limit), ended by an error, still running, or killed (a start line without an end, its process gone), with the
inputs it had to restore and how many of them got a line; and the inputs whose outputs a killed run was writing
(``records/STEM.json.pending``: removed by the next run into the folder). ``--verify`` hashes every output of
every done input and compares it with its record's ``outputs_sha256``.

Exit status: 0 when no input's latest status is a failure, no job was killed, every done input has its (readable)
record and (``--verify``) every output matches its record; 1 otherwise; 2 when there is neither a manifest nor a
job line.
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
    p.add_argument("--max-failures", type=int, default=50, metavar="N",
                   help="list at most N failures (and altered outputs; default: 50)")
    p.add_argument("--verify", action="store_true",
                   help="hash every output of the done inputs and compare it with its record (outputs_sha256)")
    p.set_defaults(func=run)


def percentile(values: list[float], q: float) -> float:
    """``np.percentile`` (its default, linear interpolation) of a non-empty list, q in [0, 100]. numpy is imported
    here, not with the module: ``dynface --help`` imports every command module (see :mod:`dynface.cli`)."""
    import numpy as np

    return float(np.percentile(values, q))


def latest_lines(lines: list[dict]) -> dict[str, dict]:
    """The last line per input (stem)."""
    return {d["stem"]: d for d in lines}


def summarise(lines: list[dict]) -> dict:
    """The report of a manifest's lines (see the module docstring)."""
    latest = latest_lines(lines)
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


def _job_status(start: dict, end: dict | None) -> str:
    import os
    import socket

    from dynface.jobs import _pid_alive

    if end is not None:
        return "error" if end.get("error") else "stopped" if end.get("stopped") else "finished"
    if start.get("host") != socket.gethostname():
        return "unknown (another host)"
    pid = start.get("pid")
    return "running" if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) else "killed"


def last_job(job_lines: list[dict], lines: list[dict]) -> dict | None:
    """How the last job of ``jobs.jsonl`` ended (see the module docstring): ``{"status", "started", "inputs", "todo",
    "lines", "earlier_killed"}`` (``lines``: manifest lines written since its start; ``earlier_killed``: the start
    times of earlier jobs that were killed, e.g. one that overlapped the last, and that no job started after them
    finished), plus ``restored``/``failed``/``error``
    from its end line. None without job lines (a folder written before they were)."""
    ends = {d["id"]: d for d in job_lines if d["job"] == "end"}
    starts = [d for d in job_lines if d["job"] == "start"]
    if not starts:
        return None
    start = starts[-1]
    end = ends.get(start["id"])
    since = sum(1 for d in lines if float(d.get("time") or 0) >= float(start["time"]))
    status = [_job_status(d, ends.get(d["id"])) for d in starts]
    # a killed job is behind us once a job that started after it finished (the resume with --skip-existing): report
    # exited 1 for ever after one kill -9, however complete the folder was (failure audit); one that overlapped it
    # (started before it) is no resume of it
    finished = [float(d["time"]) for d, st in zip(starts, status, strict=True) if st == "finished"]
    rep = {"started": start["time"], "inputs": start.get("inputs"), "todo": start.get("todo"), "lines": since,
           "earlier_killed": [d["time"] for d, st in zip(starts[:-1], status, strict=False) if st == "killed"
                              and not any(t > float(d["time"]) for t in finished)]}
    if end is not None:
        rep.update({k: end.get(k) for k in ("restored", "failed", "error") if end.get(k) is not None})
    return {"status": _job_status(start, end), **rep}


def verify(out: Path, lines: list[dict]) -> dict:
    """``--verify``: the outputs of the done inputs (their records on disk) that are no longer the files the records
    describe (:func:`dynface.jobs.altered_outputs` with hashing). Done inputs without a (readable) record are
    the report's ``done_without_record``."""
    from dynface.jobs import _read_record, altered_outputs

    checked, altered, unhashed = 0, [], 0
    for stem, d in latest_lines(lines).items():
        rec = _read_record(out, stem) if d["status"] == "done" else None
        if rec is None:
            continue
        if not isinstance(rec.get("outputs_sha256"), dict):
            unhashed += 1
        checked += 1
        altered += [f"{stem}: {rel}" for rel in altered_outputs(out, rec, verify=True)]
    return {"inputs": checked, "altered": altered, "without_hashes": unhashed}


def run(args: argparse.Namespace) -> int:
    from dynface.jobs import MANIFEST_NAME, Manifest, _read_record, interrupted_inputs, pending_running, read_job_lines

    path = Path(args.output).expanduser()
    if path.is_dir():
        path = path / MANIFEST_NAME
    job_lines = read_job_lines(path.parent)
    if not path.is_file() and not job_lines:  # a job killed before its first manifest line still has a start line
        print(f"error: no manifest at {path} (written by `dynface restore -o OUT`)", file=sys.stderr)
        return 2
    manifest = Manifest(path)
    lines = manifest.lines()
    rep = summarise(lines)
    rep["unreadable_lines"] = manifest.unreadable
    rep["last_job"] = last_job(job_lines, lines)
    pending = interrupted_inputs(path.parent, include_running=True)
    running = {stem for stem, info in pending.items() if pending_running(info)}  # being written now, or elsewhere
    rep["interrupted_inputs"] = sorted(set(pending) - running)
    rep["pending_elsewhere"] = sorted(running)
    rep["done_without_record"] = sorted(d["stem"] for d in latest_lines(lines).values()
                                        if d["status"] == "done" and _read_record(path.parent, d["stem"]) is None)
    if args.verify:
        rep["verify"] = verify(path.parent, lines)
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
                f"{c.get('failed', 0)} failed, {c.get('no_face', 0)} without a face"
                + "".join(f", {n} {k}" for k, n in sorted(c.items()) if k not in ("done", "failed", "no_face"))
                + f"; {rep['faces']} face(s) restored")
        lines = [head + f" -> {path}"]
        spf = rep["seconds_per_face"]
        if spf and spf["n"] == 1:  # one input: its own number, not percentiles of one
            lines.append(f"  s/face  {spf['mean']:.3f}  (1 input, read to written)")
        elif spf:
            lines.append(f"  s/face  p50 {spf['p50']:.3f}  p90 {spf['p90']:.3f}  p99 {spf['p99']:.3f}  "
                         f"mean {spf['mean']:.3f}  max {spf['max']:.3f}  (n={spf['n']} inputs, read to written)")
        for f in rep["failures"][: max(0, args.max_failures)]:
            lines.append(f"  {'FAILED ' if f['status'] == 'failed' else 'NO FACE'} {f['path']}: {f['error']}")
        if len(rep["failures"]) > args.max_failures:
            lines.append(f"  ... {len(rep['failures']) - args.max_failures} more (--max-failures, --json)")
        lines += _job_lines(rep, max(0, args.max_failures))
        print("\n".join(lines))
    job, ver = rep["last_job"] or {}, rep.get("verify") or {}
    killed = job.get("status") == "killed" or job.get("earlier_killed")
    return 1 if rep["failures"] or killed or rep["done_without_record"] or ver.get("altered") else 0


def _job_lines(rep: dict, limit: int) -> list[str]:
    """The text report's lines on the last job, the half-written inputs and ``--verify`` (at most ``limit`` altered
    outputs listed)."""
    import time

    out = []
    job = rep["last_job"]
    if job:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["started"])) if job.get("started") else "?"
        what = {"finished": "finished", "stopped": "stopped before its end (Ctrl-C, SIGTERM or a time limit)",
                "error": f"ended by an error: {job.get('error')}", "running": "still running",
                "killed": "killed (no end line, and its process is gone): restore again with --skip-existing"}
        out.append(f"  last job (started {when}, {job.get('todo')} of {job.get('inputs')} input(s) to restore, "
                   f"{job['lines']} line(s) since): {what.get(job['status'], job['status'])}")
        if job["earlier_killed"]:
            out.append(f"  {len(job['earlier_killed'])} earlier job(s) were killed (no end line, their process gone): "
                       "restore again with --skip-existing")

    def names(key: str) -> str:
        found = rep[key]
        return f"{', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"

    if rep["interrupted_inputs"]:
        out.append(f"  {len(rep['interrupted_inputs'])} input(s) were being written when a run was killed (their "
                   f"outputs are removed by the next run into this folder): {names('interrupted_inputs')}")
    if rep["pending_elsewhere"]:
        out.append(f"  {len(rep['pending_elsewhere'])} input(s) are being written by a running process or one of "
                   f"another host (not checked from here): {names('pending_elsewhere')}")
    if rep["done_without_record"]:
        out.append(f"  {len(rep['done_without_record'])} input(s) the manifest says done have no record (a run "
                   f"restoring them again was killed, or records/ was edited): {names('done_without_record')}")
    ver = rep.get("verify")
    if ver is not None:
        out.append(f"  verify: {ver['inputs']} done input(s) checked: {len(ver['altered'])} output(s) differ from their "
                   "record" + (f", {ver['without_hashes']} record(s) from before outputs were hashed (presence checked)"
                               if ver["without_hashes"] else ""))
        out += [f"  ALTERED {a}" for a in ver["altered"][:limit]]
        if len(ver["altered"]) > limit:
            out.append(f"  ... {len(ver['altered']) - limit} more (--max-failures, --json)")
    return out

