"""End-to-end behaviour of the restorer on the `tiny` preset (random weights, 32 px)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dynface.degrade import degrade
from dynface.diffusion import GaussianDiffusion
from dynface.guidance import residuals
from dynface.pipeline import MODES, DynFaceRestorer
from dynface.sampler import SamplerConfig, guided_sample, timestep_sequences


@pytest.fixture(scope="module")
def faces(astronaut_face):
    x = torch.from_numpy(np.asarray(Image.fromarray(astronaut_face).resize((32, 32), Image.LANCZOS)).copy())
    x = x.permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    y, _ = degrade(x, "gfpgan", seed=3)
    return y


def _restorer(tiny_dsst, **kw):
    r = DynFaceRestorer.from_preset("tiny", dsst=tiny_dsst)
    return r.with_config(**{"steps": "ddim10", **kw})


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs(mode, faces, tiny_dsst):
    r = _restorer(tiny_dsst, mode=mode)
    out = r.restore(faces, seed=0, return_maps=True)
    assert len(out.images) == 2 and out.images[0].shape == (32, 32, 3) and out.images[0].dtype == np.uint8
    rec = out.records[0]
    assert rec["mode"] == mode and rec["seconds"] > 0 and rec["std_star"] > 0
    if mode == "restorer_only":
        assert rec["nfe"] == 0
        return
    assert rec["nfe"] > 0
    if mode == "fixed_start":  # DifFace: no guidance, so no fidelity to record
        assert rec["start_step"] == 400 and rec["eta"] == 0.5 and rec["fidelity"] is None
    else:
        assert rec["eta"] == pytest.approx(min(rec["std_star"] / 10, 1.0), rel=1e-5) and rec["fidelity"] == 0.5
    # what scaled the guidance: no_dgsa's constant is stated (the ablation mixes strength and shape otherwise)
    assert rec["guidance_scale"] == (0.5 if mode == "no_dgsa" or r.dgsa is None else "dgsa")
    n_guides = 1 if mode == "single_guide" else 3
    assert len(rec["sigmas_init"]) == n_guides
    assert {"dgsa", "guide0", "restorer"} <= set(out.maps)


def test_nfe_follows_the_start_step(faces, tiny_dsst):
    nfe = {m: _restorer(tiny_dsst, mode=m).restore(faces[:1]).records[0]["nfe"] for m in ("fixed_start", "full", "no_dsst")}
    full = _restorer(tiny_dsst).restore(faces[:1]).records[0]
    # the default start convention ("auto") on this coarse grid (ddim10): noised to the start step, first UNet call
    # at the start itself when the next grid step lies more than 20 below it (else at that grid step, as DifFace)
    def calls(t0: int) -> int:
        below = [t for t in range(0, 1000, 100) if t < t0]
        return len(below) + (not below or t0 - max(below) > 20)

    assert nfe["fixed_start"] == calls(400) == 5
    assert nfe["no_dsst"] == calls(999) == 11
    assert nfe["full"] == calls(full["start_step"])


class _Recorder(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls = unet, []
        self.cfg = unet.cfg

    def forward(self, x, t):
        self.calls.append(t.tolist())
        return self.unet(x, t)


@pytest.mark.parametrize("schedule", ["grid", "uniform"])
def test_per_sample_start_steps_inside_one_batch(schedule, tiny_dsst):
    r = _restorer(tiny_dsst)
    rec = _Recorder(r.unet)
    x = torch.zeros(2, 3, 32, 32)
    guides = x[:, None].repeat(1, 1, 1, 1, 1)
    cfg = SamplerConfig(steps="ddim10" if schedule == "grid" else "6", schedule=schedule, guidance="x0",
                        start_convention="iddpm")  # first call at the start step itself
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    res = guided_sample(rec, r.diffusion, x, [690, 903], guides, torch.ones(2, 1), torch.tensor([[690], [903]]),
                        torch.tensor([0.2, 0.9]), cfg, 1 / 16, 0.5, 1.0, gens)
    # grid: the earlier (noisier) start runs alone first; uniform: both run from the first call
    assert rec.calls[0] == ([903] if schedule == "grid" else [690, 903])
    mixed = [c for c in rec.calls if len(c) == 2]
    assert mixed and mixed[0][0] != mixed[0][1]  # one UNet call, two different timesteps
    seqs = timestep_sequences([690, 903], cfg)
    assert res.nfe.tolist() == [len(s) for s in seqs]
    if schedule == "grid":
        assert res.nfe[0] < res.nfe[1]
    else:
        assert res.nfe[0] == res.nfe[1] == 6


def test_seed_reproducibility_and_batch_independence(faces, tiny_dsst):
    r = _restorer(tiny_dsst)
    a = r.restore(faces, seed=5).tensor
    b = r.restore(faces, seed=5).tensor
    c = r.restore(faces, seed=6).tensor
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    alone = r.restore(faces[1:2], seed=7).tensor  # face i of a batch uses seed + i
    assert torch.allclose(alone[0], c[1], atol=2e-3)


class GaussianOracle(torch.nn.Module):
    """The exact ε-predictor for data ~ N(0, s²I): x̂0 = sqrt(ᾱ)s²/(ᾱs² + 1 − ᾱ)·x_t (a real denoiser)."""

    def __init__(self, cfg, alphas_cumprod, s=0.5):
        super().__init__()
        self.cfg, self.ac, self.s2 = cfg, alphas_cumprod.float(), s * s
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        a = self.ac[t].reshape(-1, 1, 1, 1)
        x0 = a.sqrt() * self.s2 / (a * self.s2 + 1 - a) * x
        return (x - a.sqrt() * x0) / (1 - a).sqrt() + 0 * self.dummy


@pytest.mark.parametrize("guidance", ["unet", "x0", "prox"])
def test_guidance_pulls_towards_the_guides(guidance, faces, tiny_dsst):
    base = _restorer(tiny_dsst, guidance=guidance, steps="ddim25")
    oracle = GaussianOracle(base.unet.cfg, base.diffusion.alphas_cumprod)
    r = DynFaceRestorer(oracle, base.dblm, base.dgsa, tiny_dsst, base.cfg)
    d = r.dblm(faces * 2 - 1)
    scale = r.dblm.cfg.size / r.dblm.cfg.ref_size

    def resid(x):
        return residuals(x * 2 - 1, d.guides, d.sigmas * scale).pow(2).mean().item()

    unguided = r.restore(faces, seed=1, fidelity=0.0).tensor
    guided = r.restore(faces, seed=1, fidelity=1.0).tensor
    assert resid(guided) < 0.5 * resid(unguided)


def test_zero_fidelity_equals_the_unguided_sampler(faces, tiny_dsst):
    r = _restorer(tiny_dsst, sigma_lr=0.0)
    a = r.restore(faces, seed=2, fidelity=0.0).tensor
    b = r.with_config(guidance="none").restore(faces, seed=2).tensor
    assert torch.allclose(a, b, atol=1e-6)


def test_fourier_and_x0_guidance_modes(faces, tiny_dsst):
    for g in ("x0", "prox"):
        out = _restorer(tiny_dsst, guidance=g).restore(faces[:1])
        assert out.records[0]["guidance"] == g and np.isfinite(out.tensor.numpy()).all()


def test_bad_inputs(tiny_dsst):
    r = _restorer(tiny_dsst)
    with pytest.raises(ValueError, match="fidelity"):
        r.restore(torch.zeros(1, 3, 32, 32), fidelity=2.0)
    with pytest.raises(ValueError, match="mode"):
        r.with_config(mode="bogus")


BAD_FACES = [  # what a caller may pass by mistake, and what it is told (nothing is cast into garbage silently)
    ([np.full((32, 32, 3), 0.5, np.float32)], TypeError, "expected a uint8 image, got float32.*img \\* 255"),
    ([np.full((32, 32, 3), 300, np.uint16)], TypeError, "got uint16"),
    ([np.ones((32, 32, 3), bool)], TypeError, "got bool"),
    ([np.zeros((3, 32, 32), np.uint8)], ValueError, r"got shape \(3, 32, 32\)"),
    ([np.zeros((0, 0, 3), np.uint8)], ValueError, "empty image"),
    ([], ValueError, "no faces"),
    ("face.png", TypeError, "not a path"),
    ([torch.zeros(3, 32, 32)], TypeError, "list of tensors"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "torch.uint8 tensor"),
    (torch.full((1, 3, 32, 32), 200.0), ValueError, "0..255 tensor"),
    (torch.full((1, 3, 32, 32), -0.8), ValueError, r"\[-1, 1\] tensor"),
    (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN"),
    (torch.zeros(1, 32, 32, 3), ValueError, r"\(B, 3, H, W\)"),
    (torch.zeros(0, 3, 32, 32), ValueError, "no faces"),
]


@pytest.mark.parametrize("faces_in,error,message", BAD_FACES, ids=[f"bad{i}" for i in range(len(BAD_FACES))])
def test_restore_refuses_what_it_would_have_to_guess(faces_in, error, message, tiny_random):
    """A float or 16-bit array came back black and a 0..255 tensor white, silently; CHW arrays and empty lists gave
    PIL's or numpy's errors. Now each is refused before any work, with what it is and, where it helps, what to do."""
    with pytest.raises(error, match=message):
        tiny_random.restore(faces_in)


def test_restore_takes_every_honest_form_of_a_face(tiny_random, astronaut_face):
    """uint8 HxWx3 / HxW / HxWx1 / HxWx4 arrays (any size, negative strides), a (B, H, W, 3) array, 8-bit PIL images
    and float tensors in [0, 1] all give the same face."""
    r = tiny_random.with_config(mode="restorer_only")
    face = np.array(Image.fromarray(astronaut_face).resize((32, 32), Image.LANCZOS))
    want = r.restore([face]).images[0]
    rgba = np.dstack([face, np.full(face.shape[:2], 7, np.uint8)])
    flipped = np.ascontiguousarray(face[:, ::-1])[:, ::-1]
    for same in ([rgba], [flipped], face[None], [Image.fromarray(face)], torch.from_numpy(face).permute(2, 0, 1).float() / 255):
        assert np.array_equal(r.restore(same).images[0], want)
    gray = face[:, :, 0]
    assert np.array_equal(r.restore([gray]).images[0], r.restore([gray[:, :, None]]).images[0])
    with pytest.raises(TypeError, match="16/32-bit"):
        r.restore([Image.fromarray(gray.astype(np.uint16) * 257)])


def test_seeds_are_integers_in_range(tiny_random):
    """seed=np.int64(3) failed and seeds=[1.7] became 1; now every seed is an integer in torch's range or refused."""
    x = torch.rand(1, 3, 32, 32)
    assert tiny_random.restore(x, seed=np.int64(3)).records[0]["seed"] == 3
    for kw, error in ((dict(seed=-1), ValueError), (dict(seed=2**63), ValueError), (dict(seed=1.5), TypeError),
                      (dict(seed="1"), TypeError), (dict(seed=True), TypeError), (dict(seeds=[1.7]), TypeError)):
        with pytest.raises(error, match="seed"):
            tiny_random.restore(x, **kw)
    with pytest.raises(ValueError, match="seed \\+ face index"):
        tiny_random.restore(torch.rand(2, 3, 32, 32), seed=2**63 - 1)


