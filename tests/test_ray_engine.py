"""``dynface restore --engine ray``: same bytes as one process, dead workers, bad files, a killed driver.

One Ray instance for the module (2 CPUs, loopback only); the drivers under test join it (in this process, or as
a subprocess with ``--address``). The restorer is the random ``tiny`` preset (4 steps) through the CLI's testing
hook ``DYNFACE_RESTORER_FACTORY=test_ray_engine:make_tiny_restorer``; the actors import this module (``tests/`` is
on their PYTHONPATH). ``DYNFACE_TEST_SLEEP`` (seconds per restorer call), ``DYNFACE_TEST_LOG`` (one line per face:
pid and seed) and ``DYNFACE_TEST_POISON`` (a uniform crop of value 13 kills its worker, like the OOM killer) reach
the actors because the engine passes the driver's ``DYNFACE_*`` variables on.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only (read at import)
ray = pytest.importorskip("ray")

from _helpers import (  # noqa: E402
    LoggedRestorer,
    astronaut_crops,
    kill_after_records,
    read_face_log,
    seed_to_stem,
    start_restore_cli,
    tiny_restorer,
)

from dynface import jobs  # noqa: E402
from dynface.cli import main  # noqa: E402

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
FACTORY = "test_ray_engine:make_tiny_restorer"
N_GOOD = 10


# ------------------------------------------------------------------------------------------ the test restorer
class _Instrumented(LoggedRestorer):
    """The logged tiny restorer with a sleep, a (pid, -1) line per call started, and a crop that kills its worker."""

    calls = 0

    def restore(self, faces, **kw):
        _Instrumented.calls += 1
        if _Instrumented.calls == 1 and os.environ.get("DYNFACE_TEST_RENDEZVOUS"):
            _rendezvous(os.environ["DYNFACE_TEST_RENDEZVOUS"])
        once = os.environ.get("DYNFACE_TEST_DIE_ONCE")  # this process's call DYNFACE_TEST_DIE_AT, in one process only
        if once and _Instrumented.calls == int(os.environ.get("DYNFACE_TEST_DIE_AT", "0")):
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("DYNFACE_TEST_POISON") and any(np.ptp(f) == 0 and f.flat[0] == 13 for f in map(np.asarray, faces)):
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("DYNFACE_TEST_LOG"):  # a worker that may still write (seed -1: no face)
            with open(os.environ["DYNFACE_TEST_LOG"], "a") as fh:
                fh.write(f"{os.getpid()} -1\n")
        time.sleep(float(os.environ.get("DYNFACE_TEST_SLEEP", "0")))
        return super().restore(faces, **kw)


def _rendezvous(spec: str, timeout: float = 120.0) -> None:
    """``DIR:N``: the first restorer call of each worker waits until N workers have started one (or ``timeout``).

    A worker that comes up first would otherwise be allowed to finish a small job alone, before the second one has
    loaded its model (correct scheduling, but then the test could not see the work spread).
    """
    folder, n = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.time() + timeout
    while len(os.listdir(folder)) < int(n) and time.time() < deadline:
        time.sleep(0.02)


def make_tiny_restorer(name_or_path="embedded-64", device="cpu", mode="full", steps=None, precision="auto", **kw):
    if name_or_path == "missing-model":
        raise FileNotFoundError("no such model: missing-model")
    return _Instrumented(tiny_restorer(mode, steps))


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray instance for the module; yields its address (for drivers in subprocesses)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SRC)] + ([old] if old else []))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(autouse=True)
def _hook(monkeypatch):
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)
    for k in ("DYNFACE_TEST_SLEEP", "DYNFACE_TEST_LOG", "DYNFACE_TEST_POISON", "DYNFACE_TEST_DIE_AT", "DYNFACE_TEST_DIE_ONCE",
              "DYNFACE_TEST_RENDEZVOUS"):
        monkeypatch.delenv(k, raising=False)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The single-process run (the job layer in this process, 1 thread) of the N_GOOD crops."""
    root = tmp_path_factory.mktemp("baseline")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    astronaut_crops(root / "in", N_GOOD)
    old = os.environ.get("DYNFACE_RESTORER_FACTORY")
    os.environ["DYNFACE_RESTORER_FACTORY"] = FACTORY
    try:
        s = jobs.run_job([root / "in"], root / "out", jobs.RestoreSettings(aligned=True, threads=1))
    finally:
        if old is None:
            os.environ.pop("DYNFACE_RESTORER_FACTORY", None)
        else:
            os.environ["DYNFACE_RESTORER_FACTORY"] = old
    assert s.exit_code == 0
    return _restored(root / "out")


