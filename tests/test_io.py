"""Weights I/O: safetensors round trips, safe .pth loading, and one clear ModelLoadError per failure."""

from __future__ import annotations

import json
import os
import pickle
import random
import warnings

import pytest
import torch

from dynface.models.io import (
    ModelLoadError,
    load_state_dict_file,
    load_weights,
    read_metadata,
    save_safetensors,
)
from dynface.models.unet import build_unet


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = build_unet("tiny")
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return m


def _one_error(path, match: list[str]) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as ei:
        load_state_dict_file(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for m in match:
        assert m in msg, msg
    return ei.value


# ---- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fp16", [False, True])
def test_safetensors_round_trip_with_metadata(tmp_path, tiny, fp16):
    sd = tiny.state_dict()
    meta = {"config": json.loads(json.dumps(tiny.cfg.to_dict())), "step": 1234, "note": "ema", "ok": True}
    path = tmp_path / "sub" / "w.safetensors"
    save_safetensors(sd, path, metadata=meta, fp16=fp16)
    assert path.exists() and not path.with_name(path.name + ".tmp").exists()
    assert read_metadata(path) == meta
    loaded, meta2 = load_state_dict_file(path)
    assert meta2 == meta
    assert set(loaded) == set(sd)
    for k, v in sd.items():
        assert loaded[k].dtype == torch.float32
        ref = v.half().float() if fp16 else v
        assert torch.equal(loaded[k], ref), k
    other = build_unet("tiny")
    assert load_weights(other, path) == meta
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([50])
    with torch.no_grad():
        a, b = other(x, t), tiny(x, t)
    assert torch.allclose(a, b, atol=1e-2 if fp16 else 0, rtol=0)


def test_pth_round_trip_weights_only(tmp_path, tiny):
    path = tmp_path / "w.pth"
    torch.save(tiny.state_dict(), path)
    sd, meta = load_state_dict_file(path)
    assert meta == {} and all(torch.equal(sd[k], v) for k, v in tiny.state_dict().items())
    # common wrappers of foreign checkpoints, with a DDP prefix
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.state_dict().items()}, "epoch": 3}, wrapped)
    sd2, _ = load_state_dict_file(wrapped)
    assert set(sd2) == set(tiny.state_dict())
    load_weights(build_unet("tiny"), wrapped)


# ---- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(random.Random(0).randbytes(4096))
    _one_error(path, [])


def test_truncated_safetensors(tmp_path, tiny):
    path = tmp_path / "w.safetensors"
    save_safetensors(tiny.state_dict(), path)
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 1, 10):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        _one_error(bad, ["corrupt or truncated"])


def test_truncated_pth(tmp_path, tiny):
    path = tmp_path / "w.pth"
    torch.save(tiny.state_dict(), path)
    bad = tmp_path / "cut.pth"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _one_error(bad, [])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol", "ignore:TypedStorage is deprecated")
def test_corrupted_files_only_raise_model_load_error(tmp_path, tiny):
    """Byte flips in valid files: corrupt pickles raise KeyError/IndexError/… inside torch.load."""
    rng = random.Random(1)
    for suffix in (".pth", ".safetensors"):
        good = tmp_path / f"good{suffix}"
        if suffix == ".pth":
            torch.save(tiny.state_dict(), good)
        else:
            save_safetensors(tiny.state_dict(), good)
        raw = good.read_bytes()
        for i in range(40):
            b = bytearray(raw)
            for _ in range(rng.randint(1, 12)):
                b[rng.randrange(min(len(b), 4000))] = rng.randrange(256)
            bad = tmp_path / f"bad{i}{suffix}"
            bad.write_bytes(bytes(b))
            try:
                load_state_dict_file(bad)
            except ModelLoadError as e:
                assert str(bad) in str(e)


def test_empty_missing_directory_and_unknown_suffix(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    _one_error(empty, ["empty"])
    _one_error(tmp_path / "missing.pth", ["not found"])
    d = tmp_path / "adir.pth"
    d.mkdir()
    _one_error(d, ["directory"])
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"PK\x03\x04")
    _one_error(odd, ["unsupported"])


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    pass


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unsafe_pickle_is_refused(tmp_path):
    marker = tmp_path / "executed"
    for i, obj in enumerate([{"w": _Payload(str(marker))}, {"w": torch.zeros(2), "o": _Plain()}]):
        path = tmp_path / f"unsafe{i}.pth"
        torch.save(obj, path)
        err = _one_error(path, ["weights_only"])
        assert "Re-running" not in str(err)  # no advice to disable the safe loader
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"w": _Payload(str(marker))}))
    _one_error(raw, ["weights_only"])
    assert not marker.exists()


def test_raw_pickle_gets_one_line_and_no_torch_warning(tmp_path):
    """A pickle that torch.save did not write (pickle.dump of arrays) or random bytes: one line naming the file
    and what it is; torch's "Detected pickle protocol" warning and its multi-line boilerplate never reach the user."""
    import numpy as np

    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"w": np.zeros(3)}, protocol=4))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a weights file " * 20)
    for path, what in ((raw, "plain Python pickle"), (junk, "not a weights file")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            err = _one_error(path, [what])
        assert not caught, [str(w.message)[:80] for w in caught]
        assert "\n" not in str(err) and "Re-running" not in str(err) and "file an issue" not in str(err)


def test_pickle_with_non_tensor_values(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"w": torch.zeros(2), "n": 3}, path)  # allowed types, but not a state dict
    _one_error(path, ["state dict of tensors"])
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    _one_error(lst, ["state dict of tensors"])


