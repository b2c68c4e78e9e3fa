"""Training code: every trainer runs, checkpoints, resumes; DDP with 2 CPU processes (gloo)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynface.models.io import load_state_dict_file
from dynface.training.dblm import DBLMTrainConfig, std_star_labels, train_dblm
from dynface.training.losses import filterbank_dists, swt_haar, swt_l1
from dynface.training.package import package_model, sha256
from dynface.training.prior import PriorTrainConfig, train_prior

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def face_dir(tmp_path_factory, astronaut_face):
    d = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(8):
        img = np.clip(astronaut_face.astype(int) + rng.integers(-20, 20, astronaut_face.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img[:, :: (1 if i % 2 else -1)]).save(d / f"face{i}.png")
    return d


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_prior_trains_checkpoints_and_resumes(face_dir, tmp_path):
    cfg = PriorTrainConfig(preset="tiny", batch_size=4, max_steps=4, log_every=2, sample_minutes=0, bf16=False)
    out = train_prior(cfg, str(face_dir), str(tmp_path))
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] == 4 and {"model", "ema", "opt", "rng", "config"} <= set(state)
    sd, meta = load_state_dict_file(out)
    assert meta["step"] == 4 and meta["unet"]["model_channels"] == 16
    assert [r["step"] for r in _rows(tmp_path / "log.csv")] == ["2", "4"]
    # a run killed (kill -9) after logging steps 6 and 8 but before its next checkpoint: the resume does them again,
    # and their old rows go (they were repeated), while the time goes on from the last kept row (it restarted at 0)
    with open(tmp_path / "log.csv", "a") as f:
        f.write("6,999.0,0.5,0.5,,0.001,10\n8,1999.0,0.5,0.5,,0.001,10\n9,trunc")
    t4 = float(_rows(tmp_path / "log.csv")[1]["time"])
    cfg.max_steps = 6
    train_prior(cfg, str(face_dir), str(tmp_path), resume=True)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 6
    rows = _rows(tmp_path / "log.csv")
    assert [r["step"] for r in rows] == ["2", "4", "6"] and t4 <= float(rows[2]["time"]) < 999


def test_resume_is_exact(face_dir, tmp_path):
    """4 steps in one go == 2 steps, stop, resume for 2 more (weights, EMA, optimizer, RNG restored)."""
    cfg = PriorTrainConfig(preset="tiny", batch_size=4, max_steps=4, log_every=100, sample_minutes=0, bf16=False)
    train_prior(cfg, str(face_dir), str(tmp_path / "a"))
    cfg.max_steps = 2
    train_prior(cfg, str(face_dir), str(tmp_path / "b"))
    cfg.max_steps = 4
    train_prior(cfg, str(face_dir), str(tmp_path / "b"), resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    for k in a["ema"]:
        assert torch.allclose(a["ema"][k], b["ema"][k], atol=1e-6), k


def test_sigterm_writes_a_checkpoint(face_dir, tmp_path):
    code = (
        "from dynface.training.prior import PriorTrainConfig, train_prior\n"
        f"train_prior(PriorTrainConfig(preset='tiny', batch_size=2, log_every=1, sample_minutes=0, bf16=False), "
        f"{str(face_dir)!r}, {str(tmp_path)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "log.csv").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] >= 1 and (tmp_path / "ema.safetensors").exists()
    # the run says it was stopped, and how to go on (it was as silent as a finished one); each log row is shown
    assert f"stopped at step {state['step']} by Ctrl-C or SIGTERM" in err.decode() and "--resume" in err.decode()
    assert f"{tmp_path.name}: step 1, time" in err.decode()


def test_resume_from_a_checkpoint_that_does_not_fit_is_one_line(face_dir, tmp_path):
    """Another preset's, a truncated or a foreign last.pt gave torch's traceback with every key; now one line."""
    cfg = PriorTrainConfig(preset="tiny", batch_size=2, max_steps=1, sample_minutes=0, bf16=False)
    train_prior(cfg, str(face_dir), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="the checkpoint does not fit this run .*another preset"):
        train_prior(PriorTrainConfig(**{**cfg.__dict__, "preset": "embedded-64"}), str(face_dir), str(tmp_path / "a"), resume=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "last.pt").write_bytes((tmp_path / "a" / "last.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read the checkpoint"):
        train_prior(cfg, str(face_dir), str(tmp_path / "b"), resume=True)


def test_two_ranks_filling_one_face_cache(face_dir, tmp_path, monkeypatch):
    """torchrun's ranks build the same face cache at once. They used to share one temporary file, so the rank that
    renamed second found it gone (FileNotFoundError: rank 0 exited 2, a CI failure of the DDP test below). Here the
    other rank (another pid) writes and renames the cache while this one is between its write and its rename."""
    from dynface.training import data as data_mod

    real_save, other = np.save, []

    def save_then_the_other_rank(f, arr, *a, **k):
        real_save(f, arr, *a, **k)
        if not other:
            other.append(None)
            with monkeypatch.context() as m:
                m.setattr(os, "getpid", lambda: 2**22 + 1)
                other[0] = data_mod.load_face_tensor(face_dir, 16, cache_dir=tmp_path)

    monkeypatch.setattr(np, "save", save_then_the_other_rank)
    ours = data_mod.load_face_tensor(face_dir, 16, cache_dir=tmp_path)
    monkeypatch.undo()
    assert other and torch.equal(ours, other[0]) and ours.shape == (8, 3, 16, 16)
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.glob("faces_16_8_*.npy")).name]  # no temporary left
    assert torch.equal(data_mod.load_face_tensor(face_dir, 16, cache_dir=tmp_path), ours)  # read back from the cache


def test_unreadable_faces_are_left_out_of_training_with_a_note(face_dir, tmp_path, capsys):
    """One damaged file among thousands used to stop `dynface train` and `build-dsst` before the first step. Now it
    is left out and named; a folder with no readable face is still a one-line error. A face mended in place is
    read again, not taken from the face cache."""
    from dynface.cli import main
    from dynface.training.data import load_face_tensor

    d = tmp_path / "faces"
    shutil.copytree(face_dir, d)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    faces = load_face_tensor(d, 16, cache_dir=tmp_path / "cache")
    assert faces.shape == (8, 3, 16, 16)
    assert "1 of 9 image(s)" in capsys.readouterr().err
    shutil.copy(d / "face0.png", d / "broken.jpg")  # mended: another size and mtime, so another cache key
    assert load_face_tensor(d, 16, cache_dir=tmp_path / "cache").shape == (9, 3, 16, 16)
    (d / "broken.jpg").write_bytes(b"garbage")

    assert main(["train", "prior", "--data", str(d), "--out", str(tmp_path / "run"), "--set", "preset=tiny",
                 "--set", "max_steps=1", "--set", "batch_size=2", "--set", "sample_minutes=0", "--set", "bf16=false"]) == 0
    err = capsys.readouterr().err
    assert "1 of 9 image(s)" in err and "broken.jpg" in err and "left out of training" in err
    assert main(["build-dsst", "--data", str(d), "--out", str(tmp_path / "dsst.json"), "--size", "16"]) == 0
    assert "broken.jpg" in capsys.readouterr().err and json.loads((tmp_path / "dsst.json").read_text())

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "a.png").write_bytes(b"garbage")
    assert main(["train", "prior", "--data", str(only_bad), "--out", str(tmp_path / "run2"), "--set", "preset=tiny"]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 image(s) could be read" in err and "a.png" in err and "Traceback" not in err


@pytest.mark.skipif(not (VENV_BIN / "torchrun").exists(), reason="torchrun not installed")
def test_ddp_two_cpu_processes(face_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "dynface.cli", "train", "prior",
           "--data", str(face_dir), "--out", str(tmp_path), "--set", "preset=tiny", "--set", "batch_size=2",
           "--set", "max_steps=3", "--set", "log_every=1", "--set", "sample_minutes=0", "--set", "bf16=false"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in res.stderr.splitlines() if "error:" in line]  # a rank's own message, before the noise
    assert res.returncode == 0, "\n".join(errors) + "\n" + res.stderr[-3000:]
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] == 3
    rows = _rows(tmp_path / "log.csv")
    assert len(rows) == 3  # rank 0 alone writes the log


def test_dblm_stages_and_dgsa(face_dir, tmp_path, tiny_dsst, monkeypatch):
    cfg = DBLMTrainConfig(preset="tiny", batch_size=2, steps={"rm": 2, "sde": 2, "tm": 2}, log_every=1)
    dblm_path = train_dblm(cfg, str(face_dir), str(tmp_path / "dblm"))
    stages = [r["stage"] for r in _rows(tmp_path / "dblm" / "log.csv")]
    assert stages == ["rm", "rm", "sde", "sde", "tm", "tm"]
    assert load_state_dict_file(dblm_path)[1]["progress"] == {"rm": 2, "sde": 2, "tm": 2}

    prior = train_prior(PriorTrainConfig(preset="tiny", batch_size=2, max_steps=1, sample_minutes=0, bf16=False),
                        str(face_dir), str(tmp_path / "prior"))
    tiny_dsst.save(tmp_path / "dsst.json")
    from dynface.training.dgsa import DGSATrainConfig, train_dgsa

    dcfg = DGSATrainConfig(prior=str(prior), dblm=str(dblm_path), dsst=str(tmp_path / "dsst.json"), batch_size=2, steps=2, log_every=1,
                           zeta=1.5)
    dgsa_path = train_dgsa(dcfg, str(face_dir), str(tmp_path / "dgsa"))
    assert len(_rows(tmp_path / "dgsa" / "log.csv")) == 2
    # bf16: both passes of the frozen UNet run under bf16 autocast (and only with it), the step still trains
    from dynface.models.unet import UNetModel

    autocast_seen, forward = [], UNetModel.forward

    def spy(self, x, t):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return forward(self, x, t)

    monkeypatch.setattr(UNetModel, "forward", spy)
    train_dgsa(DGSATrainConfig(**{**dcfg.__dict__, "bf16": True}), str(face_dir), str(tmp_path / "dgsa_bf16"))
    assert autocast_seen == [True] * 4  # 2 steps × (x_t, x_{t−Δ})
    bf16_loss, fp32_loss = (float(_rows(tmp_path / d / "log.csv")[0]["loss"]) for d in ("dgsa_bf16", "dgsa"))
    assert abs(bf16_loss - fp32_loss) < 0.05 * fp32_loss  # the same first batch, nearly the same loss
    autocast_seen.clear()
    train_dgsa(DGSATrainConfig(**{**dcfg.__dict__, "steps": 1}), str(face_dir), str(tmp_path / "dgsa_fp32"))
    assert autocast_seen == [False, False]

    infos = package_model(tmp_path / "model", prior, dblm_path, tmp_path / "dsst.json", dgsa_path)
    assert {i["file"] for i in infos} == {"prior.safetensors", "dblm.safetensors", "dgsa.safetensors", "dsst.json"}
    for i in infos:
        assert i["sha256"] == sha256(tmp_path / "model" / i["file"])
        if "max_rel_roundtrip_error" in i:
            assert i["max_rel_roundtrip_error"] < 1e-3  # fp16 storage
    from dynface.pipeline import DynFaceRestorer

    r = DynFaceRestorer.from_pretrained(tmp_path / "model", steps="ddim10")
    assert r.size == 32 and r.dgsa is not None
    assert r.cfg.sampler.zeta == 1.5  # the base step DGSA was trained with is the sampler's default
    assert r.restore([np.zeros((40, 40, 3), np.uint8)]).images[0].shape == (32, 32, 3)
    # a calibrated default ζ stored by the packager wins over the training ζ; explicit overrides win over both
    package_model(tmp_path / "model_cal", prior, dblm_path, tmp_path / "dsst.json", dgsa_path, zeta=0.4, steps="ddim50",
                  guidance="x0", color_fix="wavelet")
    cal_r = DynFaceRestorer.from_pretrained(tmp_path / "model_cal")
    cal = cal_r.cfg.sampler
    assert (cal.zeta, cal.steps, cal.guidance) == (0.4, "ddim50", "x0")  # the model's default steps and gradient too
    assert cal_r.cfg.color_fix == "wavelet"  # and its colour fix (none stored: none)
    assert DynFaceRestorer.from_pretrained(tmp_path / "model").cfg.color_fix == "none"
    assert DynFaceRestorer.from_pretrained(tmp_path / "model").cfg.sampler.steps == "ddim250"  # none stored: the sampler's
    over = DynFaceRestorer.from_pretrained(tmp_path / "model_cal", zeta=0.7, steps="ddim10", guidance="unet").cfg.sampler
    assert (over.zeta, over.steps, over.guidance) == (0.7, "ddim10", "unet")
    with pytest.raises(ValueError, match="--dgsa"):
        package_model(tmp_path / "model_bad", prior, dblm_path, tmp_path / "dsst.json", None, zeta=0.4)
    with pytest.raises(ValueError, match="--guidance must be one of unet, x0, prox"):
        package_model(tmp_path / "model_bad", prior, dblm_path, tmp_path / "dsst.json", dgsa_path, guidance="none")
    with pytest.raises(ValueError, match="unknown colour fix 'auto'; choose from none, wavelet, adain"):
        package_model(tmp_path / "model_bad", prior, dblm_path, tmp_path / "dsst.json", dgsa_path, color_fix="auto")
    with pytest.raises(ValueError, match="--dgsa"):
        package_model(tmp_path / "model_bad", prior, dblm_path, tmp_path / "dsst.json", None, color_fix="wavelet")
    with pytest.raises(ValueError, match="unusable steps"):
        package_model(tmp_path / "model_bad", prior, dblm_path, tmp_path / "dsst.json", dgsa_path, steps="fast")

    # parts that do not fit together are refused before anything reaches the model folder (they packaged, and the
    # model restored with start steps of another resolution or failed only at restore)
    other = json.loads((tmp_path / "dsst.json").read_text())
    other["metadata"]["image_size"] = 64
    (tmp_path / "dsst64.json").write_text(json.dumps(other))
    (tmp_path / "notes.md").write_text("# not a table")
    for args, message in (((prior, dblm_path, tmp_path / "dsst64.json"), "built for 64-px images but --prior works at 32 px"),
                          ((dblm_path, prior, tmp_path / "dsst.json"), f"--prior is not a diffusion prior .*{dblm_path}"),
                          ((prior, dblm_path, tmp_path / "notes.md"), "--dsst is not a DSST table"),
                          ((prior, dblm_path, tmp_path / "nope.json"), "--dsst .*nope.json: no such file")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            package_model(tmp_path / "model_bad", *args)
        assert not (tmp_path / "model_bad").exists() and not list(tmp_path.glob(".model_bad*"))
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()  # a card with the files table even without --card
    assert "No notes were given" in card and sha256(tmp_path / "model" / "prior.safetensors") in card
    package_model(tmp_path / "model", prior, dblm_path, tmp_path / "dsst.json")  # again, without DGSA: the old one goes
    assert not (tmp_path / "model" / "dgsa.safetensors").exists()

    # the card's notes can be rewritten without touching the weights; a changed file is refused
    from dynface.training.package import refresh_model_card

    package_model(tmp_path / "model_card", prior, dblm_path, tmp_path / "dsst.json", dgsa_path, card_notes="# old notes")
    before = (tmp_path / "model_card" / "prior.safetensors").read_bytes()
    refresh_model_card(tmp_path / "model_card", "# new notes\n\nvalidated")
    card = (tmp_path / "model_card" / "MODEL_CARD.md").read_text()
    assert card.startswith("# new notes") and "old notes" not in card and "## Files" in card
    assert sha256(tmp_path / "model_card" / "prior.safetensors") in card
    assert (tmp_path / "model_card" / "prior.safetensors").read_bytes() == before
    (tmp_path / "model_card" / "dsst.json").write_text("{}")
    with pytest.raises(ValueError, match="sha256 differs"):
        refresh_model_card(tmp_path / "model_card", "# newer")


def test_degrade_workers_share_the_cores(monkeypatch):
    """GPU training threads its degradations (one core kept free, at most 8, split among local ranks); CPU: 1."""
    from dynface.training.loop import degrade_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert (degrade_workers(0, cuda), degrade_workers(0, cpu), degrade_workers(5, cpu)) == (8, 1, 5)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert degrade_workers(0, cuda) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert degrade_workers(0, cuda) == 1


def test_dblm_continues_from_an_exported_file(face_dir, tmp_path):
    """init_from (a new machine, no checkpoint): the exported weights and each stage's progress go on."""
    cfg = DBLMTrainConfig(preset="tiny", batch_size=2, steps={"rm": 2, "sde": 1, "tm": 1}, log_every=1)
    first = train_dblm(cfg, str(face_dir), str(tmp_path / "a"), stages=("rm",))
    sd_a, _ = load_state_dict_file(first)
    cfg0 = DBLMTrainConfig(preset="tiny", batch_size=2, steps={"rm": 2, "sde": 1, "tm": 1}, log_every=1,
                           init_from=str(first))
    same = train_dblm(cfg0, str(face_dir), str(tmp_path / "b"), stages=("rm",))  # rm already done: nothing trains
    sd_b, meta_b = load_state_dict_file(same)
    assert meta_b["progress"]["rm"] == 2 and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    more = DBLMTrainConfig(preset="tiny", batch_size=2, steps={"rm": 3, "sde": 1, "tm": 1}, log_every=1,
                           init_from=str(first))
    sd_c, meta_c = load_state_dict_file(train_dblm(more, str(face_dir), str(tmp_path / "c"), stages=("rm",)))
    assert meta_c["progress"]["rm"] == 3 and [r["step"] for r in _rows(tmp_path / "c" / "log.csv")] == ["3"]
    assert any(not torch.equal(sd_a[k], sd_c[k]) for k in sd_a if k.startswith("rm."))  # the third RM step trained
    assert all(torch.equal(sd_a[k], sd_c[k]) for k in sd_a if not k.startswith("rm."))
    wider = DBLMTrainConfig(preset="tiny", dblm={"rm_width": 16}, batch_size=2, init_from=str(first))
    with pytest.raises(ValueError, match=r"architecture differs from the config's \(rm_width \d+ \(wanted: 16\)\)"):
        train_dblm(wider, str(face_dir), str(tmp_path / "d"), stages=("rm",))


