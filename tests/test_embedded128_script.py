"""embedded-128: the configuration's size, and the whole GPU script path run on the CPU with tiny settings.

The smoke run is what a lent GPU runs (scripts/gpu_train_embedded128.sh → scripts/gpu_train_embedded128.py
train), with configs/embedded-128-smoke (32-px tiny networks, a few steps) on 16 synthetic faces: pack here,
train, check $OUT against the device tool's return limits, unpack, package, load and restore, then a second
round that resumes from the returned EMA on the next data shard.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_embedded128_dblm_and_dgsa_configs_load():
    dcfg = load_config(DBLMTrainConfig, CFG / "dblm.yaml").dblm_config()
    assert dcfg.size == 128 and dcfg.rm_width == 32  # a wider RM than embedded-64's 16
    dblm = DBLM(dcfg)
    assert sum(p.numel() for p in dblm.rm.parameters()) > 4 * sum(p.numel() for p in DBLM().rm.parameters())
    y = torch.zeros(1, 3, 128, 128)
    assert dblm(y).restored.shape == y.shape
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
    spec = importlib.util.spec_from_file_location("gpu_train_embedded128", HELPER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
              "--shards", "2", "--compile-cache", str(tmp_path / "none"), "--no-auto-init"]
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

    # here: unpack, package, load and restore
    round0 = tmp_path / "round0"
    rc, text = _call(helper, capsys, ["unpack", str(out), str(round0)])
    assert rc == 0 and "train package --prior" in text
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

    # round 1 resumes from the returned EMA, on the other shard, with a fresh optimizer
    # (and goes on training round 0's DBLM, carried with --reuse)
    rc, text = _call(helper, capsys, ["pack", *common, "--init", str(round0 / "prior.safetensors"), "--reuse", str(round0)])
    assert rc == 0
    info = json.loads(text.strip().splitlines()[-1])
    assert (info["round"], info["shard"], info["init_images_seen"]) == (1, 1, 24)
    assert info["reused"] == ["dblm.safetensors", "dsst.json"]
    out1 = tmp_path / "out1"
    r = _run(["bash", "scripts/gpu_train_embedded128.sh", "90", "prior,dblm"], OUT=str(out1), DYNFACE_GPU_SCRIPT_SMOKE="1",
             PYTHON=py, E128_ARGS=f"--pack {pack} --runs {tmp_path / 'runs1'}")
    assert r.returncode == 0, r.stdout + r.stderr
    summary1 = json.loads((out1 / "summary.json").read_text())
    s1 = summary1["prior"]
    assert s1["init_images_seen"] == 24 and s1["images_seen"] == 48 and s1["optimizer"].startswith("restarted from the EMA")
    assert s1["images_this_call"] == 24
    assert summary1["dblm"]["init"].startswith("continued") and summary1["dblm"]["progress"] == {"rm": 3, "sde": 2, "tm": 3}
    _check_return_limits(out1)
    # a second call on the same (warm) machine goes on from its last.pt: it counts only its own images
    out2 = tmp_path / "out2"
    r = _run(["bash", "scripts/gpu_train_embedded128.sh", "60", "prior"], OUT=str(out2), DYNFACE_GPU_SCRIPT_SMOKE="1",
             PYTHON=py, E128_ARGS=f"--pack {pack} --runs {tmp_path / 'runs1'} --set-prior max_steps=8")
    assert r.returncode == 0, r.stdout + r.stderr
    s2 = json.loads((out2 / "summary.json").read_text())["prior"]
    assert s2["optimizer"].startswith("continued from last.pt") and (s2["images_seen"], s2["images_this_call"]) == (56, 8)
