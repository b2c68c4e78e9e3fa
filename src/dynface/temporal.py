"""Videos: each face's aligned crop fused with the same face's crops in the frames before it, before it is restored.

A video's frames show the same face many times over, each time under fresh noise (a CCTV camera's sensor, its
compression). Restored frame by frame, every frame's noise goes through the restorer, and the restored face flickers
with it. Aligned to the model's template (:func:`dynface.faces.prepare_photo`), a face's crops in consecutive frames
hold the same pixels wherever it did not move against the template, so their noise averages away there.

:func:`fuse` is the per-pixel rule. For a neighbour crop ``n`` of the current crop ``c`` (uint8, at the model's size):

* ``d`` = the mean over a :data:`WINDOW` x :data:`WINDOW` neighbourhood and the channels of ``(n - c)^2``. Where the
  face did not move, ``d`` is about ``2 σ²`` (both crops' noise), whatever the face looks like there;
* ``σ²`` is taken from the pair itself (:func:`pair_noise`): half the median of ``d`` over the crop, so it needs no
  noise model (JPEG's noise is not white), and moving parts of the face, fewer than half its pixels, do not count;
  it is held to :data:`NOISE_GROWTH` times the σ² the face's earlier pairs showed (a face that turned differs
  everywhere, which the pair alone would take for noise);
* the neighbour's weight ``w = exp(-STRICTNESS * max(0, d / (2 σ²) - 1))``: 1 where the two differ as their noise
  does, ``e^-STRICTNESS`` (0.14 at the default 2) where they differ by one σ more, ``e^-4·STRICTNESS`` by two σ (a
  mouth that opened, eyes that blinked, a face turning: the current frame alone is kept there);
* the fused crop is ``(c + Σ w n) / (1 + Σ w)``: a still face's noise falls to ``1 / sqrt(1 + K)`` of its σ with K
  neighbours.

:class:`FaceTracks` keeps each face's last :data:`FUSE_FRAMES` crops across a video's frames: a face of this frame is
the face of the frame before whose box it overlaps by more than half (of the smaller box), and a face whose crop
differs from the one before more than :data:`MAX_NOISE` allows (another face at the same place: a cut) starts anew,
as another face. Each face keeps its id (:attr:`FaceTracks.ids`: the smallest free one when it appeared, so a lone
face that is lost and found again is 0 again), which seeds its noise in every frame (a seed by position left to
right changed the others' when a face came in on their left). Only faces the model enlarges are fused (:data:`MIN_SCALE`). Measured: ``benchmarks/video_fuse.py``
(``docs/results/video_fuse.md``): 10 clips of 16 frames, UTKFace val faces at 110 px (enlarged x1.18 for
``embedded-128``), blur, noise 12 levels, JPEG, H.264: PSNR 32.08 -> 32.33 dB, flicker 4.22 -> 3.59 levels (still
faces +0.49 dB, flicker -34 %; talking +0.15 dB, -24 %; after a cut +0.01 dB: no ghost); 3 ms a face.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .faces import _overlap

__all__ = ["FUSE_FRAMES", "STRICTNESS", "TOLERANCE", "WINDOW", "MAX_NOISE", "MIN_SCALE", "NOISE_GROWTH", "pair_noise",
           "fuse", "FaceTracks"]

FUSE_FRAMES = 4
"""Frames before the current one whose crops of the same face are fused into its crop (``--fuse-frames``; 0: off)."""

STRICTNESS = 2.0
"""How fast a neighbour's weight falls where it differs from the current crop by more than their noise (see above)."""

TOLERANCE = 1.0
"""Where the local squared difference is up to this many times its still-face value ``2 σ²``, a neighbour keeps its
whole weight."""

WINDOW = 5
"""Side (crop pixels) of the neighbourhood over which two crops' squared difference is averaged."""

MAX_NOISE = 25.0
"""The largest noise σ (levels) a pair of crops of one face is taken to have: two crops that differ by more (half the
median of their local squared difference above ``MAX_NOISE²``) are not the same face, or not aligned alike: not
fused, and the face's history starts anew. The benchmark's clips (grey noise of 12 levels, then blur, JPEG and H.264)
showed σ 4.8–5.9 levels in their crops."""

MIN_SCALE = 1.0
"""Faces are fused where their crop has at least as many pixels as the photo has on them (crop pixels per photo
pixel, ``scale_to_model``): a small face, enlarged for the model, brings it its full noise. A face larger than the
model is shrunk for it (which averages its noise already), and ``--detail keep`` then takes its finer detail, noise
included, from the frame itself; fused there, measured on 300-px crops (scale 0.43) of the benchmark's clips, the
restored face was not better (PSNR -0.3 to +0.1 dB, talking -0.7 dB). Not fused."""

NOISE_GROWTH = 2.0
"""The most a pair of crops' noise σ² is taken to exceed what the face's crops showed before (σ × 1.41): more is
change, not noise (:func:`fuse`'s ``noise``)."""

NOISE_MEMORY = 8
"""A face's noise is the median of the σ² its last this many pairs of consecutive crops showed."""

NOT_FUSED = {"fused": 0, "noise": None, "weight": 0.0}  # what :func:`fuse` did to a crop it left as it came

TRACK_OVERLAP = 0.5
"""A face of this frame is the face of the frame before whose box covers more than this share of the smaller box."""


