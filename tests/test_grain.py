"""Grain matched at the paste-back (dynface.grain, ``restore --grain match``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from dynface.cli import main
from dynface.grain import grain_level, match_grain

HERE = Path(__file__).resolve().parent


def _grainy(shape, sigma, seed=0):
    return np.random.default_rng(seed).normal(0, sigma, shape)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_a_clean_patch_gets_the_grain_around_it(scale):
    """A smooth square pasted into a grainy gray field (a restored face in an old print) ends with the field's grain,
    gray, the same bytes for the same seed; a clean field gets nothing added and the region comes back untouched."""
    n = int(160 * scale)
    field = _grainy((n // int(scale), n // int(scale)), 9.0)
    field = cv2.resize(field, (n, n), interpolation=cv2.INTER_LANCZOS4) if scale > 1 else field
    photo = np.repeat(np.clip(128 + field, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    weight = np.zeros((n, n), np.float32)
    weight[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    pasted = photo.copy()
    pasted[weight > 0] = 128
    out, added = match_grain(pasted, photo, weight, weight < 0.02, scale, seed=3)
    inside, around = weight >= 0.95, weight < 0.02
    target = grain_level(photo, around, scale)
    assert added > 0.8 * target
    assert abs(grain_level(out, inside, scale) - target) < 0.12 * target
    assert np.array_equal(out[around], photo[around])
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert np.array_equal(out, match_grain(pasted, photo, weight, around, scale, seed=3)[0])
    clean = np.full_like(photo, 128)
    same, none = match_grain(clean, clean, weight, around, scale, seed=3)
    assert none == 0.0 and same is clean


def test_grain_level_looks_past_texture():
    """Edges and texture in the region (hair, eyes) count little: the 10 % quantile of the blocks sees the grain."""
    g = _grainy((128, 128), 4.0)
    stripes = 128 + 60 * (np.arange(128)[None, :] // 4 % 2) * (np.arange(128)[:, None] < 96)  # 3/4 of it texture
    a, b = (grain_level(np.clip(x + g, 0, 255), np.ones((128, 128), bool)) for x in (128.0, stripes))
    assert abs(a - b) < 0.25 * a


class _Smoothing:
    """A restorer that returns each face blurred: clean, like a diffusion restorer's output in an old print."""

    size, template_name, name = 64, "utkface64", "smooth"

    def restore(self, faces, seed=0, fidelity=None, return_maps=False):
        imgs = [cv2.GaussianBlur(cv2.resize(np.asarray(f, np.uint8), (64, 64), interpolation=cv2.INTER_AREA), (0, 0), 2)
                for f in faces]
        return SimpleNamespace(images=imgs, records=[{"seed": seed + i} for i in range(len(imgs))], maps={})


def make_smoothing_restorer(*a, **kw):
    return _Smoothing()


def test_restore_grain_match(tmp_path, monkeypatch, capsys):
    """--grain match: the face of a grainy photo is as grainy as the photo around it (its record says how much was
    added), the rest of the photo is untouched; the default leaves it clean; the flag is an output flag."""
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_grain:make_smoothing_restorer")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    small = np.asarray(Image.fromarray(data.astronaut()).resize((224, 224), Image.LANCZOS)).astype(float)
    grainy = np.clip(small + _grainy(small.shape[:2], 10.0)[..., None], 0, 255).astype(np.uint8)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(grainy).save(d / "print.png")
    for grain in ("none", "match"):
        assert main(["restore", "-q", "-i", str(d), "-o", str(tmp_path / grain), "-s", "1", "--grain", grain]) == 0
    recs = {g: json.loads((tmp_path / g / "records" / "print.json").read_text()) for g in ("none", "match")}
    face = recs["match"]["faces"][0]
    assert face["grain_added"] > 3 and "grain_added" not in recs["none"]["faces"][0]
    assert recs["match"]["settings"]["flags"]["grain"] == "match"
    x0, y0, x1, y1 = (int(v) for v in face["bbox"])
    inner = np.zeros(grainy.shape[:2], bool)
    inner[y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 8, x0 + (x1 - x0) // 6 : x1 - (x1 - x0) // 6] = True
    away = np.ones(grainy.shape[:2], bool)  # the photo away from the face
    away[max(0, y0 - 20) : y1 + 20, max(0, x0 - 20) : x1 + 20] = False
    photo_grain = grain_level(grainy, away)
    out = {g: np.asarray(Image.open(tmp_path / g / "restored_imgs" / "print.png")) for g in ("none", "match")}
    assert grain_level(out["none"], inner) < 0.5 * photo_grain
    assert abs(grain_level(out["match"], inner) - photo_grain) < 0.25 * photo_grain
    assert np.array_equal(out["none"][:20, :20], out["match"][:20, :20])  # far from the face: as it was
    assert main(["restore", "-q", "-i", str(d), "-o", str(tmp_path / "none"), "-s", "1", "--grain", "match",
                 "--skip-existing"]) == 0
    assert "other --grain" in capsys.readouterr().err


def test_grain_with_aligned_crops_is_said_to_do_nothing():
    from dynface import jobs

    assert any("--grain" in w for w in jobs.settings_warnings(jobs.RestoreSettings(aligned=True, grain="match")))
    assert not any("--grain" in w for w in jobs.settings_warnings(jobs.RestoreSettings(grain="match")))
