"""Fine-tune a model's TM + SDE on another std* label, RM frozen (the ``tm`` stage of dynface.training.dblm).

    python benchmarks/std_label_finetune.py --data ../shared/data/utkface/train --out runs/std_label/ft \\
        --label masked --mask-db 23 --steps 1000 --minutes 22 --lr 2e-4

Starts from the model's ``dblm.safetensors`` (all three networks), runs only the ``tm`` stage of
:func:`dynface.training.dblm.train_dblm` with the chosen label, and leaves ``OUT/dblm.safetensors``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from dynface.models.dblm import DBLM, DBLMConfig
    from dynface.models.io import load_state_dict_file, load_weights
    from dynface.registry import resolve
    from dynface.training.dblm import DBLMTrainConfig, train_dblm
    from dynface.training.loop import Checkpointer, rng_state

    ap = argparse.ArgumentParser(prog="benchmarks/std_label_finetune.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--label", default="masked")
    ap.add_argument("--mask-db", type=float, default=23.0)
    ap.add_argument("--psnr-threshold", type=float, default=24.0)
    ap.add_argument("--degradation", default="diffbir")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=22.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    src = resolve(args.model).dblm
    meta = load_state_dict_file(src)[1]
    dcfg = DBLMConfig.from_dict(meta["dblm"])
    net = DBLM(dcfg)
    load_weights(net, src)
    cfg = DBLMTrainConfig(dblm=dcfg.to_dict(), degradation=args.degradation, batch_size=args.batch_size, lr=args.lr,
                          steps={"rm": 0, "sde": 0, "tm": args.steps}, minutes={"tm": args.minutes}, label=args.label,
                          mask_db=args.mask_db, psnr_threshold=args.psnr_threshold, threads=args.threads, seed=args.seed,
                          checkpoint_minutes=5.0)
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.out / "last.pt").exists():  # seed the run with the model's networks, tm stage at step 0
        torch.manual_seed(args.seed)
        Checkpointer(args.out, 0).save({"model": net.state_dict(), "progress": {"rm": 0, "sde": 0, "tm": 0}, "opt": {},
                                        "rng": rng_state(), "config": {}})
    out = train_dblm(cfg, args.data, str(args.out), resume=True, stages=("tm",))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
