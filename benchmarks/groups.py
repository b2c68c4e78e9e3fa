"""Across ages, genders and skin tones: are every group's faces found, restored and kept alike?

UTKFace names each face ``age_gender_race_date.jpg.chip.jpg``: gender 0 male, 1 female; race 0 White, 1 Black,
2 Asian, 3 Indian, 4 Others (the dataset's own labels, given by its authors from the pictures; coarse, and "Others"
mixes many). Faces whose name carries no such labels are left out and counted. Two measurements, each per group
(race, gender, age band) with a 95 % interval:

* **found** (``--faces``): every face placed in a photo as users give them and searched by the photo path's own
  detector (:class:`dynface.faces.FaceDetector`, each of ``--detectors``: ``auto``, the default of ``dynface
  restore``, is HOG with its weak finds and near misses checked by the CNN detector, and the CNN's look at the
  whole photo where HOG finds none;
  ``hog`` without that look; the edge search is off, as it only adds faces cut by the photo's edge and these are
  centred). Four photos per face:
  ``portrait`` (the 200-px crop as it is, on a 400-px square: its edges replicated), ``old print`` (the same,
  Gaussian blur σ 2 px, grey noise σ 8 levels, JPEG quality 40), ``dark`` (the same, its levels × 0.3, as a
  photo taken 3.8 stops under in a dim room; grey noise σ 3, JPEG 60) and ``small`` (the crop at 48 px on the same 400-px square,
  blur σ 0.8 px, JPEG 60: a face in a group photo). A face counts as found when a box overlaps the
  crop's place by more than half of the box. Interval: Wilson's.
* **restored** (``--quality``, a :mod:`benchmarks.quality` run's JSON with its work folder kept): per face, the
  change a method makes against its input (``method − bicubic`` of each per-face metric: PSNR, SSIM, IDA, LMD:
  for IDA and LMD on the faces dlib scored in both), and its **skin tone** against the ground truth: the CIELAB
  L\\*, a\\*, b\\* and individual typology angle ITA° = atan2(L\\* − 50, b\\*) of the medians over both cheeks (two
  boxes under the eyes and beside the nose, placed from the mean of UTKFace's 5 landmarks: the ``utkface64``
  template), restored minus ground truth, and the input's own (blurred, noisy) minus ground truth beside it.
  Interval: percentile bootstrap of the mean (2,000 resamples, seeded). Also: the share of each group's ground
  truths dlib's metric detector found (IDA and LMD leave the others out).

The training set's make-up (``--train``, counted from the names) is printed beside the groups.

    python benchmarks/groups.py --quality runs/groups/val1201.json --faces ../shared/data/utkface/val \\
        --train ../shared/data/utkface/train --out docs/results/groups.md

``--from`` takes what a run does not measure from earlier runs' JSON (a detector measured again after a change,
with the restored faces of the run before: ``--faces ... --detectors auto --from docs/results/groups.json.gz``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "utkface"

RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("male", "female")
AGE_BANDS = ((0, 14, "0–14"), (15, 39, "15–39"), (40, 64, "40–64"), (65, 200, "65+"))
# both cheeks in a UTKFace crop, as shares of its side (x0, x1, y0, y1): under the eyes (y 0.30 of the side),
# beside the nose (x 0.49), above the mouth (y 0.69) -- from the mean landmarks of the utkface64 template
CHEEKS = ((0.225, 0.40, 0.375, 0.575), (0.595, 0.77, 0.375, 0.575))
DETECT_CANVAS = 400
CONDITIONS = ("portrait", "old print", "dark", "small")
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_")


def labels(name: str) -> dict | None:
    """``{"age", "gender", "race"}`` from a UTKFace file name, or None when it carries no (valid) labels."""
    m = _NAME.match(Path(name).name)
    if not m:
        return None
    age = int(m.group(1))
    return {"age": age, "gender": GENDERS[int(m.group(2))], "race": RACES[int(m.group(3))], "age_band": age_band(age)}


def age_band(age: int) -> str:
    return next(name for lo, hi, name in AGE_BANDS if lo <= age <= hi)


def group_keys() -> list[tuple[str, str]]:
    """(attribute, value) of every group, in the report's order."""
    return ([("race", r) for r in RACES] + [("gender", g) for g in GENDERS]
            + [("age_band", name) for _, _, name in AGE_BANDS])


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval of a proportion k/n (95 % by default); (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def bootstrap_mean(x: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``x`` and its 95 % percentile-bootstrap interval (nan when x is empty)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(a.mean()), float(lo), float(hi)


def cheek_tone(rgb: np.ndarray) -> dict:
    """Median CIELAB L*, a*, b* over both cheeks (:data:`CHEEKS`) of an aligned UTKFace-framed face (uint8 RGB),
    and ITA° = atan2(L* − 50, b*) in degrees (higher: lighter skin)."""
    from skimage.color import rgb2lab

    h, w = rgb.shape[:2]
    px = np.concatenate([rgb[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)].reshape(-1, 3)
                         for x0, x1, y0, y1 in CHEEKS])
    lab = rgb2lab(px[None].astype(np.float64) / 255.0)[0]
    L, a, b = (float(v) for v in np.median(lab, axis=0))
    return {"L": L, "a": a, "b": b, "ita": math.degrees(math.atan2(L - 50.0, b))}


# --------------------------------------------------------------------------- found


def detection_photos(face: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]:
    """The three photos of :data:`CONDITIONS` made from one face crop: {condition: (photo, crop's box)}."""
    import cv2

    def place(img: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        s = img.shape[0]
        p = (DETECT_CANVAS - s) // 2
        q = DETECT_CANVAS - s - p
        return cv2.copyMakeBorder(img, p, q, p, q, cv2.BORDER_REPLICATE), (p, p, p + s, p + s)

    def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]

    rng = np.random.default_rng(seed)
    portrait, box = place(face)
    old = cv2.GaussianBlur(portrait.astype(np.float32), (0, 0), 2.0)
    old += rng.normal(0.0, 8.0, old.shape[:2])[..., None].astype(np.float32)
    old = jpeg(np.clip(old + 0.5, 0, 255).astype(np.uint8), 40)
    dark = portrait.astype(np.float32) * 0.3 + rng.normal(0.0, 3.0, portrait.shape[:2])[..., None].astype(np.float32)
    dark = jpeg(np.clip(dark + 0.5, 0, 255).astype(np.uint8), 60)
    small = cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)
    small = jpeg(cv2.GaussianBlur(small, (0, 0), 0.8), 60)
    small_photo, small_box = place(small)
    return {"portrait": (portrait, box), "old print": (old, box), "dark": (dark, box), "small": (small_photo, small_box)}


