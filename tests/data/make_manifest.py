"""Independent key → shape manifest of DifFace's FFHQ-512 iDDPM UNet.

Pure Python (no torch, no ``dynface`` import): this walks the constructor of improved-diffusion's /
DifFace's ``models/unet.py::UNetModel`` by hand and lists every ``state_dict`` entry with its shape,
in registration order. The config is DifFace's ``configs/sample/iddpm_ffhq512_swinir.yaml``:

    image_size 512, in_channels 3, model_channels 32, out_channels 6,
    attention_resolutions [32, 16, 8]   (pixels: ``ds`` starts at image_size and halves),
    channel_mult [1, 2, 4, 8, 8, 16, 16], num_res_blocks [1, 2, 2, 2, 2, 3, 4],
    num_head_channels 64, use_scale_shift_norm True, resblock_updown False, conv_resample True,
    dims 2, num_classes None.

Module rules used (improved-diffusion):
* ``linear`` = nn.Linear (weight (out, in), bias (out,)); ``conv_nd(2, …)`` = nn.Conv2d;
  ``conv_nd(1, …)`` = nn.Conv1d; ``normalization(c)`` = GroupNorm32(32, c) (weight, bias (c,)).
* ResBlock(ch → out): in_layers = [GN(ch), SiLU, Conv2d(ch, out, 3)];
  emb_layers = [SiLU, Linear(emb, 2·out if scale-shift else out)];
  out_layers = [GN(out), SiLU, Dropout, Conv2d(out, out, 3)];
  skip_connection = Identity if out == ch else Conv2d(ch, out, 1).
* AttentionBlock(ch): norm = GN(ch), qkv = Conv1d(ch, 3ch, 1), proj_out = Conv1d(ch, ch, 1).
* Downsample (conv_resample): ``op`` = Conv2d(ch, ch, 3, stride 2); Upsample: ``conv`` = Conv2d(ch, ch, 3).
* out = [GN(ch), SiLU, Conv2d(input_ch, out_channels, 3)].

Run ``python tests/data/make_manifest.py`` to regenerate ``difface-ffhq512_manifest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

DIFFACE_FFHQ512 = {
    "image_size": 512,
    "in_channels": 3,
    "model_channels": 32,
    "out_channels": 6,
    "attention_resolutions": [32, 16, 8],
    "channel_mult": [1, 2, 4, 8, 8, 16, 16],
    "num_res_blocks": [1, 2, 2, 2, 2, 3, 4],
    "num_head_channels": 64,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "conv_resample": True,
}


def _linear(p, n_in, n_out):
    return [(f"{p}.weight", [n_out, n_in]), (f"{p}.bias", [n_out])]


def _conv2d(p, c_in, c_out, k):
    return [(f"{p}.weight", [c_out, c_in, k, k]), (f"{p}.bias", [c_out])]


def _conv1d(p, c_in, c_out):
    return [(f"{p}.weight", [c_out, c_in, 1]), (f"{p}.bias", [c_out])]


def _norm(p, c):
    return [(f"{p}.weight", [c]), (f"{p}.bias", [c])]


def _resblock(p, ch, emb, out, scale_shift):
    keys = _norm(f"{p}.in_layers.0", ch) + _conv2d(f"{p}.in_layers.2", ch, out, 3)
    keys += _linear(f"{p}.emb_layers.1", emb, 2 * out if scale_shift else out)
    keys += _norm(f"{p}.out_layers.0", out) + _conv2d(f"{p}.out_layers.3", out, out, 3)
    if out != ch:
        keys += _conv2d(f"{p}.skip_connection", ch, out, 1)
    return keys


def _attention(p, ch, head_channels):
    assert ch % head_channels == 0, (ch, head_channels)
    return _norm(f"{p}.norm", ch) + _conv1d(f"{p}.qkv", ch, 3 * ch) + _conv1d(f"{p}.proj_out", ch, ch)


def manifest(cfg: dict) -> list[tuple[str, list[int]]]:
    assert not cfg["resblock_updown"] and cfg["conv_resample"]
    mc, mult, nrb = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
    ss, hc, att = cfg["use_scale_shift_norm"], cfg["num_head_channels"], cfg["attention_resolutions"]
    emb = 4 * mc
    keys = _linear("time_embed.0", mc, emb) + _linear("time_embed.2", emb, emb)

    ch = input_ch = mult[0] * mc
    keys += _conv2d("input_blocks.0.0", cfg["in_channels"], ch, 3)
    chans, ds, idx = [ch], cfg["image_size"], 1
    for level, m in enumerate(mult):
        for _ in range(nrb[level]):
            keys += _resblock(f"input_blocks.{idx}.0", ch, emb, m * mc, ss)
            ch = m * mc
            if ds in att:
                keys += _attention(f"input_blocks.{idx}.1", ch, hc)
            chans.append(ch)
            idx += 1
        if level != len(mult) - 1:
            keys += _conv2d(f"input_blocks.{idx}.0.op", ch, ch, 3)
            chans.append(ch)
            ds //= 2
            idx += 1

    keys += _resblock("middle_block.0", ch, emb, ch, ss)
    keys += _attention("middle_block.1", ch, hc)
    keys += _resblock("middle_block.2", ch, emb, ch, ss)

    idx = 0
    for level in reversed(range(len(mult))):
        m = mult[level]
        for i in range(nrb[level] + 1):
            ich = chans.pop()
            keys += _resblock(f"output_blocks.{idx}.0", ch + ich, emb, m * mc, ss)
            ch = m * mc
            sub = 1
            if ds in att:
                keys += _attention(f"output_blocks.{idx}.{sub}", ch, hc)
                sub += 1
            if level and i == nrb[level]:
                keys += _conv2d(f"output_blocks.{idx}.{sub}.conv", ch, ch, 3)
                ds *= 2
            idx += 1
    assert not chans

    keys += _norm("out.0", ch) + _conv2d("out.2", input_ch, cfg["out_channels"], 3)
    return keys


def main() -> None:
    keys = manifest(DIFFACE_FFHQ512)
    n = 0
    for _, shape in keys:
        size = 1
        for d in shape:
            size *= d
        n += size
    doc = {
        "source": "DifFace configs/sample/iddpm_ffhq512_swinir.yaml + improved-diffusion UNetModel rules",
        "config": DIFFACE_FFHQ512,
        "num_parameters": n,
        "keys": [[k, s] for k, s in keys],
    }
    out = Path(__file__).with_name("difface-ffhq512_manifest.json")
    head = json.dumps({k: v for k, v in doc.items() if k != "keys"}, indent=1)[:-2]
    rows = ",\n".join("  " + json.dumps(row) for row in doc["keys"])
    out.write_text(head + ',\n "keys": [\n' + rows + "\n ]\n}\n")
    print(f"{out}: {len(keys)} tensors, {n} parameters")


if __name__ == "__main__":
    main()
