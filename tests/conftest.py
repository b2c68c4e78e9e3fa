import numpy as np
import pytest
import torch
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
    from skimage.data import astronaut

    from dynface.diffusion import GaussianDiffusion
    from dynface.dsst import DSSTConfig, build_dsst

    face = np.asarray(Image.fromarray(astronaut()[20:220, 110:310]).resize((32, 32), Image.LANCZOS))
    x = torch.from_numpy(face.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return build_dsst(x, GaussianDiffusion.from_config().alphas_cumprod, DSSTConfig(image_size=32))