def found_in(faces: Iterable, box: Sequence[float]) -> bool:
    """Whether a detected face's box lies more than half inside ``box``."""
    x0, y0, x1, y1 = box
    for f in faces:
        fx0, fy0, fx1, fy1 = f.bbox
        area = max(1e-9, (fx1 - fx0) * (fy1 - fy0))
        inter = max(0.0, min(x1, fx1) - max(x0, fx0)) * max(0.0, min(y1, fy1) - max(y0, fy0))
        if inter / area > 0.5:
            return True
    return False


def measure_found(files: Sequence[Path], progress: Callable[[str], None] = print, kind: str = "auto"
                  ) -> dict[str, dict[str, bool]]:
    """{file name: {condition: found}} for every face crop in ``files`` (``kind``: the detector)."""
    from PIL import Image

    def crops() -> Iterator[tuple[str, np.ndarray]]:
        for path in files:
            yield path.name, np.asarray(Image.open(path).convert("RGB"))

    return measure_found_images(crops(), progress, total=len(files), kind=kind)


def measure_found_images(crops: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
                         progress: Callable[[str], None] = print, total: int | None = None, kind: str = "auto"
                         ) -> dict[str, dict[str, bool]]:
    """{name: {condition: found}} for every (name, face crop): crops of another size are resized to 200 px."""
    import cv2

    from dynface.faces import FaceDetector

    items = crops.items() if isinstance(crops, Mapping) else crops
    det = FaceDetector(kind=kind, edges=False)
    out: dict[str, dict[str, bool]] = {}
    t0 = time.perf_counter()
    for i, (name, face) in enumerate(items):
        if face.shape[:2] != (200, 200):
            face = cv2.resize(face, (200, 200), interpolation=cv2.INTER_AREA)
        out[name] = {c: found_in(det.detect(photo), box) for c, (photo, box) in detection_photos(face, seed=i).items()}
        if (i + 1) % 100 == 0 or i + 1 == total:
            progress(f"found: {i + 1}/{total or '?'} faces ({time.perf_counter() - t0:.0f} s)")
    return out


