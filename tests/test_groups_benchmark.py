"""``benchmarks/groups.py``: UTKFace labels, the intervals, the cheeks' tone, the detector's photos and the report
(a synthetic quality run, so no shared data)."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
from _helpers import load_script
from PIL import Image

pytest.importorskip("skimage.color")


@pytest.fixture(scope="module")
def groups():
    return load_script("groups", "benchmarks")


def test_labels_come_from_utkface_names_and_odd_names_have_none(groups):
    assert groups.labels("26_1_1_20170116154712959.jpg.chip.jpg") == {
        "age": 26, "gender": "female", "race": "Black", "age_band": "15–39"}
    assert groups.labels("/x/y/70_0_3_2017.jpg.chip")["age_band"] == "65+"
    assert groups.labels("3_0_4_x.png") == {"age": 3, "gender": "male", "race": "Others", "age_band": "0–14"}
    # a missing field (UTKFace has a few such names), a gender of 3, a race of 5, another data set's name
    for bad in ("39_1_20170116174525125.jpg.chip.jpg", "61_3_20170109150557335.jpg.chip.jpg", "20_0_5_x.jpg",
                "astro_0.png"):
        assert groups.labels(bad) is None


def test_wilson_interval_matches_its_closed_form(groups):
    lo, hi = groups.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # z²/(n+z²)
    lo, hi = groups.wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 0.2775, abs=1e-4)
    lo, hi = groups.wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert all(math.isnan(v) for v in groups.wilson(0, 0))


def test_bootstrap_interval_of_the_mean(groups):
    assert groups.bootstrap_mean([2.5] * 7) == (2.5, 2.5, 2.5)
    x = np.random.default_rng(1).normal(3.0, 2.0, 400)
    m, lo, hi = groups.bootstrap_mean(x)
    assert m == pytest.approx(x.mean())
    half = 1.96 * x.std() / math.sqrt(x.size)  # the normal approximation's half width
    assert lo < m < hi and (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert groups.bootstrap_mean(x) == (m, lo, hi)  # seeded
    assert all(math.isnan(v) for v in groups.bootstrap_mean([]))


def test_cheek_tone_is_the_cheeks_lab_and_ita(groups):
    from skimage.color import rgb2lab

    skin, other = (198, 150, 120), (20, 200, 30)
    img = np.empty((128, 128, 3), np.uint8)
    img[:] = other
    for x0, x1, y0, y1 in groups.CHEEKS:  # only the cheeks carry the skin colour
        img[round(y0 * 128):round(y1 * 128), round(x0 * 128):round(x1 * 128)] = skin
    t = groups.cheek_tone(img)
    L, a, b = rgb2lab(np.array([[skin]], np.float64) / 255)[0, 0]
    assert (t["L"], t["a"], t["b"]) == pytest.approx((L, a, b), abs=1e-6)
    assert t["ita"] == pytest.approx(math.degrees(math.atan((L - 50) / b)))
    darker = groups.cheek_tone((img * 0.6).astype(np.uint8))
    assert darker["ita"] < t["ita"] and darker["L"] < t["L"]


def test_the_detectors_photos_and_what_counts_as_found(groups):
    face = np.random.default_rng(0).integers(60, 200, (200, 200, 3), dtype=np.uint8)
    photos = groups.detection_photos(face, seed=3)
    assert list(photos) == list(groups.CONDITIONS)
    for name, (photo, box) in photos.items():
        assert photo.shape == (400, 400, 3) and photo.dtype == np.uint8
        x0, y0, x1, y1 = box
        assert (x1 - x0, y1 - y0) == ((48, 48) if name == "small" else (200, 200))
    assert np.array_equal(photos["portrait"][0][100:300, 100:300], face)
    assert photos["dark"][0][100:300, 100:300].mean() == pytest.approx(0.3 * face.mean(), abs=2)

    class F:
        def __init__(self, bbox):
            self.bbox = bbox

    box = (100, 100, 300, 300)
    assert groups.found_in([F((120, 110, 280, 290))], box)
    assert not groups.found_in([F((0, 0, 90, 90)), F((250, 250, 400, 400))], box)  # a quarter inside: elsewhere
    assert not groups.found_in([], box)


def test_a_real_face_is_found_in_its_portrait(groups):
    from skimage.data import astronaut

    crop = np.ascontiguousarray(astronaut()[20:220, 110:310])
    found = groups.measure_found_images({"30_1_0_astronaut.png": crop}, progress=lambda s: None)
    assert found["30_1_0_astronaut.png"]["portrait"]


def _fake_quality(tmp_path, groups):
    """A quality run's JSON and work folder: 6 faces of two races; the method adds 1 dB to every face and lightens
    the Black faces' cheeks by 10 levels."""
    pairs, work = tmp_path / "pairs", tmp_path / "work"
    keys = [f"{20 + i}_{i % 2}_{0 if i < 3 else 1}_2017{i}.jpg.chip" for i in range(6)]
    rng = np.random.default_rng(0)
    per_face: dict = {"bicubic": {}, "full": {}}
    for i, k in enumerate(keys):
        skin = (198, 150, 120) if i < 3 else (110, 72, 55)
        hq = np.clip(rng.normal(skin, 5, (32, 32, 3)), 0, 255).astype(np.uint8)
        out = np.clip(hq.astype(int) + (10 if i >= 3 else 0), 0, 255).astype(np.uint8)
        for folder, img in ((pairs / "hq", hq), (pairs / "lq", hq), (work / "restored" / "full", out)):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{k}.png")
        base = {"psnr": 20.0 + i, "ssim": 0.5, "ida": 0.3 if i else None, "lmd": 5.0 if i else None}
        per_face["bicubic"][k] = base
        per_face["full"][k] = {"psnr": 21.0 + i, "ssim": 0.55, "ida": 0.25 if i else None, "lmd": 4.0}
    q = {"name": "fake", "command": "python benchmarks/quality.py ...", "steps": "ddim50", "precision": "bf16",
         "work": str(work), "model": {"model": "embedded-128"}, "per_face": per_face,
         "data": {"keys": keys, "pairs_dir": str(pairs), "hq_input": None, "preset": "gfpgan", "seed": 0,
                  "size": 32, "n_faces": 6, "eval_size": 32}}
    path = tmp_path / "q.json"
    path.write_text(json.dumps(q))
    return path


