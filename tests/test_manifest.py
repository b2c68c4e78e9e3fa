"""OUT/manifest.jsonl (issue 13 part 2): one line per input, appended atomically; --skip-existing trusts the manifest
and the files on disk; `dynface report OUT` summarises it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dynface.cli import main
from dynface.commands.report import percentile, summarise
from dynface.jobs import MANIFEST_NAME, FileResult, Manifest, RestoreSettings, run_job


class Fake:
    """A restorer that brightens each face and counts the faces it restored."""

    size, template_name, name = 32, "utkface64", "fake"

    def __init__(self):
        self.faces: list[int] = []

    def restore(self, faces, seed=0, fidelity=None, return_maps=False, seeds=None):
        imgs = [np.clip(np.asarray(Image.fromarray(np.asarray(f)).resize((32, 32)), dtype=int) + 10, 0, 255).astype(np.uint8) for f in faces]
        self.faces += [seeds[i] if seeds else seed + i for i in range(len(imgs))]
        return SimpleNamespace(images=imgs, records=[{"fake": True} for _ in imgs], maps={})


@pytest.fixture
def crops(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    img = data.astronaut()
    for k in range(3):
        Image.fromarray(img[40 + 9 * k : 190 + 9 * k, 140:290]).save(d / f"c{k}.png")
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return d


def _lines(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / MANIFEST_NAME).read_text().splitlines()]


def test_one_line_per_input_with_status_source_and_outputs(tmp_path, crops):
    out = tmp_path / "out"
    s = run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    lines = _lines(out)
    assert sorted(d["stem"] for d in lines) == ["bad", "c0", "c1", "c2"]
    by = {d["stem"]: d for d in lines}
    assert by["bad"]["status"] == "failed" and "\n" not in by["bad"]["error"] and by["bad"]["outputs"] == []
    for k in range(3):
        d = by[f"c{k}"]
        st = (crops / f"c{k}.png").stat()
        assert d["status"] == "done" and d["size"] == st.st_size and d["mtime_ns"] == st.st_mtime_ns
        assert d["path"] == str(crops / f"c{k}.png") and d["faces"] == 1 and d["seconds"] > 0
        assert f"records/c{k}.json" in d["outputs"] and f"restored_faces/c{k}.png" in d["outputs"]
        assert all((out / o).is_file() for o in d["outputs"])
        assert d["record"] == json.loads((out / "records" / f"c{k}.json").read_text())
    assert s.exit_code == 1 and len(s.done) == 3


def test_no_face_status(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.full((96, 128, 3), 140, np.uint8)).save(d / "wall.png")
    s = run_job([d], tmp_path / "out", RestoreSettings(upscale=1), restorer=Fake())
    (line,) = _lines(tmp_path / "out")
    assert line["status"] == "no_face" and line["error"] == "no face found" and s.exit_code == 1


def test_skip_existing_trusts_manifest_and_files(tmp_path, crops):
    out = tmp_path / "out"
    skip = RestoreSettings(aligned=True, skip_existing=True)
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())

    f = Fake()
    s = run_job([crops], out, skip, restorer=f)
    assert sorted(r.stem for r in s.skipped) == ["c0", "c1", "c2"] and len(f.faces) == 0  # bad.png: read again, fails
    assert [r.stem for r in s.failed] == ["bad"]

    (out / "cmp" / "c0.png").unlink()  # an output lost: c0 is not complete
    img = np.asarray(Image.open(crops / "c1.png"))
    Image.fromarray(img[::-1].copy()).save(crops / "c1.png")  # the input changed: c1 must be redone
    os.utime(crops / "c1.png", ns=(1, 1))
    f = Fake()
    s = run_job([crops], out, skip, restorer=f)
    assert sorted(r.stem for r in s.done) == ["c0", "c1"] and [r.stem for r in s.skipped] == ["c2"] and len(f.faces) == 2
    assert (out / "cmp" / "c0.png").is_file()

    # killed between the record and the manifest line: the record and files say complete; the line is added
    kept = [ln for ln in (out / MANIFEST_NAME).read_text().splitlines() if json.loads(ln)["stem"] != "c2"]
    (out / MANIFEST_NAME).write_text("\n".join(kept) + "\n")
    f = Fake()
    s = run_job([crops], out, skip, restorer=f)
    assert len(f.faces) == 0 and sorted(r.stem for r in s.skipped) == ["c0", "c1", "c2"]
    assert Manifest(out / MANIFEST_NAME).load()["c2"]["status"] == "done"

    # a later failed attempt is the manifest's last word: the input is restored again
    Manifest(out / MANIFEST_NAME).append(FileResult(str(crops / "c2.png"), "c2", "failed", "disk full"))
    f = Fake()
    s = run_job([crops], out, skip, restorer=f)
    assert [r.stem for r in s.done] == ["c2"] and len(f.faces) == 1


def test_skip_existing_reads_the_manifest_once_and_stats_each_input_once(tmp_path, monkeypatch):
    """``dynface restore --skip-existing`` on a finished job: the skip check (everything after planning the inputs)
    reads OUT/manifest.jsonl once and stats each input file at most once. Counted: calls of ``Manifest.lines`` on
    OUT/manifest.jsonl (every manifest read goes through it) and ``Path.stat`` calls on the input files outside
    ``plan_inputs`` (collecting the folder stats its entries too; that is not the skip check). ``_source_info``
    uses ``Path.stat`` and ``is_file``/``exists`` go through it as well. The earlier code read the manifest twice
    (the CLI's progress bar base, then the job) and stat'ed each input 3 times per read."""
    from dynface import jobs

    d = tmp_path / "in"
    d.mkdir()
    img = data.astronaut()
    for k in range(6):
        Image.fromarray(img[40 + 5 * k : 190 + 5 * k, 140:290]).save(d / f"c{k}.png")
    out = tmp_path / "out"
    assert run_job([d], out, RestoreSettings(aligned=True), restorer=Fake()).exit_code == 0

    reads, stats, planning = [], {}, [False]
    lines, stat, plan = Manifest.lines, Path.stat, jobs.plan_inputs

    def counting_lines(self):
        if self.path == out / MANIFEST_NAME:
            reads.append(planning[0])  # planning reads it once too: the names earlier runs gave (keep_earlier_stems)
        return lines(self)

    def counting_stat(self, *a, **kw):
        if self.parent == d and not planning[0]:
            stats[self.name] = stats.get(self.name, 0) + 1
        return stat(self, *a, **kw)

    def marked_plan(*a, **kw):
        planning[0] = True
        try:
            return plan(*a, **kw)
        finally:
            planning[0] = False

    monkeypatch.setattr(Manifest, "lines", counting_lines)
    monkeypatch.setattr(Path, "stat", counting_stat)
    monkeypatch.setattr(jobs, "plan_inputs", marked_plan)
    assert main(["restore", "-q", "--aligned", "-i", str(d), "-o", str(out), "--skip-existing"]) == 0
    monkeypatch.undo()
    assert reads == [True, False]
    assert sorted(stats) == [f"c{k}.png" for k in range(6)] and max(stats.values()) == 1, stats
    assert len(Manifest(out / MANIFEST_NAME).lines()) == 6  # nothing restored or appended again


def test_torn_last_line_is_skipped_and_does_not_swallow_the_next(tmp_path):
    m = Manifest(tmp_path / MANIFEST_NAME)
    m.append(FileResult("/x/a.png", "a", "done"))
    with open(m.path, "ab") as fh:
        fh.write(b'{"path": "/x/b.png", "stem": "b", "sta')  # a writer killed mid-line (not by append)
    m.append(FileResult("/x/c.png", "c", "failed", "bad"))
    assert sorted(m.load()) == ["a", "c"]


def test_malformed_lines_are_counted_not_crashed_on(tmp_path, crops, capsys):
    """Lines edited by hand or written by something else (wrong types, garbage, binary) are skipped and counted by
    ``report`` and ``--skip-existing`` alike, without a traceback; a file of nothing else is not a manifest."""
    out = tmp_path / "out"
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    with open(out / MANIFEST_NAME, "ab") as fh:
        fh.write(b'{"stem": "c0", "status": "done", "faces": "many"}\n{"stem": ["x"], "status": "done"}\n'
                 b'{"stem": "c1", "status": "done", "path": ["x"]}\n{"stem": "c2", "status": "done", "outputs": [1]}\n'
                 b'garbage{{\n\x00\x01\xff\n')
    m = Manifest(out / MANIFEST_NAME)
    assert sorted(m.load()) == ["bad", "c0", "c1", "c2"] and m.unreadable == 6
    assert all(d["status"] in ("done", "failed") and isinstance(d["path"], str) for d in m.load().values())
    assert main(["report", str(out)]) == 1
    std = capsys.readouterr()
    assert "4 input(s)" in std.out and "6 unreadable line(s)" in std.err
    s = run_job([crops], out, RestoreSettings(aligned=True, skip_existing=True), restorer=Fake())
    assert sorted(r.stem for r in s.skipped) == ["c0", "c1", "c2"]
    (tmp_path / "junk.jsonl").write_bytes(b"garbage{{\n\x00\x01\n")
    assert main(["report", str(tmp_path / "junk.jsonl")]) == 2
    assert "no readable manifest line" in capsys.readouterr().err


def test_report_into_a_pipe_that_closes_early(tmp_path):
    """``dynface report OUT | head -1``: the first line, no BrokenPipeError traceback."""
    import subprocess
    import sys

    m = Manifest(tmp_path / MANIFEST_NAME)
    for i in range(3000):
        m.append(FileResult(f"/in/{i}.png", f"s{i}", "failed", "x" * 60))
    cmd = f"{sys.executable} -m dynface.cli report {tmp_path} --max-failures 3000 | head -1"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("dynface report: 3000 input(s)") and r.stdout.count("\n") == 1
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def _append_many(path: str, k: int) -> None:
    m = Manifest(Path(path))
    for i in range(50):
        m.append(FileResult(f"/in/{k}_{i}.png", f"{k}_{i}", "done", notes=["x" * 3000]))


def test_concurrent_appends_never_tear_lines(tmp_path):
    path = tmp_path / MANIFEST_NAME
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    raw = path.read_text().splitlines()
    assert len(raw) == 200 and len({json.loads(ln)["stem"] for ln in raw}) == 200


def test_report_counts_failures_and_percentiles(tmp_path, crops, capsys):
    out = tmp_path / "out"
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    assert main(["report", str(out)]) == 1
    txt = capsys.readouterr().out
    assert "4 input(s)" in txt and "3 done, 1 failed, 0 without a face" in txt and "bad.png" in txt and "s/face  p50" in txt
    assert main(["report", str(out), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"] == {"done": 3, "failed": 1, "no_face": 0} and rep["faces"] == 3
    assert rep["seconds_per_face"]["n"] == 3 and rep["seconds_per_face"]["p50"] > 0
    assert main(["report", str(tmp_path / "nothing")]) == 2
    good = next(f for f in sorted(Path(crops).iterdir()) if f.name != "bad.png")
    run_job([good], tmp_path / "one", RestoreSettings(aligned=True), restorer=Fake())
    assert main(["report", str(tmp_path / "one")]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if "s/face" in ln][0]
    assert "(1 input, read to written)" in line and "p50" not in line  # one number, not its percentiles
    # the latest line per input wins; percentiles as numpy's
    lines = [{"stem": "a", "status": "failed", "error": "x", "faces": 0, "seconds": 0},
             {"stem": "a", "status": "done", "faces": 2, "seconds": 4.0},
             {"stem": "b", "status": "done", "faces": 1, "seconds": 1.0}]
    rep = summarise(lines)
    assert rep["counts"]["done"] == 2 and rep["failures"] == [] and rep["seconds_per_face"]["p50"] == 1.5


def _percentile_by_hand(values: list[float], q: float) -> float:
    """The report's own formula before it called np.percentile (linear interpolation between order statistics)."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def test_report_percentile_is_linear_interpolation():
    """percentile (np.percentile, method linear) gives what the hand-written formula gave: equal to ~1e-15 and
    identical at the 4 decimals the report prints, on arrays of 1, 2, 5 and 200 values."""
    v = [0.3, 5.0, 1.2, 9.9, 2.2]  # sorted: 0.3 1.2 2.2 5.0 9.9
    assert [percentile(v, q) for q in (0, 50, 90, 99, 100)] == pytest.approx([0.3, 2.2, 7.94, 9.704, 9.9], abs=1e-12)
    assert percentile([3.5], 90) == 3.5 and percentile([1.0, 2.0], 25) == pytest.approx(1.25)
    rng = np.random.default_rng(0)
    arrays = [[3.5], [2.0, 1.0], v, [1.0, 1.0, 4.0], rng.gamma(2.0, 1.5, 200).tolist()]
    for a in arrays:
        for q in (0, 10, 33.3, 50, 90, 99, 100):
            got = percentile(a, q)
            assert isinstance(got, float) and got == pytest.approx(_percentile_by_hand(a, q), rel=1e-13, abs=1e-13)
            assert round(got, 4) == round(_percentile_by_hand(a, q), 4)


def test_report_tells_a_finished_job_from_a_stopped_or_killed_one(tmp_path, crops, capsys):
    """The manifest alone said "done" for every input of a job killed halfway: nothing told a finished job from one
    that never reached its other inputs. Each job writes a start and an end line to OUT/jobs.jsonl."""
    import subprocess
    import sys

    from dynface.jobs import JOBS_NAME, read_job_lines

    out = tmp_path / "out"
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    start, end = read_job_lines(out)
    assert (start["job"], end["job"], start["id"]) == ("start", "end", end["id"])
    assert (start["inputs"], start["todo"], end["restored"], end["failed"], end["stopped"]) == (4, 4, 3, 1, False)
    assert main(["report", str(out), "--json"]) == 1  # the failed input
    job = json.loads(capsys.readouterr().out)["last_job"]
    assert (job["status"], job["todo"], job["lines"], job["restored"]) == ("finished", 4, 4, 3)

    # stopped: Ctrl-C in the middle (the second face)
    class Stopping(Fake):
        def restore(self, faces, **kw):
            if self.faces:
                raise KeyboardInterrupt
            return super().restore(faces, **kw)

    out2 = tmp_path / "out2"
    s = run_job([crops], out2, RestoreSettings(aligned=True, batch_size=1), restorer=Stopping())
    assert s.interrupted and read_job_lines(out2)[-1]["stopped"] is True
    assert main(["report", str(out2)]) == 1
    assert "stopped before its end" in capsys.readouterr().out

    # killed: a start line whose process is gone and no end line
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    Manifest(out / JOBS_NAME).append_lines([{"job": "start", "id": f"h:{pid}:1", "pid": pid, "host": os.uname().nodename,
                                             "time": 2e9, "inputs": 9, "todo": 9, "skipped": 0}])
    assert main(["report", str(out)]) == 1
    txt = capsys.readouterr().out
    assert "killed (no end line, and its process is gone)" in txt and "9 of 9 input(s) to restore, 0 line(s) since" in txt
    # and a finished job after it is the last job again; a failure-free one exits 0
    run_job([crops], out, RestoreSettings(aligned=True, skip_existing=True), restorer=Fake())
    (crops / "bad.png").unlink()
    out3 = tmp_path / "out3"
    run_job([crops], out3, RestoreSettings(aligned=True), restorer=Fake())
    assert main(["report", str(out3)]) == 0
    assert "finished" in capsys.readouterr().out


def test_a_killed_job_resumed_to_the_end_no_longer_fails_the_report(tmp_path, crops, capsys):
    """After one kill -9 and a complete --skip-existing resume, report exited 1 for ever ("1 earlier job(s) were
    killed"), which trips monitoring (failure audit). A killed job with a finished job after it is behind us; one
    after the last finished job is still said."""
    from dynface.jobs import JOBS_NAME

    (crops / "bad.png").unlink()
    out = tmp_path / "out"
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    pid = _dead_pid()
    killed = {"job": "start", "pid": pid, "host": os.uname().nodename, "inputs": 3, "todo": 3, "skipped": 0}
    Manifest(out / JOBS_NAME).append_lines([{**killed, "id": f"h:{pid}:1", "time": time.time()}])
    run_job([crops], out, RestoreSettings(aligned=True, skip_existing=True), restorer=Fake())  # the resume
    assert main(["report", str(out)]) == 0
    assert "earlier job(s) were killed" not in capsys.readouterr().out
    # killed after the last finished job, then another killed last: both said, exit 1
    Manifest(out / JOBS_NAME).append_lines([{**killed, "id": f"h:{pid}:2", "time": time.time() + 1},
                                            {**killed, "id": f"h:{pid}:3", "time": time.time() + 2}])
    assert main(["report", str(out)]) == 1
    txt = capsys.readouterr().out
    assert "1 earlier job(s) were killed" in txt and "killed (no end line" in txt


def test_skip_existing_and_report_verify_tell_an_altered_output(tmp_path, crops, capsys):
    """--skip-existing trusted any non-empty file of an output's name, and nothing compared outputs with their
    records' outputs_sha256. Now an output of another size, or of another mtime and other bytes, makes its input
    incomplete (restored again, with a note); a copy with the same bytes still counts; report --verify hashes them."""
    import shutil

    from dynface.jobs import altered_outputs, is_complete

    out = tmp_path / "out"
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    rec = json.loads((out / "records" / "c1.json").read_text())
    face = out / rec["faces"][0]["files"]["restored_face"]
    assert set(rec["outputs_stat"]) == set(rec["outputs_sha256"]) and rec["outputs_stat"][str(face.relative_to(out))][
        "size"] == face.stat().st_size
    assert main(["report", str(out), "--verify"]) == 1  # bad.png failed; every output matches
    txt = capsys.readouterr().out
    assert "verify: 3 done input(s) checked: 0 output(s) differ" in txt

    # a copy of the folder (new mtimes, same bytes) is still complete: the changed mtimes are hashed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copyfile)
    assert is_complete(copy, "c1") and not altered_outputs(copy, rec)
    # an output edited in place (same size, other bytes), and one replaced by a smaller file
    b = bytearray(face.read_bytes())
    b[-20] ^= 0xFF
    face.write_bytes(bytes(b))
    other = out / json.loads((out / "records" / "c2.json").read_text())["faces"][0]["files"]["restored_face"]
    Image.new("RGB", (4, 4)).save(other)
    assert not is_complete(out, "c1") and not is_complete(out, "c2") and is_complete(out, "c0")
    assert main(["report", str(out), "--verify", "--json"]) == 1
    ver = json.loads(capsys.readouterr().out)["verify"]
    assert sorted(ver["altered"]) == [f"c1: {face.relative_to(out)}", f"c2: {other.relative_to(out)}"]
    assert main(["restore", "-q", "--aligned", "-i", str(crops), "-o", str(out), "--skip-existing"]) == 1  # bad.png
    err = capsys.readouterr().err
    assert "2 input(s) restored again: an output" in err and "c1, c2" in err


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_killed_process_that_was_not_waited_for_is_not_running():
    """A zombie (killed, its parent has not waited yet: `timeout -s KILL` leaves one) is not a running job."""
    import signal
    import subprocess
    import sys
    import time

    from dynface.jobs import _pid_alive

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _pid_alive(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        for _ in range(100):  # the kill is delivered asynchronously
            if not _pid_alive(p.pid):
                break
            time.sleep(0.05)
        assert not _pid_alive(p.pid) and p.poll() is None or p.returncode is not None  # a zombie until waited for
    finally:
        p.wait()
    assert not _pid_alive(True) and not _pid_alive(-1)


def test_a_rerun_killed_before_it_wrote_keeps_the_old_outputs(tmp_path, crops, capsys):
    """A kill -9 right after a re-restore set the old record aside and listed its outputs (the same names): the next
    run into the folder deleted the old, intact outputs and left the set-aside record for ever. Now the intact record
    is put back; when an output was written over already, the pending files go and report names the input."""
    from dynface.jobs import (
        _pending_path,
        _retired_path,
        clean_interrupted_outputs,
        is_complete,
        note_pending_outputs,
        record_path,
        retire_record,
    )

    out = tmp_path / "out"
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    rec = json.loads(record_path(out, "c1").read_text())
    files = [f"{k}" for k in rec["outputs_sha256"]]
    for stem in ("c1", "c2"):  # the state a kill -9 leaves: record set aside, outputs listed, nothing written yet
        retire_record(out, stem)
        note_pending_outputs(out, stem, [f.replace("c1", stem) for f in files])
        p = _pending_path(out, stem)
        p.write_text(p.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {_dead_pid()}'))
    face2 = out / files[0].replace("c1", "c2")
    Image.new("RGB", (32, 32), (9, 9, 9)).save(face2)  # c2: killed after writing over one output
    assert main(["report", str(out), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["interrupted_inputs"] == ["c1", "c2"] and rep["done_without_record"] == ["c1", "c2"]
    clean_interrupted_outputs(out)
    assert is_complete(out, "c1") and all((out / f).is_file() for f in files)  # put back, outputs kept
    assert not record_path(out, "c2").exists() and _retired_path(out, "c2").is_file() and not face2.exists()
    assert main(["report", str(out)]) == 1
    txt = capsys.readouterr().out
    assert "1 input(s) the manifest says done have no record" in txt and "c2" in txt
    # the next run restores c2 (its set-aside record's other outputs are replaced or removed then)
    s = run_job([crops], out, RestoreSettings(aligned=True, skip_existing=True), restorer=Fake())
    assert [r.stem for r in s.done] == ["c2"] and is_complete(out, "c2") and not _retired_path(out, "c2").exists()


def test_report_reads_job_lines_without_a_manifest_and_skips_bad_ones(tmp_path, crops, capsys, monkeypatch):
    """A job killed (or stopped while the model loaded) before its first manifest line: report said "no manifest"
    (exit 2). Ctrl-C while loading was an "error: KeyboardInterrupt". Malformed job lines crashed report."""
    from dynface import jobs
    from dynface.jobs import JOBS_NAME, read_job_lines

    out = tmp_path / "out"

    def ctrl_c(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "load_restorer", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_job([crops], out, RestoreSettings(aligned=True))
    end = read_job_lines(out)[-1]
    assert end["stopped"] is True and "error" not in end and not (out / MANIFEST_NAME).exists()
    assert main(["report", str(out)]) == 0
    assert "stopped before its end" in capsys.readouterr().out
    pid = _dead_pid()
    bad = [{"job": "start", "id": "x", "time": "yesterday"}, {"job": "start", "id": "y", "time": 1e30},
           {"job": "start", "id": "z", "time": 5.0, "pid": True}, "garbage"]
    with open(out / JOBS_NAME, "a") as fh:
        fh.write("".join(json.dumps(b) + "\n" for b in bad))
    Manifest(out / JOBS_NAME).append_lines([{"job": "start", "id": "k", "pid": pid, "host": os.uname().nodename,
                                             "time": 2e9, "inputs": 4, "todo": 4}])
    assert len(read_job_lines(out)) == 3  # start, end, and the killed start; the bad ones are skipped
    assert main(["report", str(out), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["last_job"]["status"] == "killed"
    # a job that finished after (or overlapping) a killed one: the killed one is still said
    run_job([crops], out, RestoreSettings(aligned=True), restorer=Fake())
    assert [d["job"] for d in read_job_lines(out)] == ["start", "end", "start", "start", "end"]
    assert main(["report", str(out)]) == 1
    assert "1 earlier job(s) were killed" in capsys.readouterr().out


def test_report_skips_non_finite_numbers_and_counts_unknown_statuses(tmp_path, capsys):
    """A manifest line with ``seconds: 1e400`` made ``report --json`` print ``Infinity`` (not JSON); a status other
    than done/failed/no_face was counted in --json but missing from the text header."""
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(
        '{"stem": "a", "status": "no_face", "seconds": 1e400, "faces": 0}\n'
        '{"stem": "b", "status": "no_face", "seconds": NaN}\n'
        '{"stem": "c", "status": "skipped", "seconds": 0.5}\n'
        '{"stem": "d", "status": "no_face", "seconds": 1.5}\n')
    assert main(["report", str(out), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert rep["attempts"] == 2 and rep["counts"] == {"done": 0, "failed": 0, "no_face": 1, "skipped": 1}
    assert main(["report", str(out)]) == 1
    captured = capsys.readouterr()
    assert "2 input(s)" in captured.out and ", 1 skipped;" in captured.out
    assert "2 unreadable line(s)" in captured.err


def test_a_lost_output_is_restored_again_with_a_note(tmp_path, crops, capsys):
    """An output deleted or emptied made its input be restored again silently (an edited one got a note)."""
    out = tmp_path / "out"
    (crops / "bad.png").unlink()
    assert main(["restore", "-q", "--aligned", "-i", str(crops), "-o", str(out), "--model", "embedded-64"]) == 0
    rec = json.loads((out / "records" / "c0.json").read_text())
    (out / rec["faces"][0]["files"]["restored_face"]).write_bytes(b"")
    (out / json.loads((out / "records" / "c1.json").read_text())["faces"][0]["files"]["cmp"]).unlink()
    capsys.readouterr()
    assert main(["restore", "-q", "--aligned", "-i", str(crops), "-o", str(out), "--model", "embedded-64",
                 "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "2 input(s) restored again: an output" in err and "c0, c1" in err


def test_skip_existing_restores_again_after_the_weights_changed_at_the_same_path(tmp_path, crops, capsys):
    """--skip-existing compared the flags (the model's path) but not the weights: a model retrained or replaced in
    the same folder left the old outputs as complete. Records name each weight file's SHA-256; a changed one
    makes the input be restored again, with a note."""
    import shutil

    from dynface.registry import WEIGHTS_DIR

    model = tmp_path / "model"
    shutil.copytree(WEIGHTS_DIR / "embedded-64", model)
    (crops / "bad.png").unlink()
    argv = ["restore", "-q", "--aligned", "-i", str(crops), "-o", str(tmp_path / "out"), "--model", str(model)]
    assert main(argv) == 0
    assert main([*argv, "--skip-existing"]) == 0
    assert "3 skipped" in capsys.readouterr().out
    with open(model / "dsst.json", "a") as fh:  # the same table, other bytes: "retrained"
        fh.write("\n")
    assert main([*argv, "--skip-existing"]) == 0
    std = capsys.readouterr()
    assert "3 restored, 0 skipped" in std.out and "3 input(s) restored again" in std.err and "weight files" in std.err


def test_a_manifest_line_not_written_makes_the_run_exit_1(tmp_path, monkeypatch):
    """The outputs and records stand, but the manifest does not list the run: exit 1, not 0 (failure audit: a
    read-only manifest gave warnings and exit 0, and ``dynface report`` then counted nothing)."""
    d = tmp_path / "crops"
    d.mkdir()
    Image.fromarray(data.astronaut()[40:190, 140:290]).save(d / "c0.png")

    def refuse(self, *a, **kw):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(Manifest, "append", refuse)
    s = run_job([d], tmp_path / "out", RestoreSettings(aligned=True), restorer=Fake())
    assert len(s.done) == 1 and s.manifest_errors and s.exit_code == 1
