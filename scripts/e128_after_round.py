"""After an `embedded-128` GPU round (issue 10): package, choose ζ, run the val table, decide whether it ships.

One resumable command for what docs/embedded-128_plan.md §5 does by hand on the CPU (≈ 1 h on 2 cores):

1. package ``runs/e128/model_NAME`` from the newest EMA (``--call2``'s unless ``ROUND_DIR``'s has seen more
   images), ``ROUND_DIR``'s DBLM and DGSA and ``configs/embedded-128/dsst.json`` (``--steps ddim50 --guidance x0``);
2. ζ on *training* faces, ``benchmarks/quality.py`` once per ``-w`` in 0.5 / 0.25 / 0.1 / 0.05 exactly as round 0
   did (``docs/results/embedded-128/calibration/README.md``), picked by :func:`choose_zeta`;
3. package again with ``--zeta ζ`` into ``runs/e128/model_NAME_zetaζ``;
4. the val table (a random 200 of val, ``gfpgan``, seed 0, 128 px) into ``docs/results/embedded-128``;
5. the verdict (:func:`verdict`) against ``--reference``'s committed rows on the same pairs (since session 9 the
   shipped ``embedded-128``'s val table; ``embedded-64``'s decided the first switch), written to
   ``docs/results/embedded-128/NAME_verdict.md`` and printed.

Every step is skipped when its output exists (a crash resumes where it stopped); a packaged folder is checked
against the EMA and ζ it should hold. The script never commits and never switches a default: it prints the
manual steps that follow. ``--smoke`` runs the same steps on 4 faces with ddim10 into ``runs/e128/smoke/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a checkout without an installed package still finds dynface

from dynface.atomicfile import atomic_write_bytes, atomic_write_text  # noqa: E402
from dynface.metrics import mean_se  # noqa: E402
from dynface.models.io import read_metadata  # noqa: E402
from dynface.outputs import UnsafePathError, output_path, plain_name  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "embedded-128"
REFERENCE = RESULTS / "embedded-64_val128.json.gz"  # embedded-64's rows on round 0's val pairs, upsampled to 128
# Since session 9 the shipped embedded-128 is the model to beat: its val table on the same pairs (the default
# --reference; session 9's model: cpu1_zeta2_val128, since session 11: cpu3_zeta1_val128)
SHIPPED = RESULTS / "cpu3_zeta1_val128.json.gz"
SHIPPED_NAME = "embedded-128 (shipped)"
PAIRS_WITNESS = RESULTS / "round0_val128.json.gz"  # a 128-px run on those pairs: its bicubic rows are their LQ
# The known references: their name in the verdict and their LQ witness (a 128-px run on the reference's pairs with a
# bicubic row). The shipped table is its own witness; embedded-64's bicubic row is at 64 px, so round 0's run
# witnesses its pairs. Another --reference table has neither (its file's stem, no LQ comparison).
KNOWN_REFERENCES: dict[Path, tuple[str, Path]] = {SHIPPED: (SHIPPED_NAME, SHIPPED), REFERENCE: ("embedded-64", PAIRS_WITNESS)}
DSST = ROOT / "configs" / "embedded-128" / "dsst.json"
RUNS = ROOT / "runs" / "e128"
DATA = ROOT.parent / "shared" / "data" / "utkface"

W_GRID = (0.5, 0.25, 0.1, 0.05)  # -w of the calibration (embedded-64's fixed grid)
PSNR_BOUND_DB = 0.3  # the calibration rule: PSNR within this of the restorer's
PSNR_EXPECTED_DB = 1.0  # issue 10 §6: `full` PSNR within 1 dB of the restorer
LQ_PSNR_TOL_DB = 0.01  # same pairs: the bicubic (= LQ) PSNR per face; re-degrading with another thread count
# moves a few pixels by one level (measured: ≤ 5e-4 dB on 160 of 200 faces), a different degradation by dB
SIZE = 128
VAL_METHODS = ("bicubic", "restorer_only", "fixed_start", "no_dgsa", "full")
CALIB_METHODS = ("restorer_only", "full")


class StepError(Exception):
    """A step failed or its existing output does not match; reported in one line, exit 1."""


# --------------------------------------------------------------------------- reading results


def load_report(path: Path) -> dict:
    """A ``benchmarks/quality.py`` result, ``.json`` or ``.json.gz``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def find_report(out: Path, name: str) -> Path | None:
    """``out/name.json.gz`` or ``out/name.json``, whichever exists (gzip first)."""
    for suffix in (".json.gz", ".json"):
        p = output_path(out, name + suffix)
        if p.is_file():
            return p
    return None


