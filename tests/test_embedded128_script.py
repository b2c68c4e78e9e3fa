"""embedded-128: the configuration's size, and the whole GPU script path run on the CPU with tiny settings.

The smoke run is what a lent GPU runs (scripts/gpu_train_embedded128.sh → scripts/gpu_train_embedded128.py
train), with configs/embedded-128-smoke (32-px tiny networks, a few steps) on 16 synthetic faces: pack here,
train, check $OUT against the device tool's return limits, unpack, package, load and restore, then a second
round that resumes from the returned EMA on the next data shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import load_script
from PIL import Image

from dynface.dsst import DSSTTable
from dynface.models.dblm import DBLM
from dynface.models.unet import AttentionBlock, UNetModel
from dynface.training.config import load_config
from dynface.training.dblm import DBLMTrainConfig, make_labeler
from dynface.training.dgsa import DGSATrainConfig
from dynface.training.package import package_model
from dynface.training.prior import PriorTrainConfig

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "scripts" / "gpu_train_embedded128.py"
CFG = ROOT / "configs" / "embedded-128"


def test_embedded128_prior_config_size_and_attention():
    ucfg = load_config(PriorTrainConfig, CFG / "prior.yaml").unet_config()
    assert (ucfg.image_size, ucfg.out_channels, ucfg.learn_sigma) == (128, 3, False)  # ε-prediction, fixed variance
    with torch.device("meta"):
        unet = UNetModel(ucfg)
    n = sum(p.numel() for p in unet.parameters())
    assert n == 13_271_939  # the count the plan and the config's comment state
    assert n <= 35_000_000 and 2 * n <= 70e6  # the bound (fp16 file ≤ 70 MB)
    assert 2 * n < 30 * 2**20  # and what the device tool lets travel beside a data shard (docs/embedded-128_plan.md)
    # attention exactly at 16 and 8 px: walk the blocks with the resolution each one works at
    res, size = set(), ucfg.image_size
    for block in unet.input_blocks:
        if any(isinstance(m, AttentionBlock) for m in block):
            res.add(size)
        size //= 2 if any(type(m).__name__ == "Downsample" for m in block) else 1
    assert res == {16, 8}
    assert any(isinstance(m, AttentionBlock) for m in unet.middle_block)  # at 8 px


def _flops(net: torch.nn.Module, y: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(y)
    return counter.get_total_flops()


def test_embedded128_dblm_and_dgsa_configs_load():
    dcfg = load_config(DBLMTrainConfig, CFG / "dblm.yaml").dblm_config()
    assert dcfg.size == 128 and dcfg.rm_width == 32  # a wider RM than embedded-64's 16
    dblm = DBLM(dcfg)
    assert sum(p.numel() for p in dblm.rm.parameters()) > 4 * sum(p.numel() for p in DBLM().rm.parameters())
    y = torch.rand(1, 3, 128, 128) * 2 - 1
    out = dblm(y)
    assert torch.equal(out.restored, y) and torch.equal(out.transferred, y)  # residual nets: the identity at init
    # RM and TM run on the 2×2 space-to-depth image: the same parameters in number, 4× fewer FLOPs per face
    assert (dcfg.rm_unshuffle, dcfg.tm_unshuffle) == (2, 2)
    full = DBLM(dataclasses.replace(dcfg, rm_unshuffle=1, tm_unshuffle=1))
    for net, ref in ((dblm.rm, full.rm), (dblm.tm, full.tm)):
        assert list(net.state_dict()) == list(ref.state_dict())  # same names: only the stem's channels differ
        assert 3.5 < _flops(ref, y) / _flops(net, y) < 4.5
    load_config(DGSATrainConfig, CFG / "dgsa.yaml", {"prior": "p", "dblm": "d", "dsst": "s"})


def test_embedded128_dsst_table_and_masked_label():
    table = DSSTTable.load(CFG / "dsst.json")
    meta = table.metadata
    assert (meta["image_size"], meta["config"]["mode"], meta["num_images"]) == (128, "empirical", 256)
    steps = table.lookup(torch.tensor([1.0, 4.0, 8.0, 15.0]), as_int=True).tolist()
    assert steps == sorted(steps) and steps[-1] > 700  # blurrier guides start later
    cfg = load_config(DBLMTrainConfig, CFG / "dblm.yaml", {"label_dsst": str(CFG / "dsst.json")})
    assert cfg.label == "masked"
    labeler = make_labeler(cfg, cfg.dblm_config(), torch.arange(0.5, 12.01, 0.25))
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    assert labeler(x, x).tolist() == [0.5, 0.5]  # a perfect restorer needs no blur
    with pytest.raises(ValueError, match="built at 128 px"):  # embedded-64's 64-px table is refused
        make_labeler(load_config(DBLMTrainConfig, CFG / "dblm.yaml"), cfg.dblm_config(), torch.arange(0.5, 12.01, 0.25))


def _helper():
    return load_script("gpu_train_embedded128")


def _call(helper, capsys, argv: list[str]) -> tuple[int, str]:
    """The helper's own main, in this process (saves a torch import per step)."""
    capsys.readouterr()
    rc = helper.main(argv)
    return rc, capsys.readouterr().out


