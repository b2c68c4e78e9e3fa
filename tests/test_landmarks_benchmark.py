"""``benchmarks/landmarks.py``: the 5 points' error and the report, on the astronaut (no shared data)."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import load_script
from PIL import Image


@pytest.fixture(scope="module")
def lm():
    load_script("groups", "benchmarks")  # landmarks.py builds its photos with groups.py's
    return load_script("landmarks", "benchmarks")


def test_point_error_is_the_mean_distance_in_eye_distances(lm):
    ref = np.zeros((68, 2))
    ref[36:42] = (100.0, 100.0)  # the left eye's points
    ref[42:48] = (140.0, 100.0)  # the right eye's: 40 px apart
    moved = ref + (4.0, 3.0)  # every point 5 px off
    assert lm.point_error(moved, ref) == pytest.approx(5 / 40)
    assert lm.point_error(ref, ref) == 0


def test_a_face_in_each_photo_and_the_report(lm, tmp_path):
    from skimage.data import astronaut

    faces = tmp_path / "faces"
    faces.mkdir()
    Image.fromarray(np.ascontiguousarray(astronaut()[20:220, 110:310])).save(faces / "30_1_1_astronaut.png")
    out = tmp_path / "lm.md"
    assert lm.main(["--faces", str(faces), "--n", "1", "--out", str(out)]) == 0
    text = out.read_text()
    rows = {tuple(c.strip() for c in ln.split("|")[1:4]): ln.split("|")[5].strip() for ln in text.splitlines()
            if ln.startswith("| ") and not ln.startswith("| photo")}
    assert rows["portrait", "hog", "as they are"] == "0.000"  # the reference itself
    assert {(c, "hog", lv) for c in lm.CONDITIONS for lv in ("as they are", "stretched")} <= set(rows)
    header = next(ln for ln in text.splitlines() if ln.startswith("| photo"))
    assert float(rows["dark", "hog", "stretched"]) < 0.05 and header.endswith("| Black |")  # the face's race label
