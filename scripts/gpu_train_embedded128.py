"""One training round of ``embedded-128`` on a lent GPU: pack here, train there, unpack here.

    # here (CPU): pack one data shard (+ the newest EMA when it is not committed) into .gpu/e128/
    python scripts/gpu_train_embedded128.py pack --data ../shared/data/utkface/train --val ../shared/data/utkface/val
    python scripts/gpu_train_embedded128.py plan 560 all        # dry run: prints the exact device-tool call
    # device (one call):  bash scripts/gpu_train_embedded128.sh 560 all     (carry [".gpu/e128"])
    # here, after:
    python scripts/gpu_train_embedded128.py unpack FILES_AT runs/e128/round0

Why shards: the device tool carries at most 64 MiB per call (the repository, the EMA and the data together)
and 20,140 faces at 128 px are ≈ 57 MiB even as WebP q90 (≈ 41 dB against the Lanczos-resized originals),
so each round carries the interleaved shard ``round % K`` (K from the space left) and the rounds rotate
through the set. Optimizer state never travels (AdamW's moments are 2× the fp32 weights, ≈ 106 MB): each
call restarts AdamW from the EMA with a short warm-up, unless a warm machine still holds this session's
``runs/e128_device/prior/last.pt``, which is then continued exactly.

``train`` (run by the .sh on the device) phases, any comma-separated subset of ``prior,dsst,dblm,dgsa,speed``
(``all`` = the four training phases, ``rest`` = dsst,dblm,dgsa; ``speed`` only when named):

* ``prior``: the UNet for most of the call (bf16 autocast, channels_last, one ``torch.compile``, the faces
  on the device), exporting the EMA as fp16 parts into $OUT at every checkpoint (``prior.partN.safetensors``),
  then 16 samples, img/s and the UNet's share of the measured bf16 matmul peak (``dynface.devices``'s
  measurement, as in ``benchmarks/speed.py``), and the compile cache (``compile_cache.bin``: torch's portable
  "mega-cache", xz-compressed, taken after the first steps; ``pack --reuse`` carries it to the next machine, which
  loads it before compiling when its torch version and GPU name match, and compiles as usual otherwise);
* ``dsst``: the empirical DSST table from the carried val faces (256 at 128 px);
* ``dblm``: RM, SDE, TM+SDE at 128 px on the GPU, each stage a share of the remaining time;
* ``dgsa``: DGSA against this call's (or the carried) prior, DBLM and DSST;
* ``speed``: the GPU s/face of the shipped ``embedded-128`` for the rows of issue 10's table (``restorer_only``,
  ``fixed_start``, ``no_dgsa``, ``full``; bicubic costs nothing), with ``benchmarks/speed.py`` on 16 carried val
  faces degraded as the table's (``gfpgan``, seed 0): fp32 (a GPU's default precision) and bf16, one face per
  call (``restore``'s default on a GPU) and 8 (``--fast-batches``). It runs last, in the final ``SPEED_SECONDS``
  (75 s) of the call, which REST_SECONDS must leave (``plan`` checks); the table comes back as ``speed_gpu.md``
  in ``bundle.tar`` and its rows in ``summary.json``.

$OUT (the device returns ≤ 8 files of ≤ 16 MiB, 64 MiB together, names of letters, digits, ``.``, ``_``, ``-``):
``prior.part0.safetensors`` … (the fp16 EMA), ``bundle.tar`` (logs, ``dblm.safetensors``, ``dgsa.safetensors``,
``dsst.json``, ``samples.png``, ``speed_gpu.md``, ``summary.json``), ``summary.json``, ``log.txt`` (the .sh's tee) and
``compile_cache.bin`` when it fits. Everything is written atomically and refreshed at each checkpoint, so a
killed call still returns the last checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu" / "e128"  # .gpu/ is git-ignored
DEVICE_RUNS = ROOT / "runs" / "e128_device"  # kept on a warm device machine between calls (runs/ is ignored)
# the committed EMA that rounds resume from: since session 9 the shipped embedded-128's own prior (the tree has room
# for one 128-px prior under the device tool's 64 MiB; see checkpoints/embedded-128/README.md). Its folder also holds
# the DBLM that `pack --reuse src/dynface/weights/embedded-128` names instead of copying.
SHIPPED = ROOT / "src" / "dynface" / "weights" / "embedded-128"
COMMITTED = SHIPPED / "prior.safetensors"
UNPACKED = ROOT / "runs" / "e128"  # unpack destinations: runs/e128/roundN
CONFIGS = {False: ROOT / "configs" / "embedded-128", True: ROOT / "configs" / "embedded-128-smoke"}
PHASES = ("prior", "dsst", "dblm", "dgsa", "speed")
TRAINING = PHASES[:4]  # "all"; "speed" runs only when named
SPEED_SECONDS = 75.0  # the speed phase's share of a call that also trains (4 benchmark processes, ~15 s each on an H200)
SPEED_FACES = 16
SPEED_MODES = ("restorer_only", "fixed_start", "no_dgsa", "full")  # issue 10's rows that cost GPU time
CARRY_LIMIT = 64 * 2**20  # device tool: the working tree plus carried paths, per call
RETURN_FILE_LIMIT = 16 * 2**20
RETURN_FILES = 8
RETURN_TOTAL = 64 * 2**20
WEBP_QUALITY = 90
VAL_FACES = 256
TIMEOUT_SLACK = 40  # s between the script's budget and the device call's timeout_s (start-up, transfers)
SMALL = ("prior_log.csv", "dblm_log.csv", "dgsa_log.csv", "dblm.safetensors", "dgsa.safetensors", "dsst.json",
         "samples.png", "speed_gpu.md", "summary.json")


def _load_script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _meta(path: Path) -> dict:
    from dynface.models.io import read_metadata

    return read_metadata(path)


# ---- here: pack ------------------------------------------------------------------------------------------
def tree_bytes() -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True)
    return sum((ROOT / f).stat().st_size for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file())


def is_tracked(path: Path) -> bool:
    """True when git tracks ``path`` in this repository (it then travels to the device with the tree)."""
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return subprocess.run(["git", "ls-files", "--error-unmatch", str(rel)], cwd=ROOT, capture_output=True).returncode == 0


def prior_params(size: int) -> int:
    """Parameters of the configured prior (embedded-128, or the smoke config for other sizes)."""
    import torch

    from dynface.models.unet import UNetModel
    from dynface.training.config import load_config
    from dynface.training.prior import PriorTrainConfig

    ucfg = load_config(PriorTrainConfig, CONFIGS[size != 128] / "prior.yaml").unet_config()
    with torch.device("meta"):
        return sum(p.numel() for p in UNetModel(ucfg).parameters())


def newest_ema(extra: list[Path], auto: bool = True) -> Path | None:
    """The EMA with the most images seen among ``extra`` and (``auto``) the unpacked rounds and the committed file."""
    found = [*sorted(UNPACKED.glob("round*/prior.safetensors")), COMMITTED] if auto else []
    cands = [p for p in [*extra, *found] if p.is_file()]
    return max(cands, key=lambda p: (int(_meta(p).get("images_seen", 0)), p == COMMITTED), default=None)


def pack(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from dynface.dsst import select_indices
    from dynface.training.data import list_images, load_square

    dest = Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "faces").mkdir(parents=True)
    init = newest_ema([Path(p) for p in args.init], auto=not args.no_auto_init)
    meta = _meta(init) if init else {}
    rnd = int(meta.get("round", -1)) + 1
    init_rel = None
    if init is not None and not is_tracked(init):
        shutil.copyfile(init, dest / "init.safetensors")
        init_rel = "init.safetensors"
    elif init is not None:  # a committed EMA travels with the tree already
        init_rel = str(init.resolve().relative_to(ROOT))
    dblm_in_tree = None
    for name in ("dblm.safetensors", "dsst.json"):  # reused by a call that trains DGSA only
        src = Path(args.reuse) / name if args.reuse else None
        if src is not None and src.is_file():
            if name == "dblm.safetensors" and is_tracked(src):  # a committed DBLM travels with the tree: no copy
                dblm_in_tree = str(src.resolve().relative_to(ROOT))
                continue
            shutil.copyfile(src, dest / name)
    if not (dest / "dsst.json").is_file() and args.size == 128 and (CONFIGS[False] / "dsst.json").is_file():
        shutil.copyfile(CONFIGS[False] / "dsst.json", dest / "dsst.json")  # built on the CPU from the same val faces
    cache_info = pack_compile_cache(args, dest)

    def webp(arr: np.ndarray, path: Path) -> int:
        Image.fromarray(arr).save(path, "WEBP", quality=WEBP_QUALITY, method=4)
        return path.stat().st_size

    vals = list_images(args.val)
    (dest / "val").mkdir()
    for i in select_indices(len(vals), min(args.val_faces, len(vals)), 0):
        webp(load_square(vals[i], args.size), dest / "val" / f"{i:05d}.webp")
    files = list_images(args.data)[: args.limit or None]
    used = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if init is None:  # keep the EMA's room from round 0 on, so that the shard count stays the same every round
        used += 2 * prior_params(args.size) + 2**16
    budget = int(args.budget_mib * 2**20) - tree_bytes() - used
    if budget < 2**20:
        hint = f" (the compile cache takes {cache_info['bytes'] / 2**20:.1f}: --compile-cache none)" if cache_info else ""
        print(f"pack: error: only {budget / 2**20:.1f} MiB left for faces under {args.budget_mib} MiB{hint}",
              file=sys.stderr)
        return 2
    probe = files[:: max(1, len(files) // 64)][:64]
    tmp = dest / "probe.webp"
    avg = sum(webp(load_square(f, args.size), tmp) for f in probe) / len(probe)
    tmp.unlink()
    # the shard count ignores the cache (it stays the same whether a round carries one): a carried cache cuts the shard
    shards = args.shards or max(1, math.ceil(len(files) * avg * 1.04 / (budget + cache_info.get("bytes", 0))))
    before = _reused_shards(args.reuse)
    if before and before != shards:  # the rounds rotate through the shards only while K stays the same
        print(f"pack: warning: {shards} shards, but {args.reuse} used {before}: pass --shards {before} to keep the "
              "rotation (the shard is then cut to what fits)", file=sys.stderr)
    shard = rnd % shards
    total = n = 0
    for i in range(shard, len(files), shards):
        total += webp(load_square(files[i], args.size), dest / "faces" / f"{i:05d}.webp")
        n += 1
        if total > budget:
            (dest / "faces" / f"{i:05d}.webp").unlink()
            n -= 1
            print(f"pack: warning: shard {shard} cut at {n} faces (budget)", file=sys.stderr)
            break
    info = {"round": rnd, "shard": shard, "shards": shards, "faces": n, "of": len(files), "size": args.size,
            "webp_quality": WEBP_QUALITY, "init": init_rel, "init_images_seen": int(meta.get("images_seen", 0)),
            "val_faces": len(list((dest / "val").iterdir())),
            "reused": sorted(n for n in ("dblm.safetensors", "dsst.json") if (dest / n).is_file()),
            "dblm_in_tree": dblm_in_tree,
            "compile_cache": cache_info or None}
    (dest / "pack.json").write_text(json.dumps(info, indent=1) + "\n")
    carried = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    tree = tree_bytes()
    if cache_info:
        print(f"pack: carrying {CACHE_NAME}: {cache_info['bytes'] / 2**20:.2f} MiB (torch {cache_info['torch']}, "
              f"{cache_info['device']}), counted in the pack", file=sys.stderr)
    print(f"pack: tree {tree / 2**20:.1f} MiB + pack {carried / 2**20:.1f} MiB = {(tree + carried) / 2**20:.1f} MiB "
          f"of the {CARRY_LIMIT // 2**20} MiB the device tool carries", file=sys.stderr)
    print(json.dumps({**info, "carry_mib": round(carried / 2**20, 1), "tree_mib": round(tree / 2**20, 1),
                      "total_mib": round((tree + carried) / 2**20, 1)}))
    return 0


def _reused_shards(reuse: str | None) -> int:
    """The shard count of the round ``reuse`` names (its summary.json), 0 when unknown."""
    try:
        return int(json.loads((Path(reuse) / "summary.json").read_text())["pack"]["shards"]) if reuse else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def pack_compile_cache(args: argparse.Namespace, dest: Path) -> dict:
    """Copy a returned compile cache into the pack: ``--compile-cache PATH``, or (``auto``) the ``--reuse`` round's
    file when it has one; ``none`` carries none. A file that is not a compile cache is left out with a warning."""
    choice = args.compile_cache
    if choice == "none":
        return {}
    src = Path(choice) if choice != "auto" else (Path(args.reuse) / CACHE_NAME if args.reuse else None)
    if src is None or not src.is_file():
        if choice != "auto":
            print(f"pack: warning: --compile-cache {choice}: no such file; carrying none", file=sys.stderr)
        return {}
    try:
        with open(src, "rb") as f:
            header, _ = read_cache_header(f.read(4096))
    except (ValueError, OSError) as e:
        print(f"pack: warning: {src} is not a usable compile cache ({e}); carrying none", file=sys.stderr)
        return {}
    shutil.copyfile(src, dest / CACHE_NAME)
    return {"bytes": src.stat().st_size, "raw_bytes": header.get("raw_bytes"), "torch": header.get("torch"),
            "device": header.get("device")}


# ---- here: plan (dry run) ---------------------------------------------------------------------------------
def plan(args: argparse.Namespace) -> int:
    """Check the pack and print the device-tool call to make (JSON for the `run` tool)."""
    phases = parse_phases(args.phases)
    info_p = Path(args.pack) / "pack.json"
    if not info_p.is_file():
        print(f"plan: error: {info_p} missing: run `python scripts/gpu_train_embedded128.py pack ...` first", file=sys.stderr)
        return 2
    info = json.loads(info_p.read_text())
    carried = sum(p.stat().st_size for p in Path(args.pack).rglob("*") if p.is_file())
    total = tree_bytes() + carried
    problems = []
    if total > CARRY_LIMIT:
        problems.append(f"tree + carry = {total / 2**20:.1f} MiB > 64 MiB: re-pack with a smaller --budget-mib")
    if "dgsa" in phases and "prior" not in phases and not info.get("init"):
        problems.append("dgsa needs a prior: none carried or committed")
    dblm = carried_dblm(Path(args.pack))
    for need in ("dblm", "dsst"):
        name = "dblm.safetensors" if need == "dblm" else "dsst.json"
        have = dblm if need == "dblm" else Path(args.pack) / name
        if "dgsa" in phases and need not in phases and not (have is not None and have.is_file()):
            problems.append(f"dgsa without {need} needs {name} in the pack: pack with --reuse runs/e128/roundN")
    if "dblm" in phases and dblm is not None and (why := dblm_mismatch(dblm)):
        problems.append(f"the dblm phase would continue the carried {dblm.name}, but {why}: re-pack without "
                        "--reuse (the DBLM then trains from scratch) or with a round trained on this config")
    need = SPEED_SECONDS + (60 if set(phases) - {"prior", "speed"} else 15)  # speed's share + the other phases' least
    if {"prior", "speed"} <= set(phases) and args.rest_seconds < need:
        problems.append(f"rest_seconds {args.rest_seconds:g} is too little after the prior: speed takes the last "
                        f"{SPEED_SECONDS:g} s of it; pass at least {need:g}")
    if not 60 <= args.seconds <= 600 - TIMEOUT_SLACK:
        problems.append(f"seconds must be in [60, {600 - TIMEOUT_SLACK}] (one call runs at most 600 s)")
    rel = os.path.relpath(Path(args.pack).resolve(), ROOT)
    if Path(args.pack).resolve() != PACK.resolve():
        problems.append(f"the device script reads {PACK.relative_to(ROOT)}; pack there (got {args.pack})")
    rest = f" {args.rest_seconds:g}" if args.rest_seconds != 150 else ""
    call = {"command": f"bash scripts/gpu_train_embedded128.sh {args.seconds} {args.phases}{rest}",
            "carry": [rel], "timeout_s": min(600, args.seconds + TIMEOUT_SLACK)}
    print(json.dumps({"pack": info, "tree_plus_carry_mib": round(total / 2**20, 1), "problems": problems}, indent=1))
    print("device-tool call:")
    print(json.dumps(call))
    return 1 if problems else 0


def carried_dblm(pack: Path) -> Path | None:
    """The DBLM a call continues (dblm phase) or gives DGSA: the pack's copy, else the committed one that ``pack --reuse``
    named in pack.json (``dblm_in_tree``: it travels with the tree, so the pack holds no second copy), else None."""
    if (pack / "dblm.safetensors").is_file():
        return pack / "dblm.safetensors"
    info = json.loads((pack / "pack.json").read_text()) if (pack / "pack.json").is_file() else {}
    rel = info.get("dblm_in_tree")
    return ROOT / rel if rel and (ROOT / rel).is_file() else None


def dblm_mismatch(path: Path) -> str | None:
    """Why the device's dblm phase could not continue ``path`` (its architecture is not the config's), else None."""
    from dynface.models.dblm import DBLMConfig
    from dynface.models.io import read_metadata
    from dynface.training.config import load_config
    from dynface.training.dblm import DBLMTrainConfig

    want = load_config(DBLMTrainConfig, CONFIGS[False] / "dblm.yaml").dblm_config()
    have = DBLMConfig.from_dict(read_metadata(path).get("dblm", {}))
    diff = have.differences(want)  # the same comparison the dblm phase's init_from makes (training.dblm._load_init)
    return f"its architecture differs from configs/embedded-128/dblm.yaml: {', '.join(diff)}" if diff else None


def parse_phases(s: str) -> tuple[str, ...]:
    named = {"all": TRAINING, "rest": TRAINING[1:]}
    out: list[str] = []
    for part in s.split(","):
        part = part.strip()
        for ph in named.get(part, (part,)):
            if ph not in PHASES:
                raise SystemExit(f"unknown phase {ph!r}; choose from {', '.join(PHASES)}, all, rest")
            if ph not in out:
                out.append(ph)
    return tuple(sorted(out, key=PHASES.index))


# ---- the compile cache ("mega-cache"), carried between machines ------------------------------------------------
# One self-describing file: a magic line, one JSON header line (the torch version and device it was made with, the raw
# size and sha256), then the xz-compressed bytes of torch.compiler.save_cache_artifacts(). xz (lzma preset 6) was 3.1x
# smaller than gzip -6 on a CPU inductor cache (25 KB against 77 KB of 440 KB); it runs in a thread beside training.
CACHE_NAME = "compile_cache.bin"
CACHE_MAGIC = b"dynface-compile-cache 1\n"
CACHE_MAX = 15 * 2**20  # written to $OUT only up to this (the tool returns files of <= 16 MiB)


def cache_key(device: str) -> dict:
    """What a compile cache must match to be loaded: the torch version and the device's name."""
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    return {"torch": torch.__version__, "device": name}


