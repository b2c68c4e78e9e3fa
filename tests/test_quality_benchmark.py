"""``benchmarks/quality.py`` end to end on a tiny astronaut-derived set (random ``tiny`` weights, no shared data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _helpers import load_script
from PIL import Image

pytest.importorskip("skimage.data")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quality():
    return load_script("quality", "benchmarks")


def _hq_folder(quality, folder: Path, n: int = 4, size: int = 32) -> Path:
    for k, img in list(quality.quick_faces(size).items())[:n]:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{k}.png")
    return folder


def test_all_methods_tables_and_plot(quality, tmp_path, capsys):
    from dynface.metrics import mobilenet_v2

    hq = _hq_folder(quality, tmp_path / "faces")
    metrics = "psnr,ssim,fd" if mobilenet_v2.available() else "psnr,ssim"
    out, work = tmp_path / "results", tmp_path / "work"
    rc = quality.main(["--hq", str(hq), "--size", "32", "--model", "preset:tiny", "--steps", "ddim10",
                       "--metrics", metrics, "--batch-size", "4", "--threads", "1",
                       "--out", str(out), "--name", "q", "--work", str(work)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    assert (out / "q.md").is_file() and (out / "q.json").is_file()
    res = json.loads((out / "q.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == list(quality.DEFAULT_METHODS)
    assert res["model"]["random_weights"] and res["data"]["n_faces"] == 4
    for m, r in rows.items():
        assert "error" not in r, (m, r.get("error"))
        assert isinstance(r["mean"]["psnr"], float) and math.isfinite(r["mean"]["psnr"]), m
        assert len(list((work / "restored" / m).glob("*.png"))) == 4
    assert rows["bicubic"]["nfe"] == 0 and rows["restorer_only"]["nfe"] == 0
    for m in ("fixed_start", "no_dsst", "no_dgsa", "single_guide", "full"):
        assert rows[m]["nfe"] > 0, m
    assert rows["fixed_start"]["nfe"] < rows["no_dsst"]["nfe"]
    md = (out / "q.md").read_text()
    assert "random weights" in md and "PSNR ↑" in md and "preset:tiny" in md
    assert f"model default (0.5: the model's ζ = {res['zeta_default']})" in md
    (out / "q.md").write_text("stale")
    assert quality.main(["--render", str(out / "q.json")]) == 0 and (out / "q.md").read_text() == md
    assert quality.main(["--render", str(out / "q_psnr_fd.png" if "fd" in metrics else out / "nope.json")]) == 2
    assert "| full |" in printed
    if "fd" in metrics:
        assert "FD-MobileNetV2 (non-standard stand-in for FID)" in md
        assert all(math.isfinite(r["mean"]["fd"]) for r in rows.values())
        png = out / "q_psnr_fd.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pairs_input_bicubic_is_the_lq_image(quality, tmp_path):
    """--pairs: bicubic's PSNR is exactly the library's PSNR of the LQ images against HQ."""
    from dynface.metrics import psnr

    hq_src = _hq_folder(quality, tmp_path / "faces", n=3)
    pairs = tmp_path / "pairs"
    quality.make_pairs(hq_src, pairs, "gfpgan", 3, 32, None)
    out = tmp_path / "results"
    rc = quality.main(["--pairs", str(pairs), "--model", "preset:tiny", "--methods", "bicubic,restorer_only",
                       "--metrics", "psnr", "--threads", "1", "--out", str(out), "--name", "p"])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "p.json").read_text())
    assert res["data"]["preset"] == "gfpgan" and res["data"]["seed"] == 3 and res["work"] is None
    want = np.mean([psnr(np.asarray(Image.open(pairs / "lq" / f"{k}.png").convert("RGB")),
                         np.asarray(Image.open(pairs / "hq" / f"{k}.png").convert("RGB")))
                    for k in res["data"]["keys"]])  # fmt: skip
    assert res["rows"][0]["mean"]["psnr"] == pytest.approx(want, rel=1e-12)
    assert not (out / "p_psnr_fd.png").exists()  # no FD: no plot, and the markdown says why
    assert "No PSNR-vs-FD plot" in (out / "p.md").read_text()


def test_random_subset_is_seeded_and_links_originals(quality, tmp_path):
    hq = _hq_folder(quality, tmp_path / "faces", n=6)
    a = quality.random_subset(hq, tmp_path / "a", 3, seed=0)
    b = quality.random_subset(hq, tmp_path / "b", 3, seed=0)
    c = quality.random_subset(hq, tmp_path / "c", 3, seed=5)
    names = [sorted(p.name for p in d.iterdir()) for d in (a, b, c)]
    assert len(names[0]) == 3 and names[0] == names[1]
    assert names[0] != names[2]  # another seed, another subset (6 choose 3 = 20 subsets; these two differ)
    for p in a.iterdir():
        assert p.is_symlink() and p.resolve().parent == hq.resolve()


def test_unscored_faces_fail_loudly(quality, tmp_path, monkeypatch, capsys):
    """Issue 11 B2: a restored face that evaluate cannot score makes quality.py exit 1 with a line naming the
    method and the face; the tables are still written with (k/n); --allow-missing accepts it."""
    hq_src = _hq_folder(quality, tmp_path / "faces", n=3)
    pairs = tmp_path / "pairs"
    quality.make_pairs(hq_src, pairs, "gfpgan", 0, 32, None)
    real = quality.restore_all

    def broken(*a, **kw):  # the restorer "writes" one damaged file
        recs = real(*a, **kw)
        (a[7] / f"{a[2][0]}.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        return recs

    monkeypatch.setattr(quality, "restore_all", broken)
    argv = ["--pairs", str(pairs), "--model", "preset:tiny", "--methods", "bicubic", "--metrics", "psnr",
            "--threads", "1", "--out", str(tmp_path / "results"), "--name", "u"]  # fmt: skip
    capsys.readouterr()
    assert quality.main(argv) == 1
    err = capsys.readouterr().err
    first = sorted(p.stem for p in (pairs / "hq").glob("*.png"))[0]
    assert f"error: bicubic: 1 of 3 faces (or sets) could not be scored: {first}: cannot read restored image" in err
    assert "--allow-missing" in err.strip().splitlines()[-1]
    assert "(2/3)" in (tmp_path / "results" / "u.md").read_text()
    assert quality.main([*argv, "--allow-missing"]) == 0


def test_guidance_option_and_paired_comparison_of_two_runs(quality, tmp_path, capsys):
    """``--guidance x0`` reaches the sampler (and the report); ``compare_runs.py --paired`` gives per-face
    differences on the faces both runs scored, equal to the ones computed from the JSONs here."""
    hq = _hq_folder(quality, tmp_path / "faces")
    out, work = tmp_path / "results", tmp_path / "work"
    common = ["--size", "32", "--model", "preset:tiny", "--metrics", "psnr,ssim", "--methods", "full",
              "--batch-size", "4", "--threads", "1", "--out", str(out)]
    assert quality.main(["--hq", str(hq), *common, "--steps", "ddim20", "--name", "a", "--work", str(work), "--keep-work"]) == 0
    assert quality.main(["--pairs", str(work / "pairs"), *common, "--steps", "ddim10", "--guidance", "x0", "--name", "b",
                         "--work", str(tmp_path / "work_b")]) == 0
    a, b = (json.loads((out / f"{n}.json").read_text()) for n in "ab")
    assert (a["guidance"], b["guidance"]) == ("unet", "x0") and "guidance gradient: `x0`" in (out / "b.md").read_text()
    cmp_mod = load_script("compare_runs", "benchmarks")
    assert cmp_mod.main([str(out / "a.json"), str(out / "b.json"), "--paired", str(out / "a.json"),
                         "--out", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "| `a` | default | ddim20 | unet | full |" in text and "| `b` | default | ddim10 | x0 | full |" in text
    fa, fb = a["per_face"]["full"], b["per_face"]["full"]
    d = np.array([fb[k]["psnr"] - fa[k]["psnr"] for k in fa])
    row = next(ln for ln in text.splitlines() if ln.startswith("| `b` |") and "±" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    psnr_cell = cells[1 + [m for m in next(iter(fa.values())) if m not in cmp_mod.PER_FACE_SKIP].index("psnr")]
    mean, rest = psnr_cell.split(" ± ")
    assert float(mean) == pytest.approx(d.mean(), rel=1e-3, abs=1e-6)
    assert float(rest.split(" [")[0]) == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), rel=0.05)
    assert rest.endswith("[4]")


def test_default_metrics_at_small_sizes_skip_niqe_with_the_reason(quality, tmp_path, capsys):
    """quality.py's default metrics include NIQE, which evaluate refuses when asked for below 384 px: every method
    failed at 32-128 px (`make bench` too). It is skipped with evaluate's reason, as a default NIQE is there."""
    hq = _hq_folder(quality, tmp_path / "faces")
    out = tmp_path / "results"
    rc = quality.main(["--hq", str(hq), "--size", "32", "--model", "preset:tiny", "--steps", "ddim10", "--methods",
                       "bicubic", "--metrics", "psnr,niqe", "--threads", "1", "--out", str(out), "--name", "q",
                       "--work", str(tmp_path / "work")])
    assert rc == 0, capsys.readouterr()
    res = json.loads((out / "q.json").read_text())
    assert "error" not in res["rows"][0] and "smaller than 384 px" in res["skipped"]["niqe"]
