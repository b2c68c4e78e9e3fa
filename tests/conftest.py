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


@pytest.fixture(scope="session")
def tiny_random(tiny_dsst):
    """The ``tiny`` preset restorer (random weights, seed 0, 32 px) with :func:`tiny_dsst`; tests take a copy with their
    own settings via ``with_config`` (which shares these networks and leaves this one unchanged)."""
    from dynface.pipeline import DynFaceRestorer

    return DynFaceRestorer.from_preset("tiny", dsst=tiny_dsst)
