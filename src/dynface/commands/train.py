"""``dynface train prior|dblm|dgsa|package``: the training entry points (see dynface.training)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the prior, DBLM or DGSA; package a model folder",
                       description="Train the networks of the method. Runs checkpoint every ~10 min and on SIGTERM, "
                                   "and resume with --resume. Launch with torchrun for DDP (gloo on CPU, NCCL on GPU).")
    tsub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for what, helptext in (("prior", "the diffusion prior (UNet)"), ("dblm", "DBLM: RM, then SDE, then TM+SDE"),
                           ("dgsa", "DGSA against a frozen prior and DBLM")):
        q = tsub.add_parser(what, help=helptext)
        q.add_argument("--config", help="YAML file with the fields of the training config dataclass")
        q.add_argument("--data", required=True, help="folder of clean aligned faces")
        q.add_argument("--out", required=True, help="run directory (checkpoints, log.csv, samples, exported weights)")
        q.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt if it exists")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (YAML value)")
        if what in ("prior", "dblm", "dgsa"):
            q.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        if what == "dblm":
            q.add_argument("--stages", default="rm,sde,tm", help="comma-separated subset of rm,sde,tm")
            q.add_argument("--restorer", metavar="SWINIR.pth",
                           help="DifFace's SwinIR (swinir_restoration512_L1.pth) as the frozen RM: train --stages sde,tm "
                                "against it (e.g. --set preset=ffhq512); restore with the same --restorer")
        if what == "dgsa":
            q.add_argument("--restorer", metavar="SWINIR.pth",
                           help="the SwinIR the DBLM was trained against (`train dblm --restorer`): its RM")
        q.set_defaults(func=run)
    k = tsub.add_parser("package", help="assemble a model folder (fp16 safetensors + sha256) from runs")
    k.add_argument("--prior", required=True)
    k.add_argument("--dblm", required=True)
    k.add_argument("--dgsa")
    k.add_argument("--dsst", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    k.add_argument("--template", default="utkface64")
    k.add_argument("--card", metavar="MD", help="markdown notes (data, training, validation, licence) for MODEL_CARD.md")
    k.add_argument("--zeta", type=float, default=None,
                   help="the model's default guidance strength ζ at -w 0.5 (e.g. calibrated on training faces); "
                        "default: the ζ DGSA was trained with")
    k.add_argument("--steps", default=None, help="the model's default sampler steps (e.g. ddim50); default: ddim250")
    k.add_argument("--guidance", default=None, choices=("unet", "x0", "prox"),
                   help="the model's default guidance gradient; default: unet (the paper's ∂/∂x_t)")
    k.add_argument("--color-fix", default=None, metavar="wavelet|adain|none",
                   help="the model's default low-frequency colour fix (when it measurably helps); default: none")
    k.set_defaults(func=run_package)
    c = tsub.add_parser("card", help="rewrite a model folder's MODEL_CARD.md notes, keeping (and checking) its files table")
    c.add_argument("--model", required=True, help="model folder")
    c.add_argument("--card", required=True, metavar="MD", help="markdown notes")
    c.set_defaults(func=run_card)


def _overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, val = pair.split("=", 1)
        out[key] = yaml.safe_load(val)
    return out


def _check_device(device: str) -> None:
    from ..devices import unavailable

    why = unavailable(device)
    if why:
        raise ValueError(why)


def run(args: argparse.Namespace) -> int:
    from .. import engines
    from ..models.io import ModelLoadError
    from ..training.config import ConfigError, load_config

    rank0 = engines.reports()  # under torchrun: rank 0 only, as restore's summary
    try:
        overrides = _overrides(args.set)
        if not args.resume and (Path(args.out) / "last.pt").is_file():  # a fresh start would overwrite it
            raise ValueError(f"{args.out} holds a training checkpoint (last.pt): pass --resume to continue it, "
                             "or give another --out")
        if args.resume and not (Path(args.out) / "last.pt").is_file() and rank0:  # a mistyped --out starts afresh
            print(f"note: --resume: no checkpoint in {args.out} (last.pt): starting a new run", file=sys.stderr)
        if args.what == "prior":
            from ..models.unet import PRESETS, UNetConfig
            from ..training.prior import PriorTrainConfig, train_prior

            cfg = load_config(PriorTrainConfig, args.config, overrides, nested={"unet": UNetConfig}, choices={"preset": PRESETS})
            _check_device(args.device)
            out = train_prior(cfg, args.data, args.out, args.resume, args.device)
        elif args.what == "dblm":
            from ..training.dblm import STAGES, DBLMTrainConfig, train_dblm

            stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
            bad = [s for s in stages if s not in STAGES]
            if bad:
                raise ValueError(f"unknown stage(s) {bad}; choose from {STAGES}")
            if args.restorer:
                overrides["restorer"] = args.restorer
            from ..models.dblm import DBLMConfig

            cfg = load_config(DBLMTrainConfig, args.config, overrides, nested={"dblm": DBLMConfig})
            cfg.dblm_config()  # an unknown preset fails here, before the run folder is made
            _check_device(args.device)
            out = train_dblm(cfg, args.data, args.out, args.resume, stages, device=args.device)
        else:
            from ..training.dgsa import DGSATrainConfig, train_dgsa

            if args.restorer:
                overrides["restorer"] = args.restorer
            from ..models.dgsa import DGSAConfig

            cfg = load_config(DGSATrainConfig, args.config, overrides, nested={"dgsa": DGSAConfig})
            missing = [k for k in ("prior", "dblm", "dsst") if not getattr(cfg, k)]
            if missing:
                raise ValueError("train dgsa needs the frozen networks it trains against: "
                                 + " ".join(f"--set {k}=PATH" for k in missing) + " (see the README's Training)")
            _check_device(args.device)
            out = train_dgsa(cfg, args.data, args.out, args.resume, device=args.device)
    except (ConfigError, ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"dynface train {args.what}: error: {e}", file=sys.stderr)
        return 2
    if rank0:  # under torchrun: once
        print(f"exported {out}")
    return 0


def run_card(args: argparse.Namespace) -> int:
    from ..training.package import refresh_model_card

    try:
        refresh_model_card(args.model, open(args.card).read())
    except (OSError, ValueError) as e:
        print(f"dynface train card: error: {e}", file=sys.stderr)
        return 2
    print(f"updated {args.model}/MODEL_CARD.md")
    return 0


def run_package(args: argparse.Namespace) -> int:
    from ..models.io import ModelLoadError
    from ..training.package import package_model

    try:
        notes = open(args.card).read() if args.card else None
        infos = package_model(args.out, args.prior, args.dblm, args.dsst, args.dgsa, fp16=not args.fp32, template=args.template,
                              card_notes=notes, zeta=args.zeta, steps=args.steps,
                              guidance=args.guidance, color_fix=args.color_fix)
    except (ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"dynface train package: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(infos, indent=1))
    return 0
