"""Face metrics with dlib: identity angle "IDA (dlib ResNet, not ArcFace)" and 68-point landmark distance (LMD).

Protocol (both metrics):

1. Both images (uint8 RGB) are resized to 512×512 with PIL bicubic (``WORK_SIZE``; an anisotropic rescale
   for non-square inputs). LMD is therefore in pixels *at 512×512*.
2. A face box is found in each image separately with dlib's HOG frontal detector (upsampling 0, then 1);
   the box with the highest detector score is used. ``use_cnn=True`` adds dlib's MMOD CNN detector as a
   slower third try. When no face is found, ``fallback`` decides: ``"none"`` (default: the value is NaN
   and the pair counts as a failure), ``"reference"`` (use the box found on the other image of the pair),
   or ``"whole"`` (use the whole image as the box; crude).
3. IDA: dlib's 5-point shape predictor on that box, dlib's face chip (150×150, padding 0.25) and the
   128-D ResNet descriptor ``dlib_face_recognition_resnet_model_v1`` (no jitter). IDA = arccos of the
   cosine similarity of the two descriptors, in radians (0 = same direction, π = opposite).
   **This is not the paper's ArcFace IDA**; values are not comparable with published IDA numbers.
4. LMD: dlib's 68-point shape predictor on each image's own box; LMD = mean over the 68 points of the
   Euclidean distance (pixels at 512×512) between corresponding points.

No function raises when no face is found: it returns NaN, and the ``*_many`` helpers count failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import dlib_models
from ._util import as_rgb_uint8, resize_uint8

WORK_SIZE = 512
IDA_LABEL = "IDA (dlib ResNet, not ArcFace)"
LMD_LABEL = "LMD (dlib 68-point, pixels at 512x512)"
FALLBACKS = ("none", "reference", "whole")


@dataclass(frozen=True)
class FaceBox:
    left: int
    top: int
    right: int
    bottom: int
    source: str  # "hog0", "hog1", "cnn", "reference", "whole"

    def rect(self):
        import dlib

        return dlib.rectangle(self.left, self.top, self.right, self.bottom)


def prepare(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H,W,3) → contiguous 512×512 uint8 RGB (bicubic)."""
    a = as_rgb_uint8(img)
    if a.ndim != 3:
        raise ValueError("expected a single (H,W,3) image")
    return np.ascontiguousarray(resize_uint8(a, (WORK_SIZE, WORK_SIZE)))


def detect(img512: np.ndarray, use_cnn: bool = False) -> FaceBox | None:
    """Best face box in a prepared image, or ``None``."""
    det = dlib_models.frontal_detector()
    for up in (0, 1):
        boxes, scores, _ = det.run(img512, up, 0.0)
        if len(boxes):
            i = int(np.argmax(scores))
            b = boxes[i]
            return FaceBox(b.left(), b.top(), b.right(), b.bottom(), f"hog{up}")
    if use_cnn:
        res = dlib_models.cnn_detector()(img512, 0)
        if len(res):
            r = max(res, key=lambda d: d.confidence).rect
            return FaceBox(r.left(), r.top(), r.right(), r.bottom(), "cnn")
    return None


def _whole(img512: np.ndarray) -> FaceBox:
    h, w = img512.shape[:2]
    return FaceBox(0, 0, w - 1, h - 1, "whole")