def _run(args: list[str], **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), **env}
    return subprocess.run(args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)


def _faces(folder: Path, n: int, shift: int) -> None:
    from skimage.data import astronaut

    folder.mkdir(parents=True)
    img, rng = astronaut(), np.random.default_rng(shift)
    for i in range(n):
        y, x = rng.integers(0, 40, 2)
        Image.fromarray(img[10 + y:210 + y, 100 + x:300 + x]).save(folder / f"{i:02d}.jpg", quality=95)


def _check_return_limits(out: Path) -> list[str]:
    """The device tool returns ≤ 8 files, ≤ 16 MiB each, 64 MiB together, plain names, ≤ 2 folders down."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in files) and sum(p.stat().st_size for p in files) <= 64 * 2**20
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and not p.name.startswith(".") for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    return sorted(p.name for p in files)


@pytest.mark.slow
def test_gpu_script_smoke_round_trip(tmp_path, capsys):
    py, helper = sys.executable, _helper()
    _faces(tmp_path / "train", 16, 0)
    _faces(tmp_path / "val", 4, 1)
    pack = tmp_path / "pack"
    common = ["--data", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--dest", str(pack), "--size", "32",
              "--shards", "2", "--no-auto-init"]
    rc, text = _call(helper, capsys, ["pack", *common])
    assert rc == 0
    info = json.loads(text.strip().splitlines()[-1])
    assert (info["round"], info["shard"], info["faces"], info["val_faces"], info["init"]) == (0, 0, 8, 4, None)
    assert len(list((pack / "faces").glob("*.webp"))) == 8

    # the dry run prints the device call (and flags a pack the device script would not read)
    rc, text = _call(helper, capsys, ["plan", "520", "all", "--pack", str(pack)])
    call = json.loads(text.split("device-tool call:")[1])
    assert call["command"] == "bash scripts/gpu_train_embedded128.sh 520 all" and call["timeout_s"] == 560
    assert rc == 1 and "pack there" in text
    # a carried DBLM of another architecture (round 0's full-resolution RM) is refused before the call, not on the device
    from dynface.models.io import save_safetensors

    old_arch = dataclasses.replace(load_config(DBLMTrainConfig, CFG / "dblm.yaml").dblm_config(), rm_unshuffle=1,
                                   tm_unshuffle=1)
    save_safetensors({"w": torch.zeros(1)}, pack / "dblm.safetensors", metadata={"dblm": old_arch.to_dict()})
    rc, text = _call(helper, capsys, ["plan", "520", "prior,dblm", "--pack", str(pack)])
    assert rc == 1 and "rm_unshuffle 1 (wanted: 2), tm_unshuffle 1 (wanted: 2)" in text
    rc, text = _call(helper, capsys, ["plan", "520", "prior,dgsa", "--pack", str(pack)])  # DGSA reads any DBLM file
    assert "architecture differs" not in text
    (pack / "dblm.safetensors").unlink()

    # round 0: every phase, as on the device
    out = tmp_path / "out"
    runs = tmp_path / "runs"
    r = _run(["bash", "scripts/gpu_train_embedded128.sh", "120", "all"], OUT=str(out), DYNFACE_GPU_SCRIPT_SMOKE="1",
             PYTHON=py, E128_ARGS=f"--pack {pack} --runs {runs}")
    assert r.returncode == 0, r.stdout + r.stderr
    names = _check_return_limits(out)
    assert {"prior.part0.safetensors", "bundle.tar", "summary.json", "log.txt"} <= set(names)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prior"]["images_seen"] == 6 * 4  # max_steps × batch of the smoke config
    assert summary["prior"]["img_per_s_median"] > 0 and summary["prior"]["train_gflop_per_img"] > 0
    assert summary["dblm"]["progress"] == {"rm": 3, "sde": 2, "tm": 3} and summary["dblm"]["label"] == "masked"
    assert summary["dgsa"]["steps"] == 2
    assert "dsst: 4 val faces at 32 px" in (out / "log.txt").read_text()
    cc = summary["prior"]["compile_cache"]  # compile is off in the smoke config: nothing loaded nor saved
    assert (cc["torch"], cc["device"], cc["loaded"], cc["load"]["status"]) == (torch.__version__, "cpu", False,
                                                                               "compile off")
    assert "saved" not in cc and cc["first_log_row_s"] == summary["prior"]["first_log_row_s"] > 0
    assert info["compile_cache"] is None and not (pack / "compile_cache.bin").exists()

    # here: unpack (with a compile cache as a compiling device returns it), package, load and restore
    returned = helper.encode_compile_cache(b"artifacts " * 500, {"torch": "2.11.0+cu130", "device": "NVIDIA H200"})
    (out / "compile_cache.bin").write_bytes(returned)
    round0 = tmp_path / "round0"
    rc, text = _call(helper, capsys, ["unpack", str(out), str(round0)])
    assert rc == 0 and "train package --prior" in text
    assert (round0 / "compile_cache.bin").read_bytes() == returned and "compile_cache.bin: 0.00 MiB" in text
    model = tmp_path / "model"
    package_model(model, round0 / "prior.safetensors", round0 / "dblm.safetensors", round0 / "dsst.json",
                  round0 / "dgsa.safetensors")
    from dynface.models.io import read_metadata
    from dynface.pipeline import DynFaceRestorer

    meta = read_metadata(model / "prior.safetensors")
    assert (meta["images_seen"], meta["round"], meta["data_shard"]) == (24, 0, "0/2")
    restorer = DynFaceRestorer.from_pretrained(model, steps=10)
    res = restorer.restore([np.asarray(Image.open(tmp_path / "val" / "00.jpg").resize((32, 32)))])
    assert res.images[0].shape == (32, 32, 3)

    # the speed phase (issue 10's GPU s/face): named only, in the last SPEED_SECONDS of a call that plan checks leaves
    # them, here alone; the table comes back in the bundle and its rows in summary.json
    assert helper.parse_phases("all") == ("prior", "dsst", "dblm", "dgsa")
    rc, text = _call(helper, capsys, ["plan", "520", "prior,dgsa,speed", "90", "--pack", str(pack)])
    assert "rest_seconds 90 is too little after the prior" in text and "pass at least 135" in text
    rc, text = _call(helper, capsys, ["plan", "520", "prior,dgsa,speed", "135", "--pack", str(pack)])
    assert "too little" not in text and "gpu_train_embedded128.sh 520 prior,dgsa,speed 135" in text
    outs = tmp_path / "out_speed"
    r = _run(["bash", "scripts/gpu_train_embedded128.sh", "60", "speed"], OUT=str(outs), DYNFACE_GPU_SCRIPT_SMOKE="1",
             PYTHON=py, E128_ARGS=f"--pack {pack} --runs {runs}")
    assert r.returncode == 0, r.stdout + r.stderr
    _check_return_limits(outs)
    sp = json.loads((outs / "summary.json").read_text())["speed"]
    assert (sp["model"], sp["faces"], len(sp["rows"])) == ("tiny", 16, 16)  # 4 modes x batch 1, 8 x fp32, bf16
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in sp["rows"]]
    assert [(c[2], c[5], c[6]) for c in cells[:4]] == [("fp32", m, "1") for m in helper.SPEED_MODES]
    assert all(float(c[8]) > 0 for c in cells[:4])  # the first process (fp32, one face per call) always fits
    assert float(cells[0][7]) == 0 < float(cells[3][7])  # restorer_only: no NFE; full: some
    rc, text = _call(helper, capsys, ["unpack", str(outs), str(tmp_path / "round0_speed")])
    assert rc == 0 and (tmp_path / "round0_speed" / "speed_gpu.md").read_text().count("| tiny") == 16

    # round 1 resumes from the returned EMA, on the other shard, with a fresh optimizer
    # (and goes on training round 0's DBLM, carried with --reuse, with the round's compile cache unless told not to)
    # (and a shard count other than the reused round's is flagged: the rounds rotate through the shards only while K
    # stays the same)
    capsys.readouterr()
    rc = helper.main(["pack", *common, "--init", str(round0 / "prior.safetensors"), "--reuse", str(round0),
                      "--compile-cache", "none", "--shards", "3"])
    text, err = capsys.readouterr()
    assert rc == 0 and json.loads(text.strip().splitlines()[-1])["compile_cache"] is None
    assert not (pack / "compile_cache.bin").exists() and "3 shards, but" in err and "pass --shards 2" in err
    rc, text = _call(helper, capsys, ["pack", *common, "--init", str(round0 / "prior.safetensors"), "--reuse", str(round0)])
    assert rc == 0
    info = json.loads(text.strip().splitlines()[-1])
    assert (info["round"], info["shard"], info["init_images_seen"]) == (1, 1, 24)
    assert info["reused"] == ["dblm.safetensors", "dsst.json"]
    assert (pack / "compile_cache.bin").read_bytes() == returned
    assert info["compile_cache"] == {"bytes": len(returned), "raw_bytes": 5000, "torch": "2.11.0+cu130",
                                     "device": "NVIDIA H200"}
    assert abs(info["total_mib"] - info["tree_mib"] - info["carry_mib"]) < 0.15  # the pack total, cache included
    out1 = tmp_path / "out1"
    r = _run(["bash", "scripts/gpu_train_embedded128.sh", "90", "prior,dblm"], OUT=str(out1), DYNFACE_GPU_SCRIPT_SMOKE="1",
             PYTHON=py, E128_ARGS=f"--pack {pack} --runs {tmp_path / 'runs1'}")
    assert r.returncode == 0, r.stdout + r.stderr
    summary1 = json.loads((out1 / "summary.json").read_text())
    s1 = summary1["prior"]
    assert s1["init_images_seen"] == 24 and s1["images_seen"] == 48 and s1["optimizer"].startswith("restarted from the EMA")
    assert s1["images_this_call"] == 24
    assert summary1["dblm"]["init"].startswith("continued") and summary1["dblm"]["progress"] == {"rm": 3, "sde": 2, "tm": 3}
    assert summary1["pack"]["compile_cache"]["bytes"] == len(returned) and not s1["compile_cache"]["loaded"]
    _check_return_limits(out1)
    # a second call on the same (warm) machine goes on from its last.pt: it counts only its own images
    out2 = tmp_path / "out2"
    r = _run(["bash", "scripts/gpu_train_embedded128.sh", "60", "prior"], OUT=str(out2), DYNFACE_GPU_SCRIPT_SMOKE="1",
             PYTHON=py, E128_ARGS=f"--pack {pack} --runs {tmp_path / 'runs1'} --set-prior max_steps=8")
    assert r.returncode == 0, r.stdout + r.stderr
    s2 = json.loads((out2 / "summary.json").read_text())["prior"]
    assert s2["optimizer"].startswith("continued from last.pt") and (s2["images_seen"], s2["images_this_call"]) == (56, 8)

    # the compile branch of the prior phase (compile: true), with a tiny compiled module standing in for the UNet's
    # compile (minutes on 2 cores): the pack's cache (made on an H200) is skipped with one line, the call compiles as
    # usual and returns its own cache, which `pack --compile-cache PATH` carries to the next machine
    out3 = tmp_path / "out3"
    r = _run([py, "-c", _COMPILING_TRAIN, str(HELPER), "train", "60", "prior", "--smoke", "--device", "cpu", "--pack",
              str(pack), "--runs", str(tmp_path / "runs3"), "--out", str(out3), "--set-prior", "compile=true"],
             TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor3"))
    assert r.returncode == 0, r.stdout + r.stderr
    _check_return_limits(out3)
    cc3 = json.loads((out3 / "summary.json").read_text())["prior"]["compile_cache"]
    assert not cc3["loaded"] and cc3["load"]["status"].startswith("skipped: made with")
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("compile cache:")] == [
        f"compile cache: {cc3['load']['status']} ({len(returned):,} bytes, {cc3['load']['load_s']} s); compiling from scratch"]
    assert cc3["counters"].get("aot_autograd.autograd_cache_miss", 0) >= 1 and cc3["saved"]["status"] == "written"
    made = out3 / "compile_cache.bin"
    assert made.stat().st_size == cc3["saved"]["compressed_bytes"] < cc3["saved"]["raw_bytes"]
    assert {k: helper.read_cache_header(made.read_bytes())[0][k] for k in ("torch", "device")} == {
        "torch": torch.__version__, "device": "cpu"}
    rc, text = _call(helper, capsys, ["pack", *common, "--init", str(round0 / "prior.safetensors"), "--compile-cache",
                                      str(made)])
    assert rc == 0 and json.loads(text.strip().splitlines()[-1])["compile_cache"]["bytes"] == made.stat().st_size
    assert (pack / "compile_cache.bin").read_bytes() == made.read_bytes()  # loading it: test_compile_cache_round_trip


_COMPILING_TRAIN = r"""
import dataclasses, importlib.util, sys
import torch
import dynface.training.prior as prior
real = prior.train_prior
def train_prior(cfg, *a, **k):
    assert cfg.compile
    torch.compile(torch.nn.Linear(8, 8, bias=False))(torch.randn(4, 8)).square().mean().backward()
    return real(dataclasses.replace(cfg, compile=False), *a, **k)
