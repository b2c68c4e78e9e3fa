"""Cross-photo face batching in the job layer (dynface.jobs._restore_photos_batched): the faces of several whole
photos share restorer calls of ``batch_size`` faces, and every output is byte-identical whatever the grouping, the
input order, or the per-photo path; bad files, failing calls and the memory budget touch only their own photos.
On the `tiny` preset (random weights, 32 px, fp32) with small synthetic photos of the astronaut (192 px)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from _helpers import file_seed
from PIL import Image
from skimage import data

from dynface import jobs
from dynface.faces import finish_photo, prepare_photo, restore_photo, upscale_background
from dynface.jobs import Progress, RestoreSettings, run_job

SIDE = 192


def _variant(k: int) -> np.ndarray:
    """A 192-px photo of the astronaut with one face, framed differently for each k."""
    a = data.astronaut()
    y, x = 10 * k, 8 * k
    return np.asarray(Image.fromarray(a[y : y + 400, 40 + x : 440 + x]).resize((SIDE, SIDE), Image.LANCZOS))


@pytest.fixture(scope="module")
def tiny(tiny_random):
    return tiny_random.with_config(steps="ddim5")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """p0..p4: one face each; two.png: two faces (a framing and a mirrored one side by side); 6 photos, 7 faces."""
    d = tmp_path_factory.mktemp("photos")
    for k in range(5):
        Image.fromarray(_variant(k)).save(d / f"p{k}.png")
    two = np.concatenate([_variant(0), _variant(3)[:, ::-1]], axis=1)
    Image.fromarray(np.ascontiguousarray(two)).save(d / "two.png")
    return d


class Spy:
    """The restorer, recording the faces of each restore call (their seeds); ``fail_seed``: a call holding that seed
    raises."""

    def __init__(self, inner, fail_seed: int | None = None):
        self._r, self.calls, self.fail_seed = inner, [], fail_seed

    def __getattr__(self, name):
        return getattr(self._r, name)

    def restore(self, faces, **kw):
        self.calls.append(list(kw.get("seeds") or [None] * len(faces)))
        if self.fail_seed is not None and self.fail_seed in self.calls[-1]:
            raise RuntimeError("out of memory\nsecond line")
        return self._r.restore(faces, **kw)


def _settings(**kw) -> RestoreSettings:
    return RestoreSettings(**{"upscale": 1.5, "threads": 1, **kw})


def _drop_timing(rec: dict) -> dict:
    rec = json.loads(json.dumps(rec))
    rec.pop("timing", None)
    for st in (rec.get("outputs_stat") or {}).values():  # when the outputs were written (their sizes stay)
        st.pop("mtime_ns", None)
    for how in ("threads", "batch_size", "keep_faceless"):  # how the work was asked for, not what it made
        rec["settings"].pop(how, None)
    for f in rec["faces"]:
        f.pop("timing", None)
        f["restorer"].pop("seconds", None)
    return rec


def _same(a, b, path: str = "") -> list[str]:
    """Where two snapshots differ: bytes and everything else exactly, except floats, which may differ by fp32
    rounding (rel 1e-5): the restorer's std*, sigmas and eta come out of batched fp32 convolutions whose last bits
    depend on the batch (the uint8 outputs do not)."""
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) else [f"{path}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _same(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _same(x, y, f"{path}[{i}]")]
    return [] if type(a) is type(b) and a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def _snapshot(out: Path) -> dict[str, bytes | dict]:
    """Every output file's bytes, and each record without its timing fields."""
    snap: dict[str, bytes | dict] = {}
    for sub in ("restored_imgs", "restored_faces", "cropped_faces", "cmp"):
        for p in sorted((out / sub).iterdir()):
            snap[f"{sub}/{p.name}"] = p.read_bytes()
    for p in sorted((out / "records").iterdir()):
        snap[f"records/{p.name}"] = _drop_timing(json.loads(p.read_text()))
    return snap