def found_table(found: dict[str, dict[str, bool]]) -> list[dict]:
    rows = []
    labelled = {k: labels(k) for k in found}
    for attr, value in [("all", "all")] + group_keys():
        names = [k for k, lab in labelled.items() if lab and (attr == "all" or lab[attr] == value)]
        row: dict = {"group": attr, "value": value, "n": len(names)}
        for c in CONDITIONS:
            k = sum(found[n][c] for n in names)
            row[c] = {"found": k, "share": k / len(names) if names else math.nan, "ci": wilson(k, len(names))}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- restored


def restored_table(quality: dict, methods: Sequence[str], tones: dict[str, dict[str, dict]]) -> list[dict]:
    """Per group: paired metric changes (method − bicubic) and tone shifts (image − ground truth), bootstrapped."""
    per_face = quality["per_face"]
    keys = list(quality["data"]["keys"])
    labelled = {k: labels(k) for k in keys}
    rows = []
    for attr, value in [("all", "all")] + group_keys():
        names = [k for k, lab in labelled.items() if lab and (attr == "all" or lab[attr] == value)]
        row: dict = {"group": attr, "value": value, "n": len(names)}
        scored = [k for k in names if _num(per_face["bicubic"].get(k, {}).get("ida")) is not None]
        row["dlib_found_input"] = {"found": len(scored), "share": len(scored) / len(names) if names else math.nan,
                                   "ci": wilson(len(scored), len(names))}
        for m in methods:
            cell: dict = {}
            for metric in ("psnr", "ssim", "ida", "lmd"):
                d = [per_face[m][k][metric] - per_face["bicubic"][k][metric] for k in names
                     if _num(per_face[m].get(k, {}).get(metric)) is not None
                     and _num(per_face["bicubic"].get(k, {}).get(metric)) is not None]
                cell[metric] = {"n": len(d), "mean_change": bootstrap_mean(d)}
            row[m] = cell
        for src in ["input"] + list(methods):
            cell = {}
            for q in ("L", "a", "b", "ita"):
                d = [tones[src][k][q] - tones["hq"][k][q] for k in names if k in tones[src] and k in tones["hq"]]
                cell[q] = bootstrap_mean(d)
            cell["hq_ita"] = bootstrap_mean([tones["hq"][k]["ita"] for k in names if k in tones["hq"]])
            row.setdefault("tone", {})[src] = cell
        rows.append(row)
    return rows


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def measure_tones(quality: dict, methods: Sequence[str], work: Path) -> dict[str, dict[str, dict]]:
    """{"hq" | "input" | method: {face key: cheek_tone}} read from a quality run's work folder."""
    from PIL import Image

    pairs = Path(quality["data"]["pairs_dir"])
    folders = {"hq": pairs / "hq", "input": pairs / "lq", **{m: work / "restored" / m for m in methods}}
    out: dict[str, dict[str, dict]] = {}
    size = int(quality["data"]["eval_size"])
    for src, folder in folders.items():
        if not folder.is_dir():
            raise SystemExit(f"error: {folder} is missing (run benchmarks/quality.py with --keep-work)")
        out[src] = {}
        for k in quality["data"]["keys"]:
            p = folder / f"{k}.png"
            if p.is_file():
                im = Image.open(p).convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BICUBIC)
                out[src][k] = cheek_tone(np.asarray(im))
    return out


def training_makeup(folder: Path) -> dict:
    counts: dict = {"n": 0, "unlabelled": 0}
    for p in folder.iterdir():
        lab = labels(p.name)
        if lab is None:
            counts["unlabelled"] += 1
            continue
        counts["n"] += 1
        for attr in ("race", "gender", "age_band"):
            counts.setdefault(attr, {}).setdefault(lab[attr], 0)
            counts[attr][lab[attr]] += 1
    return counts


# --------------------------------------------------------------------------- report


def _ci(v: Sequence[float], fmt: str = "{:+.2f}") -> str:
    m, lo, hi = v
    if math.isnan(m):
        return "–"
    return f"{fmt.format(m)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _share(c: dict) -> str:
    if math.isnan(c["share"]):
        return "–"
    lo, hi = c["ci"]
    return f"{100 * c['share']:.1f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def _label(row: dict) -> str:
    return "**all**" if row["group"] == "all" else row["value"]