def test_configs_are_checked_when_made_not_at_the_first_restore(tiny_random):
    """steps=0, 'abc' or 2000, zeta='x' and n_guides=0 failed deep inside the first restore; 'auto' precision
    was refused by with_config though from_pretrained's default."""
    from dynface.pipeline import DynFaceRestorer

    for kw, message in ((dict(steps="0"), "at least 2"), (dict(steps="1"), "at least 2"), (dict(steps="abc"), "expected ddimN"), (dict(steps=2000), "at most 1000"),
                        (dict(zeta="x"), "zeta"), (dict(n_guides=0), "n_guides"), (dict(precision="fp64"), "choose from")):
        with pytest.raises(ValueError, match=message):
            tiny_random.with_config(**kw)
    assert tiny_random.with_config(precision="auto").cfg.sampler.precision in ("fp32", "bf16")
    with pytest.raises(ValueError, match="steps"):
        DynFaceRestorer.from_pretrained("embedded-64", steps=0)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        DynFaceRestorer.from_pretrained("embedded-64", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            DynFaceRestorer.from_pretrained("embedded-64", device="cuda")


def test_restore_photo_checks_upscale_before_the_work(tiny_random):
    """upscale=0 gave a 1x1 photo and upscale=100 tried to allocate 8 GB; both fail at once now."""
    photo = np.zeros((64, 64, 3), np.uint8)
    for up, message in ((0, "finite number > 0"), (-1, "finite number > 0"), (float("nan"), "finite number > 0"),
                        ("2", "finite number > 0"), (400, "output too large")):
        with pytest.raises(ValueError, match=message):
            tiny_random.restore_photo(photo, upscale=up, faces=[])
    assert tiny_random.restore_photo(photo, upscale=2, faces=[]).photo.shape == (128, 128, 3)


def test_diffusion_is_shared_not_rebuilt(tiny_dsst):
    r = _restorer(tiny_dsst)
    assert isinstance(r.diffusion, GaussianDiffusion)
    assert r.with_config(mode="no_dgsa").unet is r.unet


def test_compiled_restorer_matches_eager(faces, tiny_dsst):
    # dynamo traces the UNet inside the guided sampler (forward and the guidance's backward); the "eager"
    # backend runs the captured graphs as they are, so the result must equal the uncompiled one
    r = _restorer(tiny_dsst)
    c = r.compiled(backend="eager")
    assert type(c.unet).__name__ == "OptimizedModule" and type(r.unet).__name__ != "OptimizedModule"
    assert c.unet._orig_mod is r.unet and c.size == r.size
    assert c.compiled(backend="eager").unet._orig_mod is r.unet  # not compiled twice over
    a, b = r.restore(faces, seed=5), c.restore(faces, seed=5)
    torch.testing.assert_close(b.tensor, a.tensor, atol=1e-5, rtol=0)
    assert [x["nfe"] for x in b.records] == [x["nfe"] for x in a.records]


def test_the_readme_names_import_from_the_package():
    """``from dynface import DynFaceRestorer`` failed (the package exported nothing); the names load when used."""
    import subprocess
    import sys

    import dynface
    from dynface import faces, imageio, jobs, pipeline

    assert dynface.DynFaceRestorer is pipeline.DynFaceRestorer and dynface.restore_photo is faces.restore_photo
    assert dynface.run_job is jobs.run_job and dynface.read_image is imageio.read_image
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dynface.nope  # noqa: B018
    light = "import sys, dynface; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", light], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_restoring_inside_inference_mode_and_building_keep_the_callers_torch_state(faces, tiny_dsst):
    """Pipelines wrap inference in torch.inference_mode(): the guidance (a gradient through the UNet) raised "element
    0 of tensors does not require grad" there. Building a restorer drew from torch's global random state, so a
    notebook's later torch.randn changed. A path given to restore_photo said "expected a uint8 image, got <U7"."""
    r = _restorer(tiny_dsst, mode="no_dsst")
    want = r.restore(faces, seed=4).images
    with torch.inference_mode():
        got = r.restore(faces, seed=4).images
        made_here = faces.clone()  # an inference tensor
        again = r.restore(made_here, seed=4).images
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(want, got, again, strict=True))
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    DynFaceRestorer.from_preset("tiny", dsst=tiny_dsst, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(TypeError, match="restore_photo takes images, not a path .*read_image"):
        r.restore_photo("photo.jpg")


def test_bad_arguments_fail_before_the_weights_are_read(faces, tiny_dsst):
    """from_pretrained read the weights before it refused a bad mode, steps or a misspelt keyword (a raw dataclass
    TypeError); restore took fidelity=True and said "'<=' not supported" for a string."""
    for kw, err in ((dict(mode="bogus"), ValueError), (dict(stepz=3), TypeError), (dict(steps="abc"), ValueError)):
        with pytest.raises(err, match="unknown mode|unknown argument.*stepz|unusable steps"):
            DynFaceRestorer.from_pretrained("/nonexistent/model", **kw)  # checked before the path is even looked at
    r = _restorer(tiny_dsst)
    for bad, err in ((True, TypeError), ("0.5", TypeError), (float("nan"), ValueError), (2, ValueError)):
        with pytest.raises(err, match="fidelity must"):
            r.restore(faces, fidelity=bad)


def test_misspelt_fields_and_crops_far_from_square_are_told(astronaut_face, tiny_dsst):
    """with_config(zetta=2) was a raw dataclass TypeError; a crop far from square was stretched silently (the
    command line refuses it beyond 1.25:1 and notes the stretch below); UsageError was no ValueError."""
    from dynface.jobs import UsageError

    r = _restorer(tiny_dsst)
    with pytest.raises(TypeError, match="unknown field.*'zetta' \\(did you mean 'zeta'\\?\\)"):
        r.with_config(zetta=2)
    assert r.with_config(zeta=2, mode="no_dgsa").cfg.sampler.zeta == 2
    face = np.asarray(Image.fromarray(astronaut_face).resize((40, 40)))
    near = np.ascontiguousarray(face[:, 2:-2])  # a few columns off square
    with pytest.warns(UserWarning, match=r"face 0: not square .*stretched"):
        r.restore([near])
    with pytest.warns(UserWarning, match=r"the faces: not square"):
        r.restore(torch.rand(1, 3, 40, 36))
    with pytest.raises(ValueError, match=r"face 1: not square .*restore_photo"):
        r.restore([face, np.ascontiguousarray(face[: face.shape[0] // 2])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.restore([face])  # square: no warning
    assert issubclass(UsageError, ValueError)


def test_restore_photo_checks_seed_and_fidelity_before_detection(tiny_dsst, monkeypatch):
    """A bad fidelity or seed was refused only after the faces were detected (0.5 s on a 512-px photo, more on large
    ones)."""
    from dynface import faces as faces_mod

    def no_detection(*a, **k):
        raise AssertionError("detection ran before the arguments were checked")

    monkeypatch.setattr(faces_mod, "prepare_photo", no_detection)
    r = _restorer(tiny_dsst)
    photo = np.zeros((40, 40, 3), np.uint8)
    for kw, err in ((dict(fidelity=2), ValueError), (dict(fidelity="high"), TypeError), (dict(seed=-1), ValueError),
                    (dict(seed=1.5), TypeError)):
        with pytest.raises(err, match="fidelity must|seed must"):
            r.restore_photo(photo, **kw)


def test_a_precision_emulated_on_this_cpu_warns_from_python_too(monkeypatch):
    """The CLI warned that bf16 without native support (or fp16) on a CPU is x20 or more slower; from_pretrained
    said nothing (10 s against 0.33 s for 2 faces in the API audit). The job layer still says it once, its own way."""
    import warnings

    import dynface.pipeline as pl
    from dynface.jobs import RestoreSettings, load_restorer

    monkeypatch.setattr(pl, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="precision bf16 on this CPU is emulated"):
        DynFaceRestorer.from_pretrained("embedded-64", precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        DynFaceRestorer.from_pretrained("embedded-64", precision="fp32")
        DynFaceRestorer.from_pretrained("embedded-64")  # auto picks fp32 here
        load_restorer(RestoreSettings(model="embedded-64", precision="bf16"))  # the CLI prints settings_warnings
