"""``dynface restore --engine ray``: one job over a pool of Ray actors, each holding one restorer.

::

    dynface restore --aligned -i crops/ -o out/ --engine ray --workers 2            # a local Ray instance
    dynface restore -i /shared/photos -o /shared/out --engine ray --address auto    # the cluster of `ray start`

The driver (this process) plans the job with :func:`dynface.jobs.plan_inputs`, skips complete inputs
(``--skip-existing``, :func:`dynface.jobs.complete_results`), cuts the rest into tasks (aligned crops: one restorer
batch, ``--batch-size`` or 8; photos: up to 4 files) and hands them to the actors that are up, at most two
tasks queued per actor. Each actor runs :func:`dynface.jobs.restore_items`, which writes every output through a
temporary file and a rename on the destination filesystem and writes ``records/<stem>.json`` last. The driver
appends one :class:`dynface.jobs.Manifest` line per input as the tasks finish; the progress callback covers the
whole job.

**Dead workers.** An actor that dies (``ray.kill``, the OOM killer, a lost node) takes its queued tasks with it.
The files of the task it was running are checked on disk: those it finished (their record is complete) get their
manifest line from the record and are not restored again; the others are charged one try and queued again,
one file per task, for a new actor. A file charged more than ``max_retries`` times is reported as failed
("the worker died ..."), so one file that kills every worker cannot stop the job. Tasks the actor had not
started are queued again free of charge. A dead actor is replaced while work is left.

**Environment.** Without ``address`` a local Ray instance is started (on the loopback interface, no dashboard,
no usage statistics) and stopped at the end; with ``address`` the driver joins that cluster. The driver's
``DYNFACE_*`` environment variables (e.g. the ``DYNFACE_RESTORER_FACTORY`` testing hook) are passed to the actors.
Paths are made absolute before they are sent, and must name the same files on every node.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dynface import jobs
from dynface.jobs import append_line as append
from dynface.jobs import as_done, start_job

PHOTOS_PER_TASK = 8  # a task's photos share restorer batches (jobs.cross_photo_batches): 8 fill one of 8 faces
QUEUED_PER_WORKER = 2  # tasks in flight per actor: one running, one waiting (no idle gap between tasks)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray instance for this job
    workers: int | None = None  # None: as many as the CPUs (or GPUs, with gpus_per_worker) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 2
    files_per_task: int | None = None  # None: one restorer batch of aligned crops, PHOTOS_PER_TASK photos


@dataclass
class RayStats:
    """What the driver measured (benchmarks/scale.py reports it)."""

    connect_s: float = 0.0  # ray.init (starting a local instance, or joining a cluster)
    first_ready_s: float = 0.0  # from the actors' creation until the first one had loaded its model
    run_s: float = 0.0  # from the actors' creation until the last result
    driver_cpu_s: float = 0.0  # CPU time of the driver process during the run
    tasks: int = 0
    workers_started: int = 0
    worker_deaths: int = 0
    retried_files: int = 0
    worker_pids: list[tuple[str, int]] = field(default_factory=list)  # (host, pid) of each worker that came up
    actors: list[Any] = field(default_factory=list, repr=False)  # their actor handles, in the same order


class RestoreWorker:
    """A Ray actor: one restorer, loaded once, restoring lists of :class:`dynface.jobs.InputItem`."""

    def __init__(self, settings: jobs.RestoreSettings, out: str, threads: int):
        self.out, self.settings, self.restorer, self.error = Path(out), settings, None, None
        try:
            jobs.apply_threads(replace(settings, threads=threads))
            self.restorer = jobs.load_restorer(settings)
        except jobs.UsageError as e:
            self.error = str(e)
        except Exception as e:  # never let a load error look like a dead worker
            self.error = f"cannot load model {settings.model!r}: {jobs.one_line(e)}"

    def ready(self) -> dict:
        return {"error": self.error, "pid": os.getpid(), "host": socket.gethostname()}

    def restore(self, items: list[jobs.InputItem]) -> list[jobs.FileResult]:
        if self.restorer is None:
            raise RuntimeError(self.error or "no restorer")
        return jobs.restore_items(items, self.out, self.settings, self.restorer)


def import_ray():
    """``ray``, with a clear usage error when the ``[cluster]`` extra is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline-first: never phone home
    try:
        import ray
    except ImportError:
        raise jobs.UsageError("--engine ray needs Ray: pip install 'dynfacerestore[cluster]'") from None
    return ray