def test_wrong_architecture(tmp_path, tiny):
    path = tmp_path / "tiny.safetensors"
    save_safetensors(tiny.state_dict(), path)

    narrow = build_unet("tiny", model_channels=8)
    with pytest.raises(ModelLoadError) as ei:
        load_weights(narrow, path)
    msg = str(ei.value)
    assert str(path) in msg and "shape mismatch" in msg and "file (64, 16) vs model (32, 8)" in msg

    deeper = build_unet("tiny", num_res_blocks=(2, 1))
    with pytest.raises(ModelLoadError) as ei:
        load_weights(deeper, path)
    msg = str(ei.value)
    assert str(path) in msg and "missing keys" in msg and "unexpected keys" in msg

    sd = dict(tiny.state_dict())
    sd.pop("out.2.bias")
    sd["extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pth"
    torch.save(sd, partial)
    with pytest.raises(ModelLoadError) as ei:
        load_weights(build_unet("tiny"), partial)
    msg = str(ei.value)
    assert str(partial) in msg and "1 missing keys" in msg and "out.2.bias" in msg and "extra.weight" in msg


def test_sample_command_draws_a_deterministic_grid(tmp_path, tiny):
    import numpy as np
    from PIL import Image

    from dynface.cli import main
    from dynface.diffusion import ScheduleConfig
    from dynface.pipeline import load_prior

    path = tmp_path / "prior.safetensors"
    save_safetensors(tiny.state_dict(), path, metadata={"unet": tiny.cfg.to_dict(), "schedule": vars(ScheduleConfig(learn_sigma=tiny.cfg.learn_sigma))})
    unet, meta = load_prior(path)
    assert unet.cfg == tiny.cfg and not unet.training and "schedule" in meta
    outs = []
    for name in ("a.png", "b.png"):
        assert main(["sample", "--model", str(path), "-n", "5", "--steps", "3", "--batch", "2", "-o", str(tmp_path / name)]) == 0
        outs.append(np.asarray(Image.open(tmp_path / name)))
    size = tiny.cfg.image_size
    assert outs[0].shape[0] >= 2 * size and outs[0].shape[1] >= 3 * size  # 5 faces: a 3-wide grid, 2 rows
    assert np.array_equal(outs[0], outs[1])  # fixed seed → same picture
    assert outs[0].std() > 0
    assert main(["sample", "--model", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "c.png")]) == 2
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("argv,message", [
    (["--device", "cuda"], "--device cuda: no CUDA device here"),
    (["-o", "{tmp}"], "is a folder"),
    (["-o", "{tmp}/no/such/s.png"], "does not exist"),
    (["-o", "{tmp}/s.txt"], "must end in .png"),
    (["--seed", "-1"], "must be between 0 and 9223372036854775807, got -1"),
    (["--seed", "99999999999999999999"], "must be between 0 and 9223372036854775807"),
    (["--steps", "5000"], "must be between 1 and 1000, got 5000"),
    (["-n", "nan"], "not an integer: 'nan'"),
])
def test_sample_command_usage_errors_are_one_line(tmp_path, capsys, argv, message):
    """Each was a traceback or accepted (--seed -1, --steps 5000); now one line and exit 2, nothing written."""
    import torch

    from dynface.cli import main

    if argv[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "s.png")]
    try:
        rc = main(["sample", "--model", "embedded-64", "-n", "1", *argv])
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # the reason on one line (argparse's adds where the options are)
    assert rc == 2 and message in lines[0] and len(lines) <= 2 and "Traceback" not in err
    assert not (tmp_path / "s.png").exists()


def test_sample_grid_builds_no_autograd_graph(tiny):
    """sample_grid runs under no_grad (a helper inserted above it once took its decorator: 100 steps kept every
    activation for a backward pass that never comes)."""
    from dynface.diffusion import GaussianDiffusion, ScheduleConfig
    from dynface.training.prior import sample_grid

    diffusion = GaussianDiffusion.from_config(ScheduleConfig(learn_sigma=tiny.cfg.learn_sigma))
    assert any(p.requires_grad for p in tiny.parameters())
    assert not sample_grid(tiny, diffusion, 1, tiny.cfg.image_size, steps=2).requires_grad


def test_sample_grid_takes_the_steps_asked_for():
    """The stride T // steps made 334 steps of 300 and 1000 of 600; divisors of T keep the grids made so far."""
    from dynface.training.prior import grid_timesteps

    for steps in (1, 3, 7, 10, 100, 300, 600, 999, 1000, 5000):
        ts = grid_timesteps(1000, steps)
        assert len(ts) == min(steps, 1000) and len(set(ts)) == len(ts) and ts == sorted(ts, reverse=True)
        assert ts[0] == 999 and 0 <= ts[-1] < 1000 // min(steps, 1000)
    assert grid_timesteps(1000, 100) == list(range(999, -1, -10))


def test_safetensors_bytes_are_deterministic(tmp_path, tiny):
    """Same tensors + same metadata (in any insertion order) → byte-identical files (sha256 in cards)."""
    from safetensors.torch import load_file

    sd = tiny.state_dict()
    meta_a = {"unet": tiny.cfg.to_dict(), "step": 3, "kind": "prior", "template": "utkface64"}
    meta_b = dict(reversed(list(meta_a.items())))
    for i, meta in enumerate((meta_a, meta_b, meta_a)):
        save_safetensors(sd, tmp_path / f"{i}.safetensors", metadata=meta, fp16=True)
    blobs = [(tmp_path / f"{i}.safetensors").read_bytes() for i in range(3)]
    assert blobs[0] == blobs[1] == blobs[2]
    assert int.from_bytes(blobs[0][:8], "little") % 8 == 0  # header length aligned, as the format asks
    back = load_file(tmp_path / "0.safetensors")  # the reference reader accepts the re-encoded header
    assert set(back) == set(sd)
    assert read_metadata(tmp_path / "0.safetensors") == json.loads(json.dumps(meta_a))
