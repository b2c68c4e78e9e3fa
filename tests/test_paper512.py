"""The paper's 512-px setting end to end on the CPU (issue 12 part 3): DifFace's 512 UNet, DifFace's SwinIR as RM,
the 512 TM and SDE, DGSA and the packaged 512-px DSST table, all with random weights, one face, one UNet call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynface.dsst import DSSTTable
from dynface.models.dblm import DBLM
from dynface.models.dgsa import DGSA
from dynface.models.swinir import DIFFACE_512, SwinIR
from dynface.models.unet import PRESETS, UNetModel
from dynface.pipeline import DEFAULT_DSST, DynFaceRestorer, RestoreConfig
from dynface.sampler import SamplerConfig
from dynface.training.dblm import TRAIN_PRESETS


@pytest.mark.slow
def test_every_512_module_end_to_end_on_one_face():
    torch.manual_seed(0)
    unet = UNetModel(PRESETS["difface-ffhq512"])
    dblm = DBLM(TRAIN_PRESETS["ffhq512"])
    dblm.rm = SwinIR(DIFFACE_512, io="signed")
    table = DSSTTable.load(DEFAULT_DSST)
    # uniform schedule with 2 points from t0: DifFace's convention leaves one UNet call (t = 0); x0 guidance keeps
    # the UNet out of autograd (the ∂/∂x_t form would hold the 160 M-parameter UNet's activations at 512 px)
    cfg = RestoreConfig(mode="full", sampler=SamplerConfig(steps="2", schedule="uniform", guidance="x0",
                                                           start_convention="difface"))
    r = DynFaceRestorer(unet, dblm, DGSA(), table, cfg, template_name="ffhq512", name="paper512-random")
    face = np.asarray(torch.rand(512, 512, 3, generator=torch.Generator().manual_seed(1)).mul(255).byte())
    out = r.restore([face], seed=0, return_maps=True)
    rec = out.records[0]
    assert out.images[0].shape == (512, 512, 3) and out.images[0].dtype == np.uint8
    assert rec["nfe"] == 1 and 0.3 <= rec["std_star"] <= 12
    assert len(rec["start_steps"]) == 3 and 0 <= rec["start_step"] <= 999
    assert set(out.maps) >= {"restorer", "guide0", "dgsa"} and out.maps["restorer"][0].shape == (512, 512, 3)
