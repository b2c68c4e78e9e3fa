"""scripts/e128_after_round.py: the ζ rule and the ship verdict on round 0's committed numbers, and the step
machinery (order, skipping, resuming, refusing a stale package) with the subprocess calls replaced by fakes."""

from __future__ import annotations

import copy
import gzip
import json
import struct
from pathlib import Path

import pytest
from _helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ar():
    return load_script("e128_after_round")


@pytest.fixture(scope="module")
def round0(ar):
    """Round 0's committed reports: calibration rows, the val rows (ζ = 2 run for the ζ-free rows, ζ = 0.2 run for
    no_dgsa and full, as the README's table combines them) and embedded-64's reference rows."""
    r = ar.RESULTS
    calib = [ar.calib_row(ar.load_report(r / "calibration" / f"utkface_train_gfpgan_128_w{w:g}.json.gz"))
             for w in ar.W_GRID]
    z2, z02 = ar.load_report(r / "round0_val128.json.gz"), ar.load_report(r / "round0_zeta0.2_val128.json.gz")
    cand = {**ar.rows_of(z2), **ar.rows_of(z02)}
    return {"calib": calib, "cand": cand, "z2": z2, "z02": z02, "ref": ar.load_report(ar.REFERENCE)}


# --------------------------------------------------------------------------- choose_zeta


def test_choose_zeta_round0_picks_0_2(ar, round0):
    zeta, reason = ar.choose_zeta(round0["calib"])
    assert zeta == pytest.approx(0.2)
    assert "-w 0.05" in reason and "102.69" in reason


def test_choose_zeta_bound_and_model_zeta(ar, round0):
    rows = copy.deepcopy(round0["calib"])
    w005 = next(r for r in rows if r["w"] == 0.05)
    w005["psnr"] = w005["restorer_psnr"] - 0.31  # just outside the 0.3 dB bound: -w 0.1 (FD 102.85) wins
    zeta, reason = ar.choose_zeta(rows)
    assert zeta == pytest.approx(0.4) and "out of bounds: -w 0.05" in reason
    w005["psnr"] = w005["restorer_psnr"] + 1.0  # above the restorer is inside the rule
    assert ar.choose_zeta(rows)[0] == pytest.approx(0.2)
    for r in rows:  # ζ = 2·w·ζ_model: a model packaged with ζ 0.5 maps -w 0.05 to 0.05
        r["zeta_default"] = 0.5
    assert ar.choose_zeta(rows)[0] == pytest.approx(0.05)
    for r in rows:
        r["psnr"] = r["restorer_psnr"] - 0.5
    with pytest.raises(ValueError, match="no -w keeps PSNR"):
        ar.choose_zeta(rows)
    rows[0]["zeta_default"] = 2.0
    with pytest.raises(ValueError, match="different ζ"):
        ar.choose_zeta(rows)


# --------------------------------------------------------------------------- verdict and same pairs


def test_verdict_round0_does_not_ship(ar, round0):
    v = ar.verdict(round0["cand"], ar.rows_of(round0["ref"]))
    assert v["ships"] is False
    crit = {c["name"].split()[0]: c for c in v["criteria"]}
    assert crit["FD"]["candidate"] == pytest.approx(102.39, abs=0.01)
    assert crit["FD"]["other"] == pytest.approx(69.71, abs=0.01) and crit["FD"]["ok"] is False
    assert crit["PSNR"]["candidate"] == pytest.approx(26.35, abs=0.01) and crit["PSNR"]["ok"] is False
    # IDA over the faces dlib scored in both `full` rows: better by ≈ 0.01, as the README's 148-face table says
    assert crit["IDA"]["n_common"] == 168 and crit["IDA"]["ok"] is True
    assert crit["IDA"]["delta"] == pytest.approx(-0.0102, abs=5e-4)
    exp = {e["name"]: e for e in v["expectations"]}
    assert all(e["ok"] is True for e in exp.values()), exp
    assert exp["full FD below the restorer's"]["other"] == pytest.approx(165.95, abs=0.01)
    assert exp["full FD below no_dgsa's"]["other"] == pytest.approx(102.57, abs=0.01)
    assert exp["full PSNR within 1 dB of the restorer's"]["delta"] == pytest.approx(-0.14, abs=0.01)


