"""Faces in whole photographs: detection with 5 landmarks, alignment, paste-back.

**Detection** uses dlib (models from the ``face-recognition-models`` package, found without importing it):
the HOG detector (``get_frontal_face_detector``; its weak detections are double-checked by the CNN detector), with
the CNN's help where HOG falls short (``kind="auto"``, the default of ``dynface restore``: HOG's candidates just below
its threshold, and the whole photo where HOG finds none) or the CNN MMOD detector alone (``kind="cnn"``, slower,
better on turned faces). It runs on a copy whose longest side is at most :data:`DETECT_MAX_SIDE`, upsampled
1× or 2× when that copy is small, so faces down to ~20 px are found in photos up to 0.3 MP, ~40 px up to 2000 px
(:func:`smallest_face`; in a larger photo the copy's reduction raises it: ~140 px in a 7000-px scan, which
``--detect-side`` lowers; a larger copy is searched besides the default one, and the faces merged:
:meth:`FaceDetector.scales`); each copy is searched again padded at its edges, for faces cut by the photo's edge
(``edges``); the 68-point shape predictor then runs at
full resolution on each face region and is reduced to the FFHQ / facexlib 5-point convention, in image
coordinates: left eye centre (mean of points 36–41, the eye on the image's left), right eye centre
(42–47), nose tip (30), left mouth corner (48), right mouth corner (54). Faces are numbered left to right.

**Templates** (:func:`template_for`): where those five points go in an aligned crop.

* ``ffhq512``: the FFHQ 512 template of GFPGAN / CodeFormer (facexlib), used by 512-px priors.
* ``utkface64``: the geometry of the embedded 64-px prior's training data (UTKFace "aligned & cropped" 200×200
  crops, resized whole to 64×64). It was *derived* from those crops with ``benchmarks/derive_template.py``:
  the detector above ran on every training crop (each padded by 25 % with edge replication so that the face
  is not cut by the image border), detections whose points lay more than 4 robust standard deviations
  (1.4826·MAD) from the per-coordinate median were dropped, the rest were averaged per coordinate, and the
  mean was mapped from 200 px to 64 px with pixel centres kept (``p64 = (p200 + 0.5)·64/200 − 0.5``). The
  numbers, the counts and the spread live in ``dynface/data/templates.json``.

A template for another size is scaled the same way (pixel centres kept).

**FFHQ's own crop** (:func:`ffhq_recipe_affine`, ``alignment="ffhq"``, the default for ``ffhq512`` models):
FFHQ itself was not cropped with a fixed 5-point template but by the NVlabs ``ffhq-dataset`` script from
dlib's 68 points — exactly the points found here. From the eye centres and the mouth corners it builds an
oriented square (``x`` along the eyes corrected by the eye→mouth direction, half-side
``max(2·|eye→eye|, 1.8·|eye→mouth|)``, centre ``eye_avg + 0.1·eye→mouth``) and maps it onto the output
(``quad + 0.5`` onto the pixel edges). Recomputing that square reproduces the framing the 512-px prior
was trained on, where the facexlib template (fitted to RetinaFace's points, not dlib's) puts dlib's eye
centres a few pixels off. ``alignment="template"`` keeps the template fit.

**Alignment**: a similarity transform from the 5 points to the template (``cv2.estimateAffinePartial2D``
with LMEDS, as facexlib; least squares if that fails), applied with ``cv2.warpAffine`` on the face's region
only (pre-shrunk with area averaging when the face is much larger than the crop, so no aliasing), with a
constant gray (facexlib's (135, 133, 132)) or reflected border.

**Paste-back** (:func:`paste_face`): the restored face is warped back into the (upscaled) photo with the
inverse transform; the blend mask is the warped crop square, eroded and Gaussian-blurred (edge width
√area / 20, as facexlib) so neither the crop's rectangle nor a colour difference shows as a seam. All of it
happens in the face's bounding box, so memory does not grow with the photo.

:func:`restore_photo` does the whole job for one photo: detect, align, restore every face in ONE call of the
restorer (``restorer.restore(crops, seed=, fidelity=, return_maps=)``), upscale the background (Lanczos, or
a ``bg_upsampler`` callable), paste back, optionally draw boxes. Its two halves, :func:`prepare_photo` (detect,
align) and :func:`finish_photo` (upscale, paste back, records), let the job layer restore the faces of several
photos in shared restorer calls.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .detail import check_detail_mode, keep_detail
from .imaging import as_rgb_uint8, lanczos_resize

FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float64,
)
DETECT_MAX_SIDE = 2000  # detection runs on a copy whose longest side is at most this
EDGE_PAD = 0.1  # the edge search pads the detection copy by this share of its longest side (FaceDetector.edges)
EDGE_NEAR = 0.25  # ... and keeps the faces it finds within this share of their box's side of the photo's edge
WEAK_SCORE = -1.0  # "auto": HOG's candidates scoring from here up to 0 are kept where the CNN finds a face there
WEAK_MOST = 8  # ... the best this many of them in each view of the photo (each check: ~0.1-0.2 s)
WEAK_MOST_FOUND = 3  # ... or this many where HOG found a face in that view
WEAK_OVERLAP = 0.2  # ... and one overlapping a face kept by more than this share of the smaller box is left
BORDER_VALUE = (135, 133, 132)  # facexlib's constant border colour
TEMPLATES_JSON = Path(__file__).parent / "data" / "templates.json"
_LOCK = threading.Lock()


class FaceError(RuntimeError):
    """Detection could not run (missing dlib or its model files)."""


# ------------------------------------------------------------------------------------------ dlib models
def dlib_model_path(filename: str) -> Path:
    """Path of one of face-recognition-models' files, found without importing the package (its __init__
    needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError("the face-recognition-models package is not installed (pip install face-recognition-models)")
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not p.exists():
        raise FaceError(f"dlib model file missing: {p}")
    return p


@lru_cache(maxsize=4)
def _dlib_obj(kind: str):
    try:
        import dlib
    except ImportError as e:  # pragma: no cover
        raise FaceError("dlib is not installed (pip install dlib-bin)") from e
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))
    if kind == "sp68":
        return dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------ detection
@dataclass
class Face:
    """One detected face, in the coordinates of the photo it was found in."""

    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose tip, left mouth corner, right mouth corner
    score: float = 0.0
    landmarks68: np.ndarray | None = None

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2

    def to_record(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "landmarks5": np.round(self.landmarks, 2).tolist(),
            "eye_distance": round(self.eye_distance, 2),
        }


def landmarks68_to_5(pts: np.ndarray) -> np.ndarray:
    """dlib/iBUG 68 points → the FFHQ/facexlib 5 (left eye, right eye, nose tip, mouth left, mouth right)."""
    pts = np.asarray(pts, dtype=np.float64)
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


def _auto_upsample(h: int, w: int) -> int:
    n = h * w
    return 2 if n <= 300_000 else 1 if n <= 4_200_000 else 0


def smallest_face(w: int, h: int, max_side: int = DETECT_MAX_SIDE, upsample: int | None = None) -> int:
    """About the smallest face (box side, in photo pixels) :class:`FaceDetector` finds in a ``w`` x ``h`` photo: dlib's
    HOG window is 80 px, halved by each upsampling of the detection copy, which is reduced to ``max_side``."""
    f, _, up = FaceDetector(max_side=max_side, upsample=upsample).detection_copy(w, h)
    return round(80 / 2**up / f)


