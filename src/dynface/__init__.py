"""DynFaceRestore: diffusion-guided blind face restoration."""

import os as _os

__version__ = "0.1.0"

# OpenCV reads its decoder pixel cap once, when cv2 is loaded (default 2**30 pixels): set it to
# dynface.imageio.MAX_PIXELS (80 MP) before any dynface module imports cv2, unless the user set it.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "80000000")
