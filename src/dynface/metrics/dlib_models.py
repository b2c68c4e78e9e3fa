"""dlib model files (from the ``face_recognition_models`` wheel) and cached dlib objects for the face metrics.

``import face_recognition_models`` fails on recent setuptools (it needs ``pkg_resources``), so its folder
is found with ``importlib.util.find_spec`` without importing it. Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ._util import package_dir

FILES = {
    "shape68": "shape_predictor_68_face_landmarks.dat",
    "shape5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


class DlibUnavailable(RuntimeError):
    """dlib or the ``face_recognition_models`` data files are not installed."""


def models_dir() -> Path:
    d = package_dir("face_recognition_models")
    if d is None or not (d / "models").is_dir():
        raise DlibUnavailable(
            "the dlib model files are not installed: `pip install face-recognition-models dlib-bin` "
            "(the face metrics IDA and LMD need them)"
        )
    return d / "models"


def model_path(key: str) -> Path:
    p = models_dir() / FILES[key]
    if not p.is_file():
        raise DlibUnavailable(f"dlib model file missing: {p}")
    return p


def available() -> bool:
    """True when dlib imports and all four model files are present."""
    try:
        import dlib  # noqa: F401

        return all(model_path(k).is_file() for k in FILES)
    except (ImportError, DlibUnavailable):
        return False


def _dlib():
    try:
        import dlib
    except ImportError as e:
        raise DlibUnavailable("dlib is not installed: `pip install dlib-bin`") from e
    return dlib


@functools.cache
def frontal_detector():
    return _dlib().get_frontal_face_detector()


@functools.cache
def cnn_detector():
    return _dlib().cnn_face_detection_model_v1(str(model_path("cnn_detector")))


@functools.cache
def shape_predictor(points: int = 68):
    if points not in (5, 68):
        raise ValueError("points must be 5 or 68")
    return _dlib().shape_predictor(str(model_path("shape5" if points == 5 else "shape68")))


@functools.cache
def face_recognizer():
    return _dlib().face_recognition_model_v1(str(model_path("recognition")))