class FaceDetector:
    """dlib face detector + 68-point landmarks, reduced to 5 points.

    kind: "hog" (default), "cnn", or "auto": HOG with two looks by the CNN detector. (1) ``weak``: HOG's candidates
    scoring from ``weak`` (:data:`WEAK_SCORE`) up to ``min_score``, the best :data:`WEAK_MOST` of them
    (:data:`WEAK_MOST_FOUND` where HOG found a face: a portrait's near misses are its background's), are kept
    where the CNN finds a face in their region (resized so the face is ~90 px: ~0.2 s each), unless they overlap a
    face kept by more than :data:`WEAK_OVERLAP` (HOG finds a face again, shifted, among its near misses). Small,
    soft faces (a group photo's) score there: in the ``small`` photos of ``benchmarks/groups.py`` (48 px, blur σ
    0.8, JPEG 60) HOG found 87.2 % of 1,201 UTKFace val faces (Black faces 82.1 %), "auto" 99.1 % (Black faces
    99.2 %; ``docs/results/groups.md``). In 9 photos of people and 19 of skimage's pictures, of 216 near misses the
    CNN confirmed two: the face in ``camera``, which HOG missed, and a face HOG had found, shifted (left by the
    overlap rule). Cost: detecting those 24 pictures took 32.5 s without the look and 41.6 s with it, most of it on
    the pictures without a face (a texture's many candidates: at most :data:`WEAK_MOST` checks of ~0.1 s). None: off. (2) Where no face is kept from HOG's
    candidates, the CNN on the whole photo, on a copy at most :data:`CNN_SIDE` px long, not upsampled (faces
    from about a tenth of the photo's longer side, 80 px in a small one; 1–4 s on 2 CPU cores). HOG misses faces the
    CNN finds in blurred, noisy, dark photos, more often dark-skinned ones: on 1,201 UTKFace val faces in 400-px
    photos HOG missed 3.8 % of old prints (Black faces 6.5 %) and 5.8 % of underexposed ones, "auto" none and 0.8 %
    (``benchmarks/groups.py``, ``docs/results/groups.md``); the CNN on every photo would take ×10–70 HOG's time. upsample: pyramid upsampling of the detection copy (None: 2 for up to
    0.3 MP, 1 up to 4.2 MP, else 0). max_side: longest side of the detection copy. min_score: HOG/CNN
    confidence threshold. min_eye_dist: faces with a smaller eye distance (px, in the photo) are dropped.
    verify_below: HOG detections scoring below this are checked by the CNN detector on the face's region
    (resized so the face is ~90 px; ~0.2 s each) and dropped if it finds no face there. HOG fires weakly on
    face-like patterns (skimage's astronaut: the mission patch, score ≈ 0.05–0.15), while real faces that
    score that low are rare (≈ 2 % of UTKFace validation faces below 0.15) and the CNN confirms them.
    None disables the check. look (default on): "auto"'s CNN look at the whole photo (videos leave it out: seconds a
    frame). turned: also search the photo turned a quarter each way (faces lying sideways).
    edges (default on): also search each copy padded on every side by :data:`EDGE_PAD` of its longest side (edge
    replicated) and add the faces centred in the photo that the plain search missed. The detector's window must
    lie inside the image it scans, so a face cut by the photo's edge was seldom found: on 39 UTKFace val faces ×2,
    cut through on each side by 10/20/30/40 % of the photo, the plain search found 154/117/43/0 of 156, with the
    edge search 156/147/117/65, and no face more elsewhere (9 whole photos: the same faces; none on 8 pictures
    without one); detection took ×2.3 as long (``benchmarks/edge_faces.py``, ``docs/results/edge_faces.md``).
    The faces the plain search finds are kept as it finds them. The CNN detector finds most cut faces by itself (14
    of 24 such cases at 30–40 % cuts, 16 with the edge search, which made its detection ×2.5 as long).
    """

    def __init__(
        self,
        kind: str = "hog",
        upsample: int | None = None,
        max_side: int = DETECT_MAX_SIDE,
        min_score: float = 0.0,
        min_eye_dist: float = 5.0,
        verify_below: float | None = 0.3,
        turned: bool = False,
        edges: bool = True,
        weak: float | None = WEAK_SCORE,
        look: bool = True,
    ):
        if kind not in DETECTORS:
            raise ValueError(f"unknown detector {kind!r} ({' or '.join(DETECTORS)})")
        self.kind, self.upsample, self.max_side = kind, upsample, int(max_side)
        self.min_score, self.min_eye_dist = float(min_score), float(min_eye_dist)
        self.verify_below = verify_below
        self.turned = bool(turned)  # also search the photo turned a quarter each way (faces lying sideways)
        self.edges = bool(edges)  # also search the copy padded at its edges (faces cut by the photo's edge)
        self.weak = weak  # "auto": HOG's candidates from this score up to min_score are kept where the CNN confirms
        self.look = bool(look)  # "auto": the CNN's look at the whole photo where HOG's candidates gave no face

    def detection_copy(self, w: int, h: int, max_side: int | None = None) -> tuple[float, tuple[int, int], int]:
        """For a ``w`` x ``h`` photo: the detection copy's scale (<= 1), its (w, h) and the pyramid upsampling
        (``max_side``: the copy's longest side, default ``self.max_side``)."""
        f = min(1.0, (max_side or self.max_side) / max(h, w))
        size = (max(1, round(w * f)), max(1, round(h * f)))
        return f, size, self.upsample if self.upsample is not None else _auto_upsample(size[1], size[0])

    def scales(self, w: int, h: int) -> list[int]:
        """The longest sides of the copies a ``w`` x ``h`` photo is searched at: ``max_side``, and also
        :data:`DETECT_MAX_SIDE` when ``max_side`` is larger and the photo too. A closer look (``--detect-side 6000``
        on a 6000-px scan) finds the small faces but can lose large ones the default copy finds (HOG on a scan's
        grain at full resolution: 4 of 13 faces of 300 px in an audit's group photo), so both are searched and
        merged (:func:`merge_boxes`)."""
        if self.max_side > DETECT_MAX_SIDE and max(w, h) > DETECT_MAX_SIDE:
            return [self.max_side, DETECT_MAX_SIDE]
        return [self.max_side]

    def _found(self, img: np.ndarray, max_side: int, pad: float = 0.0, kind: str | None = None,
               upsample: int | None = None, threshold: float | None = None) -> list[tuple[np.ndarray, float]]:
        """(box in photo pixels, score) of every detection on the copy at ``max_side``; with ``pad``, on that copy
        padded on every side by ``pad`` of its longest side (edge replicated), keeping only the faces centred in the
        photo and within :data:`EDGE_NEAR` of their box's side of its edge: elsewhere the padding changes nothing but
        where the detector's windows fall, and its weak finds there would be chance (the astronaut's mission patch,
        which the plain search rightly leaves, in a 9000-px test scan). threshold: HOG's score threshold (default 0)."""
        h, w = img.shape[:2]
        kind = kind or ("hog" if self.kind == "auto" else self.kind)
        f, size, up = self.detection_copy(w, h, max_side)
        up = up if upsample is None else upsample
        small = np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA) if f < 1 else img)
        p = round(pad * max(size))
        if p:
            small = cv2.copyMakeBorder(small, p, p, p, p, cv2.BORDER_REPLICATE)
        det = _dlib_obj(kind)
        with _LOCK:
            if kind == "hog":
                rects, scores, _ = det.run(small, up, 0.0 if threshold is None else min(0.0, threshold))
                found = list(zip(rects, scores, strict=True))
            else:
                found = [(d.rect, d.confidence) for d in det(small, up)]
        boxes = [((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64) - p) / f, float(s))
                 for r, s in found]
        return boxes if not p else [(b, s) for b, s in boxes if _by_the_edge(b, w, h)]

    def detect(self, img: np.ndarray, skip: Callable[[np.ndarray], bool] | None = None,
               refused: list[np.ndarray] | None = None) -> list[Face]:
        """The faces of an RGB photo, left to right. "auto" only: ``skip(box)`` (photo pixels) True leaves a near
        miss unchecked (one the CNN turned down a moment ago in a video), and the near misses the CNN turns down are
        appended to ``refused``."""
        img = as_rgb_uint8(img)
        h, w = img.shape[:2]
        faces: list[Face] = []
        # upright first; with ``turned`` also the photo turned a quarter each way (np.rot90 k = 1: counter-clockwise),
        # each face found there is kept unless an upright one covers it, and is mapped back into the photo: its
        # points then align it upright as any face (the 5-point similarity takes the turn). The edge search's finds
        # come after the plain search's and are not merged with them: each is kept unless a face kept before covers
        # it, so a face by the edge that the plain search found but the CNN check turned down (its region cut by the
        # edge) gets a second chance from the edge search's box (a face cut at a photo's corner, edge audit)
        weak = self.weak if self.kind == "auto" else None
        for k in (0, 1, 3) if self.turned else (0,):
            view = np.ascontiguousarray(np.rot90(img, k)) if k else img
            vh, vw = view.shape[:2]
            found: list[tuple[np.ndarray, float]] = []
            for side in self.scales(vw, vh):
                found = merge_boxes(found, self._found(view, side, threshold=weak))
            for side in self.scales(vw, vh) if self.edges else ():
                found += self._found(view, side, EDGE_PAD, threshold=weak)
            # "auto": HOG's candidates scoring from ``weak`` up to ``min_score`` are kept where the CNN confirms a face
            # in their region, after the candidates HOG itself takes: the best WEAK_MOST of them, WEAK_MOST_FOUND once
            # HOG has found a face in this view (a portrait's near misses are its background's)
            before = len(faces)
            self._keep(faces, [(b, s) for b, s in found if s >= self.min_score], view, k, w, h)
            if weak is not None:
                most = WEAK_MOST if len(faces) == before else WEAK_MOST_FOUND
                near = sorted(((b, s) for b, s in found if weak <= s < self.min_score), key=lambda bs: -bs[1])[:most]
                if skip is not None:  # the best near misses as in a photo, less those checked a moment ago
                    near = [(b, s) for b, s in near if not skip(_unturn_box(b, k, w, h))]
                self._keep(faces, near, view, k, w, h, refused=refused)
            if self.kind == "auto" and self.look and k == 0 and len(faces) == before:
                try:  # the CNN's second look at a photo where HOG found no face
                    more = self._found(view, min(CNN_SIDE, self.max_side), kind="cnn", upsample=0)
                except FaceError:  # the CNN's model file is missing: HOG alone, as "hog"
                    more = []
                self._keep(faces, more, view, k, w, h, cnn=True)
        faces.sort(key=lambda fc: (fc.center[0], fc.center[1]))
        return faces

    def _keep(self, faces: list[Face], found: list[tuple[np.ndarray, float]], view: np.ndarray, k: int, w: int,
              h: int, cnn: bool = False, refused: list[np.ndarray] | None = None) -> None:
        """Append to ``faces`` each (box, score) of ``found`` (searched in ``view``, the photo turned ``k`` quarters)
        that no kept face covers and that passes the checks: a HOG find scoring below ``verify_below`` (and every
        weak one, below ``min_score``) must be confirmed by the CNN; a CNN find must stand upright."""
        vh, vw = view.shape[:2]
        cnn = cnn or self.kind == "cnn"
        for box, s in found:
            box[[0, 2]] = box[[0, 2]].clip(-0.25 * vw, 1.25 * vw)
            box[[1, 3]] = box[[1, 3]].clip(-0.25 * vh, 1.25 * vh)
            in_photo = _unturn_box(box, k, w, h)
            near_miss = not cnn and s < self.min_score
            # a near miss overlapping a face kept is that face found again, shifted (its CNN check finds the face):
            # kept, it would be restored twice (a group photo: -0.96 over a face 0.87 found, 0.49 of its box)
            if any(_overlap(in_photo, np.asarray(f.bbox)) > (WEAK_OVERLAP if near_miss else 0.5) for f in faces):
                continue
            if cnn:
                if s < self.min_score or not self.upright(view, box):
                    continue  # lying sideways in this view: its points would be an upright face's (--detect-turned)
            elif (near_miss or (self.verify_below is not None and s < self.verify_below)) and \
                    not self.cnn_confirms(view, box):
                if near_miss and refused is not None:
                    refused.append(in_photo)
                continue
            pts68 = _unturn_points(self.landmarks68(view, box), k, w, h)
            face = Face(tuple(float(v) for v in in_photo), landmarks68_to_5(pts68), float(s), pts68)
            if face.eye_distance >= self.min_eye_dist:
                faces.append(face)

    @staticmethod
    def cnn_confirms(img: np.ndarray, box: Sequence[float], face_px: int = 90, margin: float = 0.4) -> bool:
        """Whether the CNN (MMOD) detector finds a face overlapping ``box`` in the region around it."""
        try:
            cnn = _dlib_obj("cnn")
        except FaceError:
            return True  # cannot check: keep the detection
        got = _scaled_region(img, box, face_px, margin)
        if got is None:
            return False
        roi, rx0, ry0, f = got
        with _LOCK:
            dets = cnn(roi, 0)
        x0, y0, x1, y1 = box
        bx = (np.array([x0 - rx0, y0 - ry0, x1 - rx0, y1 - ry0]) * f)
        for d in dets:
            r = d.rect
            q = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=float)
            iw = max(0.0, min(bx[2], q[2]) - max(bx[0], q[0]))
            ih = max(0.0, min(bx[3], q[3]) - max(bx[1], q[1]))
            inter = iw * ih
            union = (bx[2] - bx[0]) * (bx[3] - bx[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            if union > 0 and inter / union > 0.3:
                return True
        return False

    @staticmethod
    def upright(img: np.ndarray, box: Sequence[float], face_px: int = 90, margin: float = 0.4) -> bool:
        """Whether the face the CNN detector found in ``box`` stands upright: it finds faces lying sideways too, and
        the 68-point predictor then fits an upright face to them (the restored face came back smeared across the
        real one). The region around the box, the face ~``face_px`` px, is searched upright and turned a quarter
        each way; upright must score at least as high as either turn."""
        cnn = _dlib_obj("cnn")
        got = _scaled_region(img, box, face_px, margin)
        if got is None:
            return False
        roi = got[0]
        best = []
        for k in (0, 1, 3):
            with _LOCK:
                dets = cnn(np.ascontiguousarray(np.rot90(roi, k)), 0)
            best.append(max((d.confidence for d in dets), default=-np.inf))
        return best[0] > -np.inf and best[0] >= max(best[1], best[2])

    @staticmethod
    def landmarks68(img: np.ndarray, box: Sequence[float], levels: bool = True) -> np.ndarray:
        """68 landmarks for the face in ``box`` (x0, y0, x1, y1), predicted on a region around it only. levels: the
        region's levels are first stretched so that the box's 1st and 99th percentiles span 0..255
        (:func:`stretch_levels`): the predictor follows edges, which an underexposed or faded face lacks. On 197
        UTKFace val faces (``benchmarks/landmarks.py``, ``docs/results/landmarks.md``), error of the 5 points
        against the clean photo's, in eye distances, median / 90th percentile: dark photos, HOG's box 0.028 / 0.070
        -> 0.011 / 0.021, the CNN's 0.040 / 0.177 -> 0.013 / 0.034 (Black faces' median 0.076 -> 0.016); faded
        (levels x 0.35 + 120) 0.024 / 0.056 -> 0.013 / 0.023; old prints 0.012 / 0.023 -> 0.012 / 0.022; a clean
        portrait's points move by 0.008 (0.4 px at 45-px eyes)."""
        import dlib

        x0, y0, x1, y1 = box
        roi, rx0, ry0 = _region(img, box, 0.5 * max(x1 - x0, y1 - y0))
        rect = dlib.rectangle(int(round(x0 - rx0)), int(round(y0 - ry0)), int(round(x1 - rx0)) - 1, int(round(y1 - ry0)) - 1)
        if levels:
            roi = stretch_levels(roi, (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1))
        sp = _dlib_obj("sp68")
        with _LOCK:
            shape = sp(roi, rect)
        return np.array([[p.x + rx0, p.y + ry0] for p in shape.parts()], dtype=np.float64)


def stretch_levels(img: np.ndarray, box: Sequence[float], lo: float = 1.0, hi: float = 99.0) -> np.ndarray:
    """``img`` (uint8) with its levels stretched linearly so that the ``lo`` and ``hi`` percentiles of the part
    inside ``box`` (x0, y0, x1, y1; all channels together, so the colours keep their balance) become 0 and 255.
    A box with fewer than 2 levels between them is returned as it is."""
    h, w = img.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    part = img[y0:y1, x0:x1]
    if part.size == 0:
        return img
    a, b = np.percentile(part, (lo, hi))
    if b - a < 2:
        return img
    lut = np.clip((np.arange(256, dtype=np.float32) - a) * (255.0 / (b - a)) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(lut[img])


def edge_gap(box: Sequence[float], w: int, h: int) -> float:
    """How far ``box`` (x0, y0, x1, y1) lies inside the edge of a ``w`` x ``h`` photo, in px: its least distance to
    an edge, negative when it crosses one (a face cut by the photo's edge)."""
    x0, y0, x1, y1 = box
    return float(min(x0, y0, w - x1, h - y1))


def _by_the_edge(box: np.ndarray, w: int, h: int) -> bool:
    """Whether ``box``'s centre lies in the ``w`` x ``h`` photo and the box within :data:`EDGE_NEAR` of its side of
    the photo's edge (the 116 faces the edge search added on 25 UTKFace val faces, each cut on each side by 10, 20,
    30 and 40 % of the photo, were all within 0.1)."""
    x0, y0, x1, y1 = box
    m = EDGE_NEAR * max(x1 - x0, y1 - y0)
    return 0 <= (x0 + x1) / 2 < w and 0 <= (y0 + y1) / 2 < h and edge_gap(box, w, h) < m


def _region(img: np.ndarray, box: Sequence[float], margin: float) -> tuple[np.ndarray, int, int]:
    """The region of ``img`` around ``box`` (x0, y0, x1, y1) widened by ``margin`` px on each side, and its top-left
    corner (x, y) in ``img``. A region beyond the photo is cut at its edge; but when the box itself crosses the edge
    (a face cut by it), the region is filled there by edge replication, as the edge search's copy is
    (:data:`EDGE_PAD`). The shape predictor then places a cut face's points nearly as on the whole face (measured
    once, while this was written, on the cases of ``benchmarks/edge_faces.py``: at 30 % cuts the 5 points' largest
    error was 0.056 eye distances, median, with the fill and 0.131 without; at 10 and 20 % the two were alike).
    Faces the plain search finds whose box crosses the edge get it too (on the 39 whole photos: points moved by up
    to 0.035 eye distances, 90th percentile)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    fx0, fy0 = int(np.floor(x0 - margin)), int(np.floor(y0 - margin))
    fx1, fy1 = int(np.ceil(x1 + margin)), int(np.ceil(y1 + margin))
    rx0, ry0, rx1, ry1 = max(0, fx0), max(0, fy0), min(w, fx1), min(h, fy1)
    roi = np.ascontiguousarray(img[ry0:ry1, rx0:rx1])
    if edge_gap(box, w, h) < 0 and roi.size:
        roi = cv2.copyMakeBorder(roi, ry0 - fy0, fy1 - ry1, rx0 - fx0, fx1 - rx1, cv2.BORDER_REPLICATE)
        return roi, fx0, fy0
    return roi, rx0, ry0


def _scaled_region(img: np.ndarray, box: Sequence[float], face_px: int, margin: float
                   ) -> tuple[np.ndarray, int, int, float] | None:
    """The region around ``box`` (``margin`` of its side on each side) resized so the face is about ``face_px`` px:
    (region, its x0 and y0 in ``img``, the scale), or None when the region is empty (what the CNN checks look at)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1.0)
    roi, rx0, ry0 = _region(img, box, margin * side)
    if roi.shape[0] < 2 or roi.shape[1] < 2:
        return None
    f = face_px / side
    roi = cv2.resize(roi, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return np.ascontiguousarray(roi), rx0, ry0, f


def _unturn_points(pts: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Points (x, y; pixel centres) found in ``np.rot90(photo, k)`` of a ``w`` x ``h`` photo, in the photo."""
    x, y = pts[:, 0], pts[:, 1]
    if k == 1:  # view[i, j] = photo[j, w - 1 - i]
        return np.stack([w - 1 - y, x], axis=1)
    if k == 3:  # view[i, j] = photo[h - 1 - j, i]
        return np.stack([y, h - 1 - x], axis=1)
    return pts


def _unturn_box(box: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """A box (x0, y0, x1, y1; pixel edges) found in ``np.rot90(photo, k)``, in the photo."""
    x0, y0, x1, y1 = box
    if k == 1:
        return np.array([w - y1, x0, w - y0, x1], dtype=np.float64)
    if k == 3:
        return np.array([y0, h - x1, y1, h - x0], dtype=np.float64)
    return box


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area: 1 when one box lies inside the other."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small if small > 0 else 0.0


def merge_boxes(first: list[tuple[np.ndarray, float]], more: list[tuple[np.ndarray, float]],
                overlap: float = 0.5) -> list[tuple[np.ndarray, float]]:
    """``first``'s detections, then those of ``more`` that overlap none of them by more than ``overlap`` of the
    smaller box (the same face found at another scale is kept once, as ``first`` found it)."""
    out = list(first)
    for box, s in more:
        if all(_overlap(box, b) <= overlap for b, _ in first):
            out.append((box, s))
    return out


def detect_faces(img: np.ndarray, detector: FaceDetector | None = None, only_center_face: bool = False,
                 **kw: Any) -> list[Face]:
    """All faces of an RGB photo (left to right), or just the one nearest the centre (``kw``: to
    :meth:`FaceDetector.detect`)."""
    faces = (detector or FaceDetector()).detect(img, **kw)
    if only_center_face and len(faces) > 1:
        faces = [center_face(faces, img.shape[0], img.shape[1])]
    return faces


def follow_faces(img: np.ndarray, previous: Sequence[Face], found: Sequence[Face]) -> list[tuple[int, Face]]:
    """The faces of ``previous`` (a video's frame before) that ``found`` (this frame's detection) misses, followed
    into ``img``: their 68 points predicted again from their box (dlib's shape predictor follows a face that moved a
    little), kept where the points moved less than half an eye distance, the eye distance changed by less than a
    quarter, and the CNN detector finds a face at the moved box (the points alone would follow a face that has left
    onto the wall behind it). Returns (index in ``previous``, the face here). A detector that misses a blurred or
    noisy face in one frame of three made the face jump between restored and raw (a CCTV clip: faces found in frames
    2 and 7 of 8; video audit)."""
    out = []
    for i, p in enumerate(previous):
        if any(_overlap(np.asarray(p.bbox), np.asarray(f.bbox)) > 0.3 for f in found):
            continue
        pts68 = FaceDetector.landmarks68(img, p.bbox)
        pts5 = landmarks68_to_5(pts68)
        ed = float(np.linalg.norm(pts5[1] - pts5[0]))
        if np.abs(pts5 - p.landmarks).max() > 0.5 * p.eye_distance or not 0.75 <= ed / max(p.eye_distance, 1e-6) <= 1.33:
            continue
        shift = pts5.mean(0) - p.landmarks.mean(0)
        box = np.asarray(p.bbox, dtype=float) + np.r_[shift, shift]
        if not FaceDetector.cnn_confirms(img, box):
            continue
        out.append((i, Face(tuple(float(v) for v in box), pts5, 0.0, pts68)))
    return out


def center_face(faces: Sequence[Face], h: int, w: int) -> Face:
    """The face whose box centre is nearest the image centre (facexlib's ``get_center_face``)."""
    c = np.array([w / 2, h / 2])
    return min(faces, key=lambda f: float(np.linalg.norm(np.array(f.center) - c)))


# ------------------------------------------------------------------------------------------ templates
@lru_cache(maxsize=1)
def load_templates() -> dict[str, dict]:
    """The template table of ``dynface/data/templates.json`` (plus the built-in FFHQ one)."""
    table: dict[str, dict] = {"ffhq512": {"size": 512, "points": FFHQ_TEMPLATE_512.tolist()}}
    if TEMPLATES_JSON.exists():
        d = json.loads(TEMPLATES_JSON.read_text())
        for k, v in d.get("templates", {}).items():
            table[k] = v
    return table


def template_for(name: str, size: int) -> np.ndarray:
    """The 5-point template ``name`` (``ffhq512``, ``utkface64``, …) for a ``size``×``size`` crop, (5, 2) float."""
    table = load_templates()
    if name not in table:
        raise KeyError(f"unknown face template {name!r}; known: {', '.join(sorted(table))}")
    t = table[name]
    pts, base = np.asarray(t["points"], dtype=np.float64), float(t["size"])
    if size == base:
        return pts.copy()
    return (pts + 0.5) * (size / base) - 0.5


AUTO_TEMPLATE = "auto"  # --input-template auto: each aligned crop's framing is told from its own landmarks
# guess_template: the crop is looked at this many px across (then padded by half of it on each side, edge
# replicated, so a tight crop's face is not cut by the border); a second, larger look when the first finds no face
GUESS_SIDES = (160, 256)
GUESS_MAX_DIST = 0.10  # the nearest template's mean point distance must be below this (fraction of the side) ...
GUESS_MARGIN = 1.5  # ... and every other template's at least this many times farther


@dataclass
class TemplateGuess:
    """What :func:`guess_template` saw: the framing (a template name, or None when it cannot tell) and why."""

    name: str | None
    distances: dict[str, float]  # template -> mean distance of the crop's 5 points from it (fraction of the side)
    reason: str = ""  # why ``name`` is None
    points: np.ndarray | None = None  # the 5 points found (crop pixels), of the face with the widest-set eyes
    faces: int = 0  # how many faces were found on the crop

    def record(self) -> dict:
        return {"input_template_guess": self.name, "input_template_distances": {k: round(v, 4) for k, v in self.distances.items()},
                "input_landmarks5": None if self.points is None else np.round(self.points, 2).tolist(),
                "input_faces_found": self.faces}


def guess_template(img: np.ndarray, names: Sequence[str] | None = None) -> TemplateGuess:
    """The framing of an aligned face crop: dlib's 5 points (:class:`FaceDetector`) found on the crop,
    compared with each template of ``names`` (all known ones by default) scaled to the crop. The nearest wins when
    it is within :data:`GUESS_MAX_DIST` of the side and the others are :data:`GUESS_MARGIN` times farther; else
    ``name`` is None with the reason (no face found, not square, or no template fits clearly); ``points`` are the
    face's 5 points whenever one was found (also on a crop that is not square), so the caller can align from them.

    Measured (``OMP_NUM_THREADS=1``, one core): the 31 real degraded FFHQ-aligned crops and 17 clean FFHQ/CelebA-HQ
    ones of ``../shared/data`` all come out ``ffhq512`` (mean distance 0.007-0.039 of the side, ``utkface64``
    0.107-0.151); of 250 random UTKFace val crops (the embedded models' own framing) 244 come out ``utkface64``, 5
    have no face found and 1 (0.079 from both) fits neither clearly: turned heads put their points up to 0.089
    from the template, with the other 1.6-1.9 times farther (the first limits, 0.06 and 2, sent 9 of 250 to
    be re-aligned from their landmarks, one -0.6 dB); the shipped examples ``utkface64``; about 0.1 s per crop."""
    img = as_rgb_uint8(img)
    h, w = img.shape[:2]
    names = list(names) if names is not None else sorted(load_templates())
    det = FaceDetector(upsample=1)
    for side in GUESS_SIDES:
        f = side / max(h, w)  # the longer side looked at ``side`` px across
        size = (max(1, round(w * f)), max(1, round(h * f)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
        pad = side // 2
        faces = det.detect(np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        if faces:
            break
    else:
        return TemplateGuess(None, {}, "no face found on the crop")
    face = max(faces, key=lambda fc: fc.eye_distance)
    points = (face.landmarks - pad + 0.5) / np.array([size[0] / w, size[1] / h]) - 0.5  # in the crop's pixels
    if h != w:
        return TemplateGuess(None, {}, f"not square ({w}x{h})", points, len(faces))
    pts = (points + 0.5) / w  # in fractions of the side, pixel edges at 0 and 1
    dist = {n: float(np.linalg.norm(pts - (template_for(n, 1000) + 0.5) / 1000, axis=1).mean()) for n in names}
    best = min(dist, key=dist.get)
    others = [d for n, d in dist.items() if n != best]
    if dist[best] >= GUESS_MAX_DIST or any(d < GUESS_MARGIN * dist[best] for d in others):
        return TemplateGuess(None, dist, "its landmarks fit no known framing clearly", points, len(faces))
    return TemplateGuess(best, dist, "", points, len(faces))


# ------------------------------------------------------------------------------------------ warping
def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping src → dst, as a 2×3 matrix."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    e = np.diag([1.0, sign])
    r = u @ e @ vt
    var = (s**2).sum() / len(src)
    scale = (sv * np.diag(e)).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = md - scale * r @ ms
    return m


def estimate_affine(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """2×3 similarity matrix mapping photo coordinates → crop coordinates."""
    src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(template, dtype=np.float64).reshape(-1, 2)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:, :2])) < 1e-12:
        m = _similarity_lstsq(src, dst)
    return m.astype(np.float64)


def ffhq_recipe_affine(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2×3 similarity mapping photo → crop coordinates as the FFHQ dataset's alignment script frames a face.

    ``landmarks``: the 5 points of :func:`landmarks68_to_5` (eye centres = means of dlib's eye points, the
    mouth corners = points 48 and 54; the nose tip is not used, as in the script)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    eye_l, eye_r, mouth_l, mouth_r = lm[0], lm[1], lm[3], lm[4]
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # → output corners TL, BL, BR, TR
    corners = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64)
    # the script maps quad + 0.5 (pixel edges) onto the corners (edges); in pixel-centre coordinates:
    return _similarity_lstsq(quad, corners - 0.5)


ALIGNMENTS = ("auto", "ffhq", "template")
BORDERS = ("constant", "reflect", "replicate")  # :func:`warp_face`'s fill outside the photo
# the default: a face cut by the photo's edge came back with a colour band along the cut under facexlib's grey
# (``constant``: edge shift p50 5.5 levels, ``reflect``: 1.1 on 63 cut UTKFace faces; docs/results/border.md)
DEFAULT_BORDER = "reflect"
DETECTORS = ("auto", "hog", "cnn")  # :class:`FaceDetector`: dlib's HOG, with the CNN's second look; HOG; the CNN
CNN_SIDE = 800  # "auto": the CNN's second look runs on a copy at most this long, not upsampled (faces from ~80 px)


def face_affine(landmarks: np.ndarray, template: str, size: int, alignment: str = "auto") -> np.ndarray:
    """Photo → crop similarity for a face: FFHQ's own crop for ``ffhq512`` (``auto``/``ffhq``), else the
    template fit."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose from {', '.join(ALIGNMENTS)}")
    if alignment == "ffhq" or (alignment == "auto" and template == "ffhq512"):
        return ffhq_recipe_affine(landmarks, size)
    return estimate_affine(landmarks, template_for(template, size))


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _scale_about_centres(sx: float, sy: float | None = None) -> np.ndarray:
    """3×3 map from pixel coordinates of an image to those of the same image resized by (sx, sy)."""
    sy = sx if sy is None else sy
    return np.array([[sx, 0, 0.5 * (sx - 1)], [0, sy, 0.5 * (sy - 1)], [0, 0, 1.0]])


def _border(border: str) -> tuple[int, Any]:
    if border == "constant":
        return cv2.BORDER_CONSTANT, BORDER_VALUE
    if border == "reflect":
        return cv2.BORDER_REFLECT_101, 0
    if border == "replicate":
        return cv2.BORDER_REPLICATE, 0
    raise ValueError(f"unknown border {border!r} ({', '.join(BORDERS)})")


def warp_face(img: np.ndarray, affine: np.ndarray, size: int, border: str = DEFAULT_BORDER) -> np.ndarray:
    """The aligned ``size``×``size`` crop. Only the face's region is touched; a face much larger than the crop is
    first shrunk with area averaging (no aliasing)."""
    img = as_rgb_uint8(img)
    h, w = img.shape[:2]
    mode, value = _border(border)
    inv = cv2.invertAffineTransform(affine)
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [size - 0.5, size - 0.5, 1], [-0.5, size - 0.5, 1]])
    src = corners @ inv.T
    x0, y0 = np.floor(src.min(0)).astype(int) - 3
    x1, y1 = np.ceil(src.max(0)).astype(int) + 4
    rx0, ry0, rx1, ry1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if rx0 >= rx1 or ry0 >= ry1:  # the crop lies entirely outside the photo
        rx0, ry0, rx1, ry1 = 0, 0, w, h
    # when the region touches the photo's edge, the border mode sees the real edge; elsewhere it is never reached
    roi = img[ry0:ry1, rx0:rx1]
    m = _h(affine) @ np.array([[1, 0, rx0], [0, 1, ry0], [0, 0, 1.0]])  # roi coords → crop
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    if scale < 0.8:  # a big face: shrink its region first (area averaging) to 1.25x the crop's resolution
        k = scale * 1.25
        rw, rh = max(1, round(roi.shape[1] * k)), max(1, round(roi.shape[0] * k))
        sx, sy = rw / roi.shape[1], rh / roi.shape[0]
        roi = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
        m = m @ np.linalg.inv(_scale_about_centres(sx, sy))
    return cv2.warpAffine(np.ascontiguousarray(roi), m[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=value)


def outside_photo(affine: np.ndarray, size: int, w: int, h: int) -> np.ndarray:
    """(size, size) bool: the pixels of the aligned crop (``affine``: photo → crop) whose source lies beyond the edge
    of the ``w`` x ``h`` photo, where the crop holds the border fill (``--border``), not the photo."""
    inv = cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)


def grey_outside(face: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """``face`` (a crop or its restoration) with the pixels beyond the photo's edge (:func:`outside_photo`, resized
    to the face's size) set to :data:`BORDER_VALUE` grey; ``face`` itself when none are."""
    if not outside.any():
        return face
    if outside.shape != face.shape[:2]:
        outside = cv2.resize(outside.astype(np.uint8), face.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    out = face.copy()
    out[outside] = BORDER_VALUE
    return out


def inverse_affine(affine: np.ndarray, crop_size: int, face_size: int | None = None, scale_xy: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """2×3 map from a restored face's pixels (``face_size`` px; the crop was ``crop_size``) to the pixels of the
    photo resized by ``scale_xy``."""
    face_size = face_size or crop_size
    k = crop_size / face_size
    to_crop = _scale_about_centres(k)
    return (_scale_about_centres(*scale_xy) @ np.linalg.inv(_h(affine)) @ to_crop)[:2]


def paste_face(canvas: np.ndarray, face: np.ndarray, affine: np.ndarray, crop_size: int, scale_xy: tuple[float, float] = (1.0, 1.0), model_px: float | None = None,
               face_box: tuple[int, int, int, int] | None = None, info: dict | None = None,
               grain_seed: int | None = None) -> tuple[int, int, int, int] | None:
    """Blend a restored face into ``canvas`` (the photo resized by ``scale_xy``), in place, with a feathered mask.

    ``affine`` maps the *original* photo to the ``crop_size`` crop the face was restored from. Returns the
    region (x0, y0, x1, y1) that was changed, or None when the face lies outside the canvas.

    ``model_px`` (``--detail keep``): the model saw that many pixels across the crop; when the crop is larger than
    that on the canvas, only the face's band below the model's Nyquist frequency is pasted and the canvas keeps its
    own band above it; the crossover moves lower where that would leave less high-frequency energy than the canvas
    had where the face is pasted whole (and inside ``face_box``, canvas pixels x0, y0, x1, y1, when given):
    :func:`dynface.detail.keep_detail`. ``info`` (a dict) then receives the chosen crossover.

    ``grain_seed`` (``--grain match``): where the pasted face is cleaner than the photo just around it, grain seeded
    by it is added to the face (:func:`dynface.grain.match_grain`; ``info["grain_added"]``: its level)."""
    face = as_rgb_uint8(face)
    H, W = canvas.shape[:2]
    R = face.shape[0]
    m = _h(inverse_affine(affine, crop_size, R, scale_xy))
    k = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    crop_out = R * k  # the crop's side on the canvas
    if k < 0.8:  # the face shrinks: area-average it first
        r2 = max(8, round(R * k * 1.25))
        face = cv2.resize(face, (r2, r2), interpolation=cv2.INTER_AREA)
        m = m @ _scale_about_centres(R / r2)
        R = r2
    corners = np.array([[-0.5, -0.5, 1], [R - 0.5, -0.5, 1], [R - 0.5, R - 0.5, 1], [-0.5, R - 0.5, 1]]) @ m[:2].T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if x0 >= x1 or y0 >= y1:
        return None
    if grain_seed is not None:  # the photo around the face, as it was: its grain is the target
        pad = max(8, int(crop_out / 2))
        gx0, gy0, gx1, gy1 = max(0, x0 - pad), max(0, y0 - pad), min(W, x1 + pad), min(H, y1 + pad)
        before = canvas[gy0:gy1, gx0:gx1].copy()
    m_roi = (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ m)[:2]
    rw, rh = x1 - x0, y1 - y0
    up = max(1.0, float(np.mean(scale_xy)))
    inv_face = cv2.warpAffine(face, m_roi, (rw, rh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(np.ones((R, R), np.float32), m_roi, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = mask  # the crop's footprint (erode returns a new array)
    e = max(1, int(2 * up))
    mask = cv2.erode(mask, np.ones((e, e), np.uint8))  # remove the interpolated black rim
    area = float(mask.sum())
    w_edge = max(1, int(area**0.5) // 20)
    mask = cv2.erode(mask, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    mask = cv2.GaussianBlur(mask, (2 * w_edge + 1, 2 * w_edge + 1), 0)[:, :, None]
    roi = canvas[y0:y1, x0:x1].astype(np.float32)
    if model_px is not None and crop_out > model_px:
        # out = canvas + mask * L(face - canvas): the face's low band, the canvas's high band. Outside the crop the
        # difference is set to 0 (not the replicated border) before the low-pass; the mask is ~0 there anyway.
        diff = (inv_face.astype(np.float32) - roi) * inside[:, :, None]
        whole = mask[:, :, 0] * np.float32(255) >= 254.5  # pasted whole (rounds to the face's own value)
        regions = [whole]
        if face_box is not None:
            in_box = np.zeros_like(whole)
            bx0, by0, bx1, by1 = (int(v) for v in face_box)
            in_box[max(0, by0 - y0) : max(0, by1 - y0), max(0, bx0 - x0) : max(0, bx1 - x0)] = True
            regions.append(in_box & whole)
        res = keep_detail(canvas[y0:y1, x0:x1], diff, crop_out, model_px, weight=mask, regions=regions, scale=up)
        canvas[y0:y1, x0:x1] = res.image
        if info is not None:
            info.update(res.record())
    else:
        out = mask * inv_face.astype(np.float32) + (1.0 - mask) * roi
        canvas[y0:y1, x0:x1] = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if grain_seed is not None:
        from .grain import match_grain

        weight = np.zeros(before.shape[:2], np.float32)
        weight[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0] = mask[:, :, 0]
        canvas[gy0:gy1, gx0:gx1], added = match_grain(canvas[gy0:gy1, gx0:gx1], before, weight, weight < 0.02, up,
                                                      grain_seed)
        if info is not None:
            info["grain_added"] = round(added, 2)
    return int(x0), int(y0), int(x1), int(y1)


def output_size(width: int, height: int, upscale: float) -> tuple[int, int]:
    """The (w, h) of a ``width`` x ``height`` photo upscaled by ``upscale``; a ValueError for an ``upscale`` that is
    not a finite number > 0 or an output over :data:`dynface.imageio.MAX_OUTPUT_PIXELS` (the job layer lowers
    ``upscale`` to fit first: :func:`dynface.imageio.capped_upscale`), before any canvas is allocated."""
    from .imageio import MAX_OUTPUT_PIXELS, too_large

    if isinstance(upscale, bool) or not isinstance(upscale, (int, float, np.integer, np.floating)) or not (
            np.isfinite(upscale) and upscale > 0):
        raise ValueError(f"upscale must be a finite number > 0, got {upscale!r}")
    size = (max(1, round(width * upscale)), max(1, round(height * upscale)))
    if size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise ValueError(f"upscale {upscale:g}: {too_large(*size, MAX_OUTPUT_PIXELS, what='output')} "
                         "(dynface.imageio.capped_upscale gives the largest upscale that fits)")
    return size


def upscale_background(img: np.ndarray, upscale: float, bg_upsampler: Callable[[np.ndarray, float], np.ndarray] | None = None) -> np.ndarray:
    """The photo resized by ``upscale`` (Lanczos) or by ``bg_upsampler(img, upscale)`` (its result is resized to
    the exact output size if it is off by rounding)."""
    h, w = img.shape[:2]
    size = output_size(w, h, upscale)
    if bg_upsampler is not None:
        out = np.asarray(bg_upsampler(img, upscale), dtype=np.uint8)
        if out.shape[:2] != (size[1], size[0]):
            out = lanczos_resize(out, size)
        out = np.ascontiguousarray(out[:, :, :3])
        return out if out.flags.writeable else out.copy()
    if size == (w, h):
        return img.copy()
    return lanczos_resize(img, size)


def draw_boxes(img: np.ndarray, boxes: Sequence[Sequence[float]], scale_xy: tuple[float, float] = (1.0, 1.0), color=(0, 255, 0),
               labels: Sequence[str] | None = None) -> np.ndarray:
    """Rectangles around the faces (boxes in original-photo coordinates), in place; ``labels``: a text per box, e.g.
    the face's number as the file names have it (``photo_07.png`` is ``07``): in a group photo the numbers, which go
    left to right, tell whose face is whose. The text goes above the box, else below it, else (a face filling the
    photo, or cut by its top and bottom) inside it at the bottom, half as large, over the chin rather than the eyes;
    it starts at the box's left edge or the photo's."""
    t = max(1, round(2 * float(np.mean(scale_xy))))
    h = img.shape[0]
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b
        p0 = (int(round(x0 * scale_xy[0])), int(round(y0 * scale_xy[1])))
        p1 = (int(round(x1 * scale_xy[0])) - 1, int(round(y1 * scale_xy[1])) - 1)
        cv2.rectangle(img, p0, p1, color, t)
        if labels is not None:
            font, size = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, 0.012 * (p1[0] - p0[0]))  # text ~ a third of the box
            (_, th), base = cv2.getTextSize(labels[i], font, size, t)
            if p0[1] - t - base - th >= 0:
                y = p0[1] - t - base  # baseline above the box
            elif p1[1] + t + th + base < h:
                y = p1[1] + t + th  # below it
            else:  # inside, at the bottom, half as large
                size = max(0.4, size / 2)
                base = cv2.getTextSize(labels[i], font, size, t)[1]
                y = min(p1[1], h - 1) - t - base
            cv2.putText(img, labels[i], (max(0, p0[0]), y), font, size, color, t, cv2.LINE_AA)
    return img


def face_size_record(affine: np.ndarray, model_px: int, scale_xy: tuple[float, float] | None = (1.0, 1.0)) -> dict:
    """A face's size: the side of its aligned crop in photo pixels (``crop_side_px``) and in output pixels
    (``crop_side_out_px``), the model's resolution (``model_px``) and ``scale_to_model`` = model_px / crop_side_px
    (below 1: the face was shrunk for the model and, with ``detail="restored"``, loses its finer detail).
    ``affine`` maps the photo to the model's ``model_px`` crop; ``scale_xy`` None: the output is the photo's own
    framing (an aligned crop pasted back), recorded without ``crop_side_out_px`` (:func:`crop_size_record`)."""
    side = model_px / float(np.sqrt(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:2, :2]))))
    return crop_size_record(side, model_px, None if scale_xy is None else float(np.sqrt(scale_xy[0] * scale_xy[1])))


def crop_size_record(side: float, model_px: int, out_scale: float | None = None) -> dict:
    """:func:`face_size_record`'s keys for a crop of ``side`` photo pixels; ``crop_side_out_px`` only with
    ``out_scale`` (output pixels per photo pixel; None: an aligned input returned in its own framing and size)."""
    rec: dict = {"crop_side_px": round(side, 2)}
    if out_scale is not None:
        rec["crop_side_out_px"] = round(side * out_scale, 2)
    rec["model_px"] = int(model_px)
    rec["scale_to_model"] = round(model_px / side, 4)
    return rec


def face_box_out(bbox: Sequence[float], scale_xy: tuple[float, float], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The detector's box (photo pixels) on the output canvas of ``shape``: rounded, clipped (x0, y0, x1, y1)."""
    H, W = shape[:2]
    x0, y0, x1, y1 = bbox[0] * scale_xy[0], bbox[1] * scale_xy[1], bbox[2] * scale_xy[0], bbox[3] * scale_xy[1]
    return max(0, int(round(x0))), max(0, int(round(y0))), min(W, int(round(x1))), min(H, int(round(y1)))


def keeps_detail(size_rec: dict) -> bool:
    """Whether ``detail="keep"`` changes a face: the input has detail above the model's Nyquist frequency only when
    the crop is larger than the model both in the photo and in the output (Lanczos upscaling adds none). Compares
    the recorded (rounded) sides; a record without ``crop_side_out_px`` is returned at the photo's own size."""
    side = size_rec["crop_side_px"]
    return min(side, size_rec.get("crop_side_out_px", side)) > size_rec["model_px"]


# ------------------------------------------------------------------------------------------ the job
@dataclass
class PhotoResult:
    """What :func:`restore_photo` returns; unpacks as ``crops, restored, photo, records``. One entry per face found,
    in the order of ``faces``:

    - ``crops``: the aligned faces cut from the photo, RGB uint8 (S, S, 3) at the model's size S;
    - ``restored``: the restorer's outputs for them, same shape. For a face cut by the photo's edge, the part of
      both beyond the edge is grey (:func:`grey_outside`; the model was given the border fill there, and only the
      photo's part is pasted back); the record's ``outside_photo`` is that part's share of the crop;
    - ``photo``: the whole photo, upscaled by ``upscale``, with the restored faces pasted back (RGB uint8);
    - ``records``: per face, the detection (box, 5 points, score), the alignment ``affine`` (photo → crop), the
      size rule's fields, ``detail``, ``restorer`` (:class:`dynface.pipeline.RestoreOutput`'s record) and
      ``timing``;
    - ``faces``: the detected :class:`Face` objects, in the photo's own pixel coordinates;
    - ``maps``: with ``return_maps=True``, the restorer's maps (guides, restorer output, DGSA map) per face;
    - ``affines``: the 2×3 photo → crop matrices;
    - ``upscale``: the factor the returned photo was upscaled by (its width over the input's);
    - ``timing``: seconds spent detecting, aligning, restoring and pasting (``detect_s``, ``align_s``,
      ``restore_s``, ``paste_s``).
    """

    crops: list[np.ndarray]  # aligned inputs, size×size uint8
    restored: list[np.ndarray]  # restorer outputs
    photo: np.ndarray  # the (upscaled) photo with the faces pasted back
    records: list[dict]  # per face: restorer record + detection + timing
    faces: list[Face] = field(default_factory=list)
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    affines: list[np.ndarray] = field(default_factory=list)
    upscale: float = 1.0
    timing: dict[str, float] = field(default_factory=dict)

    def __iter__(self):
        return iter(self[:])

    def __getitem__(self, i):  # res[2] as ``crops, restored, photo, records = res`` unpacks it
        return (self.crops, self.restored, self.photo, self.records)[i]


@dataclass
class PreparedPhoto:
    """The first half of :func:`restore_photo` (:func:`prepare_photo`): a photo's faces found and aligned, the crops
    ready for ``restorer.restore``. :func:`finish_photo` pastes the restored faces back."""

    img: np.ndarray  # the photo, RGB uint8
    faces: list[Face]
    affines: list[np.ndarray]  # per face: photo → crop
    crops: list[np.ndarray]  # per face: the aligned size×size uint8 crop
    size: int  # the restorer's crop side
    timing: dict[str, float] = field(default_factory=dict)  # detect_s, align_s
    dust: list[dict] | None = None  # per face, what dynface.dust filled in (prepare_photo's ``dust``)
    shown: list[np.ndarray] | None = None  # with dust filled in: the crops of the photo as it came (cropped_faces/)
    dust_maps: list[np.ndarray] | None = None  # with dust: per face, what was filled, in the crop (255: filled)


def prepare_photo(
    img: np.ndarray,
    restorer: Any,
    *,
    only_center_face: bool = False,
    detector: FaceDetector | None = None,
    faces: Sequence[Face] | None = None,
    border: str = DEFAULT_BORDER,
    template: str | None = None,
    alignment: str = "auto",
    dust: bool = False,
) -> PreparedPhoto:
    """Detect (unless ``faces`` is given) and align the faces of an RGB uint8 photo for ``restorer`` (only its
    ``size`` and ``template_name`` are read; ``template`` overrides the latter). ``dust``: first fill in the white
    dust and scratches on the faces (:func:`dynface.dust.remove_dust`; the photo returned is the cleaned copy). See
    :func:`restore_photo`."""
    t0 = time.perf_counter()
    img = as_rgb_uint8(img)
    h, w = img.shape[:2]
    timing: dict[str, float] = {}
    if faces is None:
        faces = detect_faces(img, detector, only_center_face)
    else:
        faces = list(faces)
        if only_center_face and len(faces) > 1:
            faces = [center_face(faces, h, w)]
    t1 = time.perf_counter()
    timing["detect_s"] = t1 - t0
    found = shown = dust_maps = None
    size = int(restorer.size)
    tmpl = template or restorer.template_name
    affines = [face_affine(f.landmarks, tmpl, size, alignment) for f in faces]
    if dust:
        from .dust import remove_dust

        masks: list = []
        came, (img, found) = img, remove_dust(img, faces, masks)
        if img is not came:  # the crops as the photo came, for cropped_faces/ and cmp/ (the model gets cleaned ones)
            shown = [warp_face(came, m, size, border) for m in affines]
        dust_maps = []
        for m, ((x0, y0, _, _), mask) in zip(affines, masks, strict=True):
            if not mask.any():  # nothing filled (most faces): nothing to warp
                dust_maps.append(np.zeros((size, size, 3), np.uint8))
                continue
            local = m.copy()  # the face's map from the photo's window at (x0, y0)
            local[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
            filled = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)  # warp_face takes RGB
            # the window's edge is off the skin (0): "replicate" keeps 0 beyond it
            dust_maps.append(warp_face(filled, local, size, "replicate"))
        timing["dust_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    crops = [warp_face(img, m, size, border) for m in affines]
    timing["align_s"] = time.perf_counter() - t2
    return PreparedPhoto(img, list(faces), affines, crops, size, timing, found, shown, dust_maps)


def finish_photo(
    prep: PreparedPhoto,
    restored: Sequence[np.ndarray],
    restorer_records: Sequence[dict],
    maps: dict[str, list[np.ndarray]] | None = None,
    *,
    upscale: float = 1.0,
    draw_box: bool = False,
    bg_upsampler: Callable[[np.ndarray, float], np.ndarray] | None = None,
    detail: str = "keep",
    restore_s: float = 0.0,
    grain: str = "none",
) -> PhotoResult:
    """The second half of :func:`restore_photo`: upscale the background, paste the restored faces (one per crop of
    ``prep``, with the restorer's records and maps) back with the ``detail`` rule, draw boxes, build the records.
    ``restore_s``: the time the restorer spent on this photo's faces (for the timing record)."""
    check_detail_mode(detail)
    img, faces, affines, size = prep.img, prep.faces, prep.affines, prep.size
    n = len(prep.crops)
    if len(restored) != n:
        raise RuntimeError(f"the restorer returned {len(restored)} faces for {n} inputs")
    restored = [np.asarray(x, dtype=np.uint8) for x in restored]
    recs = [dict(r) for r in restorer_records]
    h, w = img.shape[:2]
    timing = {**prep.timing, "restore_s": restore_s}
    t3 = time.perf_counter()
    photo = upscale_background(img, upscale, bg_upsampler)
    sxy = (photo.shape[1] / w, photo.shape[0] / h)
    sizes = [face_size_record(m, size, sxy) for m in affines]
    from .grain import check_grain_mode

    check_grain_mode(grain)
    for i, (f, face_img, m, sz) in enumerate(zip(faces, restored, affines, sizes, strict=True)):
        sz["detail_kept"] = detail == "keep" and keeps_detail(sz)
        info: dict = {}
        grain_seed = None
        if grain == "match":  # the face's own restorer seed: the same grain every run
            seed = (recs[i] if i < len(recs) else {}).get("seed")
            grain_seed = seed if isinstance(seed, int) else i
        paste_face(photo, face_img, m, size, sxy, model_px=size if sz["detail_kept"] else None,
                   face_box=face_box_out(f.bbox, sxy, photo.shape), info=info, grain_seed=grain_seed)
        sz.update(info)
    if draw_box:
        draw_boxes(photo, [f.bbox for f in faces], sxy, labels=[f"{i:02d}" for i in range(len(faces))])
    # a face cut by the photo's edge: its crop holds the border fill there (the model needs a whole face), which
    # cropped_faces/, restored_faces/ and cmp/ showed as a mirrored half-face (eyes doubled; edge audit). Only the
    # photo's part is pasted back; in the returned crops the rest is grey
    outside = [outside_photo(m, size, w, h) for m in affines]
    crops = [grey_outside(c, o) for c, o in zip(prep.shown or prep.crops, outside, strict=True)]
    restored = [grey_outside(r, o) for r, o in zip(restored, outside, strict=True)]
    t4 = time.perf_counter()
    timing["paste_s"] = t4 - t3
    records = []
    for i, (f, m) in enumerate(zip(faces, affines, strict=True)):
        rec = {"index": i, **f.to_record(), "affine": np.round(m, 6).tolist(), **sizes[i], "detail": detail,
               "outside_photo": round(float(outside[i].mean()), 4)}
        rec["restorer"] = recs[i] if i < len(recs) else {}
        if prep.dust is not None:
            rec["dust"] = prep.dust[i]
        rec["timing"] = {
            "detect_s": round(timing["detect_s"], 4),
            "restore_s_shared": round(timing["restore_s"] / max(1, n), 4),
            "paste_s_shared": round(timing["paste_s"] / max(1, n), 4),
        }
        records.append(rec)
    maps = dict(maps or {})
    if prep.dust_maps is not None:  # what --dust filled, with the restorer's maps (--save-maps)
        maps["dust"] = list(prep.dust_maps)
    return PhotoResult(crops, restored, photo, records, list(faces), maps, list(affines), float(sxy[0]), timing)


def restore_photo(
    img: np.ndarray,
    restorer: Any,
    *,
    upscale: float = 1.0,
    only_center_face: bool = False,
    draw_box: bool = False,
    detector: FaceDetector | None = None,
    faces: Sequence[Face] | None = None,
    seed: int = 0,
    fidelity: float | None = None,
    return_maps: bool = False,
    bg_upsampler: Callable[[np.ndarray, float], np.ndarray] | None = None,
    border: str = DEFAULT_BORDER,
    batch_size: int | None = None,
    template: str | None = None,
    alignment: str = "auto",
    detail: str = "keep",
    seeds: Sequence[int] | None = None,
    grain: str = "none",
    dust: bool = False,
) -> PhotoResult:
    """Restore every face of an RGB uint8 photo and paste them back into it (upscaled by ``upscale``).

    All faces go to ``restorer.restore`` in ONE call (``batch_size`` splits them into calls of at most that
    many; the seed of the k-th call is ``seed + first face index`` so the result does not depend on it).
    ``faces`` skips detection. ``template`` overrides ``restorer.template_name``. A photo without faces
    gives empty lists and the upscaled background. ``alignment``: see :func:`face_affine`.

    ``detail``: "keep" (default) pastes, for a face larger than the model in both the photo and the output, only
    the restoration's band below the model's Nyquist frequency and keeps the (upscaled) photo's band above it;
    "restored" pastes the whole restoration (a face larger than the model then loses its finer detail). Each
    record gets the face's size (:func:`face_size_record`) and ``detail_kept``; a kept face also gets the
    crossover :func:`dynface.detail.keep_detail` chose (``detail_cut_cycles`` per crop, the model's Nyquist being
    ``model_px / 2``, lower where the restoration was smoother than the photo; ``detail_hf_ratio`` >= 1).

    ``seeds``: one per face (pass ``faces`` too, so their number is known): face i's noise then comes from
    ``seeds[i]`` only (``restorer.restore(..., seeds=)``), whatever ``batch_size`` is.

    ``grain``: "none" (default) or "match": a face cleaner than the photo around it gets the difference as fresh
    grain, seeded by its restorer seed (:mod:`dynface.grain`; the record's ``grain_added``, in levels).

    ``dust``: fill in the white dust specks and scratches of old prints on the faces first (:mod:`dynface.dust`;
    the record's ``dust``: specks, pixels, the grain's σ); the rest of the photo keeps its dust.

    It is :func:`prepare_photo`, the restorer calls, then :func:`finish_photo` (the job layer restores the crops of
    several photos in shared calls between the two halves: :mod:`dynface.jobs`)."""
    from .pipeline import check_fidelity, check_seed

    check_detail_mode(detail)
    img = as_rgb_uint8(img, "photo")
    output_size(img.shape[1], img.shape[0], upscale)  # a bad upscale fails before the faces are restored
    check_seed(seed)  # and a bad seed or fidelity before detection
    if fidelity is not None:
        check_fidelity(fidelity)
    prep = prepare_photo(img, restorer, only_center_face=only_center_face, detector=detector, faces=faces,
                         border=border, template=template, alignment=alignment, dust=dust)
    crops = prep.crops
    t2 = time.perf_counter()
    restored: list[np.ndarray] = []
    recs: list[dict] = []
    maps: dict[str, list[np.ndarray]] = {}
    n = len(crops)
    if seeds is not None and len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} faces")
    bs = n if not batch_size else int(batch_size)
    for i in range(0, n, max(1, bs)):
        kw = {} if seeds is None else {"seeds": list(seeds[i : i + bs])}  # checked by the restorer, not truncated
        out = restorer.restore(crops[i : i + bs], seed=seed + i, fidelity=fidelity, return_maps=return_maps, **kw)
        restored.extend(np.asarray(x, dtype=np.uint8) for x in out.images)
        recs.extend(dict(r) for r in out.records)
        for k, v in (getattr(out, "maps", None) or {}).items():
            maps.setdefault(k, []).extend(v)
    return finish_photo(prep, restored, recs, maps, upscale=upscale, draw_box=draw_box, bg_upsampler=bg_upsampler,
                        detail=detail, restore_s=time.perf_counter() - t2, grain=grain)
