import numpy as np
import pytest
import torch
from _helpers import astronaut_dsst
from PIL import Image

torch.set_num_threads(1)  # tiny ops: more threads only add OpenMP overhead (and oversubscribe)


@pytest.fixture(scope="session")
def astronaut_face() -> np.ndarray:
    """The astronaut's face (public domain, skimage), cropped square around the face."""
    from skimage.data import astronaut

    img = astronaut()
    return np.asarray(Image.fromarray(img[20:220, 110:310]))


@pytest.fixture(scope="session")
def tiny_dsst():
    """A DSST table for 32-px tiny models, built analytically from the astronaut face."""
    return astronaut_dsst(32)