def rows_of(report: dict) -> dict[str, dict]:
    """method → its row (``mean``, ``valid``, …) with the method's per-face numbers under ``per_face``."""
    per_face = report.get("per_face") or {}
    return {r["method"]: {**r, "per_face": per_face.get(r["method"])} for r in report["rows"]}


def calib_row(report: dict) -> dict:
    """One calibration run (``--fidelity W``, methods restorer_only,full) as a row for :func:`choose_zeta`."""
    rows = rows_of(report)
    if report.get("fidelity") is None or not {"restorer_only", "full"} <= set(rows):
        raise ValueError(f"{report.get('name')}: not a calibration run (needs --fidelity and restorer_only,full)")
    return {"w": float(report["fidelity"]), "zeta_default": float(report["zeta_default"]),
            "restorer_psnr": rows["restorer_only"]["mean"]["psnr"], "psnr": rows["full"]["mean"]["psnr"],
            "ssim": rows["full"]["mean"].get("ssim"), "fd": rows["full"]["mean"]["fd"],
            "restorer_fd": rows["restorer_only"]["mean"]["fd"]}


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# --------------------------------------------------------------------------- the two decisions (pure)


def choose_zeta(rows: list[dict]) -> tuple[float, str]:
    """The default ζ by embedded-64's fixed rule: the lowest FD among the ``-w`` settings whose ``full`` PSNR is
    within 0.3 dB of the restorer's (or above it). ζ = 2·w·ζ_model, ζ_model the packaged (training) ζ that
    ``-w 0.5`` stands for. ``rows``: :func:`calib_row` dicts. Raises ValueError when no setting qualifies."""
    if not rows:
        raise ValueError("no calibration rows")
    zetas = {r["zeta_default"] for r in rows}
    if len(zetas) != 1:
        raise ValueError(f"the calibration runs used models with different ζ ({sorted(zetas)}): package once, rerun")
    ok = [r for r in rows if _finite(r["psnr"]) and _finite(r["fd"])
          and r["psnr"] >= r["restorer_psnr"] - PSNR_BOUND_DB]
    if not ok:
        worst = max(rows, key=lambda r: r["psnr"] - r["restorer_psnr"])
        raise ValueError(f"no -w keeps PSNR within {PSNR_BOUND_DB} dB of the restorer's (best: -w {worst['w']:g}, "
                         f"{worst['psnr'] - worst['restorer_psnr']:+.2f} dB): choose ζ by hand")
    best = min(ok, key=lambda r: (r["fd"], -r["psnr"]))
    zeta = round(2.0 * best["w"] * best["zeta_default"], 6)
    left = ", ".join(f"-w {r['w']:g} ({r['psnr'] - r['restorer_psnr']:+.2f} dB)" for r in rows if r not in ok)
    reason = (f"-w {best['w']:g} (ζ = 2·{best['w']:g}·{best['zeta_default']:g} = {zeta:g}) has the lowest FD "
              f"({best['fd']:.2f}) of the {len(ok)} settings within {PSNR_BOUND_DB} dB of the restorer's PSNR "
              f"({best['restorer_psnr']:.2f} dB; this one {best['psnr'] - best['restorer_psnr']:+.2f} dB)"
              + (f"; out of bounds: {left}" if left else ""))
    return zeta, reason


def _by_method(rows) -> dict[str, dict]:
    return rows if isinstance(rows, dict) else {r["method"]: r for r in rows}


def _mean(row: dict | None, metric: str) -> float | None:
    v = None if row is None or "error" in row else row.get("mean", {}).get(metric)
    return float(v) if _finite(v) else None


def common_means(a: dict | None, b: dict | None, metric: str) -> tuple[float | None, float | None, int | None]:
    """Means of ``metric`` over the faces scored in both rows when both carry per-face numbers (n = how many),
    else the rows' own means (n = None)."""
    keys = _common_faces(a, b, metric)
    if keys is None:
        return _mean(a, metric), _mean(b, metric), None
    if not keys:
        return None, None, 0
    pa, pb = a["per_face"], b["per_face"]
    return sum(pa[k][metric] for k in keys) / len(keys), sum(pb[k][metric] for k in keys) / len(keys), len(keys)