def test_dblm_stage_lr_overrides_one_stage(face_dir, tmp_path):
    """stage_lr sets a stage's peak lr (the cosine starts there); a misspelt stage name is refused, not ignored."""
    cfg = DBLMTrainConfig(preset="tiny", batch_size=2, lr=1e-3, stage_lr={"sde": 4e-3}, steps={"rm": 2, "sde": 2},
                          log_every=1)
    train_dblm(cfg, str(face_dir), str(tmp_path / "a"), stages=("rm", "sde"))
    first = {r["stage"]: float(r["lr"]) for r in reversed(_rows(tmp_path / "a" / "log.csv"))}  # each stage's step 1
    assert first == {"rm": pytest.approx(1e-3), "sde": pytest.approx(4e-3)}
    for field in ("stage_lr", "steps", "minutes"):
        bad = DBLMTrainConfig(preset="tiny", batch_size=2, **{field: {"sdee": 1}})
        with pytest.raises(ValueError, match=f"{field}: unknown stage\\(s\\) sdee"):
            train_dblm(bad, str(face_dir), str(tmp_path / "b"), stages=("rm",))


def test_train_cli_refuses_to_start_afresh_over_a_checkpoint(face_dir, tmp_path, capsys):
    """Without --resume, a run directory holding last.pt is refused: starting afresh there overwrote a trained RM
    (session 8, `--stages sde,tm` into the RM's folder); with --resume it goes on."""
    from dynface.cli import main

    run = tmp_path / "run"
    common = ["train", "dblm", "--data", str(face_dir), "--out", str(run), "--set", "preset=tiny", "--set", "batch_size=2",
              "--set", "log_every=1"]
    assert main([*common, "--set", "steps={rm: 2, sde: 1, tm: 1}", "--stages", "rm"]) == 0
    before = (run / "dblm.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*common, "--set", "steps={rm: 2, sde: 1, tm: 1}", "--stages", "sde,tm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a training checkpoint (last.pt): pass --resume" in err
    assert (run / "dblm.safetensors").read_bytes() == before
    assert main([*common, "--set", "steps={rm: 2, sde: 1, tm: 1}", "--stages", "sde,tm", "--resume"]) == 0
    assert load_state_dict_file(run / "dblm.safetensors")[1]["progress"] == {"rm": 2, "sde": 1, "tm": 1}


def test_std_star_labels_pick_the_smallest_hiding_blur():
    from dynface.models.dblm import DBLMConfig

    cfg = DBLMConfig(size=64)
    torch.manual_seed(0)
    clean = torch.rand(3, 3, 64, 64) * 2 - 1
    noise = torch.randn(3, 3, 64, 64) * torch.tensor([0.0, 0.1, 0.3])[:, None, None, None]
    grid = torch.arange(0.5, 10.01, 0.25)
    labels = std_star_labels(clean + noise, clean, cfg, grid, 30.0)
    assert labels[0] == 0.5  # no error: the smallest level
    assert labels[0] < labels[1] < labels[2]  # more error needs more blur


def test_masked_label_refuses_a_dsst_table_of_another_schedule_length(tmp_path):
    """Its steps index ᾱ of the 1000-step schedule: a 2000-step table's were silently clamped to 999 before."""
    from dynface.dsst import DSSTTable
    from dynface.models.dblm import DBLMConfig
    from dynface.training.dblm import make_labeler

    path = tmp_path / "dsst2000.json"
    DSSTTable((0.5, 12.0), (0, 1999), {"image_size": 64, "num_timesteps": 2000}).save(path)
    with pytest.raises(ValueError, match="1000-step schedule, but .* indexes a 2000-step one"):
        make_labeler(DBLMTrainConfig(label="masked", label_dsst=str(path)), DBLMConfig(size=64), torch.arange(0.5, 12.01, 0.5))
    DSSTTable((0.5, 12.0), (0, 999), {"image_size": 64, "num_timesteps": 1000}).save(path)
    labeler = make_labeler(DBLMTrainConfig(label="masked", label_dsst=str(path)), DBLMConfig(size=64),
                           torch.arange(0.5, 12.01, 0.5))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert labeler(x, x).tolist() == [0.5, 0.5]


def test_swt_matches_pywavelets_and_losses_vanish_on_equal_images():
    pywt = pytest.importorskip("pywt")
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    ours = swt_haar(x, 2)
    ref = pywt.swt2(x[0, 0].numpy(), "haar", level=2, trim_approx=False)[::-1]  # pywt: coarsest first
    for lev in range(2):
        ca, (ch, cv, cd) = ref[lev]
        for band, r in zip(ours[lev][0, 0], (ca, ch, cv, cd), strict=True):
            np.testing.assert_allclose(band.numpy(), r, atol=1e-12)
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert swt_l1(a, a) == 0 and float(filterbank_dists(a, a).abs().max()) < 1e-6
    assert swt_l1(a, b) > 0 and bool((filterbank_dists(a, b) > 0.1).all())


def test_train_cli_rejects_bad_config(tmp_path, face_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\nnot_a_field: 3\n")
    res = subprocess.run([sys.executable, "-m", "dynface.cli", "train", "prior", "--config", str(bad), "--data", str(face_dir),
                          "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert res.returncode == 2 and "not_a_field" in res.stderr and "Traceback" not in res.stderr
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
    # a value of the wrong type was a traceback from inside the loop, after a step-0 last.pt that then blocked the
    # corrected command
    res = subprocess.run([sys.executable, "-m", "dynface.cli", "train", "prior", "--set", "preset=tiny", "--set", "max_steps=two",
                          "--data", str(face_dir), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert res.returncode == 2 and "max_steps must be int, got 'two'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
    res = subprocess.run([sys.executable, "-m", "dynface.cli", "train", "prior", "--set", "preset=tiny", "--set", "max_steps=1",
                          "--set", "sample_minutes=0", "--set", "batch_size=2", "--data", str(face_dir),
                          "--out", str(tmp_path / "typo"), "--resume"], capture_output=True, text=True)
    assert res.returncode == 0 and "no checkpoint in" in res.stderr and "starting a new run" in res.stderr  # a typo'd --out


def test_config_values_are_checked_against_their_fields():
    """Types, counts of at least 1, nested overrides and presets fail at load time, in one line; PyYAML's string
    '1e-3' is the float a researcher meant."""
    from dynface.models.unet import PRESETS, UNetConfig
    from dynface.training.config import ConfigError, load_config
    from dynface.training.dgsa import DGSATrainConfig

    assert load_config(PriorTrainConfig, None, {"lr": "1e-3"}).lr == 1e-3
    assert load_config(DBLMTrainConfig, None, {"label_grid": [0.5, 12, 0.25]}).label_grid == (0.5, 12.0, 0.25)
    assert load_config(DBLMTrainConfig, None, {"label_dsst": None}).label_dsst is None
    for cls, over, message in ((PriorTrainConfig, {"max_steps": "two"}, "max_steps must be int"),
                               (PriorTrainConfig, {"batch_size": 0}, "batch_size must be at least 1"),
                               (PriorTrainConfig, {"lr": -1e-3}, "lr must be at least 0"),
                               (PriorTrainConfig, {"bf16": "yes"}, "bf16 must be bool"),
                               (PriorTrainConfig, {"max_steps": 2.5}, "max_steps must be int"),
                               (PriorTrainConfig, {"lr": float("nan")}, "lr must be float"),
                               (DBLMTrainConfig, {"label_grid": [0.5, 12]}, "label_grid must be tuple"),
                               (DGSATrainConfig, {"gammas": [1, 1, "x", 1]}, r"gammas\[2\] must be float"),
                               (DBLMTrainConfig, {"steps": "rm"}, "steps must be dict")):
        with pytest.raises(ConfigError, match=message):
            load_config(cls, None, over)
    with pytest.raises(ConfigError, match="unknown keys in unet: foo"):
        load_config(PriorTrainConfig, None, {"unet": {"foo": 1}}, nested={"unet": UNetConfig})
    with pytest.raises(ConfigError, match="unknown preset 'nosuch'; choose from"):
        load_config(PriorTrainConfig, None, {"preset": "nosuch"}, choices={"preset": PRESETS})


def test_ema_update_is_the_decayed_average():
    from dynface.training.loop import EMA

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9)
    before = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update(model, step=1000)  # past the warm-up: d = 0.9
    for pe, p0, p in zip(ema.model.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(pe, 0.9 * p0 + 0.1 * p)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)  # buffers are copied
