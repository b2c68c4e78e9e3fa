"""DynFaceRestore: diffusion-guided blind face restoration."""

import os as _os

__version__ = "0.1.0"

# OpenCV reads its decoder pixel cap once, when cv2 is loaded (default 2**30 pixels): set it to
# dynface.imageio.MAX_PIXELS (80 MP) before any dynface module imports cv2, unless the user set it.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "80000000")

# the names the README's snippets use, importable from the package (loaded when first used: `import dynface` stays light)
_LAZY = {"DynFaceRestorer": "dynface.pipeline", "RestoreConfig": "dynface.pipeline", "restore_photo": "dynface.faces",
         "read_image": "dynface.imageio", "run_job": "dynface.jobs", "RestoreSettings": "dynface.jobs"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dynface' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})  # dir(dynface) and tab completion list the lazily loaded names too