def test_prepare_and_finish_compose_to_restore_photo(tiny):
    """restore_photo = prepare_photo, the restorer's calls, finish_photo: the halves give the same photo and records
    when the crops are restored elsewhere (here: in one call together with another photo's crops)."""
    img, other = _variant(1), _variant(4)
    whole = restore_photo(img, tiny, upscale=2, seeds=[7], faces=prepare_photo(img, tiny).faces)
    a, b = prepare_photo(img, tiny), prepare_photo(other, tiny)
    assert len(a.crops) == 1 and a.crops[0].shape == (32, 32, 3) and set(a.timing) == {"detect_s", "align_s"}
    out = tiny.restore(b.crops + a.crops, seeds=[3, 7])
    res = finish_photo(a, out.images[1:], out.records[1:], upscale=2)
    assert np.array_equal(res.photo, whole.photo) and np.array_equal(res.restored[0], whole.restored[0])
    assert np.array_equal(res.crops[0], whole.crops[0])
    strip = [{k: v for k, v in r.items() if k not in ("timing", "restorer")} for r in res.records]
    want = [{k: v for k, v in r.items() if k not in ("timing", "restorer")} for r in whole.records]
    assert strip == want
    # the restorer's own numbers (std*, σ) came from a batch of 2 here, of 1 there: equal up to fp32 rounding
    for got, ref in zip(res.records, whole.records, strict=True):
        g, r = got["restorer"], ref["restorer"]
        assert set(g) == set(r)
        for k in set(g) - {"seconds"}:
            same = g[k] == pytest.approx(r[k], rel=1e-5) if isinstance(r[k], (float, list)) else g[k] == r[k]
            assert same, (k, g[k], r[k])
    with pytest.raises(RuntimeError, match="returned 0 faces for 1 inputs"):
        finish_photo(a, [], [])


