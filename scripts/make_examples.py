"""Make the demo inputs shipped in ``src/dynface/examples/`` — nothing from ../shared.

* the astronaut's face (``skimage.data.astronaut()``, public domain: NASA), detected and aligned to the
  ``utkface64`` template at the default model's working size (128 px for ``embedded-128``), and a grey copy;
* faces sampled from our own embedded prior (DDIM, fixed seed, the picked indices), at that size;

each degraded with the ``gfpgan`` preset at a fixed seed (so the demo inputs are reproducible). Run after
the default model is trained:

    python scripts/make_examples.py [--prior src/dynface/weights/embedded-128/prior.safetensors --pick 5,7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "dynface" / "examples"


def astronaut_crop(size: int) -> np.ndarray:
    from skimage.data import astronaut

    from dynface.faces import FaceDetector, estimate_affine, template_for, warp_face

    img = astronaut()
    face = FaceDetector().detect(img)[0]
    return warp_face(img, estimate_affine(face.landmarks, template_for("utkface64", size)), size, border="reflect")


def prior_samples(prior: Path, n: int, seed: int, size: int) -> list[np.ndarray]:
    from dynface.diffusion import GaussianDiffusion
    from dynface.pipeline import load_prior, prior_schedule
    from dynface.training.prior import sample_grid

    unet, meta = load_prior(prior)
    x = sample_grid(unet, GaussianDiffusion.from_config(prior_schedule(meta, unet)), n, unet.cfg.image_size, steps=100, seed=seed)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return list(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def main() -> int:
    from dynface.degrade import degrade
    from dynface.registry import DEFAULT_MODEL, WEIGHTS_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default=str(WEIGHTS_DIR / DEFAULT_MODEL / "prior.safetensors"))
    ap.add_argument("--size", type=int, default=None,
                    help="working size (default: the prior's, 128 for embedded-128): the preset's blur and "
                         "downsampling then act on the model's own pixels")
    ap.add_argument("--seed", type=int, default=7, help="degradation seed")
    ap.add_argument("--sample-seed", type=int, default=0, help="prior noise seed")
    ap.add_argument("--pick", default="5,7",
                    help="which of the seed's first samples to ship (natural colours; the prior is under-trained "
                         "and some samples have colour casts)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    prior = Path(args.prior) if Path(args.prior).exists() else None  # without one: the astronaut alone, at --size
    if args.size is None:
        from dynface.models.io import read_metadata

        if prior is None:
            ap.error(f"no prior at {args.prior}: give --size for the astronaut alone")
        args.size = int(read_metadata(prior)["unet"]["image_size"])
    astro = astronaut_crop(args.size)
    clean = {"astronaut": astro, "astronaut_gray": np.repeat(np.asarray(Image.fromarray(astro).convert("L"))[..., None], 3, axis=2)}
    if prior is not None:
        pick = [int(i) for i in args.pick.split(",")]
        samples = prior_samples(prior, max(pick) + 1, args.sample_seed, args.size)
        for i in pick:
            clean[f"prior_sample{i}"] = samples[i]
    x = torch.from_numpy(np.stack(list(clean.values()))).permute(0, 3, 1, 2).float() / 255
    y, params = degrade(x, "gfpgan", seed=args.seed)
    for (name, _), yi, p in zip(clean.items(), y, params, strict=True):
        arr = (yi.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        im = Image.fromarray(arr)
        if name.endswith("_gray"):  # a true 1-channel file: the demo shows grey in → grey out
            im = im.convert("L")
        im.save(OUT / f"{name}_lq.png")
        print(f"{name}: {p.to_dict()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