def encode_compile_cache(raw: bytes, key: dict) -> bytes:
    import hashlib
    import lzma

    header = {**key, "raw_bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "compression": "xz"}
    return CACHE_MAGIC + json.dumps(header).encode() + b"\n" + lzma.compress(raw, preset=6)


def read_cache_header(blob: bytes) -> tuple[dict, int]:
    """The header of a compile-cache file and where its payload starts; ValueError when it is not one."""
    if not blob.startswith(CACHE_MAGIC):
        raise ValueError("not a dynface compile cache (bad magic)")
    end = blob.find(b"\n", len(CACHE_MAGIC))
    if end < 0:
        raise ValueError("truncated header")
    header = json.loads(blob[len(CACHE_MAGIC):end])
    if not isinstance(header, dict) or header.get("compression") != "xz":
        raise ValueError("unknown compression")
    return header, end + 1


def decode_compile_cache(blob: bytes) -> tuple[dict, bytes]:
    """(header, raw artifacts), checked against the header's size and sha256; ValueError/LZMAError when damaged."""
    import hashlib
    import lzma

    header, start = read_cache_header(blob)
    raw = lzma.decompress(blob[start:])
    if len(raw) != header.get("raw_bytes") or hashlib.sha256(raw).hexdigest() != header.get("sha256"):
        raise ValueError("payload does not match its header (size or sha256)")
    return header, raw


def load_compile_cache(path: Path, key: dict) -> dict:
    """Hot-load a carried compile cache before the first compile. Never raises: a cache made with another torch or
    on another device, or a damaged file, is skipped with one log line and the model compiles as usual."""
    import torch

    res: dict = {"loaded": False, "file_bytes": path.stat().st_size if path.is_file() else 0}
    t0 = time.time()
    try:
        blob = path.read_bytes()
        header, _ = read_cache_header(blob)
        res["made_with"] = {k: header.get(k) for k in ("torch", "device", "raw_bytes")}
        made = {k: header.get(k) for k in key}
        if made != key:
            res["status"] = f"skipped: made with {made}, this machine is {key}"
        else:
            _, raw = decode_compile_cache(blob)
            info = torch.compiler.load_cache_artifacts(raw)
            if info is None:  # torch logs a warning and returns None for bytes it cannot read
                res["status"] = "not usable: torch could not read the artifacts"
            else:
                res.update(loaded=True, status="loaded", artifacts=_artifact_counts(info))
    except Exception as e:  # fail-soft: never lose a training call to the cache
        res["status"] = f"not usable: {type(e).__name__}: {e}"[:300]
    res["load_s"] = round(time.time() - t0, 2)
    print(f"compile cache: {res['status']} ({res['file_bytes']:,} bytes, {res['load_s']} s)"
          + ("" if res["loaded"] else "; compiling from scratch"), flush=True)
    return res


def _artifact_counts(info) -> dict:
    """Artifacts per kind in a torch CacheInfo (a dict since torch 2.8; one list field per kind before)."""
    try:
        kinds = getattr(info, "artifacts", None) or dataclasses.asdict(info)
        return {k: len(v) for k, v in kinds.items() if isinstance(v, list | tuple)}
    except Exception:
        return {}


def compile_counters() -> dict:
    """Cache hits and misses of this process's compiles (did the carried cache serve them?)."""
    from torch._dynamo.utils import counters

    return {f"{group}.{k}": v for group, names in (("inductor", ("fxgraph_cache_hit", "fxgraph_cache_miss")),
                                                   ("aot_autograd", ("autograd_cache_hit", "autograd_cache_miss")))
            for k in names if (v := counters[group][k])}


class CacheSaver:
    """Takes the compile artifacts once the compiled model has run (the first export: its forward and backward are
    compiled by then) and compresses them in a thread, so that training goes on meanwhile; ``write`` puts the file
    into the outbox when it is done and fits."""

    def __init__(self, key: dict):
        import threading

        self.key, self.blob, self.done, self.started = key, None, threading.Event(), False
        self.info: dict = {"status": "not started (no export yet)"}  # summary.json shows this very dict
        self._threading = threading

    def start(self) -> None:
        import torch

        if self.started:
            return
        self.started = True
        try:  # called from inside the training loop: nothing here may raise
            art = torch.compiler.save_cache_artifacts()
            if art is None:
                self.info["status"] = "nothing to save (no compile artifacts)"
                self.done.set()
                return
            raw = bytes(art[0])
            self.info.update(status="compressing", raw_bytes=len(raw), artifacts=_artifact_counts(art[1]))
        except Exception as e:
            self.info["status"] = f"save failed: {type(e).__name__}: {e}"[:300]
            self.done.set()
            return

        def work() -> None:
            t0 = time.time()
            try:
                self.blob = encode_compile_cache(raw, self.key)
                self.info.update(compressed_bytes=len(self.blob), compress_s=round(time.time() - t0, 1))
            except Exception as e:
                self.info["status"] = f"compression failed: {type(e).__name__}: {e}"[:300]
            self.done.set()

        try:
            self._threading.Thread(target=work, name="compile-cache-xz", daemon=True).start()
        except Exception as e:
            self.info["status"] = f"compression not started: {type(e).__name__}: {e}"[:300]
            self.done.set()

    def write(self, box: Outbox, wait_s: float = 0.0) -> bool:
        """Into $OUT once compressed (waits up to ``wait_s``); True when nothing is left to do."""
        if not self.started or not self.done.wait(wait_s):
            if self.started and wait_s:
                self.info["status"] = f"compression unfinished after {wait_s:.0f} s: not written"
            return False
        if self.blob is not None:
            try:  # like start: never raises into the training loop
                why = box.room_for(CACHE_NAME, len(self.blob), CACHE_MAX)
                if why:
                    self.info["status"] = f"not written: {why}"
                else:
                    box.put(CACHE_NAME, self.blob)
                    self.info["status"] = "written"
            except Exception as e:
                self.info["status"] = f"not written: {type(e).__name__}: {e}"[:300]
            self.blob = None
        return True


# ---- device: train -----------------------------------------------------------------------------------------
class Outbox:
    """Writes into $OUT within the device tool's limits; every file atomically (tmp + rename)."""

    def __init__(self, out: Path, work: Path):
        self.out, self.work = out, work
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.summary: dict = {}

    def put(self, name: str, data: bytes) -> None:
        if len(data) > RETURN_FILE_LIMIT - 2**20:
            print(f"outbox: {name} is {len(data) / 2**20:.1f} MiB, over the return limit: left out", flush=True)
            return
        from dynface.atomicfile import atomic_write_bytes

        atomic_write_bytes(data, self.out / name)  # hidden temporary, then a rename: never half a file in $OUT

    def _returned(self, without: str = "") -> list[Path]:
        return [f for f in self.out.rglob("*") if f.is_file() and not f.name.startswith(".") and f.name != without]

    def room_for(self, name: str, size: int, max_size: int = RETURN_FILE_LIMIT) -> str | None:
        """Why ``name`` (``size`` bytes) would not come back beside what $OUT holds now; None when it fits."""
        others = self._returned(without=name)
        total = size + sum(f.stat().st_size for f in others)
        if size > max_size:
            return f"{size / 2**20:.1f} MiB > {max_size / 2**20:.0f} MiB"
        if len(others) + 1 > RETURN_FILES:
            return f"$OUT already holds {len(others)} files (the tool returns {RETURN_FILES})"
        if total > RETURN_TOTAL:
            return f"$OUT would hold {total / 2**20:.1f} MiB (the tool returns {RETURN_TOTAL // 2**20})"
        return None

    def put_prior(self, ema: Path, extra_meta: dict) -> None:
        from dynface.models.io import load_state_dict_file, save_safetensors

        split = _load_script("gpu_split", ROOT / "scripts" / "gpu_split.py")
        sd, meta = load_state_dict_file(ema)
        fp16 = self.work / "prior.safetensors"
        save_safetensors(sd, fp16, metadata={**meta, **extra_meta}, fp16=True)
        stage = self.work / "parts"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        with io.StringIO() as buf:
            stdout, sys.stdout = sys.stdout, buf
            try:
                split.split(str(fp16), str(stage / "prior"))
            finally:
                sys.stdout = stdout
        parts = sorted(stage.iterdir())
        for p in parts:
            os.replace(p, self.out / p.name)
        for old in self.out.glob("prior.part*.safetensors"):
            if old.name not in {p.name for p in parts}:
                old.unlink()

    def refresh(self) -> None:
        """summary.json, and bundle.tar of the small files in the work folder."""
        data = json.dumps(self.summary, indent=1, default=str).encode()
        (self.work / "summary.json").write_bytes(data)
        self.put("summary.json", data)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in SMALL:
                if (self.work / name).is_file():
                    tar.add(self.work / name, arcname=name)
        self.put("bundle.tar", buf.getvalue())
        cache = self.out / CACHE_NAME  # the least needed file: dropped first when $OUT outgrows the tool's limits
        if cache.is_file() and (why := self.room_for(CACHE_NAME, cache.stat().st_size, CACHE_MAX)):
            cache.unlink()
            self.summary.setdefault("prior", {}).setdefault("compile_cache", {}).setdefault("saved", {})["status"] = \
                f"removed from $OUT later: {why}"
            print(f"outbox: {CACHE_NAME} removed ({why})", flush=True)
            self.refresh()  # the summary (and the bundle's copy) say so


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _peak_and_flops(ucfg, device: str) -> dict:
    """Measured bf16 matmul peak (:func:`dynface.devices.matmul_peak_tflops`, as benchmarks/speed.py) and the
    UNet's training FLOPs per image (fwd + bwd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dynface.devices import matmul_peak_tflops
    from dynface.models.unet import UNetModel

    res: dict = {}
    if device == "cuda":
        res["peak_tflops"] = matmul_peak_tflops("cuda")
    unet = UNetModel(ucfg).to(device)
    x = torch.randn(2, ucfg.in_channels, ucfg.image_size, ucfg.image_size, device=device)
    with FlopCounterMode(display=False) as fc:
        unet(x, torch.tensor([10, 500], device=device)).float().pow(2).mean().backward()
    res["train_gflop_per_img"] = fc.get_total_flops() / 2 / 1e9
    return res


def phase_prior(args, box: Outbox, pack_info: dict, deadline: float) -> Path | None:
    import torch

    from dynface.diffusion import GaussianDiffusion, ScheduleConfig
    from dynface.imaging import save_grid
    from dynface.models.io import load_state_dict_file
    from dynface.models.unet import UNetConfig, UNetModel
    from dynface.training.config import load_config
    from dynface.training.prior import PriorTrainConfig, sample_grid, train_prior

    over = dict(args.set_prior)
    init = find_init(Path(args.pack), pack_info)
    if init is not None:
        over["init_from"] = str(init)
    margin = 12 if args.smoke else 45  # samples, speed measurement, exports
    minutes = max(0.05, (deadline - time.time() - margin) / 60)
    if not args.smoke:
        over["max_minutes"] = round(minutes, 3)
    cfg = load_config(PriorTrainConfig, CONFIGS[args.smoke] / "prior.yaml", over)
    cache = Path(args.pack) / CACHE_NAME
    s = box.summary.setdefault("prior", {})
    s.update({"init": (str(init.relative_to(ROOT)) if init.is_relative_to(ROOT) else str(init)) if init else None,
              "init_images_seen": int(_meta(init).get("images_seen", 0)) if init else 0,
              "budget_minutes": cfg.max_minutes, "batch_size": cfg.batch_size, "compile": cfg.compile,
              "channels_last": cfg.channels_last, "bf16": cfg.bf16,
              "optimizer": "continued from last.pt on this machine" if (Path(args.runs) / "prior" / "last.pt").is_file()
              else (f"restarted from the EMA, warm-up {cfg.warmup_steps} steps" if init else "fresh")})
    if cfg.compile and hasattr(torch._dynamo.config, "suppress_errors"):
        torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly instead
    # the carried compile cache (pack.json's compile_cache): loaded before the first compile when it was made with
    # this torch on this device; the artifacts of this call's compile go back in $OUT for the next machine
    key = cache_key(args.device)
    cc = s["compile_cache"] = {**key}
    if not cfg.compile:
        cc["load"] = {"loaded": False, "status": "compile off"}
    elif cache.is_file():
        cc["load"] = load_compile_cache(cache, key)
    else:
        cc["load"] = {"loaded": False, "status": "none carried"}
    cc["loaded"] = cc["load"]["loaded"]
    saver = CacheSaver(key) if cfg.compile else None
    if saver is not None:
        cc["saved"] = saver.info
    run = Path(args.runs) / "prior"
    start_seen = s["init_images_seen"]
    if (run / "last.pt").is_file():  # a warm machine's second call goes on from the first call's last.pt
        start_seen = checkpoint_images_seen(run / "last.pt", cfg.batch_size)
    extra = {"round": pack_info.get("round", 0), "data_shard": f"{pack_info.get('shard', 0)}/{pack_info.get('shards', 1)}"}
    t0 = time.time()

    def on_export(path: Path, info: dict) -> None:
        box.put_prior(path, extra)
        if saver is not None:  # the compiled forward and backward have run by the first export
            saver.start()
            saver.write(box)
        rows = _rows(run / "log.csv")
        if rows:
            shutil.copyfile(run / "log.csv", box.work / "prior_log.csv")
        last = rows[-1] if rows else {}
        s.update({"step": info["step"], "images_seen": info["images_seen"], "wall_s": round(time.time() - t0, 1),
                  "loss_last": last.get("loss")})
        box.refresh()
        print(f"prior: step {info['step']}, images seen {info['images_seen']:,}, loss {last.get('loss', '?')}, "
              f"img/s {last.get('img_per_s', '?')}, {time.time() - t0:.0f} s", flush=True)

    ema = train_prior(cfg, str(Path(args.pack) / "faces"), str(run), resume=True, device=args.device, on_export=on_export)
    rows = _rows(run / "log.csv")
    ips = [float(r["img_per_s"]) for r in rows[1:]] or [float(r["img_per_s"]) for r in rows]
    s["img_per_s_median"] = round(statistics.median(ips), 1) if ips else None
    s["first_log_row_s"] = float(rows[0]["time"]) if rows else None  # includes torch.compile
    cc["first_log_row_s"] = s["first_log_row_s"]  # round 0, no cache: 164.9 s on the H200 (compile ≈ 161 s)
    if cfg.compile:
        cc["counters"] = compile_counters()
    s["loss_first"], s["loss_last"] = (rows[0]["loss"], rows[-1]["loss"]) if rows else (None, None)
    s["images_this_call"] = s["images_seen"] - start_seen
    s["images_per_minute_of_call"] = round(s["images_this_call"] / max(1e-9, (time.time() - t0) / 60))
    sd, meta = load_state_dict_file(ema)  # (not via dynface.pipeline: fewer imports to go wrong on the device)
    unet = UNetModel(UNetConfig.from_dict(meta["unet"]))
    unet.load_state_dict(sd)
    unet.eval()
    s.update(_peak_and_flops(unet.cfg, args.device))
    if s.get("peak_tflops") and s["img_per_s_median"]:
        achieved = s["train_gflop_per_img"] * s["img_per_s_median"] / 1e3
        s["unet_tflops"] = round(achieved, 1)
        s["share_of_bf16_peak_pct"] = round(100 * achieved / s["peak_tflops"], 1)
    diffusion = GaussianDiffusion.from_config(ScheduleConfig(**meta["schedule"])).to(args.device)
    # a 64-sample grid (DDIM 100, seed 0, like docs/results/prior_samples_64.png) and the mean colour of 256
    # samples (issue 10 §4: compare with val's mean colour here); the smoke config asks for fewer
    n_grid = min(64, cfg.sample_count)
    n_all = 256 if args.device == "cuda" else n_grid
    xs = torch.cat([sample_grid(unet.to(args.device), diffusion, min(64, n_all - i), unet.cfg.image_size, steps=100,
                                seed=i).float() for i in range(0, n_all, 64)])  # fp32 (tf32 matmuls), ≈10 s on an H200
    save_grid(xs[:n_grid], box.work / "samples.png", nrow=int(math.sqrt(n_grid)))
    s["samples_mean_rgb"] = [round(v, 2) for v in ((xs.clamp(-1, 1) + 1) * 127.5).mean(dim=(0, 2, 3)).tolist()]
    s["samples_for_mean"] = n_all
    if saver is not None:  # compressed in a thread since the first export: normally done long ago
        saver.start()
        saver.write(box, wait_s=min(60.0, max(5.0, deadline - time.time())))
    box.refresh()
    print("prior: " + json.dumps({k: s.get(k) for k in ("images_this_call", "images_seen", "img_per_s_median",
                                                        "share_of_bf16_peak_pct", "loss_last")}), flush=True)
    return box.work / "prior.safetensors"


def checkpoint_images_seen(path: Path, batch_size: int) -> int:
    """Images seen at a ``last.pt``, from its pickled step counts alone: ``mmap=True`` maps the tensors (model, EMA,
    AdamW: ≈ 160 MB at 128 px) without reading them; train_prior reads the file once itself."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # a file torch cannot map (the legacy format): read it whole
        state = torch.load(path, map_location="cpu", weights_only=False)
    return int(state.get("images_seen0", 0)) + int(state["step"]) * batch_size


def find_init(pack: Path, info: dict) -> Path | None:
    if (pack / "init.safetensors").is_file():
        return pack / "init.safetensors"
    if info.get("init") and (ROOT / info["init"]).is_file():
        return ROOT / info["init"]
    return None  # pack chose none (round 0)


def _val_faces(args, n: int | None = None):
    """(size, files, uint8 (B,3,size,size) tensor): the carried val faces at the prior's resolution; ``n``: that many,
    repeating the set when it is smaller (the smoke pack has 4)."""
    import numpy as np
    import torch

    from dynface.training.config import load_config
    from dynface.training.data import list_images, load_square
    from dynface.training.prior import PriorTrainConfig

    size = load_config(PriorTrainConfig, CONFIGS[args.smoke] / "prior.yaml").unet_config().image_size
    files = list_images(Path(args.pack) / "val")
    if n is not None:
        files = (files * math.ceil(n / len(files)))[:n]
    return size, files, torch.from_numpy(np.stack([load_square(f, size) for f in files]).transpose(0, 3, 1, 2).copy())


def phase_dsst(args, box: Outbox) -> None:
    import torch

    from dynface.diffusion import GaussianDiffusion, ScheduleConfig
    from dynface.dsst import DSSTConfig, build_dsst

    size, files, faces = _val_faces(args)
    cfg = DSSTConfig(mode="empirical", image_size=size, num_images=None, seed=0)
    sched = ScheduleConfig()
    t0 = time.time()
    table = build_dsst(faces, GaussianDiffusion.from_config(sched).alphas_cumprod, cfg,
                       schedule=f"{sched.schedule} {sched.beta_start:g}..{sched.beta_end:g}, T={sched.num_timesteps}")
    table.save(box.work / "dsst.json")
    steps = table.lookup(torch.tensor([1.0, 2.0, 4.0, 8.0, 12.0]), as_int=True).tolist()
    box.summary["dsst"] = {"faces": len(files), "size": size, "seconds": round(time.time() - t0, 1),
                           "steps_at_sigma_1_2_4_8_12": steps}
    box.refresh()
    print(f"dsst: {len(files)} val faces at {size} px, t(σ=1,2,4,8,12) = {steps}", flush=True)


def phase_dblm(args, box: Outbox, seconds: float) -> None:
    from dynface.models.io import load_state_dict_file, save_safetensors
    from dynface.training.config import load_config
    from dynface.training.dblm import DBLMTrainConfig, train_dblm

    shares = {"rm": 0.5, "sde": 0.15, "tm": 0.35}
    over = {} if args.smoke else {"minutes": {k: round(v * seconds / 60, 3) for k, v in shares.items()}}
    cfg = load_config(DBLMTrainConfig, CONFIGS[args.smoke] / "dblm.yaml", over)
    if cfg.label == "masked" and not cfg.label_dsst:  # the table of this prior's size: this call's, else the carried one
        dsst = box.work / "dsst.json" if (box.work / "dsst.json").is_file() else Path(args.pack) / "dsst.json"
        cfg = dataclasses.replace(cfg, label_dsst=str(dsst))
    run = Path(args.runs) / "dblm"
    carried = carried_dblm(Path(args.pack))  # `pack --reuse`: go on training it (weights and stage progress)
    if carried is not None and not (run / "last.pt").is_file():
        cfg = dataclasses.replace(cfg, init_from=str(carried))
    t0 = time.time()
    path = train_dblm(cfg, str(Path(args.pack) / "faces"), str(run), resume=True, device=args.device)
    sd, meta = load_state_dict_file(path)
    save_safetensors(sd, box.work / "dblm.safetensors", metadata=meta, fp16=True)
    shutil.copyfile(run / "log.csv", box.work / "dblm_log.csv")
    rows = _rows(run / "log.csv")
    last = {r["stage"]: r for r in rows}
    box.summary["dblm"] = {"init": "continued from the carried dblm.safetensors" if cfg.init_from else "fresh",
                           "progress": meta.get("progress"), "seconds": round(time.time() - t0, 1),
                           "batch_size": cfg.batch_size, "label": cfg.label, "last": last}
    box.refresh()
    print(f"dblm: progress {meta.get('progress')}, {time.time() - t0:.0f} s", flush=True)


def phase_dgsa(args, box: Outbox, seconds: float, prior: Path | None) -> None:
    from dynface.models.io import load_state_dict_file, save_safetensors
    from dynface.training.config import load_config
    from dynface.training.dgsa import DGSATrainConfig, train_dgsa

    pack = Path(args.pack)
    prior = prior or find_init(pack, json.loads((pack / "pack.json").read_text()))
    dblm = box.work / "dblm.safetensors" if (box.work / "dblm.safetensors").is_file() else carried_dblm(pack)
    dsst = box.work / "dsst.json" if (box.work / "dsst.json").is_file() else pack / "dsst.json"
    for what, p in (("prior", prior), ("dblm", dblm), ("dsst", dsst)):
        if p is None or not Path(p).is_file():
            raise FileNotFoundError(f"dgsa: no {what} (train it in this call or carry it in {pack})")
    over = {"prior": str(prior), "dblm": str(dblm), "dsst": str(dsst)}
    if not args.smoke:
        over["minutes"] = round(seconds / 60, 3)
    cfg = load_config(DGSATrainConfig, CONFIGS[args.smoke] / "dgsa.yaml", over)
    run = Path(args.runs) / "dgsa"
    t0 = time.time()
    path = train_dgsa(cfg, str(pack / "faces"), str(run), resume=False, device=args.device)
    sd, meta = load_state_dict_file(path)
    save_safetensors(sd, box.work / "dgsa.safetensors", metadata=meta, fp16=True)
    shutil.copyfile(run / "log.csv", box.work / "dgsa_log.csv")
    rows = _rows(run / "log.csv")
    box.summary["dgsa"] = {"steps": meta.get("step"), "seconds": round(time.time() - t0, 1), "batch_size": cfg.batch_size,
                           "first": rows[0] if rows else None, "last": rows[-1] if rows else None}
    box.refresh()
    print(f"dgsa: {meta.get('step')} steps, {time.time() - t0:.0f} s", flush=True)


def phase_speed(args, box: Outbox, seconds: float) -> None:
    import torch
    from PIL import Image

    from dynface.degrade import degrade

    _, files, faces_hq = _val_faces(args, SPEED_FACES)
    x = faces_hq.float() / 255
    lq = (degrade(x, "gfpgan", 0)[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    faces = Path(args.runs) / "speed_faces"
    shutil.rmtree(faces, ignore_errors=True)
    faces.mkdir(parents=True)
    for k, a in enumerate(lq):
        Image.fromarray(a).save(faces / f"{k:02d}.png")
    model = "tiny" if args.smoke else os.path.relpath(SHIPPED, ROOT)  # speed.py runs in ROOT; the label stays short
    out = box.work / "speed_gpu.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--gpu-only", "--parts", "eager",
           "--accel-device", args.device, "--accel-model", model, "--accel-faces", str(faces),
           "--accel-modes", ",".join(SPEED_MODES), "--accel-batches", "1,8", "--precisions", "fp32,bf16",
           # the smoke test samples 10 steps: ddim50's first process took ~45 s on 2 loaded cores, its whole budget
           *(["--accel-steps", "ddim10"] if args.smoke else []),
           "--compile-timeout", "0", "--budget", f"{max(5.0, seconds - 5):.0f}", "--out", str(out)]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"benchmarks/speed.py exited {res.returncode}: {res.stderr.strip()[-400:]}")
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    box.summary["speed"] = {"model": model, "faces": len(files),
                            "seconds": round(time.time() - t0, 1), "rows": rows}
    box.refresh()
    print(f"speed: {len(rows)} rows in {time.time() - t0:.0f} s (speed_gpu.md)", flush=True)


def train(args: argparse.Namespace) -> int:
    t_start = float(os.environ.get("E128_T0", time.time()))
    deadline = t_start + args.seconds
    phases = parse_phases(args.phases)
    out = Path(args.out or os.environ.get("OUT", ""))
    if not str(out):
        print("train: error: no --out and $OUT is unset", file=sys.stderr)
        return 2
    pack_info = json.loads((Path(args.pack) / "pack.json").read_text())
    runs = Path(args.runs)
    for ph in ("dblm", "dgsa"):  # these restart each call; the prior may continue a warm machine's last.pt
        shutil.rmtree(runs / ph, ignore_errors=True)
    box = Outbox(out, runs / "work")
    box.summary.update({"phases": list(phases), "seconds": args.seconds, "device": args.device, "pack": pack_info,
                        "smoke": args.smoke})
    if args.device == "cuda":
        import torch

        box.summary["gpu"] = torch.cuda.get_device_name(0)
        box.summary["torch"] = torch.__version__
    rest = [p for p in phases if p != "prior"]
    # the rest's share: DSST ~15 s, then DBLM and DGSA split what is left after the prior, and speed the final seconds
    rest_s = 0.0 if not rest else max(60.0, args.rest_seconds) if "prior" in phases else deadline - time.time() - 10
    speed_s = 0.0 if "speed" not in phases else SPEED_SECONDS if len(phases) > 1 else deadline - time.time() - 15
    prior_path, failed = None, []

    def guarded(name: str, fn, *a):
        try:
            return fn(*a)
        except Exception as e:  # one phase failing must not cost the others (or the outputs so far)
            traceback.print_exc()
            box.summary.setdefault(name, {})["error"] = f"{type(e).__name__}: {e}"
            failed.append(name)
            box.refresh()
            return None

    if "prior" in phases:
        prior_path = guarded("prior", phase_prior, args, box, pack_info, deadline - rest_s)
    if "dsst" in phases:
        guarded("dsst", phase_dsst, args, box)
    left = max(10.0, deadline - speed_s - time.time() - 15)
    if "dblm" in phases:
        guarded("dblm", phase_dblm, args, box, left * (0.5 if "dgsa" in phases else 1.0))
    if "dgsa" in phases:
        guarded("dgsa", phase_dgsa, args, box, max(10.0, deadline - speed_s - time.time() - 15), prior_path)
    if "speed" in phases:
        guarded("speed", phase_speed, args, box, max(20.0, deadline - time.time() - 15))
    box.summary["wall_s"] = round(time.time() - t_start, 1)
    box.summary["failed"] = failed
    box.refresh()
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    print(f"done in {time.time() - t_start:.0f} s; $OUT: {', '.join(files)}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


# ---- here: unpack ------------------------------------------------------------------------------------------
def unpack(args: argparse.Namespace) -> int:
    src, dest = Path(args.files_at), Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    split = _load_script("gpu_split", ROOT / "scripts" / "gpu_split.py")
    if list(src.glob("prior.part*.safetensors")):
        if split.join(str(src / "prior"), str(dest / "prior.safetensors")):
            return 1
    if (src / "bundle.tar").is_file():
        with tarfile.open(src / "bundle.tar") as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name in SMALL:
                    (dest / m.name).write_bytes(tar.extractfile(m).read())  # type: ignore[union-attr]
    for name in ("log.txt", "summary.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    if (src / CACHE_NAME).is_file():  # `pack --reuse DEST` carries it to the next machine
        shutil.copyfile(src / CACHE_NAME, dest / CACHE_NAME)
    have = sorted(p.name for p in dest.iterdir())
    print(f"{dest}: {', '.join(have)}")
    if (dest / CACHE_NAME).is_file():
        print(f"{CACHE_NAME}: {(dest / CACHE_NAME).stat().st_size / 2**20:.2f} MiB; the next `pack --reuse {dest}` "
              "carries it (it counts against the 64 MiB the device tool carries)")
    if all((dest / n).is_file() for n in ("prior.safetensors", "dblm.safetensors", "dsst.json")):
        dgsa = f" --dgsa {dest / 'dgsa.safetensors'}" if (dest / "dgsa.safetensors").is_file() else ""
        print(f"package: python -m dynface.cli train package --prior {dest / 'prior.safetensors'} --dblm "
              f"{dest / 'dblm.safetensors'}{dgsa} --dsst {dest / 'dsst.json'} --template utkface64 "
              f"--out src/dynface/weights/embedded-128 --card CARD.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: pack a data shard, val faces and the newest EMA into .gpu/e128")
    p.add_argument("--data", required=True, help="UTKFace train folder")
    p.add_argument("--val", required=True, help="UTKFace val folder (DSST faces)")
    p.add_argument("--dest", default=str(PACK))
    p.add_argument("--init", action="append", default=[], help="extra EMA candidates (the newest by images_seen wins)")
    p.add_argument("--no-auto-init", action="store_true",
                   help="only --init candidates, not runs/e128/round*/ nor the committed checkpoint (tests)")
    p.add_argument("--compile-cache", default="auto", metavar="auto|none|PATH",
                   help=f"the torch compile cache to carry: auto = the --reuse round's {CACHE_NAME} when it has one")
    p.add_argument("--reuse", metavar="DIR",
                   help=f"carry DIR's dblm.safetensors, dsst.json and {CACHE_NAME} (an unpacked round)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--budget-mib", type=float, default=61.0, help="tree + carry (the tool allows 64)")
    p.add_argument("--shards", type=int, default=0, help="0: as few as fit the budget")
    p.add_argument("--limit", type=int, default=0, help="use the first N faces only (tests)")
    p.add_argument("--val-faces", type=int, default=VAL_FACES)
    p.set_defaults(func=pack)
    q = sub.add_parser("plan", help="here: dry run, print the device-tool call")
    q.add_argument("seconds", type=int)
    q.add_argument("phases", nargs="?", default="all")
    q.add_argument("rest_seconds", nargs="?", type=float, default=150.0, help="with prior: seconds kept for the rest")
    q.add_argument("--pack", default=str(PACK))
    q.set_defaults(func=plan)
    t = sub.add_parser("train", help="device: one training call (what gpu_train_embedded128.sh runs)")
    t.add_argument("seconds", type=float)
    t.add_argument("phases", nargs="?", default="all")
    t.add_argument("--pack", default=str(PACK))
    t.add_argument("--runs", default=str(DEVICE_RUNS))
    t.add_argument("--out", default="")
    t.add_argument("--device", default="cuda")
    t.add_argument("--smoke", action="store_true", help="configs/embedded-128-smoke (tiny, a few steps, CPU)")
    t.add_argument("--rest-seconds", type=float, default=150.0, help="with prior: the time left to dsst/dblm/dgsa")
    t.add_argument("--set-prior", action="append", default=[], type=lambda kv: tuple(_kv(kv)), metavar="KEY=VALUE")
    t.set_defaults(func=train)
    u = sub.add_parser("unpack", help="here: join the returned files into a run folder")
    u.add_argument("files_at")
    u.add_argument("dest")
    u.set_defaults(func=unpack)
    args = ap.parse_args(argv)
    return args.func(args)


def _kv(pair: str) -> tuple[str, object]:
    import yaml

    k, _, v = pair.partition("=")
    return k, yaml.safe_load(v)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