prior.train_prior = train_prior
spec = importlib.util.spec_from_file_location("h", sys.argv[1]); h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
sys.exit(h.main(sys.argv[2:]))
"""


# ---- the compile cache carried between device machines (torch's "mega-cache") --------------------------------------
def test_pack_names_the_committed_dblm_instead_of_copying_it(tmp_path, capsys):
    """The shipped embedded-128's DBLM (git-tracked) travels with the tree: `pack --reuse` records its path (no second
    copy in the 64 MiB), and plan and the device phases find it there; it is this config's architecture. The shipped
    prior is the EMA that rounds resume from."""
    helper = _helper()
    committed = ROOT / "src" / "dynface" / "weights" / "embedded-128" / "dblm.safetensors"
    assert helper.COMMITTED == committed.parent / "prior.safetensors" and helper.is_tracked(helper.COMMITTED)
    assert helper.newest_ema([]) in (helper.COMMITTED, *sorted(helper.UNPACKED.glob("round*/prior.safetensors")))
    assert helper.is_tracked(committed) and helper.dblm_mismatch(committed) is None
    _faces(tmp_path / "train", 4, 0)
    _faces(tmp_path / "val", 2, 1)
    pack = tmp_path / "pack"
    rc, text = _call(helper, capsys, ["pack", "--data", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--dest",
                                      str(pack), "--size", "32", "--shards", "1", "--no-auto-init", "--reuse",
                                      str(committed.parent)])
    info = json.loads(text.strip().splitlines()[-1])
    assert rc == 0 and info["dblm_in_tree"] == "src/dynface/weights/embedded-128/dblm.safetensors"
    assert info["reused"] == ["dsst.json"]  # small: copied
    assert not (pack / "dblm.safetensors").exists() and helper.carried_dblm(pack) == committed
    for phases in ("prior,dblm", "dgsa"):  # continued by the dblm phase; DGSA-only calls have their DBLM
        rc, text = _call(helper, capsys, ["plan", "520", phases, "--pack", str(pack)])
        assert "architecture differs" not in text and "needs dblm.safetensors" not in text
    (pack / "pack.json").write_text(json.dumps({**info, "dblm_in_tree": None}))
    assert helper.carried_dblm(pack) is None
    rc, text = _call(helper, capsys, ["plan", "520", "dgsa", "--pack", str(pack)])
    assert "dgsa without dblm needs dblm.safetensors" in text


def test_compile_cache_file_mismatch_and_damage_fall_back(tmp_path, capsys, monkeypatch):
    """The file round-trips; another torch or device, a damaged payload and bytes torch cannot read are each skipped
    with one log line (the caller then compiles as usual), never raised."""
    helper = _helper()
    key = helper.cache_key("cpu")
    assert key == {"torch": torch.__version__, "device": "cpu"}
    raw = bytes(range(256)) * 64
    blob = helper.encode_compile_cache(raw, key)
    assert len(blob) < len(raw) // 4  # compressed
    header, payload = helper.decode_compile_cache(blob)
    assert payload == raw and header["raw_bytes"] == len(raw) and {k: header[k] for k in key} == key

    def load(name: str, data: bytes, k: dict = key) -> tuple[dict, list[str]]:
        (tmp_path / name).write_bytes(data)
        capsys.readouterr()
        res = helper.load_compile_cache(tmp_path / name, k)
        return res, capsys.readouterr().out.strip().splitlines()

    calls = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda b: calls.append(b) or None)
    for k in ({**key, "torch": "0.0.0+other"}, {**key, "device": "NVIDIA H100"}):  # made elsewhere: not even read
        res, lines = load("other.bin", blob, k)
        assert not res["loaded"] and res["status"].startswith("skipped: made with") and calls == []
        assert len(lines) == 1 and "compiling from scratch" in lines[0]
    damaged = bytearray(blob)
    damaged[-40] ^= 0xFF
    for data in (bytes(damaged), blob[:-100], b"PK\x03\x04 not a cache", b""):
        res, lines = load("bad.bin", data)
        assert not res["loaded"] and res["status"].startswith("not usable") and len(lines) == 1 and calls == []
    res, lines = load("junk.bin", blob)  # intact file, but artifacts torch cannot read (it returns None)
    assert not res["loaded"] and "torch could not read" in res["status"] and len(calls) == 1 and len(lines) == 1
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda b: (_ for _ in ()).throw(RuntimeError("boom")))
    res, lines = load("junk.bin", blob)
    assert not res["loaded"] and "RuntimeError: boom" in res["status"] and len(lines) == 1
    res = helper.load_compile_cache(tmp_path / "missing.bin", key)
    assert not res["loaded"] and "FileNotFoundError" in res["status"]


def test_outbox_room_for_and_cache_dropped_first(tmp_path, monkeypatch):
    helper = _helper()
    box = helper.Outbox(tmp_path / "out", tmp_path / "work")
    for i in range(7):
        box.put(f"f{i}.bin", b"x" * 1000)
    assert box.room_for("compile_cache.bin", 1000) is None  # the 8th file
    assert "15 MiB" in box.room_for("compile_cache.bin", 15 * 2**20 + 1, helper.CACHE_MAX)
    box.put("f7.bin", b"x")
    assert "already holds 8 files" in box.room_for("compile_cache.bin", 10)
    assert box.room_for("f7.bin", 10) is None  # replacing a file adds none
    for i in range(3, 8):
        (tmp_path / "out" / f"f{i}.bin").unlink()
    monkeypatch.setattr(helper, "RETURN_TOTAL", 20_000)
    assert "would hold" in box.room_for("compile_cache.bin", 18_000)
    # $OUT outgrows the limits later (the bundle grows): the cache is removed first, and the summary says so
    box.put("compile_cache.bin", b"c" * 5000)
    (box.work / "samples.png").write_bytes(b"s" * 14_000)
    box.refresh()
    assert not (tmp_path / "out" / "compile_cache.bin").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["prior"]["compile_cache"]["saved"]["status"].startswith("removed from $OUT later")


def test_checkpoint_images_seen_reads_the_counts(tmp_path):
    from dynface.training.loop import atomic_torch_save

    helper = _helper()
    atomic_torch_save({"model": {"w": torch.randn(256, 256)}, "step": 7, "images_seen0": 1000}, tmp_path / "last.pt")
    assert helper.checkpoint_images_seen(tmp_path / "last.pt", 4) == 1028


_CACHE_CHILD = r"""
import importlib.util, json, sys, time
from pathlib import Path
import torch
spec = importlib.util.spec_from_file_location("h", sys.argv[1]); h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
mode, d = sys.argv[2], Path(sys.argv[3])
key, res = h.cache_key("cpu"), {}
if mode == "save":  # a cache made elsewhere, or damaged, is skipped: the compile below is the usual one
    (d / "other.bin").write_bytes(h.encode_compile_cache(b"x" * 64, {**key, "device": "NVIDIA H200"}))
    bad = bytearray(h.encode_compile_cache(b"y" * 4096, key)); bad[-30] ^= 0xFF; (d / "bad.bin").write_bytes(bad)
    res["other"], res["bad"] = h.load_compile_cache(d / "other.bin", key), h.load_compile_cache(d / "bad.bin", key)
