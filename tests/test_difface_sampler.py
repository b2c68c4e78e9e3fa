"""`fixed_start` = DifFace's sampler step for step (issue 12 part 2): start convention and ε source, against
closed forms computed by hand from the schedule's ᾱ."""

from __future__ import annotations

import math

import pytest
import torch

from dynface.diffusion import GaussianDiffusion
from dynface.pipeline import RestoreConfig
from dynface.sampler import SamplerConfig, guided_sample, timestep_sequences


class _AffineEps(torch.nn.Module):
    """ε̂(x, t) = a·x + b: x̂0 = (x − sqrt(1−ᾱ)ε̂)/sqrt(ᾱ) leaves [−1, 1] for part of the pixels (clipping matters)."""

    def __init__(self, a: float = -1.5, b: float = 0.4):
        super().__init__()
        self.a, self.b, self.calls = a, b, []

    def forward(self, x, t):
        self.calls.append(t.tolist())
        return self.a * x + self.b


def _run(cfg: SamplerConfig, start_img: torch.Tensor, t0: int, eta: float = 0.0):
    diff = GaussianDiffusion.from_config()
    unet = _AffineEps()
    b = start_img.shape[0]
    res = guided_sample(unet, diff, start_img, [t0] * b, start_img[:, None], torch.ones(b, 1), torch.full((b, 1), t0),
                        torch.full((b,), eta), cfg, 1.0, 0.5, 1.0, [torch.Generator().manual_seed(7) for _ in range(b)])
    return res, unet.calls, diff


def _by_hand(start: torch.Tensor, t0: int, calls: list[int], eps_source: str) -> torch.Tensor:
    """DDIM, eta 0, in float64 with ᾱ from the linear schedule written out (β_i = 1e-4 + (0.02 − 1e-4)·i/999)."""
    abar, prod = [], 1.0
    for i in range(1000):
        prod *= 1 - (1e-4 + (0.02 - 1e-4) * i / 999)
        abar.append(prod)
    z = torch.randn(start.shape[1:], generator=torch.Generator().manual_seed(7)).double()
    x = math.sqrt(abar[t0]) * start[0].double() + math.sqrt(1 - abar[t0]) * z
    clipped: list[float] = []
    for k, t in enumerate(calls):
        a = abar[t]
        ap = abar[calls[k + 1]] if k + 1 < len(calls) else 1.0
        eps = -1.5 * x + 0.4
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        clipped.append(float((x0.abs() > 1).double().mean()))
        x0 = x0.clamp(-1, 1)
        if eps_source == "clipped_x0":
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
    assert 0 < max(clipped) < 1  # part of x̂0 is clipped: the two ε sources must differ
    return x.float()[None]


@pytest.mark.parametrize("convention,calls", [("difface", [300, 200, 100, 0]), ("iddpm", [400, 300, 200, 100, 0])])
@pytest.mark.parametrize("eps_source", ["model", "clipped_x0"])
def test_trajectory_matches_the_closed_form(convention, calls, eps_source):
    start = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = SamplerConfig(steps="ddim10", guidance="none", start_convention=convention, eps_source=eps_source)
    res, seen, _ = _run(cfg, start, 400)
    assert [c[0] for c in seen] == calls
    assert int(res.nfe[0]) == len(calls)
    assert torch.allclose(res.x, _by_hand(start, 400, calls, eps_source), atol=1e-5)


def test_eps_sources_differ_only_where_x0_is_clipped():
    start = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    outs = {e: _run(SamplerConfig(steps="ddim10", guidance="none", eps_source=e), start, 400)[0].x for e in ("model", "clipped_x0")}
    assert not torch.allclose(outs["model"], outs["clipped_x0"], atol=1e-3)
    diff = GaussianDiffusion.from_config()
    g = torch.Generator().manual_seed(0)
    xt, t, tp = torch.rand(2, 3, 4, 4, generator=g) * 0.4 - 0.2, torch.tensor([396, 396]), torch.tensor([392, 392])
    eps = (torch.rand(2, 3, 4, 4, generator=g) - 0.5) * 0.2
    x0 = diff.x0_from_eps(xt, t, eps)
    assert float(x0.abs().max()) < 1  # nothing clipped: the two DDIM steps agree
    assert torch.allclose(diff.ddim_step_eps(xt, t, tp, x0, eps, 0.5, torch.zeros_like(xt)),
                          diff.ddim_step(xt, t, tp, x0, 0.5, torch.zeros_like(xt)), atol=1e-5)


def test_difface_is_the_default_in_every_mode():
    assert SamplerConfig().start_convention == "auto" and SamplerConfig().eps_source == "model"
    # "auto" is DifFace's convention on ddim250 and on the embedded models' ddim50, for every start step
    for steps in ("ddim250", "ddim50"):
        starts = list(range(1000))
        assert (timestep_sequences(starts, SamplerConfig(steps=steps))
                == timestep_sequences(starts, SamplerConfig(steps=steps, start_convention="difface")))
    assert RestoreConfig().sampler == SamplerConfig() and RestoreConfig().fixed_start_t == 400
    # DifFace's fixed start: ddim250, noised to t = 400, 100 UNet calls at 396, 392, …, 0
    seq = timestep_sequences([400], SamplerConfig())[0]
    assert seq[0] == 396 and seq[-1] == 0 and len(seq) == 100
    assert len(timestep_sequences([400], SamplerConfig(start_convention="iddpm"))[0]) == 101
    with pytest.raises(ValueError, match="start_convention"):
        SamplerConfig(start_convention="ddpm")
    with pytest.raises(ValueError, match="eps_source"):
        SamplerConfig(eps_source="x0")


def test_auto_start_never_calls_the_unet_far_below_the_start():
    """With --steps 10 DifFace's convention made the first UNet call up to 100 steps below the noise the face was
    given (grain: docs/results/start_convention.md). "auto" calls at the start itself when the next grid step lies
    more than AUTO_MAX_GAP below it, and keeps DifFace's call where it is near."""
    from dynface.sampler import AUTO_MAX_GAP

    cfg = SamplerConfig(steps="ddim10")
    assert timestep_sequences([400, 310, 300, 5, 0], cfg) == [[400, 300, 200, 100, 0], [300, 200, 100, 0],
                                                            [300, 200, 100, 0], [0], [0]]
    assert timestep_sequences([400], SamplerConfig(steps="ddim10", start_convention="difface")) == [[300, 200, 100, 0]]
    for steps in ("ddim10", "ddim25", "25", "ddim50", "50"):
        for t0, seq in zip(range(1000), timestep_sequences(list(range(1000)), SamplerConfig(steps=steps)), strict=True):
            assert t0 - seq[0] <= AUTO_MAX_GAP and seq[-1] == 0 and seq == sorted(set(seq), reverse=True)
    # the uniform schedule too (its stride is t0 / (n - 1))
    assert timestep_sequences([900], SamplerConfig(steps="10", schedule="uniform"))[0][0] == 900
    assert timestep_sequences([90], SamplerConfig(steps="10", schedule="uniform"))[0][0] == 80