def _common_faces(a: dict | None, b: dict | None, metric: str) -> list[str] | None:
    """The faces with a finite ``metric`` in both rows; None when a row carries no per-face numbers."""
    pa, pb = (None if r is None else r.get("per_face") for r in (a, b))
    if not (pa and pb):
        return None
    return [k for k in pa if k in pb and _finite(pa[k].get(metric)) and _finite(pb[k].get(metric))]


def paired_se(a: dict | None, b: dict | None, metric: str) -> float | None:
    """Standard error of the per-face differences a − b over the common faces (None without per-face numbers or
    with fewer than 2 common faces): how far a mean Δ of a per-face metric stands from noise."""
    keys = _common_faces(a, b, metric)
    if not keys or len(keys) < 2:
        return None
    return mean_se(a["per_face"][k][metric] - b["per_face"][k][metric] for k in keys)[1]


def _check(name: str, cand: float | None, other: float | None, ok_if: str, margin: float = 0.0,
           n: int | None = None, other_label: str = "", se: float | None = None) -> dict:
    """``ok_if``: 'lower' (cand < other), 'geq' (cand ≥ other − margin). ``se``: the paired standard error of
    the difference (:func:`paired_se`), reported beside Δ; it does not change ``ok``."""
    if cand is None or other is None:
        ok = None
    elif ok_if == "lower":
        ok = cand < other
    else:
        ok = cand >= other - margin
    return {"name": name, "candidate": cand, "other": other, "other_label": other_label,
            "delta": None if ok is None else cand - other, "ok": ok, "n_common": n, "se": se}


def verdict(candidate_rows, reference_rows, same_pairs: tuple[bool, list[str]] | None = None,
            ref_name: str = "embedded-64") -> dict:
    """Does the candidate's ``full`` beat the reference's (``ref_name``: embedded-64 upsampled until embedded-128
    shipped, then the shipped embedded-128; same pairs)? Issue 10's rule:
    lower FD, lower IDA (over the faces dlib scored in both rows when per-face numbers exist) and PSNR ≥ the
    reference's; plus ``same_pairs`` when given (its ok must hold). ``expectations``: the issue's other checks
    on the candidate alone (FD below the restorer and no_dgsa, IDA below fixed_start, PSNR within 1 dB of the
    restorer); reported, they do not decide shipping. Rows: :func:`rows_of` dicts or a JSON ``rows`` list."""
    c, r = _by_method(candidate_rows), _by_method(reference_rows)
    cf, rf = c.get("full"), r.get("full")
    ida_c, ida_r, n_ida = common_means(cf, rf, "ida")
    criteria = [
        _check(f"FD lower than {ref_name}'s", _mean(cf, "fd"), _mean(rf, "fd"), "lower", other_label=f"{ref_name} full"),
        _check(f"IDA lower than {ref_name}'s", ida_c, ida_r, "lower", n=n_ida, other_label=f"{ref_name} full",
               se=paired_se(cf, rf, "ida")),
        _check(f"PSNR equal or better than {ref_name}'s", _mean(cf, "psnr"), _mean(rf, "psnr"), "geq",
               other_label=f"{ref_name} full", se=paired_se(cf, rf, "psnr")),
    ]
    if same_pairs is not None:
        criteria.insert(0, {"name": "same val pairs as the reference", "ok": bool(same_pairs[0]),
                            "notes": list(same_pairs[1])})
    ida_f, ida_fs, n_fs = common_means(cf, c.get("fixed_start"), "ida")
    expectations = [
        _check("full FD below the restorer's", _mean(cf, "fd"), _mean(c.get("restorer_only"), "fd"), "lower",
               other_label="restorer_only"),
        _check("full FD below no_dgsa's", _mean(cf, "fd"), _mean(c.get("no_dgsa"), "fd"), "lower",
               other_label="no_dgsa"),
        _check("full IDA below fixed_start's", ida_f, ida_fs, "lower", n=n_fs, other_label="fixed_start",
               se=paired_se(cf, c.get("fixed_start"), "ida")),
        _check(f"full PSNR within {PSNR_EXPECTED_DB:g} dB of the restorer's", _mean(cf, "psnr"),
               _mean(c.get("restorer_only"), "psnr"), "geq", margin=PSNR_EXPECTED_DB, other_label="restorer_only",
               se=paired_se(cf, c.get("restorer_only"), "psnr")),
    ]
    return {"ships": all(x["ok"] is True for x in criteria), "criteria": criteria, "expectations": expectations}