else:
    res["good"] = h.load_compile_cache(d / "out" / "compile_cache.bin", key)
torch.manual_seed(0)
f = torch.compile(torch.nn.Linear(8, 8, bias=False))  # two matmuls: no C++ to build, a fast compile
t0 = time.time()
f(torch.randn(4, 8)).square().mean().backward()
res["compile_s"], res["counters"] = round(time.time() - t0, 2), h.compile_counters()
if mode == "save":
    saver = h.CacheSaver(key)
    saver.start()
    res["written"] = saver.write(h.Outbox(d / "out", d / "work"), wait_s=60)
    res["saved"] = saver.info
print("RESULT " + json.dumps(res))
"""


@pytest.mark.slow
def test_compile_cache_round_trip_tiny_module(tmp_path):
    """A compiled forward+backward's artifacts, saved and compressed as on the device, make a fresh process with an
    empty inductor cache hit every cache (AOTAutograd and the inductor graphs) instead of compiling."""

    def child(mode: str) -> dict:
        r = _run([sys.executable, "-c", _CACHE_CHILD, str(HELPER), mode, str(tmp_path)],
                 TORCHINDUCTOR_CACHE_DIR=str(tmp_path / f"inductor_{mode}"))
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout.split("RESULT ")[-1])

    made = child("save")
    assert not made["other"]["loaded"] and made["other"]["status"].startswith("skipped")
    assert not made["bad"]["loaded"] and made["bad"]["status"].startswith("not usable")
    assert made["counters"].get("aot_autograd.autograd_cache_miss", 0) >= 1  # compiled from scratch
    assert made["written"] and made["saved"]["status"] == "written"
    assert 0 < made["saved"]["compressed_bytes"] < made["saved"]["raw_bytes"]
    assert (tmp_path / "out" / "compile_cache.bin").stat().st_size == made["saved"]["compressed_bytes"]
    used = child("load")
    assert used["good"]["loaded"] and used["good"]["status"] == "loaded"
    assert used["counters"].get("aot_autograd.autograd_cache_hit", 0) >= 1
    assert not any(k.endswith("_miss") for k in used["counters"]), used["counters"]
