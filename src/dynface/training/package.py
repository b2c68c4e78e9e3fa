"""Assemble a model folder (the format :mod:`dynface.registry` reads) from training runs.

Weights are stored as fp16 safetensors when that loses nothing measurable (the round-trip error is
checked and reported), with the sha256 of every file in ``MODEL_CARD.md``'s table.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..models.io import load_state_dict_file, save_safetensors
from ..provenance import file_sha256 as sha256  # the digests in MODEL_CARD.md; records use the same


def _copy_weights(src: Path, dst: Path, fp16: bool, extra_meta: dict | None = None) -> dict:
    sd, meta = load_state_dict_file(src)
    meta.update(extra_meta or {})
    save_safetensors(sd, dst, metadata=meta, fp16=fp16)
    back, _ = load_state_dict_file(dst)
    err = max((float((back[k] - v).abs().max()) for k, v in sd.items() if v.is_floating_point()), default=0.0)
    rel = max((float((back[k] - v).abs().max() / v.abs().max().clamp_min(1e-12)) for k, v in sd.items() if v.is_floating_point()), default=0.0)
    return {"file": dst.name, "params": sum(v.numel() for v in sd.values()), "fp16": fp16, "max_abs_roundtrip_error": err, "max_rel_roundtrip_error": rel}


def package_model(out: str | Path, prior: str | Path, dblm: str | Path, dsst: str | Path, dgsa: str | Path | None = None,
                  fp16: bool = True, template: str = "utkface64", card_notes: str | None = None,
                  zeta: float | None = None, steps: str | None = None, guidance: str | None = None,
                  color_fix: str | None = None) -> list[dict]:
    """Write prior/dblm/dgsa safetensors and dsst.json into ``out``; returns one info dict per file.

    ``zeta``: the sampler's default guidance strength for this model (stored in the DGSA metadata as
    ``sampler.zeta``; the pipeline prefers it to the ζ DGSA was trained with). ``steps``: the model's default
    sampler steps (``sampler.steps``; else the sampler's ``ddim250``), e.g. the fewest that lose nothing on val.
    ``guidance``: the model's default guidance gradient (``sampler.guidance``: ``unet``, the paper's ∂/∂x_t, else
    ``x0``/``prox``), when the val table showed the cheaper one is worth its (small) cost for this model.
    ``color_fix``: the model's default low-frequency colour fix (``restore.color_fix``: ``wavelet``/``adain``/
    ``none``; a model without it restores with ``none``), when ``benchmarks/colour.py`` showed that it helps.
    """
    from ..colorfix import check_color_fix
    from ..diffusion import check_steps
    from ..sampler import GUIDANCE_KINDS

    if (zeta, steps, guidance, color_fix) != (None, None, None, None) and not dgsa:
        raise ValueError("--zeta, --steps, --guidance and --color-fix are stored with the DGSA weights: give --dgsa too")
    if color_fix is not None:
        check_color_fix(color_fix)
    if zeta is not None and not zeta > 0:
        raise ValueError(f"--zeta must be positive, got {zeta}")
    guided = [g for g in GUIDANCE_KINDS if g != "none"]
    if guidance is not None and guidance not in guided:
        raise ValueError(f"--guidance must be one of {', '.join(guided)}, got {guidance!r}")
    sampler = {k: v for k, v in (("zeta", zeta), ("steps", None if steps is None else check_steps(steps)),
                                 ("guidance", guidance)) if v is not None}
    out = Path(out)
    for what, f in (("--prior", prior), ("--dblm", dblm), ("--dsst", dsst), ("--dgsa", dgsa)):
        if f and not Path(f).is_file():
            raise FileNotFoundError(f"{what} {f}: no such file")
    # built in a folder of its own and checked there; only a model that loads and fits together reaches ``out``
    tmp = out.parent / f".{out.name}.packaging-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        infos = [_copy_weights(Path(prior), tmp / "prior.safetensors", fp16, {"template": template}),
                 _copy_weights(Path(dblm), tmp / "dblm.safetensors", fp16)]
        if dgsa:
            meta = {"sampler": sampler} if sampler else {}
            if color_fix is not None:
                meta["restore"] = {"color_fix": color_fix}
            infos.append(_copy_weights(Path(dgsa), tmp / "dgsa.safetensors", fp16, meta))
        shutil.copyfile(dsst, tmp / "dsst.json")
        infos.append({"file": "dsst.json"})
        try:
            check_fits(tmp)
        except ValueError as e:  # named by the files given, not by their copies here
            msg = str(e)
            for name, src in (("prior.safetensors", prior), ("dblm.safetensors", dblm), ("dgsa.safetensors", dgsa),
                              ("dsst.json", dsst)):
                msg = msg.replace(str(tmp / name), str(src))
            raise ValueError(msg) from None
        for info in infos:
            p = tmp / info["file"]
            info["bytes"] = p.stat().st_size
            info["sha256"] = sha256(p)
        write_model_card(tmp, infos, card_notes if card_notes is not None else DEFAULT_CARD_NOTES)
        out.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:  # a file of an earlier package this one has not (its dgsa) would be loaded with it
            (out / name).unlink(missing_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return infos


MODEL_FILES = ("prior.safetensors", "dblm.safetensors", "dgsa.safetensors", "dsst.json", "MODEL_CARD.md")
DEFAULT_CARD_NOTES = ("# Model card\n\nNo notes were given (`dynface train package --card NOTES.md`, or later "
                      "`dynface train card`, adds the data, training, validation and licence notes).")


def check_fits(folder: Path) -> None:
    """A ValueError unless the model folder's parts work together: the prior, DBLM and DGSA load (a DBLM trained
    against an external restorer is checked without it), the DBLM works at the prior's size, and the DSST table was
    built for images of that size (its start steps are wrong for any other)."""
    from ..dsst import DSSTTable
    from ..models.dblm import DBLMConfig
    from ..models.dgsa import DGSA, DGSAConfig
    from ..models.io import ModelLoadError, load_checked
    from ..pipeline import load_dblm, load_prior

    try:
        unet, _ = load_prior(folder / "prior.safetensors")
    except (ModelLoadError, KeyError, ValueError, RuntimeError) as e:
        raise ValueError(f"--prior is not a diffusion prior this package can load: {e}") from None
    size = unet.cfg.image_size
    _, meta = load_state_dict_file(folder / "dblm.safetensors")
    dsize = DBLMConfig.from_dict(meta.get("dblm", {"size": size})).size
    if dsize != size:
        raise ValueError(f"--dblm works at {dsize} px but --prior at {size} px")
    if not isinstance(meta.get("rm"), dict):  # with its own RM: it must load whole
        try:
            load_dblm(folder / "dblm.safetensors", None, size, "full", folder / "prior.safetensors")
        except (ModelLoadError, KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"--dblm is not a DBLM this package can load: {e}") from None
    if (folder / "dgsa.safetensors").is_file():
        sd, meta = load_state_dict_file(folder / "dgsa.safetensors")
        try:
            load_checked(DGSA(DGSAConfig.from_dict(meta.get("dgsa", {}))), sd, name="--dgsa")
        except (ModelLoadError, KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"--dgsa is not DGSA weights this package can load: {e}") from None
    try:
        table = DSSTTable.load(folder / "dsst.json")
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"--dsst is not a DSST table (dynface build-dsst writes them): {e}") from None
    built = (table.metadata or {}).get("image_size")
    if built is not None and int(built) != size:
        raise ValueError(f"--dsst was built for {built}-px images but --prior works at {size} px: its start steps would "
                         f"be wrong (dynface build-dsst --size {size})")


def write_model_card(out: Path, infos: list[dict], notes: str) -> None:
    """``MODEL_CARD.md`` = the given notes (data, training, validation, licence) + the files table."""
    rows = ["| file | bytes | parameters | storage | sha256 |", "|---|---|---|---|---|"]
    for i in infos:
        storage = ("fp16 where lossless (max rel. round-trip error {:.1e})".format(i["max_rel_roundtrip_error"])
                   if i.get("fp16") else ("fp32" if "params" in i else "JSON"))
        rows.append(f"| `{i['file']}` | {i['bytes']:,} | {i.get('params', ''):,} | {storage} | `{i['sha256']}` |"
                    if "params" in i else f"| `{i['file']}` | {i['bytes']:,} | | {storage} | `{i['sha256']}` |")
    text = notes.rstrip() + "\n\n## Files\n\n" + "\n".join(rows) + "\n"
    (out / "MODEL_CARD.md").write_text(text)


def refresh_model_card(out: str | Path, notes: str) -> None:
    """Rewrite ``MODEL_CARD.md``'s notes and keep its files table, after checking every sha256 in it.

    For updating what a card says (validation numbers, caveats) without rewriting the weights files.
    """
    out = Path(out)
    card = out / "MODEL_CARD.md"
    text = card.read_text() if card.exists() else ""
    if "\n## Files\n" not in text:
        raise ValueError(f"{card}: no '## Files' table to keep (package the model first)")
    files = text[text.index("\n## Files\n"):]
    for name, digest in re.findall(r"\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|", files):
        if sha256(out / name) != digest:
            raise ValueError(f"{out / name}: sha256 differs from the card's; re-package instead")
    card.write_text(notes.rstrip() + "\n" + files)