def _local_sq_diff(c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The mean of ``(n - c)²`` over :data:`WINDOW` x :data:`WINDOW` pixels and the channels (float32, H x W)."""
    d = np.square(n.astype(np.float32) - c.astype(np.float32))
    if d.ndim == 3:
        d = d.mean(axis=2)
    return cv2.blur(d, (WINDOW, WINDOW), borderType=cv2.BORDER_REFLECT)


def pair_noise(d: np.ndarray) -> float:
    """σ² of the noise of two crops of a still face from their local squared difference ``d``
    (:func:`_local_sq_diff`): half its median (each crop carries its own noise)."""
    return float(np.median(d)) / 2.0


def fuse(current: np.ndarray, neighbours: Sequence[np.ndarray], strictness: float = STRICTNESS,
         noise: float | None = None) -> tuple[np.ndarray, dict]:
    """``current`` (uint8 H x W x C) fused with each of ``neighbours`` (crops of the same face, aligned alike, the
    nearest frame first) where it differs from them as their noise does (see the module's notes). ``noise``: the σ²
    the face's crops showed in the frames before (:class:`FaceTracks`); a pair's own estimate is held to at most
    :data:`NOISE_GROWTH` times it (a face that turned or was cut to a similar one differs everywhere, which the pair
    would take for noise). Returns the fused crop (uint8) and what was done: ``fused`` (neighbours used), ``noise``
    (the σ in levels, the median of the pairs'), ``weight`` (the mean over the crop of the neighbours' summed weight:
    K for a still face, 0 where nothing was fused), ``pair_noise`` (the nearest neighbour's own σ² estimate, None
    when it was left out). A neighbour whose pair noise is above :data:`MAX_NOISE` is left out."""
    acc = current.astype(np.float32)
    total = np.ones(current.shape[:2] + (1,) * (current.ndim - 2), np.float32)  # broadcasts over the channels
    sigmas = []
    used = 0
    nearest = None
    for i, n in enumerate(neighbours):
        if n.shape != current.shape:
            continue
        d = _local_sq_diff(current, n)
        s2 = pair_noise(d)
        if s2 > MAX_NOISE**2:
            continue
        if i == 0:
            nearest = s2
        if noise is not None:
            s2 = min(s2, NOISE_GROWTH * noise)
        sigmas.append(np.sqrt(s2))
        w = np.exp(-strictness * np.maximum(0.0, d / max(2.0 * s2, 1e-6) - TOLERANCE)).astype(np.float32)
        w = w.reshape(total.shape)
        acc += w * n.astype(np.float32)
        total += w
        used += 1
    if not used:
        return current, {**NOT_FUSED, "pair_noise": None}
    out = acc / total
    info = {"fused": used, "noise": round(float(np.median(sigmas)), 2), "weight": round(float(total.mean() - 1.0), 3),
            "pair_noise": nearest}
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), info


@dataclass
class _Track:
    box: tuple[float, float, float, float]
    id: int = 0  # the face's seed index (dynface.jobs.face_seed) in every frame: the smallest free when it appeared
    crops: deque = field(default_factory=deque)  # the face's last crops as they came (not fused), newest last
    noise: deque = field(default_factory=lambda: deque(maxlen=NOISE_MEMORY))  # σ² of its last pairs of crops

    def restart(self) -> None:
        self.crops.clear()
        self.noise.clear()


class FaceTracks:
    """The faces of a video's frames, followed from frame to frame, each with its last ``frames`` crops (as they
    came: fusing fused crops would let a frame's noise echo on). :meth:`fuse` takes a frame's faces (boxes) and
    aligned crops and returns the crops to restore and, per face, what :func:`fuse` did."""

    def __init__(self, frames: int = FUSE_FRAMES, strictness: float = STRICTNESS):
        self.frames, self.strictness = max(0, int(frames)), strictness
        self.tracks: list[_Track] = []
        self.ids: list[int] = []  # the last frame's faces' track ids, in the order given

    def fuse(self, boxes: Sequence[Sequence[float]], crops: Sequence[np.ndarray],
             scales: Sequence[float] | None = None) -> tuple[list[np.ndarray], list[dict]]:
        """``scales``: per face, the crop's pixels per photo pixel (:func:`dynface.faces.face_size_record`'s
        ``scale_to_model``); a face below :data:`MIN_SCALE` is followed but not fused (its info says ``larger``).
        Faces are followed with ``frames`` 0 too (:attr:`ids`)."""
        scales = [1.0] * len(crops) if scales is None else list(scales)
        taken: set[int] = set()
        tracks, out, infos = [], [], []
        for box, crop, scale in zip(boxes, crops, scales, strict=True):
            best, j = TRACK_OVERLAP, None
            for i, t in enumerate(self.tracks):
                o = _overlap(box, t.box)
                if i not in taken and o > best:
                    best, j = o, i
            if j is None:  # a face that appeared: the smallest id no face of the frame before or of this one has
                used = {u.id for u in self.tracks} | {u.id for u in tracks}
                t = _Track(tuple(box), next(i for i in range(len(used) + 1) if i not in used))
            else:
                t = self.tracks[j]
                taken.add(j)
            t.box = tuple(box)
            if not self.frames:
                fused, info = crop, dict(NOT_FUSED)
            elif scale < MIN_SCALE:  # not fused, nor kept to be fused with: the track starts anew when it is small
                t.restart()
                fused, info = crop, {**NOT_FUSED, "larger": True}
            else:
                noise = float(np.median(t.noise)) if t.noise else None
                fused, info = fuse(crop, list(t.crops)[::-1], self.strictness, noise)  # the nearest frame first
                if t.crops and not info["fused"]:  # the frame before differs beyond any noise: another face here
                    t.restart()
                if info["pair_noise"] is not None:
                    t.noise.append(info["pair_noise"])
                del info["pair_noise"]
                t.crops.append(crop)
                while len(t.crops) > self.frames:
                    t.crops.popleft()
            tracks.append(t)
            out.append(fused)
            infos.append(info)
        self.tracks = tracks  # a face not in this frame is forgotten (one followed for it is in `boxes`)
        self.ids = [t.id for t in tracks]
        return out, infos