def render(result: dict) -> str:
    out = [f"# Across ages, genders and skin tones (`{result['model']}`)", "",
           "Written by `benchmarks/groups.py` (its docstring says how each number is made):", "", "```bash",
           result["command"], "```", "",
           f"Commit {result['commit']}, {result['date']}. Groups are UTKFace's own labels; brackets: 95 % intervals "
           "(Wilson's for shares, a bootstrap of the mean otherwise).", ""]
    train = result.get("train")
    for kind, rows in (result.get("found") or {}).items():
        out += [f"## Found by the photo path's detector: `--detector {kind}`", "",
                f"{result['found_n']} faces of `{result['faces']}`, each in four photos (see the docstring)."]
        src = result["found_sources"][kind]  # main() gives every detector's, also one taken from an older JSON
        out.append(f"Measured by `{src['command']}` at commit {src['commit']}.")
        out.append("")
        out += ["| group | faces | " + " | ".join(CONDITIONS) + " |", "|---|---|" + "---|" * len(CONDITIONS)]
        for row in rows:
            out.append(f"| {_label(row)} | {row['n']} | " + " | ".join(_share(row[c]) for c in CONDITIONS) + " |")
        out.append("")
    if result.get("restored"):
        q = result["quality"]
        out += ["## Restored", "",
                f"`{q['name']}`: {q['n_faces']} faces of `{q['hq']}` degraded with the `{q['preset']}` preset "
                f"(seed {q['seed']}) at {q['size']} px, steps {q['steps']}, {q['precision']}. Metric changes are "
                "the method's minus its input's on the same face (PSNR, SSIM: up is better; IDA, LMD: down is "
                "better; only faces dlib scored in both)."]
        if result.get("restored_from"):
            out.append(f"Taken from `{result['restored_from']}`; measured by `{q['command']}`.")
        out.append("")
        for m in result["methods"]:
            out += [f"### `{m}`: change from the input", "",
                    "| group | faces | PSNR (dB) | SSIM | IDA | LMD (px at 512) |", "|---|---|---|---|---|---|"]
            for row in result["restored"]:
                c = row[m]
                out.append(f"| {_label(row)} | {row['n']} | {_ci(c['psnr']['mean_change'])} | "
                           f"{_ci(c['ssim']['mean_change'], '{:+.4f}')} | "
                           f"{_ci(c['ida']['mean_change'], '{:+.4f}')} ({c['ida']['n']}) | "
                           f"{_ci(c['lmd']['mean_change'])} ({c['lmd']['n']}) |")
            out.append("")
        srcs = ["input"] + list(result["methods"])
        out += ["### Skin tone: cheeks, minus the ground truth's", "",
                "L\\* (lightness, 0–100) and ITA° (higher: lighter skin) of the cheeks' medians; the ground truth's "
                "own ITA° in the second column. The input's shift is the degradation's.", "",
                "| group | ground truth ITA° | " + " | ".join(f"ΔL\\* {s}" for s in srcs) + " | "
                + " | ".join(f"ΔITA° {s}" for s in srcs) + " | Δb\\* " + srcs[-1] + " |",
                "|---|---|" + "---|" * (2 * len(srcs) + 1)]
        for row in result["restored"]:
            t = row["tone"]
            out.append(f"| {_label(row)} | {_ci(t['input']['hq_ita'], '{:.1f}')} | "
                       + " | ".join(_ci(t[s]["L"]) for s in srcs) + " | "
                       + " | ".join(_ci(t[s]["ita"], "{:+.1f}") for s in srcs) + f" | {_ci(t[srcs[-1]]['b'])} |")
        out += ["", "### dlib's metric detector (IDA, LMD) on the inputs", "",
                "| group | faces | scored |", "|---|---|---|"]
        for row in result["restored"]:
            out.append(f"| {_label(row)} | {row['n']} | {_share(row['dlib_found_input'])} |")
        out.append("")
    if train:
        out += ["## The training set's make-up", "", f"`{result['train_folder']}`: {train['n']} labelled faces "
                f"({train['unlabelled']} without labels).", "", "| group | faces | share |", "|---|---|---|"]
        for attr, value in group_keys():
            k = train.get(attr, {}).get(value, 0)
            out.append(f"| {value} | {k} | {100 * k / max(1, train['n']):.1f} % |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", type=Path, help="a benchmarks/quality.py JSON whose work folder was kept")
    ap.add_argument("--methods", default="restorer_only,full", help="its methods to report (default: %(default)s)")
    ap.add_argument("--faces", type=Path, help="UTKFace crops to search in photos (e.g. ../shared/data/utkface/val)")
    ap.add_argument("--limit", type=int, default=None, help="only the first K faces of --faces (sorted)")
    ap.add_argument("--detectors", default="auto,hog", help="the detectors to compare on --faces (default: %(default)s; "
                    "auto is `dynface restore`'s default)")
    ap.add_argument("--from", "--found-from", dest="found_from", type=Path, nargs="+", default=[], metavar="JSON",
                    help="earlier runs' JSON (.json or .json.gz): what this run does not measure (a detector's finds, "
                         "the restored faces, the training set's make-up) is taken from them")
    ap.add_argument("--train", type=Path, help="the training folder, to count its groups")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "groups.md")
    args = ap.parse_args(argv)
    if not (args.quality or args.faces or args.train or args.found_from):
        ap.error("give --quality, --faces, --found-from or --train")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality as qb

    result: dict = {"tool": "benchmarks/groups.py", "command": "python benchmarks/groups.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "commit": qb._commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": "embedded-128"}
    if args.train:
        result["train"], result["train_folder"] = training_makeup(args.train), str(args.train)
    if args.faces:
        files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".png"))[: args.limit]
        result.update(found_n=len(files), faces=str(args.faces), found={}, found_per_face={})
        for kind in [k for k in args.detectors.split(",") if k]:
            found = measure_found(files, kind=kind)
            result["found"][kind], result["found_per_face"][kind] = found_table(found), found
    for kind in result.get("found", {}):
        result.setdefault("found_sources", {})[kind] = {"command": result["command"], "commit": result["commit"]}
    for earlier in args.found_from:
        got = json.loads(gzip.decompress(earlier.read_bytes()) if earlier.suffix == ".gz" else earlier.read_text())
        sources = got.get("found_sources") or {k: {"command": next((c for c in got.get("found_commands") or []
                                                                   if c and f"--detectors {k}" in c), got.get("command")),
                                                   "commit": got.get("commit")} for k in got.get("found") or {}}
        for kind in got.get("found") or {}:  # a detector measured now (or in a JSON before on the line) is kept
            if kind not in result.get("found", {}):
                result.setdefault("found", {})[kind] = got["found"][kind]
                result.setdefault("found_per_face", {})[kind] = got["found_per_face"][kind]
                result.setdefault("found_sources", {})[kind] = sources[kind]
                result.setdefault("found_n", got.get("found_n"))
                result.setdefault("faces", got.get("faces"))
        if not args.quality and "restored" in got and "restored" not in result:
            for key in ("model", "quality", "methods", "restored", "tones_per_face"):
                result[key] = got[key]
            # the run that measured them: a JSON that took them from an earlier one names that one
            result["restored_from"] = got.get("restored_from") or f"{earlier} ({got.get('commit')})"
        if not args.train and "train" in got and "train" not in result:
            result["train"], result["train_folder"] = got["train"], got.get("train_folder")
    if args.quality:
        quality = json.loads(args.quality.read_text())
        methods = [m for m in args.methods.split(",") if m]
        missing = [m for m in methods + ["bicubic"] if m not in quality["per_face"]]
        if missing:
            ap.error(f"{args.quality} has no method(s) {', '.join(missing)}")
        work = Path(quality["work"])
        tones = measure_tones(quality, methods, work)
        d = quality["data"]
        result["model"] = quality["model"]["model"]
        result["quality"] = {"name": quality["name"], "n_faces": d["n_faces"], "hq": d.get("hq_input") or d["pairs_dir"],
                             "preset": d["preset"], "seed": d["seed"], "size": d["size"], "steps": quality["steps"],
                             "precision": quality["precision"], "command": quality["command"]}
        result["methods"] = methods
        result["restored"] = restored_table(quality, methods, tones)
        result["tones_per_face"] = tones
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(result) + "\n")
    data = args.out.with_suffix(".json.gz")  # every face's finds and tones: a megabyte as text
    with gzip.open(data, "wt", encoding="utf-8") as fh:
        json.dump(result, fh)
    print(f"wrote {args.out} and {data}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
