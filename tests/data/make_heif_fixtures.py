"""Write the HEIC fixtures of ``tests/test_imageio.py`` (committed: the package only *reads* HEIC, with pi-heif, and
no dependency of ours can encode it). Run once, in a throwaway environment with an encoder:

    python -m venv /tmp/heifenc && /tmp/heifenc/bin/pip install pillow-heif scikit-image
    /tmp/heifenc/bin/python tests/data/make_heif_fixtures.py tests/data

* ``phone_o6.heic``: a crop of skimage's astronaut (public domain, NASA), 288 × 336 upright (the window
  ``[0:448, 64:448]`` resized with Lanczos), stored turned by a quarter with EXIF orientation 6 (pillow-heif
  writes it as the HEIF ``irot`` transform), with EXIF camera, date taken and GPS, and an sRGB ICC profile: a phone
  photo in miniature.
* ``alpha.heic``: 32 × 24 RGBA, a colour ramp with an alpha ramp.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

UPRIGHT_WINDOW = (slice(0, 448), slice(64, 448))
UPRIGHT_SIZE = (288, 336)


def upright() -> Image.Image:
    """The picture ``phone_o6.heic`` shows, as a viewer turns it upright (the tests compare against it)."""
    from skimage.data import astronaut

    return Image.fromarray(np.ascontiguousarray(astronaut()[UPRIGHT_WINDOW])).resize(UPRIGHT_SIZE, Image.LANCZOS)


def main(out: Path) -> None:
    import pillow_heif  # only here: the tests import this file for upright()

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Apple", "iPhone 15", 6
    exif[0x8769] = {0x9003: "2024:08:15 18:30:00"}
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upright().transpose(Image.ROTATE_90).save(out / "phone_o6.heic", quality=50, exif=exif.tobytes(), icc_profile=icc)
    y, x = np.mgrid[0:24, 0:32]
    rgba = np.stack([x * 8, y * 10, np.full_like(x, 128), 40 + x * 6], axis=-1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(out / "alpha.heic", quality=90)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
