"""Where models live: the embedded models inside the package, or a user's local folder/file.

A *model folder* holds ``prior.safetensors`` (UNet EMA weights; the UNet and schedule config in its
metadata), ``dblm.safetensors``, ``dgsa.safetensors`` (optional), ``dsst.json`` and ``MODEL_CARD.md``.
``--model`` accepts an embedded name (``embedded-128``, ``embedded-64``), such a folder, or a single prior file
(``.safetensors``/``.pth``, e.g. DifFace's ``iddpm_ffhq512_ema500000.pth``) whose architecture is
recognised from its keys and shapes; the other parts are then given separately. Nothing is ever
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
# The model every front end uses when none is named (from_pretrained, `dynface restore` / `sample`, the job layer's
# RestoreSettings, the web app's first choice): the one line to change when a new embedded model ships. embedded-128
# took it from embedded-64 when it beat it on issue 10's val table (its MODEL_CARD.md); embedded-64 stays, the fast
# option. EMBEDDED lists the default first.
DEFAULT_MODEL = "embedded-128"
EMBEDDED = ("embedded-128", "embedded-64")


@dataclass(frozen=True)
class ModelFiles:
    name: str
    prior: Path
    dblm: Path | None
    dgsa: Path | None
    dsst: Path | None
    card: Path | None


DEFAULT_DSST = Path(__file__).parent / "data" / "dsst_default.json"  # a model folder's own dsst.json wins


def weight_paths(files: ModelFiles, dblm: str | Path | None = None, dgsa: str | Path | None = None,
                 dsst: str | Path | None = None, restorer: str | Path | None = None) -> dict[str, Path]:
    """The files a model is loaded from, per role (``prior``, ``dblm``, ``dgsa``, ``dsst``, ``restorer``): the model
    folder's, or the ones given instead (``--dblm`` ...); roles without a file are left out. What
    :meth:`dynface.pipeline.DynFaceRestorer.from_pretrained` loads, and what records name (:mod:`dynface.provenance`)."""
    used = {"prior": files.prior, "dblm": dblm or files.dblm, "dgsa": dgsa or files.dgsa,
            "dsst": dsst or files.dsst or DEFAULT_DSST, "restorer": restorer}
    return {role: Path(p) for role, p in used.items() if p is not None}


def _opt(p: Path) -> Path | None:
    return p if p.exists() else None


def resolve(name_or_path: str | Path) -> ModelFiles:
    """Locate a model's files; raises ModelLoadError with a helpful message when nothing fits."""
    from .models.io import ModelLoadError  # here, not at import: the job layer reads DEFAULT_MODEL without torch

    s = str(name_or_path)
    folder: Path | None = None
    if s in EMBEDDED:
        folder = WEIGHTS_DIR / s
        if not (folder / "prior.safetensors").exists():
            raise ModelLoadError(
                f"embedded model {s!r} has no weights in {folder} (this installation ships without them; "
                "train them with `dynface train` or pass --model PATH)"
            )
    else:
        p = Path(s).expanduser()
        if p.is_dir():
            folder = p
        elif p.is_file():
            return ModelFiles(p.stem, p, None, None, None, None)
        else:
            raise ModelLoadError(f"model {s!r} is neither an embedded model ({', '.join(EMBEDDED)}) nor an existing path")
    prior = folder / "prior.safetensors"
    if not prior.exists():
        alts = sorted(folder.glob("*.pth"))
        if not alts:
            raise ModelLoadError(f"{folder}: no prior.safetensors (or .pth prior) in this model folder")
        prior = alts[0]
    return ModelFiles(
        folder.name, prior, _opt(folder / "dblm.safetensors"), _opt(folder / "dgsa.safetensors"),
        _opt(folder / "dsst.json"), _opt(folder / "MODEL_CARD.md"),
    )
