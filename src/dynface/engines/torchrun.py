"""``torchrun --nproc_per_node K -m dynface.cli restore ...``: one job over K processes of one node, as the
official DynFaceRestore inference runs on 8 GPUs.

Each rank (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from torchrun) plans the same job, takes the inputs whose stable
hash of the output stem falls to it (:func:`rank_of`: a BLAKE2b hash, the same in every process, so the shares are
disjoint and cover the job), restores them with :func:`dynface.jobs.restore_items` and writes its own manifest part
``OUT/manifest.rank<R>.jsonl``. After a barrier rank 0 appends the parts to ``OUT/manifest.jsonl``, removes them and
prints the summary of the whole job; its exit status is the job's (the other ranks exit 0 unless they crash).
Parts left by a killed launch are merged at the next start, before ``--skip-existing`` reads the manifest.

Process groups: ``gloo`` for ``--device cpu``, ``nccl`` for ``--device cuda`` (each rank on GPU ``LOCAL_RANK``).
CPU threads per rank: ``--threads``, else the node's cores divided by the ranks on it. The barrier waits up to
``DYNFACE_DIST_TIMEOUT`` seconds (default 7 days: shares finish at different times). Outputs are the same bytes
as a single-process run (per-face seeds, :func:`dynface.jobs.face_seed`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from dynface import jobs
from dynface.jobs import start_job

PART_PREFIX = "manifest.rank"


def rank_of(stem: str, world_size: int) -> int:
    """The rank that restores the input with output stem ``stem`` (stable across processes and machines)."""
    h = hashlib.blake2b(f"dynface-share\x00{stem}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "little") % world_size


def part_path(out: Path, rank: int) -> Path:
    return Path(out) / f"{PART_PREFIX}{rank}.jsonl"


def _parts(out: Path) -> list[Path]:
    found = []
    for p in Path(out).glob(f"{PART_PREFIX}*.jsonl"):
        r = p.name[len(PART_PREFIX) : -len(".jsonl")]
        if r.isdigit():
            found.append((int(r), p))
    return [p for _, p in sorted(found)]


def merge_parts(out: Path) -> list[dict]:
    """Append every manifest part under ``out`` to ``OUT/manifest.jsonl`` (rank order, one write per part under the
    manifest's lock, then fsync: :meth:`dynface.jobs.Manifest.append_lines`) and remove the parts. Returns the
    merged lines."""
    manifest = jobs.Manifest(Path(out) / jobs.MANIFEST_NAME)
    merged: list[dict] = []
    for p in _parts(out):
        lines = jobs.Manifest(p).lines()
        manifest.append_lines(lines)
        p.unlink()
        merged += lines
    return merged


def skip_check(items: list[jobs.InputItem], out: Path, settings: jobs.RestoreSettings | None = None,
               changed: dict[str, list[str]] | None = None) -> tuple[list[jobs.FileResult], list[jobs.FileResult]]:
    """Rank 0's ``--skip-existing`` check of the whole job: the parts a killed launch left are merged first, then
    :func:`dynface.jobs.complete_results` of every input (one read of the manifest). Only while no other rank
    writes its part: before the first barrier of :func:`run_torchrun_job`."""
    merge_parts(out)
    return jobs.complete_results(items, Path(out), jobs.Manifest(Path(out) / jobs.MANIFEST_NAME), settings, changed)


def _result_from_line(d: dict) -> jobs.FileResult:
    return jobs.FileResult(d.get("path", ""), d["stem"], d["status"], d.get("error"), list(d.get("notes") or []),
                           list(d.get("outputs") or []), d.get("record"), float(d.get("seconds") or 0.0),
                           int(d.get("faces") or 0), None)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def run_torchrun_job(inputs: Sequence[str | Path], out: Path, settings: jobs.RestoreSettings,
                     progress: Callable[[jobs.Progress], None] | None = None, *,
                     on_result: Callable[[jobs.FileResult], None] | None = None,
                     items: list[jobs.InputItem] | None = None, ignored: list[Path] | None = None,
                     complete: tuple[list[jobs.FileResult], list[jobs.FileResult]] | None = None) -> jobs.JobSummary:
    """This rank's part of the job (see the module docstring). On rank 0 the summary covers the whole job; on the
    other ranks it is empty (their results are in rank 0's), so that only rank 0 reports failures. ``complete``:
    rank 0's :func:`skip_check` made already (the other ranks ignore it: they check their share after the first
    barrier, once rank 0 has merged the parts)."""
    import torch
    import torch.distributed as dist

    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank, local_world = _env_int("LOCAL_RANK", rank), _env_int("LOCAL_WORLD_SIZE", world)
    out = Path(out).expanduser()
    if items is None:
        items, ignored = jobs.plan_inputs(inputs, out, settings)  # the same on every rank
    jobs.check_settings(settings)
    backend = "nccl" if settings.device == "cuda" else "gloo"
    if settings.device == "cuda":
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=_env_int("DYNFACE_DIST_TIMEOUT", 7 * 24 * 3600))
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend, timeout=timeout)
    try:
        skipped_all: list[jobs.FileResult] = []
        mine: tuple[list[jobs.FileResult], list[jobs.FileResult]] | None = None  # rank 0's share of its skip check
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            if settings.skip_existing:  # skip_check merges a killed launch's parts first (or made ``complete``)
                skipped_all, missing_all = complete if complete is not None else skip_check(items, out, settings)
                own = {it.stem for it in items if rank_of(it.stem, world) == 0}
                mine = ([r for r in skipped_all if r.stem in own], [r for r in missing_all if r.stem in own])
            else:
                merge_parts(out)  # results of a killed launch, before anyone reads the manifest
            job = jobs.JobSummary(out=out, total=len(items), skipped=skipped_all)
            jobs.begin_job(jobs.Manifest(out / jobs.MANIFEST_NAME), job, len(items) - len(skipped_all))
        dist.barrier()
        share = [it for it in items if rank_of(it.stem, world) == rank]
        part = jobs.Manifest(part_path(out, rank))
        summary, _, todo = start_job(share, out, settings, ignored if rank == 0 else None, manifest=part, complete=mine)
        if todo:
            cpus = jobs.usable_cpus()
            jobs.apply_threads(replace(settings, threads=settings.threads or max(1, cpus // max(1, local_world))))
            restorer = jobs.load_restorer(settings)

            scale = max(1.0, (len(items) - len(skipped_all)) / len(todo)) if rank == 0 else 1.0

            def rank0_progress(p: jobs.Progress) -> None:  # rank 0's share, scaled to the whole job
                if progress is not None:
                    progress(replace(p, fraction=p.fraction * scale, message=f"rank 0 of {world}: {p.files_done}/{len(todo)}"))

            jobs.restore_logged(todo, out, settings, restorer, rank0_progress if rank == 0 else None, summary, part, on_result)
        dist.barrier()
        if rank != 0:
            return jobs.JobSummary(out=out, total=0, interrupted=summary.interrupted)
        seen = {r.stem for r in summary.results} | {r.stem for r in skipped_all}
        for d in merge_parts(out):
            if d["stem"] not in seen:
                summary.results.append(_result_from_line(d))
        whole = jobs.JobSummary(out=out, total=len(items), results=summary.results, skipped=skipped_all,
                                ignored=list(ignored or []), interrupted=summary.interrupted,
                                manifest_errors=job.manifest_errors + summary.manifest_errors, job=job.job)
        jobs.end_job(jobs.Manifest(out / jobs.MANIFEST_NAME), whole)
        order = {it.stem: it.index for it in items}
        whole.results.sort(key=lambda r: order.get(r.stem, 0))
        return whole
    finally:
        if own_group:
            dist.destroy_process_group()
