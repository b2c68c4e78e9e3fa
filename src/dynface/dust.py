"""Dust and scratches on faces: the white specks and thin white lines of old prints, found and filled in before a
face is aligned and restored (``restore --dust``).

The restorer was trained on blur, noise, downsampling and JPEG, not on dust: a white speck on a cheek is a face
detail to it, and comes back as one. Old prints show dust on the negative as white specks and scratches through the
emulsion as white lines; both are thin, much brighter than the skin around them, and without the skin's shading.

Per face, at the photo's own resolution (before the face is scaled to the model), in the face's **skin** (from its
landmarks: the jaw line up to the brows and :data:`FOREHEAD` eye distances of forehead above them, kept :data:`INSET`
off the face's outline; :func:`face_regions`) but not its eyes with their brows and lids (catchlights, lid creases
and glints are thin and white too), its nose with its bridge (highlights) or its mouth (teeth):

1. luma, smoothed by a Gaussian of :data:`SMOOTH_PX` (a pixel's grain evens out, a speck a pixel across does not),
   minus its median over a window of about a fifth of the eye distance (:func:`median_window`): what is thinner than
   half the window and brighter than around it stands out, the face's shading and features do not;
2. the grain's level is the median absolute value of that difference over the skin (×1.4826: a robust σ);
3. a speck or line is a connected set of pixels more than :data:`LOW_SIGMAS` σ (at least :data:`LOW_LEVELS`)
   above the median that holds a **core**: a pixel more than :data:`HIGH_SIGMAS` σ (at least :data:`HIGH_LEVELS`)
   above the median, brighter than the brightest the face itself is nearby (the median's maximum over twice the
   window) by :data:`ABOVE_SIGMAS` σ or :data:`ABOVE_LEVELS` (on pale skin at most :data:`ABOVE_HEADROOM` of the
   way to white), brighter than :data:`SKIN_PERCENTILE` % of the skin (a wrinkle's lit ridge, a lit strand of hair
   are not) and :data:`WHITE_SHARE` of the way from the skin's median to white (a print's dust is near white, skin's
   highlights seldom are); a set larger than :data:`MAX_AREA` of the skin is lighting; dark specks are left (moles);
   a set goes on into the eyes, brows, nose and mouth where it stays as strong as a core's and thin (gone in an
   opening of :data:`THIN_PX` or half the window; an eye's white, teeth are not): a scratch is not cut into dashes;
4. what was found, grown by a pixel (a speck's soft edge), is filled from around it (OpenCV's ``inpaint``, Telea's
   method).

Measured (``benchmarks/dust.py``, ``docs/results/dust.md``; ``tests/test_dust.py``; a helper's audit): where it acts
it fills specks, blotches and thin scratches on open skin well; it misses much of what is faint or soft (fibres a
pixel wide, soft specks, dust in heavy grain: σ 10 on the astronaut, the dust's error fell to 39 % instead of 25 %)
and nearly all of it on small faces (60 px); a scratch crossing the eyes, nose or mouth is followed in where it is
strong there, else it stays there as dashes; on clean faces it fills what looks like dust (watermark letters, a glint on glasses, a
skin highlight): 38 of 298 UTKFace faces at their own 200 px, 31 px a face on average.

Only faces are cleaned: elsewhere a white speck may be a button, a star or a letter. What was filled is counted in
the face's record (``dust``) and, with ``--save-maps``, shown in ``maps/<face>_dust.png``; the photo around the faces
keeps its dust, and ``cropped_faces/`` shows the faces as they came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["median_window", "face_regions", "dust_mask", "remove_dust"]

HIGH_SIGMAS, HIGH_LEVELS = 4.0, 20.0  # a speck's core: this many grain σ, and levels, above the median at least
LOW_SIGMAS, LOW_LEVELS = 3.0, 12.0  # its extent
ABOVE_SIGMAS, ABOVE_LEVELS = 3.0, 20.0  # ... and above the brightest the face is nearby
ABOVE_HEADROOM = 0.5  # ... or, on pale skin, half-way from it to white
SKIN_PERCENTILE = 90.0  # ... and brighter than this percentile of the skin's luma
SMOOTH_PX = 0.8  # the Gaussian σ (px) luma is smoothed with before looking
WHITE_SHARE = 0.45  # a core is at least this share of the way from the skin's median to white
FOREHEAD = 0.45  # eye distances of forehead above the brows looked at (more reaches a fringe's hair)
INSET = 0.1  # eye distances the skin is kept off the face's outline
THIN_PX = 5  # a line followed into the eyes, brows, nose and mouth is gone in an opening of this side (or half the
# median window)
MAX_AREA = 0.03  # a larger bright set (of the skin's area) is lighting, not dust


def median_window(eye_distance: float) -> int:
    """The odd median window (px) for a face with this eye distance: about a fifth of it, 5 to 31."""
    k = int(np.clip(round(eye_distance / 5), 5, 31))
    return k | 1


def face_regions(face: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """(skin, protected, box) of ``face`` (a :class:`dynface.faces.Face`) in a photo of ``shape``: boolean masks of
    the window ``box`` = (x0, y0, x1, y1) of the photo. Skin: the hull of the jaw line and the brows with a forehead
    of 0.6 eye distances above the brows (68 points), or an ellipse around eyes and mouth (5 points). Protected: eyes,
    brows and mouth, grown by about a tenth of the eye distance."""
    import cv2

    h, w = shape[:2]
    ed = max(1.0, float(face.eye_distance))
    p5 = np.asarray(face.landmarks, dtype=np.float64)
    eyes_mid = (p5[0] + p5[1]) / 2
    mouth_mid = (p5[3] + p5[4]) / 2
    up = eyes_mid - mouth_mid  # the face's "up", eye distance-ish long
    up = up / max(1e-6, float(np.linalg.norm(up)))
    pts68 = getattr(face, "landmarks68", None)
    if pts68 is not None:
        p = np.asarray(pts68, dtype=np.float64)
        hull_pts = np.concatenate([p[0:17], p[17:27], p[17:27] + up * FOREHEAD * ed])
    else:
        c = (eyes_mid + mouth_mid) / 2 + up * 0.15 * ed
        ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        side = np.array([-up[1], up[0]])
        hull_pts = c + np.outer(np.cos(ang), side * 1.05 * ed) + np.outer(np.sin(ang), up * 1.45 * ed)
    pad = int(np.ceil(0.1 * ed)) + 2
    x0, y0 = (np.floor(hull_pts.min(axis=0)) - pad).astype(int)
    x1, y1 = (np.ceil(hull_pts.max(axis=0)) + pad).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    box = (int(x0), int(y0), int(max(x0, x1)), int(max(y0, y1)))
    size = (box[3] - box[1], box[2] - box[0])
    skin = np.zeros(size, np.uint8)
    prot = np.zeros(size, np.uint8)
    if 0 in size:
        return skin.astype(bool), prot.astype(bool), box
    off = np.array([box[0], box[1]], dtype=np.float64)

    def poly(a: np.ndarray) -> np.ndarray:
        return np.round((a - off) * 16).astype(np.int32)  # 4 fractional bits

    cv2.fillConvexPoly(skin, cv2.convexHull(poly(hull_pts)), 1, lineType=cv2.LINE_8, shift=4)
    inset = max(1, int(round(INSET * ed)))  # off the face's outline (hair, a bright background)
    skin = cv2.erode(skin, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inset + 1, 2 * inset + 1)))
    grow = max(1, int(round(0.05 * ed)))
    if pts68 is not None:
        # each eye with its brow and the lid between (lid creases and glints are thin and bright), the mouth, the
        # nose with its bridge (its highlights)
        for part in (np.concatenate([p[36:42], p[17:22]]), np.concatenate([p[42:48], p[22:27]]), p[48:60], p[27:36]):
            cv2.fillConvexPoly(prot, cv2.convexHull(poly(part)), 1, shift=4)
        cv2.circle(prot, tuple(poly(p[30][None])[0]), int(round(0.12 * ed * 16)), 1, -1, shift=4)
    else:
        for eye in p5[:2]:  # and its brow above it
            cv2.ellipse(prot, tuple(poly((eye + up * 0.2 * ed)[None])[0]),
                        (int(round(0.35 * ed * 16)), int(round(0.4 * ed * 16))),
                        float(np.degrees(np.arctan2(up[1], up[0]))) + 90, 0, 360, 1, -1, shift=4)
        cv2.circle(prot, tuple(poly(p5[2][None])[0]), int(round(0.15 * ed * 16)), 1, -1, shift=4)  # nose tip
        mc, half = mouth_mid, float(np.linalg.norm(p5[4] - p5[3])) / 2 + 0.1 * ed
        cv2.ellipse(prot, tuple(poly(mc[None])[0]), (int(round(half * 16)), int(round(0.3 * ed * 16))),
                    float(np.degrees(np.arctan2(p5[4][1] - p5[3][1], p5[4][0] - p5[3][0]))), 0, 360, 1, -1, shift=4)
    prot = cv2.dilate(prot, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return skin.astype(bool), prot.astype(bool), box


def dust_mask(luma: np.ndarray, skin: np.ndarray, protected: np.ndarray, window: int) -> tuple[np.ndarray, dict]:
    """Where ``luma`` (float, 0–255) has dust within ``skin`` and outside ``protected`` (the module's steps 1–3),
    grown by a pixel; and what was found: {"specks": sets found, "pixels": to fill, "grain_sigma": step 2's σ}."""
    import cv2

    raw = luma.astype(np.float32)
    luma = cv2.GaussianBlur(raw, (0, 0), SMOOTH_PX)
    med = cv2.medianBlur(np.clip(np.round(luma), 0, 255).astype(np.uint8), window)
    # the brightest the face itself is around each pixel: the median (specks and lines gone) at its highest nearby
    top = cv2.dilate(med, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * window + 1, 2 * window + 1)))
    top = top.astype(np.float32)
    diff = luma - med.astype(np.float32)
    where = skin & ~protected
    if not where.any():
        return np.zeros(luma.shape, bool), {"specks": 0, "pixels": 0, "grain_sigma": None}
    sigma = 1.4826 * float(np.median(np.abs(diff[where])))
    skin_top = float(np.percentile(luma[where], SKIN_PERCENTILE))  # dust is whiter than the skin; hair is not
    skin_mid = float(np.median(raw[where]))
    white = raw > skin_mid + WHITE_SHARE * (255.0 - skin_mid)  # near white: a print's dust; skin's highlights are not
    # above the face nearby by ABOVE_LEVELS (or the grain's ABOVE_SIGMAS), but on pale skin by at most half of what
    # is left to white: dust cannot be brighter than white
    above = np.minimum(max(ABOVE_LEVELS, ABOVE_SIGMAS * sigma), ABOVE_HEADROOM * (255.0 - top))
    high = where & (diff > max(HIGH_LEVELS, HIGH_SIGMAS * sigma)) & white & (luma - top > above) & (luma > skin_top)
    low = where & (diff > max(LOW_LEVELS, LOW_SIGMAS * sigma))  # a set's extent
    # ... and on into the eyes, brows, nose and mouth where it is as strong and thin (a scratch found on the cheek
    # goes on through the brow: cut there, it stayed as dashes; dust audit). Thin: gone in an opening, as a line is and
    # an eye's white or a row of teeth is not; a set with no core on the skin is never filled
    strong = diff > max(HIGH_LEVELS, HIGH_SIGMAS * sigma)
    thin = max(THIN_PX, window // 2 | 1)
    wide = cv2.morphologyEx(strong.astype(np.uint8), cv2.MORPH_OPEN, np.ones((thin, thin), np.uint8))
    low |= skin & protected & strong & ~wide.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(low.astype(np.uint8), connectivity=8)
    cores = np.zeros(n, bool)
    cores[np.unique(labels[high])] = True
    cores[0] = False
    cores &= stats[:, cv2.CC_STAT_AREA] <= MAX_AREA * skin.sum()
    found = cores[labels]
    grown = cv2.dilate(found.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & skin  # the soft edge
    return grown, {"specks": int(cores.sum()), "pixels": int(grown.sum()), "grain_sigma": round(sigma, 2)}


def remove_dust(img: np.ndarray, faces: Sequence[Any],
                masks: list | None = None) -> tuple[np.ndarray, list[dict]]:
    """``img`` (RGB uint8) with the dust of each face's skin filled in (a copy; ``img`` itself when none was found),
    and per face what was found (:func:`dust_mask`'s counts). ``masks``: a list that gets, per face, ``(box, mask)``:
    what was filled, a boolean mask of the photo's window ``box`` = (x0, y0, x1, y1)."""
    import cv2

    out = img
    found = []
    for f in faces:
        skin, prot, box = face_regions(f, img.shape)
        x0, y0, x1, y1 = box
        mask = np.zeros(skin.shape, bool)
        info: dict = {"specks": 0, "pixels": 0, "grain_sigma": None}
        if skin.any():
            region = out[y0:y1, x0:x1]
            luma = region.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            mask, info = dust_mask(luma, skin, prot, median_window(f.eye_distance))
            if info["pixels"]:
                if out is img:
                    out = img.copy()
                out[y0:y1, x0:x1] = cv2.inpaint(np.ascontiguousarray(region), mask.astype(np.uint8), 3,
                                                cv2.INPAINT_TELEA)
        found.append(info)
        if masks is not None:
            masks.append((box, mask))
    return out, found