def pair_boxes(a512: np.ndarray, b512: np.ndarray, fallback: str = "none", use_cnn: bool = False):
    """Boxes for both images of a pair, applying ``fallback`` where detection fails (``None`` = failed)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    ba, bb = detect(a512, use_cnn), detect(b512, use_cnn)
    if fallback == "reference":
        if ba is None and bb is not None:
            ba = FaceBox(bb.left, bb.top, bb.right, bb.bottom, "reference")
        elif bb is None and ba is not None:
            bb = FaceBox(ba.left, ba.top, ba.right, ba.bottom, "reference")
    elif fallback == "whole":
        ba = ba or _whole(a512)
        bb = bb or _whole(b512)
    return ba, bb


def landmarks68(img512: np.ndarray, box: FaceBox) -> np.ndarray:
    """(68,2) float64 (x,y) landmark positions in a prepared image."""
    s = dlib_models.shape_predictor(68)(img512, box.rect())
    return np.array([(p.x, p.y) for p in s.parts()], dtype=np.float64)


def descriptor(img512: np.ndarray, box: FaceBox) -> np.ndarray:
    """128-D dlib ResNet descriptor (5-point alignment, 150-px chip, padding 0.25, no jitter)."""
    shape = dlib_models.shape_predictor(5)(img512, box.rect())
    return np.array(dlib_models.face_recognizer().compute_face_descriptor(img512, shape, 0, 0.25), dtype=np.float64)


def angle(d1: np.ndarray, d2: np.ndarray) -> float:
    """arccos of the cosine similarity, radians."""
    c = float(np.dot(d1, d2) / (np.linalg.norm(d1) * np.linalg.norm(d2) + 1e-12))
    return math.acos(max(-1.0, min(1.0, c)))


def face_pair_metrics(
    restored: np.ndarray, reference: np.ndarray, metrics=("ida", "lmd"), fallback: str = "none", use_cnn: bool = False
) -> dict:
    """IDA and/or LMD for one pair. Returns ``{"ida": float|nan, "lmd": float|nan, "boxes": (src_a, src_b)}``."""
    a, b = prepare(restored), prepare(reference)
    ba, bb = pair_boxes(a, b, fallback, use_cnn)
    out: dict = {"boxes": (ba.source if ba else None, bb.source if bb else None)}
    ok = ba is not None and bb is not None
    if "ida" in metrics:
        out["ida"] = angle(descriptor(a, ba), descriptor(b, bb)) if ok else float("nan")
    if "lmd" in metrics:
        out["lmd"] = (
            float(np.mean(np.linalg.norm(landmarks68(a, ba) - landmarks68(b, bb), axis=1))) if ok else float("nan")
        )
    return out


def identity_distance(
    restored: np.ndarray, reference: np.ndarray, fallback: str = "none", use_cnn: bool = False
) -> float:
    """IDA (dlib ResNet, not ArcFace): arccos of the descriptors' cosine similarity, radians; NaN if no face."""
    return face_pair_metrics(restored, reference, ("ida",), fallback, use_cnn)["ida"]


def landmark_distance(
    restored: np.ndarray, reference: np.ndarray, fallback: str = "none", use_cnn: bool = False
) -> float:
    """LMD: mean Euclidean distance of dlib's 68 landmarks, pixels at 512×512; NaN if no face."""
    return face_pair_metrics(restored, reference, ("lmd",), fallback, use_cnn)["lmd"]


def _many(key, restored, reference, fallback, use_cnn):
    r = as_rgb_uint8(restored)
    g = as_rgb_uint8(reference)
    if r.ndim == 3:
        r, g = r[None], g[None]
    vals = np.array([face_pair_metrics(x, y, (key,), fallback, use_cnn)[key] for x, y in zip(r, g, strict=True)])
    return vals, int(np.isnan(vals).sum())


def identity_distances(restored, reference, fallback: str = "none", use_cnn: bool = False) -> tuple[np.ndarray, int]:
    """IDA per pair over batches (N,H,W,3); returns (values with NaN for failures, number of failures)."""
    return _many("ida", restored, reference, fallback, use_cnn)


def landmark_distances(restored, reference, fallback: str = "none", use_cnn: bool = False) -> tuple[np.ndarray, int]:
    """LMD per pair over batches (N,H,W,3); returns (values with NaN for failures, number of failures)."""
    return _many("lmd", restored, reference, fallback, use_cnn)


CONVENTIONS = {
    "ida": f"{IDA_LABEL}: arccos(cosine) of dlib_face_recognition_resnet_model_v1 128-D descriptors, radians; "
    "images resized to 512x512 bicubic; HOG detector (upsample 0 then 1), best-score box; 5-point predictor, "
    "150-px chip, padding 0.25, no jitter. Not comparable with ArcFace IDA in papers.",
    "lmd": f"{LMD_LABEL}: both images resized to 512x512 bicubic; each image's own HOG box; mean Euclidean "
    "distance over the 68 points of shape_predictor_68_face_landmarks, in pixels at 512.",
}