def test_paired_standard_errors_beside_the_deltas(ar, round0):
    """IDA's and PSNR's Δ carry the standard error of the per-face differences (numpy's, over the common faces);
    rows without per-face numbers get none, and the rules do not use it."""
    import numpy as np

    cf, rf = round0["cand"]["full"], ar.rows_of(round0["ref"])["full"]
    keys = [k for k in cf["per_face"] if k in rf["per_face"] and cf["per_face"][k].get("ida") is not None
            and rf["per_face"][k].get("ida") is not None]
    d = np.array([cf["per_face"][k]["ida"] - rf["per_face"][k]["ida"] for k in keys])
    assert ar.paired_se(cf, rf, "ida") == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), rel=1e-9)
    v = ar.verdict(round0["cand"], ar.rows_of(round0["ref"]))
    crit = {c["name"].split()[0]: c for c in v["criteria"]}
    assert crit["IDA"]["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), rel=1e-9) and crit["FD"]["se"] is None
    assert 0 < crit["PSNR"]["se"] < abs(crit["PSNR"]["delta"])
    md = ar.verdict_markdown(v, name="round0", zeta=0.2, zeta_reason="r", calib=[], context=[])
    assert f"{crit['IDA']['delta']:+.4f} ± {crit['IDA']['se']:.4f}" in md and "standard error" in md
    bare = copy.deepcopy(cf)
    bare["per_face"] = None
    assert ar.paired_se(bare, rf, "ida") is None


def test_verdict_ships_only_when_every_criterion_holds(ar, round0):
    cand = copy.deepcopy(round0["cand"])
    ref = ar.rows_of(round0["ref"])
    cand["full"]["mean"].update(fd=60.0, psnr=26.72)  # FD better, PSNR equal to the reference's (26.7203)
    cand["full"]["mean"]["psnr"] = ref["full"]["mean"]["psnr"]
    assert ar.verdict(cand, ref)["ships"] is True
    assert ar.verdict(cand, ref, (False, ["other faces"]))["ships"] is False  # other pairs never ship
    worse = copy.deepcopy(cand)
    for face in worse["full"]["per_face"].values():  # IDA worse on every common face
        if face.get("ida") is not None:
            face["ida"] += 0.05
    assert ar.verdict(worse, ref)["ships"] is False
    no_ida = copy.deepcopy(cand)  # IDA not measured (no per-face numbers, no mean): cannot ship
    no_ida["full"]["per_face"] = None
    del no_ida["full"]["mean"]["ida"]
    v = ar.verdict(no_ida, ref)
    assert v["ships"] is False and next(c for c in v["criteria"] if c["name"].startswith("IDA"))["ok"] is None


def test_the_shipped_embedded128_is_the_reference_to_beat(ar):
    """Since session 9 a round must beat the shipped embedded-128 (its committed val table, on the same pairs);
    --reference names another table, and the verdict names whichever it is."""
    default = ar.settings_from_args(ar.build_parser().parse_args(["runs/e128/x", "--name", "x"]))
    assert default.reference == ar.SHIPPED and default.reference_name == ar.SHIPPED_NAME
    # the shipped table witnesses its own LQ images: session 10's DGSA candidate was degraded on the same pairs
    assert default.witness == ar.SHIPPED
    cpu2 = ar.load_report(ar.RESULTS / "cpu2_zeta1_val128.json.gz")
    ok, notes = ar.same_pairs(cpu2, ar.load_report(ar.SHIPPED), ar.load_report(default.witness))
    assert ok and any(n.startswith("LQ images match") and "(200 faces)" in n for n in notes), notes
    assert ar.SHIPPED.is_file() and set(ar.rows_of(ar.load_report(ar.SHIPPED))) >= {"restorer_only", "no_dgsa", "full"}
    old = ar.settings_from_args(ar.build_parser().parse_args(["runs/e128/x", "--name", "x", "--reference", str(ar.REFERENCE)]))
    assert (old.reference, old.reference_name, old.witness) == (ar.REFERENCE, "embedded-64", ar.PAIRS_WITNESS)
    other = ar.settings_from_args(ar.build_parser().parse_args(["runs/e128/x", "--name", "x", "--reference", "t.json"]))
    assert other.witness is None
    shipped = ar.load_report(ar.SHIPPED)
    same = ar.verdict(ar.rows_of(shipped), ar.rows_of(shipped), ref_name=ar.SHIPPED_NAME)
    assert same["ships"] is False  # a tie is not a win: FD and IDA must be lower
    assert [c["name"] for c in same["criteria"]][0] == f"FD lower than {ar.SHIPPED_NAME}'s"
    md = ar.verdict_markdown(same, name="x", zeta=2, zeta_reason="r", calib=[], context=[], ref_name=ar.SHIPPED_NAME)
    assert md.startswith(f"# `embedded-128` x: does it beat `{ar.SHIPPED_NAME}`?")
    assert "beat `embedded-64`" not in md and "64 `full`" not in md and "embedded-64's `full`" not in md
    # session 11's candidate (the continued RM, ζ = 1) beat session 9's shipped table and became the shipped one
    session9 = ar.load_report(ar.RESULTS / "cpu1_zeta2_val128.json.gz")
    v11 = ar.verdict(ar.rows_of(shipped), ar.rows_of(session9), ar.same_pairs(shipped, session9, session9),
                     ref_name=ar.SHIPPED_NAME)
    assert v11["ships"] is True and all(c["ok"] for c in v11["criteria"]), v11["criteria"]


def test_same_pairs(ar, round0):
    z2, ref = round0["z2"], round0["ref"]
    ok, notes = ar.same_pairs(z2, ref, z2)
    assert ok and any("LQ images match" in n for n in notes)
    shifted = copy.deepcopy(z2)  # one face's LQ differs by 0.5 dB: another degradation
    face = next(iter(shifted["per_face"]["bicubic"]))
    shifted["per_face"]["bicubic"][face]["psnr"] += 0.5
    ok, notes = ar.same_pairs(shifted, ref, z2)
    assert not ok and any("LQ images differ" in n for n in notes)
    other = copy.deepcopy(z2)  # another subset (e.g. --val-limit 100, or another seed)
    other["data"]["keys"] = other["data"]["keys"][:100]
    other["data"]["n_faces"] = 100
    ok, notes = ar.same_pairs(other, ref)
    assert not ok and any("n_faces" in n for n in notes) and any("faces differ" in n for n in notes)


# --------------------------------------------------------------------------- the steps, subprocesses faked


def _safetensors(path: Path, meta: dict) -> None:
    """A valid one-tensor safetensors file with ``meta`` (values JSON-encoded, as dynface writes them)."""
    header = {"__metadata__": {k: json.dumps(v) for k, v in meta.items()},
              "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")


class FakeTools:
    """Stands in for `dynface train package` and benchmarks/quality.py: writes what they would, from round 0's
    reports (the calibration file of the requested -w; the val rows of both round-0 runs)."""

    def __init__(self, ar, round0):
        self.ar, self.round0, self.calls = ar, round0, []

    def __call__(self, cmd: list[str]) -> int:
        self.calls.append(cmd)
        arg = {k: cmd[i + 1] for i, k in enumerate(cmd[:-1]) if k.startswith("--")}
        if "package" in cmd:
            out = Path(arg["--out"])
            prior = json.loads(json.dumps(self.ar.read_metadata(Path(arg["--prior"]))))
            _safetensors(out / "prior.safetensors", prior)
            _safetensors(out / "dblm.safetensors", {"kind": "dblm"})
            sampler = {"steps": arg["--steps"], "guidance": arg["--guidance"]}
            if "--zeta" in arg:
                sampler["zeta"] = float(arg["--zeta"])
            _safetensors(out / "dgsa.safetensors", {"kind": "dgsa", "sampler": sampler})
            (out / "dsst.json").write_text("{}")
            return 0
        assert cmd[1] == "benchmarks/quality.py"
        if "--fidelity" in arg:
            res = self.ar.load_report(self.ar.RESULTS / "calibration" / f"utkface_train_gfpgan_128_w{arg['--fidelity']}.json.gz")
        else:
            res = copy.deepcopy(self.round0["z2"])
            z02 = self.round0["z02"]
            res["rows"] = [r for r in res["rows"] if r["method"] not in ("no_dgsa", "full")] + z02["rows"]
            res["per_face"].update(z02["per_face"])
        res = {**res, "model": {**res["model"], "model": arg["--model"]}, "steps": arg["--steps"]}
        out = Path(arg["--out"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{arg['--name']}.json").write_text(json.dumps(res))
        return 0


def _settings(ar, tmp_path: Path, call2: bool = True):
    rnd = tmp_path / "round1"
    _safetensors(rnd / "prior.safetensors", {"kind": "prior", "step": 1442, "images_seen": 369152})
    _safetensors(rnd / "dblm.safetensors", {"kind": "dblm"})
    _safetensors(rnd / "dgsa.safetensors", {"kind": "dgsa"})
    c2 = tmp_path / "round1_call2"
    _safetensors(c2 / "prior.safetensors", {"kind": "prior", "step": 2100, "images_seen": 537600})
    for d in ("train", "val"):
        (tmp_path / d).mkdir(exist_ok=True)
    return ar.Settings(round_dir=rnd, call2=c2 if call2 else None, name="round1", train=tmp_path / "train",
                       val=tmp_path / "val", results=tmp_path / "results", runs=tmp_path / "runs",
                       reference=ar.REFERENCE, reference_name="embedded-64")  # round 0's replay: the first switch's rule


def test_steps_order_skip_and_resume(ar, round0, tmp_path, monkeypatch, capsys):
    fake = FakeTools(ar, round0)
    monkeypatch.setattr(ar, "run_cmd", fake)
    s = _settings(ar, tmp_path)
    assert ar.run(s) == 0
    kinds = [("package" if "package" in c else "--fidelity " + c[c.index("--fidelity") + 1] if "--fidelity" in c
              else "val") for c in fake.calls]
    assert kinds == ["package", "--fidelity 0.5", "--fidelity 0.25", "--fidelity 0.1", "--fidelity 0.05",
                     "package", "val"]
    first, second = fake.calls[0], fake.calls[5]
    assert first[first.index("--prior") + 1].endswith("round1_call2/prior.safetensors")  # the newest EMA
    assert "--zeta" not in first and second[second.index("--zeta") + 1] == "0.2"
    val = fake.calls[6]
    for flag, value in (("--seed", "0"), ("--limit", "200"), ("--subset", "random"), ("--preset", "gfpgan"),
                        ("--size", "128"), ("--steps", "ddim50"), ("--precision", "bf16"), ("--name", "round1_zeta0.2_val128")):
        assert val[val.index(flag) + 1] == value, flag
    assert val[val.index("--model") + 1].endswith("runs/model_round1_zeta0.2")
    calib = fake.calls[1]
    for flag, value in (("--seed", "1"), ("--limit", "120"), ("--metrics", "psnr,ssim,fd"), ("--methods", "restorer_only,full")):
        assert calib[calib.index(flag) + 1] == value, flag
    assert calib[calib.index("--model") + 1].endswith("runs/model_round1")
    res = tmp_path / "results"
    assert (res / "round1_zeta0.2_val128.json.gz").is_file() and not (res / "round1_zeta0.2_val128.json").exists()
    assert len(list((res / "round1_calibration").glob("*.json.gz"))) == 4
    md = (res / "round1_verdict.md").read_text()
    assert "does not ship" in md and "| FD lower than embedded-64's | 102.39 | 69.71 | +32.69 | **no** |" in md
    assert "LQ images match" in md and "upsampled to 128 px, on the same val pairs." in md
    out = capsys.readouterr().out
    assert "not committed" in out and "round1_call2/prior.safetensors" in out and "train package" not in out

    fake.calls.clear()  # everything exists: nothing runs, the same verdict is written again
    assert ar.run(s) == 0 and fake.calls == []
    (res / "round1_calibration" / "utkface_train_gfpgan_128_w0.1.json.gz").unlink()  # a crash lost one output
    assert ar.run(s) == 0
    assert [c[c.index("--fidelity") + 1] for c in fake.calls] == ["0.1"]


def test_stale_or_broken_outputs_are_refused(ar, round0, tmp_path, monkeypatch, capsys):
    fake = FakeTools(ar, round0)
    monkeypatch.setattr(ar, "run_cmd", fake)
    s = _settings(ar, tmp_path)
    assert ar.run(s) == 0
    # the same --name without --call2 would package another EMA into the existing folder: refused, not reused
    with pytest.raises(ar.StepError, match="holds another EMA"):
        ar.run(_settings(ar, tmp_path, call2=False))
    # a result made with another model (or steps, or number of faces) is refused, not reused
    cal = tmp_path / "results" / "round1_calibration" / "utkface_train_gfpgan_128_w0.5.json.gz"
    res = ar.load_report(cal)
    res["model"]["model"] = "runs/e128/model_other"
    cal.write_bytes(gzip.compress(json.dumps(res).encode()))
    with pytest.raises(ar.StepError, match="was made with"):
        ar.run(s)
    # a quality.py run that fails leaves no result, and the script stops with one line
    s2 = ar.Settings(**{**s.__dict__, "name": "round2"})
    monkeypatch.setattr(ar, "run_cmd", lambda cmd: 0 if "package" not in cmd else fake(cmd))
    with pytest.raises(ar.StepError, match="quality.py --name utkface_train_gfpgan_128_w0.5 failed"):
        ar.run(s2)


def test_main_bad_input_one_line(ar, tmp_path, capsys):
    assert ar.main([str(tmp_path / "nope"), "--name", "round1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    assert ar.main([str(tmp_path), "--name", "../x"]) == 1
    assert "plain name" in capsys.readouterr().err