def _restored(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "restored_faces").iterdir()) if not p.name.startswith(".")}


def _manifest(out: Path) -> list[dict]:
    return jobs.Manifest(out / "manifest.jsonl").lines()


def _seed_to_stem(d: Path, stems) -> dict[int, str]:
    return seed_to_stem(d, stems)  # faces are seeded by their file's bytes


# ------------------------------------------------------------------------------------------ tests
def test_two_workers_give_the_single_process_bytes_and_a_corrupt_file_fails(tmp_path, cluster, baseline, monkeypatch):
    d = tmp_path / "in"
    stems = astronaut_crops(d, N_GOOD)
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    log = tmp_path / "log.txt"
    monkeypatch.setenv("DYNFACE_TEST_LOG", str(log))
    (tmp_path / "rv").mkdir()
    monkeypatch.setenv("DYNFACE_TEST_RENDEZVOUS", f"{tmp_path / 'rv'}:2")  # both workers get to start a batch
    out = tmp_path / "out"
    rc = main(["restore", "-q", "--aligned", "-i", str(d), "-o", str(out), "--threads", "1", "--batch-size", "3",
               "--engine", "ray", "--workers", "2"])
    assert rc == 1  # the corrupt file
    assert _restored(out) == baseline  # byte-identical, whichever worker and batch restored each crop
    lines = _manifest(out)
    assert sorted(ln["stem"] for ln in lines) == sorted(stems + ["bad"])  # one line per input
    by_stem = {ln["stem"]: ln for ln in lines}
    assert by_stem["bad"]["status"] == "failed" and by_stem["bad"]["error"]
    assert all(by_stem[s]["status"] == "done" and by_stem[s]["outputs"] for s in stems)
    faces = read_face_log(log)
    assert len({pid for pid, _ in faces}) == 2, "both workers restored faces"
    assert sorted(_seed_to_stem(d, stems)[seed] for _, seed in faces) == sorted(stems)  # each crop restored once


def test_a_worker_killed_mid_run_loses_nothing_and_redoes_nothing(tmp_path, cluster, baseline, monkeypatch):
    from dynface.engines.ray_engine import RayOptions, RayStats, run_ray_job

    stems = astronaut_crops(tmp_path / "in", N_GOOD)
    log = tmp_path / "log.txt"
    monkeypatch.setenv("DYNFACE_TEST_LOG", str(log))
    monkeypatch.setenv("DYNFACE_TEST_SLEEP", "1")  # the killed actor is still busy when the driver kills it
    out = tmp_path / "out"
    stats = RayStats()
    at_kill: dict[str, tuple] = {}

    def kill_one_actor(r: jobs.FileResult) -> None:
        if at_kill:
            return
        for p in (out / "records").glob("*.json"):
            st = p.stat()
            at_kill[p.stem] = (st.st_ino, st.st_mtime_ns)
        ray.kill(stats.actors[0])  # it has a batch running (5 batches of 2 for 2 workers)

    s = run_ray_job([tmp_path / "in"], out, jobs.RestoreSettings(aligned=True, threads=1),
                    RayOptions(workers=2, files_per_task=2, max_retries=1), on_result=kill_one_actor, stats=stats)
    assert stats.worker_deaths == 1 and stats.workers_started == 3  # one died, one replaced it
    assert s.exit_code == 0 and len(s.done) == N_GOOD
    assert sorted(ln["stem"] for ln in _manifest(out)) == stems  # every file exactly once
    assert _restored(out) == baseline
    assert 1 <= len(at_kill) < N_GOOD
    for stem, ident in at_kill.items():  # finished before the kill: not written again
        st = (out / "records" / f"{stem}.json").stat()
        assert (st.st_ino, st.st_mtime_ns) == ident
    seeds = _seed_to_stem(tmp_path / "in", stems)
    counts = {st: 0 for st in stems}
    for _, seed in read_face_log(log):
        counts[seeds[seed]] += 1
    assert all(counts[st] == 1 for st in at_kill), counts
    assert not [p for p in out.rglob(".*")], "temporary files left"


