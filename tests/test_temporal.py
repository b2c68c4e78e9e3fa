"""dynface.temporal: a video face's crop fused with its crops in the frames before (closed forms on synthetic crops)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from dynface import temporal


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, 128 px: texture and edges, so that the noise estimate cannot lean on flat areas."""
    import cv2

    return cv2.resize(np.ascontiguousarray(data.astronaut()[20:240, 160:380]), (128, 128), interpolation=cv2.INTER_AREA)


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(img.astype(np.float64) + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


def test_the_pair_noise_is_the_noise_of_each_crop(face):
    """Two crops of a still face under independent noise σ: half the median local squared difference is σ² (to the
    spread of a median of chi-squares over a 5x5x3 window, and the rounding's 1/12)."""
    for sigma in (4.0, 10.0, 20.0):
        a, b = _noisy(face, sigma, 1), _noisy(face, sigma, 2)
        got = np.sqrt(temporal.pair_noise(temporal._local_sq_diff(a, b)))
        assert got == pytest.approx(sigma, rel=0.08), sigma


@pytest.mark.parametrize("k", [1, 4, 8])
def test_a_still_face_loses_its_noise_as_the_square_root_of_the_frames(face, k):
    """Averaging 1 + K crops under independent noise leaves σ / sqrt(1 + K); the weights (below 1 where a window's
    noise happens to be high) may keep a little more: within 15 %."""
    sigma = 12.0
    crops = [_noisy(face, sigma, s) for s in range(k + 1)]
    fused, info = temporal.fuse(crops[0], crops[1:])
    err = (fused.astype(np.float64) - face)[8:-8, 8:-8]  # clipping at 0/255 aside: the face's inside
    ideal = sigma / np.sqrt(1 + k)
    assert ideal * 0.9 < err.std() < ideal * 1.15
    assert info["fused"] == k and info["noise"] == pytest.approx(sigma, rel=0.1)
    assert info["weight"] > 0.85 * k  # nearly every pixel takes every neighbour


def test_what_moved_is_taken_from_the_current_frame_alone(face):
    """A mouth that opened: a patch of the neighbours differs from the current crop by 5 σ. There the fused crop is the
    current one (no ghost of the frames before); elsewhere it is fused."""
    sigma = 8.0
    cur = _noisy(face, sigma, 0)
    moved = face.astype(np.int16).copy()
    moved[80:110, 40:90] += 40
    before = [_noisy(np.clip(moved, 0, 255).astype(np.uint8), sigma, s) for s in (1, 2, 3, 4)]
    fused, _ = temporal.fuse(cur, before)
    inside = (slice(84, 106), slice(44, 86))  # the patch, away from its edge (the 5-px window straddles it)
    assert np.abs(fused[inside].astype(np.float64) - cur[inside]).mean() < 0.5
    outside = (slice(8, 60), slice(8, -8))
    assert (fused[outside].astype(np.float64) - face[outside]).std() < 0.6 * sigma  # fused there: ~σ/√5


def test_crops_of_another_face_are_not_fused(face):
    """Two crops that differ beyond any noise (MAX_NOISE): another face, not fused, returned as it came."""
    other = np.ascontiguousarray(face[::-1, ::-1])
    cur = _noisy(face, 5.0, 0)
    fused, info = temporal.fuse(cur, [_noisy(other, 5.0, 1)])
    assert info == {"fused": 0, "noise": None, "weight": 0.0, "pair_noise": None} and fused is cur


def test_tracks_follow_a_face_by_its_box_and_start_anew_at_a_cut(face):
    """Each face keeps its own frames (two faces side by side are not mixed), a face that appears starts a track,
    and another face at the same place (a cut) is not fused with the one before; frames=0 changes nothing."""
    tr = temporal.FaceTracks(frames=2)
    a_box, b_box = (0, 0, 100, 100), (200, 0, 300, 100)
    other = np.ascontiguousarray(face[::-1, ::-1])
    infos = []
    for s in range(3):
        _, how = tr.fuse([a_box, b_box], [_noisy(face, 6, 10 + s), _noisy(other, 6, 20 + s)])
        infos.append([h["fused"] for h in how])
    assert infos == [[0, 0], [1, 1], [2, 2]]  # up to frames=2 neighbours, each face its own
    _, how = tr.fuse([(5, 5, 105, 105)], [_noisy(other, 6, 30)])  # the cut: b's face where a's was
    assert how[0]["fused"] == 0 and len(tr.tracks[0].crops) == 1  # its history starts anew
    _, how = tr.fuse([(5, 5, 105, 105)], [_noisy(other, 6, 31)])
    assert how[0]["fused"] == 1
    _, how = tr.fuse([(150, 150, 250, 250)], [_noisy(face, 6, 32)])  # somewhere else: a new face
    assert how[0]["fused"] == 0
    off = temporal.FaceTracks(frames=0)
    crops = [_noisy(face, 6, 40)]
    for _ in range(2):
        got, how = off.fuse([a_box], crops)
        assert got[0] is crops[0] and how[0]["fused"] == 0


def test_a_face_that_turned_is_not_blended_with_how_it_was(face):
    """After three still frames the face moves 3 px across the crop at once (a head turning, a cut to a similar
    face). The pair's own noise estimate takes the change for noise (σ² 119 against 36); per pixel, the frames before
    are still left out where the face changed (edges) and fused where it did not (flat skin), so the result is nearer
    the face as it is now than the frame alone; held to NOISE_GROWTH times the face's noise so far, nearer still
    (measured: 4.65 alone, 4.16 as a pair, 3.91 with the face's noise)."""
    sigma = 6.0
    tr = temporal.FaceTracks(frames=4)
    box = (0, 0, 100, 100)
    for s in range(3):
        tr.fuse([box], [_noisy(face, sigma, s)])
    now = np.roll(face, 3, axis=1).astype(np.float64)
    turned = _noisy(np.roll(face, 3, axis=1), sigma, 9)
    before = list(tr.tracks[0].crops)[::-1]
    err = {"alone": np.abs(turned - now)[8:-8, 8:-8].mean()}
    for name, noise in (("pair", None), ("memory", float(np.median(tr.tracks[0].noise)))):
        fused, info = temporal.fuse(turned, before, noise=noise)
        err[name] = np.abs(fused - now)[8:-8, 8:-8].mean()
    assert info["pair_noise"] > 3 * sigma**2  # the change, taken for noise by the pair
    got, _ = tr.fuse([box], [turned])
    assert np.array_equal(got[0], fused)  # what the track does
    assert err["memory"] < err["pair"] < err["alone"] and err["memory"] < 0.9 * err["alone"], err


def test_a_face_larger_than_the_model_is_followed_not_fused(face):
    """MIN_SCALE: a face whose crop shrinks it is returned as it came (its info says ``larger``), and its track starts
    anew once it is small enough."""
    tr = temporal.FaceTracks(frames=4)
    box = (0, 0, 100, 100)
    crops = [_noisy(face, 6, s) for s in range(4)]
    got, how = tr.fuse([box], [crops[0]], [0.5])
    got, how = tr.fuse([box], [crops[1]], [0.5])
    assert got[0] is crops[1] and how[0]["fused"] == 0 and how[0]["larger"]
    tr.fuse([box], [crops[2]], [1.2])
    _, how = tr.fuse([box], [crops[3]], [1.2])
    assert how[0]["fused"] == 1  # the small frames' crop only


def test_the_job_layer_default_is_the_modules():
    from dynface.jobs import RestoreSettings

    assert RestoreSettings().fuse_frames == temporal.FUSE_FRAMES


def test_each_face_keeps_its_id_whatever_comes_in_beside_it(face):
    """FaceTracks.ids: a face keeps the id it got when it appeared (its seed in every frame), also when another face
    comes in on its left; a face that appears gets the smallest id no face in sight has (a lone face lost and found
    again is 0 again). With frames=0 faces are followed all the same."""
    right, left, mid = (200, 0, 300, 100), (0, 0, 100, 100), (100, 0, 200, 100)
    for frames in (0, 4):
        tr = temporal.FaceTracks(frames=frames)
        tr.fuse([right], [_noisy(face, 6, 1)])
        assert tr.ids == [0]
        tr.fuse([left, right], [_noisy(face, 6, 2), _noisy(face, 6, 3)])
        assert tr.ids == [1, 0]
        tr.fuse([left], [_noisy(face, 6, 4)])  # the right one leaves ...
        tr.fuse([left, mid, right], [_noisy(face, 6, 5), _noisy(face, 6, 6), _noisy(face, 6, 7)])
        assert tr.ids == [1, 0, 2]  # ... and newcomers take the smallest free ids
        tr.fuse([], [])
        tr.fuse([right], [_noisy(face, 6, 8)])
        assert tr.ids == [0]