def test_photo_outputs_do_not_depend_on_grouping_order_or_path(tmp_path, tiny, photos, monkeypatch):
    """Batch sizes 1, 3 and 8 across photos, a shuffled input order, and the per-photo path give the same bytes and
    records; with batch size 8 the 7 faces of the 6 photos go to the restorer in ONE call, seeded per face."""
    files = sorted(photos.glob("*.png"))
    snaps, calls = {}, {}
    for bs in (1, 3, 8):
        spy = Spy(tiny)
        s = run_job([photos], tmp_path / f"bs{bs}", _settings(batch_size=bs), restorer=spy)
        assert [r.status for r in s.results] == ["done"] * 6 and sum(r.faces for r in s.results) == 7
        snaps[bs], calls[bs] = _snapshot(tmp_path / f"bs{bs}"), spy.calls
    all_seeds = [file_seed(f, 0, i) for f in files for i in range(2 if f.stem == "two" else 1)]
    assert calls[8] == [all_seeds]
    assert calls[3] == [all_seeds[0:3], all_seeds[3:6], all_seeds[6:7]]  # p2 | p3, p4 | two's 2 faces span calls
    assert calls[1] == [[x] for x in all_seeds]
    shuffled = files[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != files
    s = run_job(shuffled, tmp_path / "shuf", _settings(batch_size=3), restorer=tiny)
    assert [Path(r.path).name for r in s.results] == [f.name for f in shuffled]
    snaps["shuffled"] = _snapshot(tmp_path / "shuf")
    monkeypatch.setattr(jobs, "cross_photo_batches", lambda restorer, settings: False)  # the per-photo path
    spy = Spy(tiny)
    run_job([photos], tmp_path / "per", _settings(batch_size=8), restorer=spy)
    assert [len(c) for c in spy.calls] == [1, 1, 1, 1, 1, 2]
    snaps["per-photo"] = _snapshot(tmp_path / "per")
    assert len(snaps[1]) == 6 + 7 * 3 + 6
    for k in (3, 8, "shuffled", "per-photo"):
        assert not _same(snaps[k], snaps[1]), f"outputs differ with {k}: {_same(snaps[k], snaps[1])[:5]}"
    rec = snaps[8]["records/two.json"]
    assert [f["restorer"]["seed"] for f in rec["faces"]] == [file_seed(photos / "two.png", 0, i) for i in (0, 1)]
    assert rec["settings"]["batching"] == "batched" and rec["settings"]["precision_used"] == "fp32"


def test_bad_files_inside_a_batch_do_not_touch_the_others(tmp_path, tiny, photos):
    """A corrupt file and a photo without a face between good photos get their own result at once (before the
    batch they sat in is restored) and the good photos come out exactly as in a job without them."""
    d = tmp_path / "in"
    d.mkdir()
    names = ["a.png", "b_corrupt.png", "c.png", "d_noface.png", "e.png"]
    for n, k in zip(("a.png", "c.png", "e.png"), (0, 2, 4), strict=True):
        (d / n).write_bytes((photos / f"p{k}.png").read_bytes())
    (d / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.full((SIDE, SIDE, 3), 120, np.uint8)).save(d / "d_noface.png")
    order: list[str] = []
    spy = Spy(tiny)
    s = run_job([d / n for n in names], tmp_path / "o", _settings(batch_size=8), restorer=spy,
                on_result=lambda r: order.append(Path(r.path).name))
    assert [(Path(r.path).name, r.status) for r in s.results] == [
        ("a.png", "done"), ("b_corrupt.png", "failed"), ("c.png", "done"), ("d_noface.png", "no_face"), ("e.png", "done")]
    assert order == ["b_corrupt.png", "d_noface.png", "a.png", "c.png", "e.png"]
    assert len(spy.calls) == 1 and len(spy.calls[0]) == 3
    bad = s.results[1].error
    assert bad and "\n" not in bad and s.results[3].error == "no face found"
    ref = tmp_path / "ref"
    run_job([d / n for n in ("a.png", "c.png", "e.png")], ref, _settings(batch_size=8), restorer=tiny)
    assert not _same(_snapshot(tmp_path / "o"), _snapshot(ref))


@pytest.mark.parametrize("path", ["batched", "per-photo"])
def test_keep_faceless_writes_photos_without_a_face(tmp_path, tiny, photos, monkeypatch, path):
    """keep_faceless (whole archives): a photo without a face is written upscaled as it is, in input order, "done"
    with 0 faces and a note (also last in the job, after the final batch); the photos with faces come out exactly as
    without it, the job exits 0, and a rerun with skip_existing finds everything complete."""
    if path == "per-photo":
        monkeypatch.setattr(jobs, "cross_photo_batches", lambda restorer, settings: False)
    d = tmp_path / "in"
    d.mkdir()
    for n, k in (("a.png", 0), ("c.png", 2)):
        (d / n).write_bytes((photos / f"p{k}.png").read_bytes())
    flat = np.full((SIDE, SIDE, 3), 120, np.uint8)
    flat[::7] = 90  # stripes: not a face, but upscaling shows
    for n in ("b_noface.png", "z_noface.png"):
        Image.fromarray(flat).save(d / n)
    s = run_job([d], tmp_path / "o", _settings(batch_size=8, keep_faceless=True), restorer=tiny)
    assert [(Path(r.path).name, r.status, r.faces) for r in s.results] == [
        ("a.png", "done", 1), ("b_noface.png", "done", 0), ("c.png", "done", 1), ("z_noface.png", "done", 0)]
    assert s.exit_code == 0 and jobs.FACELESS_NOTE in s.results[1].notes and jobs.FACELESS_NOTE not in s.results[0].notes
    for n in ("b_noface", "z_noface"):
        rec = json.loads((tmp_path / "o" / "records" / f"{n}.json").read_text())
        assert rec["status"] == "ok" and rec["num_faces"] == 0 and rec["output_size"] == [288, 288]
        with Image.open(tmp_path / "o" / "restored_imgs" / f"{n}.png") as im:
            assert np.array_equal(np.asarray(im), upscale_background(flat, 1.5))  # the background, as it is
            assert im.getexif()[0x0131].endswith("(no face found: upscaled as it is)")  # not "faces restored"
    # every output says what it is: restored faces are a model's estimates; the cropped face is the input's own
    from dynface.imageio import CROP_NOT_RESTORED, FACES_RESTORED, SIDE_BY_SIDE

    for rel, what in (("restored_imgs/a.png", FACES_RESTORED), ("restored_faces/a_00.png", FACES_RESTORED),
                      ("cropped_faces/a_00.png", CROP_NOT_RESTORED), ("cmp/a_00.png", SIDE_BY_SIDE)):
        with Image.open(tmp_path / "o" / rel) as im:
            assert im.getexif()[0x0131].endswith(f"({what})"), rel
    assert "not a record of the person" in FACES_RESTORED and "not restored" in CROP_NOT_RESTORED
    ref = tmp_path / "ref"
    run_job([d / "a.png", d / "c.png"], ref, _settings(batch_size=8), restorer=tiny)
    got = {k: v for k, v in _snapshot(tmp_path / "o").items() if "noface" not in k}
    assert not _same(got, _snapshot(ref))
    again = run_job([d], tmp_path / "o", _settings(batch_size=8, keep_faceless=True, skip_existing=True), restorer=tiny)
    assert len(again.skipped) == 4 and not again.results


def test_a_failing_batch_fails_exactly_its_photos(tmp_path, tiny, photos):
    """Batch size 2 over p0 | two (2 faces) | p1 | p2: calls [p0, two#0], [two#1, p1], [p2]. The second call fails:
    two and p1 fail with its one-line error (two's first face was restored, nothing of it is written), p0 and p2 are
    written as without the failure; the progress stays monotone and per file."""
    files = [photos / n for n in ("p0.png", "two.png", "p1.png", "p2.png")]
    spy = Spy(tiny, fail_seed=file_seed(photos / "p1.png"))
    events: list[Progress] = []
    s = run_job(files, tmp_path / "o", _settings(batch_size=2), restorer=spy, progress=events.append)
    assert [len(c) for c in spy.calls] == [2, 2, 1]
    assert [(r.stem, r.status, r.error) for r in s.results] == [
        ("p0", "done", None), ("two", "failed", "RuntimeError: out of memory"), ("p1", "failed", "RuntimeError: out of memory"),
        ("p2", "done", None)]
    out = tmp_path / "o"
    assert sorted(p.name for p in (out / "restored_imgs").iterdir()) == ["p0.png", "p2.png"]
    assert sorted(p.name for p in (out / "records").iterdir()) == ["p0.json", "p2.json"]
    assert not list((out / "restored_faces").glob("two_*")) and not list((out / "restored_faces").glob("p1_*"))
    ref = tmp_path / "ref"
    run_job([files[0], files[3]], ref, _settings(batch_size=8), restorer=tiny)
    assert not _same(_snapshot(out), _snapshot(ref))
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(4)
    done = [e.files_done for e in events]
    assert done == sorted(done) and done[-1] == 4 and set(done) == {0, 1, 2, 3, 4}
    assert max(fr) <= 4 + 1e-9
    # when p1 has failed nothing restored is waiting: the bar stands exactly at the files done
    assert [e.fraction for e in events if e.files_done == 3 and e.step is None][0] == pytest.approx(3)


def test_the_memory_budget_restores_the_queue_early(tmp_path, tiny, photos, monkeypatch):
    """With room for two 192-px photos in the queue, batch size 8 restores p0..p4 as [p0, p1], [p2, p3], [p4] (the
    third photo waits until the first two are written), with the same outputs as one call of five."""
    files = [photos / f"p{k}.png" for k in range(5)]
    spy = Spy(tiny)
    run_job(files, tmp_path / "one", _settings(batch_size=8), restorer=spy)
    assert [len(c) for c in spy.calls] == [5]
    monkeypatch.setattr(jobs, "PHOTO_QUEUE_MAX_PIXELS", 2 * SIDE * SIDE)
    spy = Spy(tiny)
    written: list[tuple[str, int]] = []
    run_job(files, tmp_path / "budget", _settings(batch_size=8), restorer=spy,
            on_result=lambda r: written.append((r.stem, len(spy.calls))))
    assert spy.calls == [[file_seed(photos / f"p{k}.png") for k in ks] for ks in ((0, 1), (2, 3), (4,))]
    assert written == [("p0", 1), ("p1", 1), ("p2", 2), ("p3", 2), ("p4", 3)]
    assert not _same(_snapshot(tmp_path / "budget"), _snapshot(tmp_path / "one"))


def test_which_restorers_batch_across_photos(tmp_path, tiny, photos):
    """Cross-photo batches need per-face seeds and batch-invariant arithmetic: fp32 on a CPU does, bf16 (with
    deterministic) and restorers without ``seeds`` keep one photo per call."""
    from types import SimpleNamespace

    from dynface.jobs import cross_photo_batches

    bf16 = tiny.with_config(precision="bf16")
    assert cross_photo_batches(tiny, RestoreSettings())
    assert not cross_photo_batches(bf16, RestoreSettings()) and cross_photo_batches(bf16, RestoreSettings(deterministic=False))

    class NoSeeds:
        size, template_name, name = tiny.size, tiny.template_name, "noseeds"

        def __init__(self):
            self.calls = []

        def restore(self, faces, seed=0, fidelity=None, return_maps=False):
            self.calls.append((len(faces), seed))
            return SimpleNamespace(images=[np.asarray(f) for f in faces], records=[{} for _ in faces], maps={})

    ns = NoSeeds()
    assert not cross_photo_batches(ns, RestoreSettings())
    files = [photos / n for n in ("p0.png", "p1.png", "two.png")]
    s = run_job(files, tmp_path / "ns", _settings(batch_size=8), restorer=ns)
    assert len(s.done) == 3 and ns.calls == [(1, 0), (1, 0), (2, 0)]  # per photo, the old seed + position
    spy = Spy(bf16)
    s = run_job(files, tmp_path / "bf16", _settings(batch_size=8), restorer=spy)
    assert len(s.done) == 3 and [len(c) for c in spy.calls] == [1, 1, 1, 1]
    assert s.done[0].record["settings"]["batching"] == "per-face"


def test_auto_precision_of_photos_is_fp32_on_a_bf16_cpu_and_recorded(monkeypatch, tmp_path, photos):
    """precision auto on a CPU with native bf16: a whole photo's faces are restored in fp32 by a 64-px model (so they
    can batch across photos exactly) and in bf16 one face a call by a 128-px one (jobs.BF16_FROM_SIZE: faster there);
    each record says what was asked (auto) and what was used."""
    import dynface.pipeline as pl

    monkeypatch.setattr(pl, "cpu_has_native_bf16", lambda: True)
    monkeypatch.delenv("DYNFACE_RESTORER_FACTORY", raising=False)
    assert pl.resolve_precision("auto") == "bf16"
    for model, used, batching in (("embedded-64", "fp32", "batched"), ("embedded-128", "bf16", "per-face")):
        s = run_job([photos / "p0.png"], tmp_path / model, RestoreSettings(model=model, steps="ddim2", threads=1,
                                                                            upscale=1))
        rec = s.done[0].record
        st = rec["settings"]
        assert (st["precision"], st["precision_used"], st["batching"]) == ("auto", used, batching)
        assert [f["restorer"]["precision"] for f in rec["faces"]] == [used]


def test_maps_of_photos_restored_across_photos(tmp_path, tiny, photos):
    """save_maps: each face's maps come from its own row of a shared call, the same bytes as with batch size 1."""
    files = [photos / "p0.png", photos / "two.png"]
    outs = {}
    for bs in (1, 8):
        out = tmp_path / f"bs{bs}"
        s = run_job(files, out, _settings(batch_size=bs, save_maps=True), restorer=tiny)
        assert len(s.done) == 2
        outs[bs] = {p.name: p.read_bytes() for p in sorted((out / "maps").iterdir())}
        faces = s.done[1].record["faces"]
        assert all(f["files"]["map_dgsa"] == f"maps/two_{i:02d}_dgsa.png" for i, f in enumerate(faces))
    assert {n.rsplit("_", 1)[0] for n in outs[8]} == {"p0_00", "two_00", "two_01"}
    assert outs[8] == outs[1]