def test_a_worker_dying_mid_batch_keeps_the_files_it_finished(tmp_path, cluster, baseline, monkeypatch):
    from dynface.engines.ray_engine import RayOptions, RayStats, run_ray_job

    stems = astronaut_crops(tmp_path / "in", N_GOOD)
    log, marker = tmp_path / "log.txt", tmp_path / "died"
    monkeypatch.setenv("DYNFACE_TEST_LOG", str(log))
    monkeypatch.setenv("DYNFACE_TEST_DIE_AT", "3")  # the first worker to start its 3rd restorer call dies there
    monkeypatch.setenv("DYNFACE_TEST_DIE_ONCE", str(marker))
    out = tmp_path / "out"
    stats = RayStats()
    # 2 batches of 5 files, one per worker, one restorer call (and record) per file
    s = run_ray_job([tmp_path / "in"], out, jobs.RestoreSettings(aligned=True, threads=1, batch_size=1),
                    RayOptions(workers=2, files_per_task=5, max_retries=1), stats=stats)
    assert marker.exists() and stats.worker_deaths == 1
    assert stats.retried_files == 3  # the 2 files finished before the death were kept
    assert s.exit_code == 0 and sorted(ln["stem"] for ln in _manifest(out)) == stems
    assert _restored(out) == baseline
    seeds = _seed_to_stem(tmp_path / "in", stems)
    assert sorted(seeds[seed] for _, seed in read_face_log(log)) == stems  # every file restored once: none redone


def test_ctrl_c_keeps_every_finished_file_in_the_manifest(tmp_path, cluster, monkeypatch):
    """Ctrl-C on the driver: the files the workers had finished (their records on disk) but whose results had not
    reached the driver were missing from the manifest and the summary (a helper: 12 records, 1 manifest line)."""
    from dynface.engines.ray_engine import RayOptions, run_ray_job

    stems = astronaut_crops(tmp_path / "in", N_GOOD)
    monkeypatch.setenv("DYNFACE_TEST_SLEEP", "0.5")
    out = tmp_path / "out"

    pressed = []

    def ctrl_c(r: jobs.FileResult) -> None:  # at the first result, as if the user pressed Ctrl-C there (once)
        if not pressed:
            pressed.append(r.stem)
            time.sleep(1.5)  # the other worker finishes a file or two meanwhile
            raise KeyboardInterrupt

    s = run_ray_job([tmp_path / "in"], out, jobs.RestoreSettings(aligned=True, threads=1, batch_size=1),
                    RayOptions(workers=2, files_per_task=5, max_retries=1), on_result=ctrl_c)
    assert s.interrupted and s.exit_code == 130
    on_disk = sorted(p.stem for p in (out / "records").glob("*.json"))
    lines = _manifest(out)
    assert len(on_disk) >= 2 and sorted(ln["stem"] for ln in lines if ln["status"] == "done") == on_disk
    assert sorted(r.stem for r in s.done) == on_disk and set(on_disk) <= set(stems)


