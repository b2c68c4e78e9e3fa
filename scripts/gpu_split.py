"""Split a safetensors file into parts under the lent GPU's 16 MiB per-file return limit, and join them back.

    python scripts/gpu_split.py split runs/x/ema.safetensors $OUT/ema      # → $OUT/ema.part0.safetensors, …
    python scripts/gpu_split.py join OUT_DIR/ema runs/prior64_gpu/ema.safetensors

Tensors keep their dtype (fp32 stays fp32); the metadata travels with part 0.
"""

from __future__ import annotations

import argparse
import glob
import sys

from safetensors import safe_open
from safetensors.torch import save_file

LIMIT = 15 * 2**20


def split(src: str, prefix: str) -> int:
    with safe_open(src, "pt") as f:
        meta = f.metadata() or {}
        parts: list[dict] = [{}]
        size = 0
        for k in f.keys():
            t = f.get_tensor(k)
            n = t.numel() * t.element_size()
            if parts[-1] and size + n > LIMIT:
                parts.append({})
                size = 0
            parts[-1][k] = t
            size += n
    for i, p in enumerate(parts):
        save_file(p, f"{prefix}.part{i}.safetensors", metadata={**meta, "parts": str(len(parts))} if i == 0 else None)
    print(f"{src}: {len(parts)} parts")
    return 0


def join(prefix: str, dst: str) -> int:
    files = sorted(glob.glob(f"{glob.escape(prefix)}.part*.safetensors"), key=lambda s: int(s.rsplit("part", 1)[1].split(".")[0]))
    if not files:
        print(f"no parts {prefix}.part*.safetensors", file=sys.stderr)
        return 1
    tensors, meta = {}, {}
    for i, fn in enumerate(files):
        with safe_open(fn, "pt") as f:
            if i == 0:
                meta = dict(f.metadata() or {})
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    want = int(meta.pop("parts", len(files)))
    if want != len(files):
        print(f"expected {want} parts, found {len(files)}", file=sys.stderr)
        return 1
    save_file(tensors, dst, metadata=meta)
    print(f"{dst}: {len(tensors)} tensors from {len(files)} parts")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op", choices=["split", "join"])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    return split(args.a, args.b) if args.op == "split" else join(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