def connect(opts: RayOptions) -> tuple[Any, bool]:
    """(ray, whether this call started Ray and must shut it down). Reuses an initialised Ray (library use)."""
    if opts.address is None:
        # a local instance on the loopback interface only (Ray's switch for single-machine clusters); read at
        # `import ray`, so it must be set first
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if opts.address is None:
            want = math.ceil((opts.workers or 1) * opts.cpus_per_worker)
            ray.init(num_cpus=max(jobs.usable_cpus(), want), include_dashboard=False, **kw)
        else:
            ray.init(address=opts.address, **kw)
    except Exception as e:
        where = f"the Ray cluster at {opts.address}" if opts.address else "a local Ray instance"
        raise jobs.UsageError(f"cannot start or join {where}: {jobs.one_line(e)}") from None
    return ray, True


def _default_workers(ray, opts: RayOptions) -> int:
    res = ray.cluster_resources()
    if opts.gpus_per_worker > 0:
        n = int(res.get("GPU", 0) // opts.gpus_per_worker)
        if n < 1:
            raise jobs.UsageError(f"--gpus-per-worker {opts.gpus_per_worker:g}: the Ray cluster has {res.get('GPU', 0):g} GPU(s)")
    else:
        n = int(res.get("CPU", 1) // max(opts.cpus_per_worker, 1e-9)) if opts.cpus_per_worker > 0 else jobs.usable_cpus()
    return max(1, n)


def check_options(opts: RayOptions, settings: jobs.RestoreSettings) -> None:
    if opts.workers is not None and opts.workers < 1:
        raise jobs.UsageError(f"--workers must be >= 1, got {opts.workers}")
    if opts.max_retries < 0:
        raise jobs.UsageError(f"--max-retries must be >= 0, got {opts.max_retries}")
    if opts.cpus_per_worker < 0 or opts.gpus_per_worker < 0:
        raise jobs.UsageError("--cpus-per-worker and --gpus-per-worker must be >= 0")
    if opts.gpus_per_worker > 0 and settings.device == "cpu":
        raise jobs.UsageError("--gpus-per-worker needs --device cuda")
    if settings.device == "cuda" and opts.gpus_per_worker == 0:
        raise jobs.UsageError("--device cuda with --engine ray needs --gpus-per-worker (e.g. 1, or 0.5 for two workers per GPU)")
    if opts.files_per_task is not None and opts.files_per_task < 1:
        raise jobs.UsageError(f"files per task must be >= 1, got {opts.files_per_task}")


@dataclass
class _Actor:
    handle: Any
    ready_ref: Any
    up: bool = False
    inflight: deque = field(default_factory=deque)  # (ref, chunk), oldest first: the oldest one is running


def run_ray_job(inputs: Sequence[str | Path], out: Path, settings: jobs.RestoreSettings, opts: RayOptions = RayOptions(),
                progress: Callable[[jobs.Progress], None] | None = None, *,
                on_result: Callable[[jobs.FileResult], None] | None = None,
                items: list[jobs.InputItem] | None = None, ignored: list[Path] | None = None,
                stats: RayStats | None = None,
                complete: tuple[list[jobs.FileResult], list[jobs.FileResult]] | None = None) -> jobs.JobSummary:
    """:func:`dynface.jobs.run_job` over a pool of Ray actors (see the module docstring). Raises
    :class:`dynface.jobs.UsageError` for whole-job problems (bad settings, Ray missing or unreachable, a model the
    workers cannot load); a ``KeyboardInterrupt`` ends the job with ``interrupted=True``. ``complete``: the skip
    check done already (:func:`dynface.jobs.start_job`)."""
    out = Path(out).expanduser()
    if items is None:
        items, ignored = jobs.plan_inputs(inputs, out, settings)
    check_options(opts, settings)
    summary, manifest, todo = start_job(items, out, settings, ignored, complete=complete)
    if not todo:
        jobs.end_job(manifest, summary)
        return summary
    stats = stats if stats is not None else RayStats()
    driver = None
    try:
        t0 = time.perf_counter()
        ray, started = connect(opts)
        stats.connect_s = time.perf_counter() - t0
        try:
            driver = _Driver(ray, out, settings, opts, todo, manifest, summary, progress, on_result, stats)
            driver.run()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            if started:
                ray.shutdown()
    except BaseException as e:
        jobs.end_job(manifest, summary, e)
        raise
    if summary.interrupted and driver is not None:
        driver.salvage()
    jobs.end_job(manifest, summary)
    jobs.clean_stale_temp_files(out)  # temporary files and half-written outputs of workers that died (when they ran
    jobs.clean_interrupted_outputs(out)  # on this machine)
    order = {it.stem: it.index for it in items}
    summary.results.sort(key=lambda r: order.get(r.stem, 0))
    return summary


def _record_id(out: Path, stem: str) -> tuple[int, int, int] | None:
    try:
        st = jobs.record_path(out, stem).stat()
    except (OSError, ValueError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _Driver:
    def __init__(self, ray, out: Path, settings: jobs.RestoreSettings, opts: RayOptions, todo: list[jobs.InputItem],
                 manifest: jobs.Manifest, summary: jobs.JobSummary, progress, on_result, stats: RayStats):
        self.ray, self.out, self.settings, self.opts = ray, out, settings, opts
        self.manifest, self.summary, self.progress, self.on_result, self.stats = manifest, summary, progress, on_result, stats
        self.total = len(todo)
        self.files_done = self.faces_done = 0
        # workers see absolute paths (their working folder may differ); results go back under the paths as given
        self.given = {it.stem: it for it in todo}
        absolute = [jobs.InputItem(Path(os.path.abspath(it.path)), it.stem, it.index) for it in todo]
        res = ray.cluster_resources()
        if opts.cpus_per_worker > res.get("CPU", 0) or opts.gpus_per_worker > res.get("GPU", 0):
            raise jobs.UsageError(f"no node of the Ray cluster can hold a worker of {opts.cpus_per_worker:g} CPU(s) and "
                                  f"{opts.gpus_per_worker:g} GPU(s) (the cluster has {res.get('CPU', 0):g} CPU(s), "
                                  f"{res.get('GPU', 0):g} GPU(s))")
        self.n_workers = opts.workers or _default_workers(ray, opts)
        per = opts.files_per_task or ((settings.batch_size or 8) if settings.aligned else PHOTOS_PER_TASK)
        per = max(1, min(per, math.ceil(len(todo) / self.n_workers)))  # small jobs still reach every worker
        self.queue: deque[list[jobs.InputItem]] = deque(absolute[i : i + per] for i in range(0, len(absolute), per))
        self.charges: dict[str, int] = {}
        # the records as they were before the job: a record a dead worker finished is a new file (rename)
        self.before = {it.stem: _record_id(out, it.stem) for it in todo}
        self.actors: list[_Actor] = []
        self.start_deaths = 0
        env = {k: v for k, v in os.environ.items() if k.startswith("DYNFACE_")}
        threads = settings.threads or max(1, int(opts.cpus_per_worker))
        remote = ray.remote(RestoreWorker)
        self.actor_cls = remote.options(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker, max_restarts=0,
                                        max_task_retries=0, runtime_env={"env_vars": env} if env else None)
        self.actor_args = (settings, str(Path(os.path.abspath(out))), threads)

    # ---------------------------------------------------------------------------------------- the pool
    def start_actor(self) -> None:
        h = self.actor_cls.remote(*self.actor_args)
        self.actors.append(_Actor(h, h.ready.remote()))
        self.stats.workers_started += 1

    def run(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(min(self.n_workers, len(self.queue))):
            self.start_actor()
        try:
            while self.queue or any(a.inflight for a in self.actors):
                self.dispatch()
                waiting = {a.ready_ref: a for a in self.actors if not a.up}
                running = {ref: a for a in self.actors for ref, _ in a.inflight}
                if not waiting and not running:  # every actor died and none could be started
                    raise jobs.UsageError("no Ray worker is left to run the job")
                ready, _ = self.ray.wait(list(waiting) + list(running), num_returns=1)
                for ref in ready:
                    if ref in waiting:
                        self.on_ready(waiting[ref], ref)
                    elif ref in running:
                        self.on_task(running[ref], ref)
                if not self.stats.first_ready_s and any(a.up for a in self.actors):
                    self.stats.first_ready_s = time.perf_counter() - t0
        finally:
            for a in self.actors:
                self.ray.kill(a.handle)
            self.stats.run_s = time.perf_counter() - t0
            self.stats.driver_cpu_s = time.process_time() - c0

    def dispatch(self) -> None:
        for a in self.actors:
            while a.up and self.queue and len(a.inflight) < QUEUED_PER_WORKER:
                chunk = self.queue.popleft()
                a.inflight.append((a.handle.restore.remote(chunk), chunk))
                self.stats.tasks += 1

    def on_ready(self, a: _Actor, ref) -> None:
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # died while loading (e.g. out of memory)
            self.start_deaths += 1
            self.actors.remove(a)
            self.stats.worker_deaths += 1
            if self.start_deaths > self.n_workers * (self.opts.max_retries + 1):
                raise jobs.UsageError(f"Ray workers keep dying while they load the model: {jobs.first_line(e)[:200]}") from None
            self.replace_dead()
            return
        if info.get("error"):
            raise jobs.UsageError(info["error"])
        a.up = True
        self.stats.worker_pids.append((info["host"], info["pid"]))
        self.stats.actors.append(a.handle)

    def on_task(self, a: _Actor, ref) -> None:
        idx = next(i for i, (r, _) in enumerate(a.inflight) if r == ref)
        _, chunk = a.inflight[idx]
        try:
            results = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.OutOfMemoryError,
                self.ray.exceptions.WorkerCrashedError) as e:
            self.on_death(a, e)
            return
        except self.ray.exceptions.RayError as e:  # restore_items itself failed: not a file's fault, not retried
            del a.inflight[idx]
            reason = f"worker error: {jobs.first_line(getattr(e, 'cause', None) or e)[:200]}"
            for it in chunk:
                self.record(jobs.FileResult(str(it.path), it.stem, "failed", reason))
            return
        del a.inflight[idx]
        for r in results:
            self.record(r)

    def on_death(self, a: _Actor, e: BaseException) -> None:
        """``a`` died: recover what it finished, charge the files it was restoring, queue the rest again."""
        self.stats.worker_deaths += 1
        reason = jobs.first_line(e)[:200]
        self.ray.kill(a.handle)  # make sure (an unavailable actor may come back otherwise)
        self.actors.remove(a)
        entries = list(a.inflight)
        requeue: list[list[jobs.InputItem]] = []
        for k, (_, chunk) in enumerate(entries):
            if k > 0:  # not started yet
                requeue.append(chunk)
                continue
            fresh = [it for it in chunk if _record_id(self.out, it.stem) not in (None, self.before.get(it.stem))]
            done, _missing = jobs.complete_results(fresh, self.out, None)
            done_stems = {r.stem for r in done}
            for r in done:  # finished (record written last) before the worker died: nothing to redo
                self.record(as_done(r))
            for it in (it for it in chunk if it.stem not in done_stems):
                n = self.charges[it.stem] = self.charges.get(it.stem, 0) + 1
                if n > self.opts.max_retries:
                    self.record(jobs.FileResult(str(it.path), it.stem, "failed",
                                                f"the worker died while restoring it, {n} time(s) (last: {reason})"))
                else:
                    requeue.append([it])  # alone: a file that kills workers only takes itself down
                    self.stats.retried_files += 1
        self.queue.extendleft(reversed(requeue))
        self.replace_dead()

    def replace_dead(self) -> None:
        while self.queue and len(self.actors) < self.n_workers:
            self.start_actor()

    def salvage(self) -> None:
        """After an interrupt: the files whose record a worker wrote (completely) in this job but whose result had not
        reached the driver yet go into the manifest and the summary as done, as when a worker dies: ``dynface
        report`` then counts what is on disk."""
        seen = {r.stem for r in self.summary.results}
        left = [it for it in self.given.values()
                if it.stem not in seen and _record_id(self.out, it.stem) not in (None, self.before.get(it.stem))]
        done, _missing = jobs.complete_results(left, self.out, None)
        for r in done:
            self.record(as_done(r))

    # ---------------------------------------------------------------------------------------- results
    def record(self, r: jobs.FileResult) -> None:
        it = self.given.get(r.stem)
        if it is not None:
            r.path = str(it.path)
        self.summary.results.append(r)
        append(self.manifest, self.summary, r)
        self.files_done += 1
        self.faces_done += int(r.faces or 0)
        if self.on_result is not None:
            self.on_result(r)
        if self.progress is not None:
            up = sum(1 for a in self.actors if a.up)
            self.progress(jobs.Progress(self.files_done, self.total, self.faces_done, None, None,
                                        f"{up} Ray worker(s)", float(self.files_done)))
