"""White dust and scratches on faces (``dynface.dust``, ``restore --dust``): an old print's dust on the astronaut's
skin is filled in, while a clean face, its catchlights, dark specks (moles) and the photo around the face are left;
the CLI and the aligned path record what was filled."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dynface import dust
from dynface.degrade import add_dust
from dynface.faces import FaceDetector, detect_faces

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def print_():
    """The astronaut enlarged ×2 (a 1024-px print, eye distance ~86 px) and its face."""
    img = np.asarray(Image.fromarray(data.astronaut()).resize((1024, 1024), Image.LANCZOS))
    (face,) = detect_faces(img, FaceDetector())
    return img, face


def _looked_at(face, shape):
    skin, prot, (x0, y0, x1, y1) = dust.face_regions(face, shape)
    m = np.zeros(shape[:2], bool)
    m[y0:y1, x0:x1] = skin & ~prot
    return m, (x0, y0, x1, y1)


def _dust_error(img, face, base, seeds=(0, 1, 2)):
    """Mean error on the dust's pixels on the skin looked at (from ``base``, the print without dust) before and after,
    summed over prints dusted with ``seeds``; and the last print, its dust, what was found and the cleaned print."""
    looked, box = _looked_at(face, img.shape)
    before = after = 0.0
    for s in seeds:
        dusty, alpha = add_dust(base, np.random.default_rng(s), specks=15, scratches=2, region=box, scale=2.0)
        out, (info,) = dust.remove_dust(dusty, [face])
        on = looked & (alpha > 0.1)
        before += np.abs(dusty.astype(int) - base)[on].mean()
        after += np.abs(out.astype(int) - base)[on].mean()
    return before, after, dusty, info, out


def test_dust_on_the_skin_is_filled_in_and_the_rest_kept(print_):
    img, face = print_
    before, after, dusty, info, out = _dust_error(img, face, img)
    assert info["specks"] >= 4 and after < 0.35 * before, (info, before, after)  # measured: 141.7 -> 34.5 levels
    skin, prot, (x0, y0, x1, y1) = dust.face_regions(face, img.shape)
    near = np.zeros(img.shape[:2], bool)  # the skin, and a pixel into the eyes, brows, nose and mouth
    near[y0:y1, x0:x1] = skin
    assert np.array_equal(out[~near], dusty[~near])  # hair, background: as they were (dust there too)
    import cv2

    inner = np.zeros(img.shape[:2], bool)
    inner[y0:y1, x0:x1] = cv2.erode(prot.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # 2 px in
    _, alpha = add_dust(img, np.random.default_rng(2), specks=15, scratches=2, region=(x0, y0, x1, y1), scale=2.0)
    near_dust = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(out[inner & ~near_dust], dusty[inner & ~near_dust])  # eyes with brows, nose, mouth
    assert (inner & (out != dusty).any(-1)).any()  # but a scratch found on the skin is followed in (not dashes)
    assert out is not dusty and dusty.max() == 255  # a copy: the input is not changed


def test_a_clean_face_catchlights_and_moles_are_left(print_):
    img, face = print_
    out, (info,) = dust.remove_dust(img, [face])
    assert out is img and info["specks"] == 0 and info["pixels"] == 0
    # a dark speck (a mole) on the cheek and a white glint in an eye: neither is dust
    marked = img.copy()
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    cx, cy = int((lx + face.landmarks[3][0]) / 2), int((ly + face.landmarks[3][1]) / 2)  # the left cheek
    mole = (slice(cy - 2, cy + 3), slice(cx - 2, cx + 3))
    glint = (slice(int(ry) - 1, int(ry) + 2), slice(int(rx) - 1, int(rx) + 2))
    marked[mole] = 40
    marked[glint] = 255
    out, _ = dust.remove_dust(marked, [face])
    assert (out[mole] == 40).all() and (out[glint] == 255).all()


def test_dust_in_a_grainy_print_is_found_and_the_grain_left(print_):
    img, face = print_
    grain = np.random.default_rng(5).normal(0, 10, img.shape)
    grainy = np.clip(img + grain, 0, 255).astype(np.uint8)
    out, (info,) = dust.remove_dust(grainy, [face])
    assert info["specks"] <= 1 and info["pixels"] < 200  # grain is not dust (of ~24,000 px of skin looked at)
    before, after, *_ = _dust_error(img, face, grainy)  # measured: 143.0 -> 55.8 levels from the grainy print
    assert after < 0.5 * before, (before, after)


def test_face_regions_from_five_points_cover_the_skin_not_the_eyes(print_):
    """Without 68 points (aligned crops, other detectors): an ellipse around eyes and mouth, eyes left out."""
    img, face = print_
    five = type(face)(face.bbox, face.landmarks, face.score, None)
    skin, prot, (x0, y0, x1, y1) = dust.face_regions(five, img.shape)
    for x, y in face.landmarks[:2]:
        assert skin[int(y) - y0, int(x) - x0] and prot[int(y) - y0, int(x) - x0]
    cheek = ((face.landmarks[0] + face.landmarks[3]) / 2).astype(int)
    assert skin[cheek[1] - y0, cheek[0] - x0] and not prot[cheek[1] - y0, cheek[0] - x0]
    assert 0.4 < (skin & ~prot).sum() / max(1, skin.sum()) < 0.9


@pytest.fixture()
def _fake(monkeypatch):
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_restore_cli:make_fake_restorer")
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.usefixtures("_fake")
def test_restore_dust_records_what_was_filled_and_keeps_the_background(tmp_path, print_):
    from dynface.cli import main

    img, face = print_
    looked, box = _looked_at(face, img.shape)
    dusty, alpha = add_dust(img, np.random.default_rng(0), specks=15, scratches=2, region=box, scale=2.0)
    dusty[40:45, 40:45] = 255  # a speck on the background
    src = tmp_path / "print.png"
    Image.fromarray(dusty).save(src)
    out = tmp_path / "out"
    assert main(["restore", "-q", "-i", str(src), "-o", str(out), "-s", "1", "--dust", "--save-maps",
                 "--threads", "1"]) == 0
    rec = json.loads((out / "records" / "print.json").read_text())
    assert rec["settings"]["flags"]["dust"] is True and rec["faces"][0]["dust"]["specks"] >= 5
    photo = np.asarray(Image.open(out / "restored_imgs" / "print.png"))
    assert (photo[40:45, 40:45] == 255).all()  # only faces are cleaned
    filled = np.asarray(Image.open(out / "maps" / "print_00_dust.png"))  # what was filled, in the crop
    assert 0.002 < (filled > 127).mean() < 0.2
    assert main(["restore", "-q", "-i", str(src), "-o", str(tmp_path / "plain"), "-s", "1", "--threads", "1"]) == 0
    plain = tmp_path / "plain"
    rec = json.loads((plain / "records" / "print.json").read_text())
    assert "dust" not in rec["faces"][0] and rec["settings"]["flags"]["dust"] is False

    def white(p):
        return int((np.asarray(Image.open(p)).astype(int).sum(-1) >= 3 * 250).sum())

    # cropped_faces/ shows the face as it came (the dust audit could not see what --dust did); the model got it clean
    assert np.array_equal(np.asarray(Image.open(out / "cropped_faces" / "print_00.png")),
                          np.asarray(Image.open(plain / "cropped_faces" / "print_00.png")))
    assert white(out / "restored_faces" / "print_00.png") < white(plain / "restored_faces" / "print_00.png")


@pytest.mark.usefixtures("_fake")
def test_aligned_crops_are_cleaned_too(tmp_path, print_):
    """An FFHQ-aligned 512-px crop with dust: cleaned on its own pixels from its framing's points."""
    from dynface.cli import main
    from dynface.faces import estimate_affine, template_for, warp_face

    img, face = print_
    crop = warp_face(img, estimate_affine(face.landmarks, template_for("ffhq512", 512)), 512)
    five = type(face)((0.0, 0.0, 512.0, 512.0), template_for("ffhq512", 512))
    looked, box = _looked_at(five, crop.shape)
    dusty, _ = add_dust(crop, np.random.default_rng(1), specks=15, scratches=2, region=box, scale=1.5)
    src = tmp_path / "crop.png"
    Image.fromarray(dusty).save(src)
    out = tmp_path / "out"
    assert main(["restore", "-q", "-i", str(src), "-o", str(out), "--aligned", "--input-template", "ffhq512",
                 "--dust", "--threads", "1"]) == 0, sys.stderr
    rec = json.loads((out / "records" / "crop.json").read_text())
    assert rec["faces"][0]["dust"]["specks"] >= 3
