"""Engines that spread one ``dynface restore`` job over many processes, all through :mod:`dynface.jobs`.

* :mod:`dynface.engines.ray_engine`: ``--engine ray``, a pool of Ray actors on this machine or a Ray cluster.
* :mod:`dynface.engines.torchrun`: ``torchrun --nproc_per_node K -m dynface.cli restore ...``, one share per rank.

Both restore the files with :func:`dynface.jobs.restore_items` in the worker processes, which write every output
themselves (temporary file + rename on the destination filesystem), so inputs and ``-o`` must be paths every
worker can reach (one machine, or a shared filesystem mounted at the same path on every node). The driver (Ray)
or rank 0 (torchrun) writes ``OUT/manifest.jsonl``. Outputs do not depend on the engine: the seeds come from
:func:`dynface.jobs.face_seed`, so a file's bytes are the same whichever worker restores it.

:func:`add_arguments` registers the engine flags on the ``restore`` parser; :func:`selected` says whether a
parsed command line asks for an engine (``--engine ray``, or torchrun's environment).
"""

from __future__ import annotations

import argparse
import os

from dynface.commands.argtypes import number

ENGINES = ("local", "ray")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The engine flags of ``dynface restore``."""
    g = p.add_argument_group("engines (archives and clusters; see README 'Archives and clusters')")
    g.add_argument("--engine", default="local", choices=ENGINES,
                   help="local: this process (under torchrun: one share per rank); ray: a pool of Ray actors "
                        "(needs the [cluster] extra)")
    g.add_argument("--address", default=None, metavar="auto|HOST:PORT|ray://HOST:PORT",
                   help="with --engine ray: the Ray cluster to join (default: start a local Ray instance); inputs and "
                        "-o must be on a filesystem every node mounts at the same path")
    g.add_argument("--workers", type=number(int, 1), default=None, metavar="N",
                   help="with --engine ray: number of actors, each holding one model (default: as many as the "
                        "CPUs, or GPUs with --gpus-per-worker, allow)")
    g.add_argument("--cpus-per-worker", type=number(float, 0), default=1.0, metavar="C",
                   help="with --engine ray: CPUs reserved per actor, also its torch threads (default: 1)")
    g.add_argument("--gpus-per-worker", type=number(float, 0), default=0.0, metavar="G",
                   help="with --engine ray: GPUs per actor (fractions share a GPU; needs --device cuda; default: 0)")
    g.add_argument("--max-retries", type=number(int, 0), default=2, metavar="R",
                   help="with --engine ray: how often a file is retried on a new actor after its actor died "
                        "(killed, out of memory) before it is reported as failed (default: 2)")


def in_torchrun() -> bool:
    """Whether this process is one rank of a multi-process ``torchrun`` launch."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def selected(args: argparse.Namespace) -> str | None:
    """The engine a parsed ``restore`` command line asks for: "ray", "torchrun" or None (this process)."""
    if getattr(args, "engine", "local") == "ray":
        return "ray"
    if in_torchrun():
        return "torchrun"
    return None


def check_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`dynface.jobs.UsageError` for Ray flags given without ``--engine ray``."""
    from dynface.jobs import UsageError

    if getattr(args, "engine", "local") == "ray":
        return
    given = [f for f, v, d in (("--address", getattr(args, "address", None), None),
                               ("--workers", getattr(args, "workers", None), None),
                               ("--gpus-per-worker", getattr(args, "gpus_per_worker", 0.0), 0.0),
                               ("--cpus-per-worker", getattr(args, "cpus_per_worker", 1.0), 1.0),
                               ("--max-retries", getattr(args, "max_retries", 2), 2)) if v != d]
    if given:
        raise UsageError(f"{', '.join(given)} only work with --engine ray")


# ------------------------------------------------------------------------------------------ the CLI's hooks
def prepare(args: argparse.Namespace) -> None:
    """Called first by ``dynface restore``: checks the engine flags; under torchrun only rank 0 shows a bar."""
    check_arguments(args)
    if in_torchrun() and os.environ.get("RANK") != "0":
        args.quiet = True


def reports() -> bool:
    """Whether this process prints the job's summary (under torchrun: rank 0 only)."""
    return not in_torchrun() or os.environ.get("RANK") == "0"


def complete_inputs(args: argparse.Namespace, out, settings, items, changed: dict[str, list[str]] | None = None):
    """The ``--skip-existing`` check of ``items`` (:func:`dynface.jobs.complete_results`: (skipped, missing)), made
    once per run: the CLI sizes its progress bar with it and passes it on to :func:`run_job`. None without
    ``--skip-existing`` and on torchrun ranks other than 0 (they check their share after rank 0 merged the manifest
    parts of a killed launch, which rank 0 does here first: :func:`dynface.engines.torchrun.skip_check`).
    ``changed``: gets, per stem, the flags an earlier output was made with otherwise (it is restored again)."""
    from pathlib import Path

    from dynface import jobs

    out = Path(out)
    if not settings.skip_existing or (selected(args) == "torchrun" and os.environ.get("RANK") != "0"):
        return None
    if not out.is_dir():
        return [], []
    if selected(args) == "torchrun":
        from dynface.engines.torchrun import skip_check

        return skip_check(items, out, settings, changed)
    return jobs.complete_results(items, out, jobs.Manifest(out / jobs.MANIFEST_NAME), settings, changed)


def run_job(args: argparse.Namespace, out, settings, *, progress=None, on_result=None, items=None, ignored=None,
            complete=None):
    """:func:`dynface.jobs.run_job`, or the engine the command line asks for (:func:`selected`). ``complete``: from
    :func:`complete_inputs` for these ``items``."""
    engine = selected(args)
    if engine == "ray":
        from dynface.engines.ray_engine import RayOptions, run_ray_job

        opts = RayOptions(address=args.address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                          gpus_per_worker=args.gpus_per_worker, max_retries=args.max_retries)
        return run_ray_job(args.input, out, settings, opts, progress, on_result=on_result, items=items, ignored=ignored,
                           complete=complete)
    if engine == "torchrun":
        from dynface.engines.torchrun import run_torchrun_job

        return run_torchrun_job(args.input, out, settings, progress, on_result=on_result, items=items, ignored=ignored,
                                complete=complete)
    from dynface import jobs

    return jobs.run_job(args.input, out, settings, progress=progress, on_result=on_result, items=items, ignored=ignored,
                        complete=complete)