def test_a_file_that_kills_its_workers_fails_after_max_retries(tmp_path, cluster, monkeypatch):
    d = tmp_path / "in"
    stems = astronaut_crops(d, 4)
    Image.fromarray(np.full((64, 64, 3), 13, np.uint8)).save(d / "poison.png")
    monkeypatch.setenv("DYNFACE_TEST_POISON", "1")
    out = tmp_path / "out"
    rc = main(["restore", "-q", "--aligned", "-i", str(d), "-o", str(out), "--threads", "1", "--batch-size", "5",
               "--engine", "ray", "--workers", "1", "--max-retries", "1"])
    assert rc == 1
    by_stem = {}
    for ln in _manifest(out):
        assert ln["stem"] not in by_stem, "one line per input"
        by_stem[ln["stem"]] = ln
    assert set(by_stem) == set(stems) | {"poison"}
    assert by_stem["poison"]["status"] == "failed" and "worker died" in by_stem["poison"]["error"]
    assert "2 time(s)" in by_stem["poison"]["error"]  # the first try and one retry
    assert all(by_stem[s]["status"] == "done" for s in stems)  # its batch-mates were retried alone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_skip_existing_after_the_driver_is_killed_restores_exactly_the_missing_files(tmp_path, cluster):
    stems = astronaut_crops(tmp_path / "in", N_GOOD)
    out, log1, log2 = tmp_path / "out", tmp_path / "log1.txt", tmp_path / "log2.txt"
    args = ["--aligned", "-i", tmp_path / "in", "-o", out, "--threads", "1", "--batch-size", "2",
            "--engine", "ray", "--address", cluster, "--workers", "2"]
    proc = start_restore_cli(FACTORY, args, {"DYNFACE_TEST_SLEEP": "1.5", "DYNFACE_TEST_LOG": str(log1)})
    kill_after_records(proc, out, 2, timeout=120)
    # the actors die with their driver; wait for every worker that started a restorer call
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p, _ in read_face_log(log1, calls=True)):
        time.sleep(0.2)
    assert not any(_alive(p) for p, _ in read_face_log(log1, calls=True)), "the workers outlived their driver"
    complete = sorted(s for s in stems if jobs.is_complete(out, s))
    assert 2 <= len(complete) < N_GOOD

    proc = start_restore_cli(FACTORY, [*args, "--skip-existing"], {"DYNFACE_TEST_LOG": str(log2)})
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-1500:]
    assert f"{N_GOOD - len(complete)} restored, {len(complete)} skipped (complete), 0 failed" in stdout
    seeds = _seed_to_stem(tmp_path / "in", stems)
    assert sorted(seeds[seed] for _, seed in read_face_log(log2)) == sorted(set(stems) - set(complete))  # exactly the missing
    final = jobs.Manifest(out / "manifest.jsonl").load()
    assert sorted(final) == stems and all(ln["status"] == "done" for ln in final.values())
    assert all(jobs.is_complete(out, s) for s in stems)


def test_engine_flags_are_checked_before_anything_starts(tmp_path, capsys):
    d = tmp_path / "in"
    astronaut_crops(d, 1)
    assert main(["restore", "-q", "--aligned", "-i", str(d), "-o", str(tmp_path / "o1"), "--workers", "2"]) == 2
    assert "only work with --engine ray" in capsys.readouterr().err
    assert main(["restore", "-q", "--aligned", "-i", str(d), "-o", str(tmp_path / "o2"), "--engine", "ray",
                 "--gpus-per-worker", "1"]) == 2
    assert "--gpus-per-worker needs --device cuda" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "manifest.jsonl").exists()


def test_a_model_the_workers_cannot_load_is_a_usage_error(tmp_path, cluster, capsys):
    d = tmp_path / "in"
    astronaut_crops(d, 2)
    rc = main(["restore", "-q", "--aligned", "-i", str(d), "-o", str(tmp_path / "out"), "--engine", "ray",
               "--workers", "1", "--model", "missing-model"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot load model 'missing-model': no such model" in err and "Traceback" not in err
    assert not list((tmp_path / "out" / "restored_faces").iterdir())