def test_the_report_pairs_each_face_with_its_input_and_ground_truth(groups, tmp_path):
    out = tmp_path / "g.md"
    assert groups.main(["--quality", str(_fake_quality(tmp_path, groups)), "--methods", "full", "--out", str(out)]) == 0
    res = json.loads(gzip.decompress(out.with_suffix(".json.gz").read_bytes()))
    rows = {(r["group"], r["value"]): r for r in res["restored"]}
    assert rows["all", "all"]["n"] == 6 and rows["race", "White"]["n"] == 3 and rows["race", "Black"]["n"] == 3
    assert rows["all", "all"]["full"]["psnr"]["mean_change"] == [1.0, 1.0, 1.0]
    # face 0 has no IDA in either: left out; its LMD only in the method's: left out too
    assert rows["all", "all"]["full"]["ida"]["n"] == 5 and rows["all", "all"]["full"]["lmd"]["n"] == 5
    assert rows["all", "all"]["full"]["ida"]["mean_change"][0] == pytest.approx(-0.05)
    assert rows["all", "all"]["dlib_found_input"]["found"] == 5
    tone = {r: rows["race", r]["tone"] for r in ("White", "Black")}
    assert tone["White"]["full"]["L"][0] == pytest.approx(0, abs=1e-9)
    assert tone["Black"]["full"]["L"][0] > 2 and tone["Black"]["full"]["ita"][0] > 2  # lighter
    assert tone["Black"]["input"]["L"] == [0.0, 0.0, 0.0]  # the input here is the ground truth
    text = out.read_text()
    assert "| Black | 3 |" in text and "+1.00 [+1.00, +1.00]" in text and "| Asian | 0 | – |" in text


def test_the_report_says_which_method_is_missing(groups, tmp_path, capsys):
    q = _fake_quality(tmp_path, groups)
    with pytest.raises(SystemExit) as e:
        groups.main(["--quality", str(q), "--methods", "no_dgsa", "--out", str(tmp_path / "g.md")])
    assert e.value.code == 2 and "no method(s) no_dgsa" in capsys.readouterr().err


def test_a_report_takes_what_it_does_not_measure_from_earlier_runs(groups, tmp_path):
    """--from: a detector measured now replaces the earlier run's finds for it; the others, the restored faces and
    the training set's make-up come from the earlier JSON, each said with its command and commit."""
    from skimage.data import astronaut

    first = tmp_path / "first.md"
    assert groups.main(["--quality", str(_fake_quality(tmp_path, groups)), "--methods", "full", "--out", str(first)]) == 0
    earlier = json.loads(gzip.decompress(first.with_suffix(".json.gz").read_bytes()))
    fake = {"30_1_0_astronaut.png": {c: False for c in groups.CONDITIONS}}
    earlier.update(found={k: groups.found_table(fake) for k in ("auto", "hog")}, found_n=1, faces="old faces",
                   found_per_face={"auto": fake, "hog": fake}, commit="abc1234",
                   found_commands=["python benchmarks/groups.py --detectors auto", "python benchmarks/groups.py --detectors hog"])
    with gzip.open(tmp_path / "earlier.json.gz", "wt") as fh:
        json.dump(earlier, fh)
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.fromarray(np.ascontiguousarray(astronaut()[20:220, 110:310])).save(faces / "30_1_0_astronaut.png")
    out = tmp_path / "g.md"
    assert groups.main(["--faces", str(faces), "--detectors", "hog", "--from", str(tmp_path / "earlier.json.gz"),
                        "--out", str(out)]) == 0
    res = json.loads(gzip.decompress(out.with_suffix(".json.gz").read_bytes()))
    assert res["found_per_face"]["hog"]["30_1_0_astronaut.png"]["portrait"] is True  # measured now
    assert res["found_per_face"]["auto"] == fake  # taken
    assert res["found_sources"]["auto"] == {"command": "python benchmarks/groups.py --detectors auto", "commit": "abc1234"}
    assert res["found_sources"]["hog"]["command"] == res["command"]
    assert res["restored"] == earlier["restored"] and res["quality"]["name"] == "fake"
    text = out.read_text()
    assert "Measured by `python benchmarks/groups.py --detectors auto` at commit abc1234." in text
    assert f"Taken from `{tmp_path / 'earlier.json.gz'} (abc1234)`" in text and "### `full`: change from the input" in text
    again = tmp_path / "again.md"  # chained: the restored faces still name the run that measured them
    assert groups.main(["--from", str(out.with_suffix(".json.gz")), "--out", str(again)]) == 0
    assert f"Taken from `{tmp_path / 'earlier.json.gz'} (abc1234)`" in again.read_text()