def same_pairs(candidate: dict, reference: dict, witness: dict | None = None) -> tuple[bool, list[str]]:
    """Are the candidate's val pairs the reference's? The recorded data (preset, degradation seed, size, scoring
    size, the face keys, which fix the random subset and its limit) must match; with a ``witness`` (a 128-px run
    on the reference's pairs folder, with a bicubic row) the candidate's per-face bicubic PSNR, i.e. its LQ
    images, must match the witness's within 0.01 dB."""
    cd, rd = candidate.get("data", {}), reference.get("data", {})
    notes, ok = [], True
    for k in ("preset", "seed", "size", "eval_size", "n_faces"):
        if cd.get(k) != rd.get(k):
            ok = False
            notes.append(f"{k}: {cd.get(k)!r} here, {rd.get(k)!r} in the reference")
    if cd.get("keys") != rd.get("keys"):
        ok = False
        both = len(set(cd.get("keys") or []) & set(rd.get("keys") or []))
        notes.append(f"the faces differ ({both} of {len(rd.get('keys') or [])} in common): another subset or limit")
    if ok:
        notes.append(f"{cd.get('n_faces')} faces, the same names, preset {cd.get('preset')}, seed {cd.get('seed')}, "
                     f"{cd.get('size')} px, scored at {cd.get('eval_size')} px")
    if not ok:
        return ok, notes
    if witness is None:
        notes.append("LQ images not compared (no witness run on the reference's pairs)")
        return ok, notes
    wd = witness.get("data", {})
    wb, cb = (rows_of(x).get("bicubic", {}).get("per_face") for x in (witness, candidate))
    if wd.get("pairs_dir") != rd.get("pairs_dir") or wd.get("keys") != rd.get("keys") or not wb or not cb:
        notes.append("LQ images not compared (the witness is not on the reference's pairs, or a bicubic row is missing)")
        return ok, notes
    diffs = [abs(cb[k]["psnr"] - wb[k]["psnr"]) for k in wb if k in cb and _finite(cb[k].get("psnr"))
             and _finite(wb[k].get("psnr"))]
    if len(diffs) != len(wb) or max(diffs, default=0.0) > LQ_PSNR_TOL_DB:
        ok = False
        notes.append(f"the LQ images differ: bicubic PSNR compared on {len(diffs)} of {len(wb)} faces, "
                     f"max |Δ| {max(diffs, default=float('nan')):.4f} dB > {LQ_PSNR_TOL_DB} dB")
    else:
        notes.append(f"LQ images match: bicubic PSNR per face within {max(diffs):.1e} dB of the witness's "
                     f"({len(diffs)} faces)")
    return ok, notes


# --------------------------------------------------------------------------- markdown


def _f(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _mark(ok) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[ok]


def _delta(x: dict, digits: int) -> str:
    """Δ of a check, with ± its paired standard error where per-face numbers gave one."""
    if x["delta"] is None:
        return "–"
    return f"{x['delta']:+.{digits}f}" + (f" ± {x['se']:.{digits}f}" if x.get("se") is not None else "")


def verdict_markdown(v: dict, *, name: str, zeta: float, zeta_reason: str, calib: list[dict], context: list[str],
                     ref_name: str = "embedded-64") -> str:
    """The verdict file: the ζ table, the ship criteria, the issue's expectations."""
    digits = {"FD": 2, "IDA": 4, "PSNR": 2}
    pairs = next((x["ok"] for x in v["criteria"] if x["name"].startswith("same val pairs")), None)
    where = {True: "on the same val pairs", False: "**on other val pairs: not comparable**",
             None: "(pairs not checked)"}[pairs]
    ref_full = "`embedded-64`'s `full` upsampled to 128 px" if ref_name == "embedded-64" else f"`{ref_name}`'s `full`"
    lines = [f"# `embedded-128` {name}: does it beat `{ref_name}`? (issue 10)", "",
             "\n\n".join(context), "",
             f"**Verdict: {'ships: switch the defaults (plan §5)' if v['ships'] else 'does not ship'}.** "
             f"`full` (ζ = {zeta:g}) against {ref_full}, {where}.", "",
             "## ζ on training faces", "",
             "| -w | ζ_eff | PSNR ↑ | Δ restorer | SSIM ↑ | FD ↓ |", "|---|---|---|---|---|---|"]
    if calib:
        lines.append(f"| restorer only | – | {calib[0]['restorer_psnr']:.2f} | – | – | {_f(calib[0].get('restorer_fd'))} |")
    for r in calib:
        z = 2 * r["w"] * r["zeta_default"]
        bold = "**" if math.isclose(z, zeta) else ""
        lines.append(f"| {bold}{r['w']:g}{bold} | {z:g} | {r['psnr']:.2f} | {r['psnr'] - r['restorer_psnr']:+.2f} | "
                     f"{_f(r.get('ssim'), 4)} | {r['fd']:.2f} |")
    lines += ["", f"Rule (embedded-64's, fixed): the lowest FD within {PSNR_BOUND_DB} dB of the restorer's PSNR. "
              f"Chosen: {zeta_reason}.", "", f"## Ship rule: beat `{ref_name}` on FD and IDA at equal or better PSNR", "",
              f"| criterion | 128 `full` | {'64' if ref_name == 'embedded-64' else 'reference'} `full` | Δ | met |",
              "|---|---|---|---|---|"]
    for x in v["criteria"]:
        if "candidate" not in x:
            lines.append(f"| {x['name']} | | | | {_mark(x['ok'])} |")
            continue
        d = digits[x["name"].split()[0]]
        n = f" ({x['n_common']} common faces)" if x.get("n_common") is not None else ""
        lines.append(f"| {x['name']}{n} | {_f(x['candidate'], d)} | {_f(x['other'], d)} | {_delta(x, d)} | "
                     f"{_mark(x['ok'])} |")
    notes = [note for x in v["criteria"] for note in x.get("notes", [])]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    lines += ["", "## The issue's other expectations (reported; they do not decide shipping)", "",
              "| expectation | `full` | other | Δ | met |", "|---|---|---|---|---|"]
    for x in v["expectations"]:
        d = digits[x["name"].split()[1]]
        n = f" ({x['n_common']} common faces)" if x.get("n_common") is not None else ""
        lines.append(f"| {x['name']}{n} | {_f(x['candidate'], d)} | {_f(x['other'], d)} ({x['other_label']}) | "
                     f"{_delta(x, d)} | {_mark(x['ok'])} |")
    if any(x.get("se") is not None for x in v["criteria"] + v["expectations"]):
        lines += ["", "± is the standard error of the per-face differences over the faces both rows scored (FD is "
                  "one number per set and has none); it is reported, the rules above do not use it."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Settings:
    round_dir: Path
    call2: Path | None
    name: str
    calib_limit: int = 120
    val_limit: int = 200
    steps: str = "ddim50"
    threads: int = 2
    train: Path = DATA / "train"
    val: Path = DATA / "val"
    results: Path = RESULTS  # val table and verdict; calibration under results/NAME_calibration
    runs: Path = RUNS  # model folders and work folders
    reference: Path = SHIPPED
    reference_name: str = SHIPPED_NAME
    smoke: bool = False

    @property
    def witness(self) -> Path | None:
        """The reference's LQ witness (:data:`KNOWN_REFERENCES`), None for another table."""
        return KNOWN_REFERENCES.get(self.reference, ("", None))[1]

    @property
    def work(self) -> Path:
        return output_path(self.runs, "work", self.name)

    @property
    def calib_out(self) -> Path:
        return output_path(self.results, f"{self.name}_calibration")


def rel(p: Path) -> str:
    """``p`` relative to the checkout when inside it (commands then read as round 0's did), else absolute."""
    p = Path(p).absolute()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run_cmd(cmd: list[str]) -> int:
    """Run one step's command in the checkout, its output passing through; returns the exit status."""
    print("$ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def newest_ema(s: Settings) -> Path:
    """``--call2``'s EMA, unless ``ROUND_DIR``'s has seen more images (then that one, with a note)."""
    cands = [p / "prior.safetensors" for p in (s.round_dir, s.call2) if p is not None]
    missing = [rel(p) for p in cands if not p.is_file()]
    if missing:
        raise StepError(f"no EMA at {', '.join(missing)} (unpack the round first: plan §3)")
    seen = {p: int(read_metadata(p).get("images_seen", 0)) for p in cands}
    best = max(reversed(cands), key=lambda p: seen[p])  # a tie goes to call 2
    if s.call2 is not None and best != cands[-1]:
        print(f"note: {rel(cands[-1])} has seen fewer images ({seen[cands[-1]]:,}) than {rel(best)} "
              f"({seen[best]:,}): packaging the latter", flush=True)
    return best


def _model_done(folder: Path, ema: Path, zeta: float | None) -> bool:
    """True when ``folder`` is a complete package of ``ema`` (its step and images seen) with ``zeta``; a folder
    that holds something else is an error, not silently reused."""
    files = [folder / f for f in ("prior.safetensors", "dblm.safetensors", "dgsa.safetensors", "dsst.json")]
    if not folder.exists():
        return False
    if not all(f.is_file() for f in files):
        raise StepError(f"{rel(folder)} exists but is incomplete: remove it and rerun")
    want, got = read_metadata(ema), read_metadata(files[0])
    if (want.get("step"), want.get("images_seen")) != (got.get("step"), got.get("images_seen")):
        raise StepError(f"{rel(folder)} holds another EMA (step {got.get('step')}, images seen {got.get('images_seen')}; "
                        f"{rel(ema)} has step {want.get('step')}, {want.get('images_seen')}): remove it or use another --name")
    z = (read_metadata(files[2]).get("sampler") or {}).get("zeta")
    if zeta is not None and (z is None or not math.isclose(float(z), zeta)):
        raise StepError(f"{rel(folder)} has ζ {z}, not {zeta:g}: remove it and rerun")
    return True


def package(s: Settings, folder: Path, ema: Path, zeta: float | None) -> None:
    """``dynface train package`` into ``folder`` (through ``folder.partial``: a crash leaves no half package)."""
    if _model_done(folder, ema, zeta):
        print(f"skip: {rel(folder)} is packaged", flush=True)
        return
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    cmd = [sys.executable, "-m", "dynface.cli", "train", "package", "--prior", rel(ema),
           "--dblm", rel(s.round_dir / "dblm.safetensors"), "--dgsa", rel(s.round_dir / "dgsa.safetensors"),
           "--dsst", rel(DSST), "--template", "utkface64", "--steps", "ddim50", "--guidance", "x0",
           *(["--zeta", f"{zeta:g}"] if zeta is not None else []), "--out", rel(tmp)]
    if run_cmd(cmd) != 0:
        raise StepError(f"packaging {rel(folder)} failed (see above)")
    tmp.rename(folder)
    _model_done(folder, ema, zeta)


def _report_done(out: Path, name: str, methods: tuple[str, ...], expect: dict) -> Path | None:
    """The result file when it exists with a row for each method and no row that failed; one made with another
    model, step count or number of faces (``expect``: model, steps, n_faces) is an error, not silently reused."""
    p = find_report(out, name)
    if p is None:
        return None
    try:
        res = load_report(p)
        rows = rows_of(res)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    got = {"model": res.get("model", {}).get("model"), "steps": res.get("steps"),
           "n_faces": res.get("data", {}).get("n_faces")}
    if got != expect:
        raise StepError(f"{rel(p)} was made with {got}, not {expect}: remove it (or use another --name) and rerun")
    return p if all(m in rows and "error" not in rows[m] for m in methods) else None


def quality(out: Path, name: str, methods: tuple[str, ...], args: list[str]) -> Path:
    """``benchmarks/quality.py ARGS --out OUT --name NAME``, unless its result exists; the JSON is gzipped after
    (as the committed results are). Returns the result file."""
    expect = {"model": args[args.index("--model") + 1], "steps": args[args.index("--steps") + 1],
              "n_faces": int(args[args.index("--limit") + 1])}
    done = _report_done(out, name, methods, expect)
    if done is not None:
        print(f"skip: {rel(done)} exists", flush=True)
        return done
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "benchmarks/quality.py", *args, "--methods", ",".join(methods),
           "--out", rel(out), "--name", name]
    rc = run_cmd(cmd)
    js = output_path(out, name + ".json")
    if rc != 0 or _report_done(out, name, methods, expect) is None:
        raise StepError(f"benchmarks/quality.py --name {name} failed (exit {rc}; see above)")
    atomic_write_bytes(gzip.compress(js.read_bytes(), mtime=0), output_path(out, name + ".json.gz"))
    js.unlink()
    return output_path(out, name + ".json.gz")


def calibration_args(s: Settings, model: Path, w: float) -> list[str]:
    """Round 0's calibration command (docs/results/embedded-128/calibration/README.md) for one -w."""
    return ["--hq", rel(s.train), "--limit", str(s.calib_limit), "--subset", "random", "--seed", "1",
            "--preset", "gfpgan", "--size", str(SIZE), "--fidelity", f"{w:g}", "--steps", s.steps,
            "--model", rel(model), "--metrics", "psnr,ssim,fd", "--precision", "bf16", "--threads", str(s.threads),
            "--work", rel(output_path(s.work, f"calib_w{w:g}")), "--allow-missing"]


def val_args(s: Settings, model: Path) -> list[str]:
    """Plan §5's val-table command (a random N of val, gfpgan, seed 0, 128 px)."""
    return ["--hq", rel(s.val), "--preset", "gfpgan", "--seed", "0", "--size", str(SIZE), "--limit", str(s.val_limit),
            "--subset", "random", "--steps", s.steps, "--model", rel(model), "--precision", "bf16",
            "--threads", str(s.threads), "--allow-missing", "--work", rel(output_path(s.work, "val128")), "--keep-work"]


def next_steps(s: Settings, ema: Path, model: Path, shipped: bool, written: list[Path]) -> list[str]:
    if s.smoke:
        return ["nothing: a --smoke run checks the machinery on a few faces and decides nothing; run without --smoke"]
    steps = ["git add " + " ".join(rel(p) for p in written) + "   # the evidence (the lead commits)",
             "docs/results/embedded-128/README.md and plan §6: the round's row, the table, the verdict"]
    if shipped:
        steps += [f".venv/bin/python -m dynface.cli train package --prior {rel(ema)} ... --zeta (as {rel(model)}) "
                  "--color-fix wavelet --card CARD.md --out src/dynface/weights/embedded-128   # plan §5: re-package "
                  "(this commits the EMA: the shipped prior is the one rounds resume from), with the model card "
                  "(its val table, start steps, colour: benchmarks/colour.py), weights once per session"]
    else:
        steps += [f"keep training (plan §6): the shipped model stays ({s.reference_name} is not beaten)",
                  f"keep {rel(ema)} (not committed: a second 128-px prior in git would put the tree over the device "
                  "tool's 64 MiB); `pack` resumes from it, it has seen the most images (checkpoints/embedded-128/README.md)"]
    return steps


def run(s: Settings) -> int:
    """The five steps; returns 0 when the verdict was written (whether or not the candidate ships)."""
    for what, p in (("ROUND_DIR", s.round_dir), ("--call2", s.call2)):
        if p is not None and not p.is_dir():
            raise StepError(f"{what} {p} is not a folder")
    for f in ("dblm.safetensors", "dgsa.safetensors"):
        if not (s.round_dir / f).is_file():
            raise StepError(f"{rel(s.round_dir / f)} is missing (the round's DBLM and DGSA are packaged from ROUND_DIR)")
    for what, p in (("--train", s.train), ("--val", s.val)):
        if not p.is_dir():
            raise StepError(f"{what} {p} is not a folder")
    if not s.reference.is_file():
        raise StepError(f"the reference {rel(s.reference)} is missing")

    print(f"[1/5] package the candidate (training ζ) -> {rel(output_path(s.runs, f'model_{s.name}'))}", flush=True)
    ema = newest_ema(s)
    ema_seen = int(read_metadata(ema).get("images_seen", 0))
    print(f"EMA: {rel(ema)} (images seen {ema_seen:,})", flush=True)
    model0 = output_path(s.runs, f"model_{s.name}")
    package(s, model0, ema, None)

    print(f"[2/5] ζ on {s.calib_limit} training faces, -w {' / '.join(f'{w:g}' for w in W_GRID)}", flush=True)
    calib = []
    for w in W_GRID:
        p = quality(s.calib_out, f"utkface_train_gfpgan_{SIZE}_w{w:g}", CALIB_METHODS, calibration_args(s, model0, w))
        calib.append(calib_row(load_report(p)))
    try:
        zeta, reason = choose_zeta(calib)
    except ValueError as e:
        raise StepError(str(e)) from e
    print(f"ζ = {zeta:g}: {reason}", flush=True)

    tag = f"{s.name}_zeta{zeta:g}"
    model = output_path(s.runs, f"model_{tag}")
    print(f"[3/5] package with --zeta {zeta:g} -> {rel(model)}", flush=True)
    package(s, model, ema, zeta)

    print(f"[4/5] the val table: a random {s.val_limit} of {rel(s.val)}, gfpgan, seed 0, {SIZE} px", flush=True)
    val_json = quality(s.results, f"{tag}_val{SIZE}", VAL_METHODS, val_args(s, model))

    print(f"[5/5] the verdict against {s.reference_name}", flush=True)
    cand_report, ref_report = load_report(val_json), load_report(s.reference)
    witness = load_report(s.witness) if s.witness is not None and s.witness.is_file() else None
    v = verdict(rows_of(cand_report), rows_of(ref_report), same_pairs(cand_report, ref_report, witness), s.reference_name)
    context = [f"Written by `python scripts/e128_after_round.py` on {datetime.now(UTC).isoformat(timespec='seconds')}. "
               f"Candidate: `{rel(model)}`, packaged from `{rel(ema)}` (images seen "
               f"{ema_seen:,}) and `{rel(s.round_dir)}`'s DBLM and DGSA; val table "
               f"`{val_json.name}` ({s.steps}, bf16, x0 guidance). Reference: `{rel(s.reference)}`."]
    if s.smoke:
        context.append(f"**SMOKE RUN** ({s.calib_limit} training and {s.val_limit} val faces, {s.steps}): it checks "
                       "the machinery and decides nothing.")
    md = verdict_markdown(v, name=s.name, zeta=zeta, zeta_reason=reason, calib=calib, context=context,
                          ref_name=s.reference_name)
    vpath = output_path(s.results, f"{s.name}_verdict.md")
    atomic_write_text(md, vpath)
    print(md, flush=True)
    written = [vpath, val_json, s.calib_out]
    written += [p for p in (output_path(s.results, f"{tag}_val{SIZE}{x}") for x in (".md", "_psnr_fd.png")) if p.is_file()]
    print(f"wrote {rel(vpath)}\n\nNext, by hand (this script commits nothing and switches no default):", flush=True)
    for line in next_steps(s, ema, model, v["ships"], written):
        print("  " + line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scripts/e128_after_round.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("round_dir", type=Path, metavar="ROUND_DIR", help="the unpacked call 1 (runs/e128/roundN)")
    ap.add_argument("--call2", type=Path, metavar="DIR", help="the unpacked call 2 (its newer EMA is packaged)")
    ap.add_argument("--name", required=True, help="e.g. round1: names the model folders and result files")
    ap.add_argument("--calib-limit", type=int, default=None, metavar="K", help="training faces for ζ (default 120)")
    ap.add_argument("--val-limit", type=int, default=None, metavar="K", help="val faces (default 200)")
    ap.add_argument("--train", type=Path, default=DATA / "train", help="training faces (default: ../shared/...)")
    ap.add_argument("--val", type=Path, default=DATA / "val", help="val faces (default: ../shared/...)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of quality.py (default 2, as round 0)")
    ap.add_argument("--reference", type=Path, default=SHIPPED, metavar="JSON",
                    help=f"the val table to beat, on the same pairs (default: the shipped embedded-128's, {rel(SHIPPED)}; "
                         f"embedded-64's: {rel(REFERENCE)})")
    ap.add_argument("--reference-name", default=None, metavar="NAME",
                    help=f"its name in the verdict (default: {SHIPPED_NAME!r} for the default reference, else the file's stem)")
    ap.add_argument("--smoke", action="store_true",
                    help="4 faces each, ddim10, everything under runs/e128/smoke/ (checks the machinery, decides nothing)")
    return ap


def settings_from_args(args: argparse.Namespace) -> Settings:
    name = plain_name(args.name, "--name")
    limits = (args.calib_limit, args.val_limit)
    if any(x is not None and x < 2 for x in limits) or args.threads < 1:
        raise StepError("--calib-limit and --val-limit must be ≥ 2 (FD needs two faces), --threads ≥ 1")
    reference = args.reference.absolute()
    known_name = KNOWN_REFERENCES.get(reference, (reference.name.split(".")[0], None))[0]
    common = {"round_dir": args.round_dir.absolute(), "call2": args.call2.absolute() if args.call2 else None,
              "name": name, "train": args.train.absolute(), "val": args.val.absolute(), "threads": args.threads,
              "reference": reference, "reference_name": args.reference_name or known_name}
    if args.smoke:
        smoke = RUNS / "smoke"
        return Settings(**common, calib_limit=args.calib_limit or 4, val_limit=args.val_limit or 4, steps="ddim10",
                        results=smoke / "results", runs=smoke, smoke=True)
    return Settings(**common, calib_limit=args.calib_limit or 120, val_limit=args.val_limit or 200)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(settings_from_args(args))
    except (StepError, UnsafePathError) as e:
        print(f"e128_after_round.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("e128_after_round.py: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
