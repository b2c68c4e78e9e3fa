"""Weights I/O: safetensors (our format, with the network config in the metadata) and foreign
``.pth`` checkpoints (DifFace, PGDiff) loaded with ``torch.load(weights_only=True)`` only.

Every failure becomes one :class:`ModelLoadError` naming the file and the problem in one line (missing
file, truncated or corrupt file, a plain Python pickle or other non-weights content, wrong architecture:
missing/unexpected keys, shape mismatches). :func:`safe_torch_load` is the one place foreign ``.pth`` files
are unpickled: ``weights_only=True`` always, torch's pickle-protocol warnings silenced, torch's multi-line
refusal replaced by one sentence.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save

from dynface.atomicfile import atomic_write_bytes


class ModelLoadError(RuntimeError):
    """A weights file could not be used; the message says which file and why."""


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None, fp16: bool = False) -> None:
    """Write a state dict atomically; ``metadata`` values are JSON-encoded under string keys.

    ``fp16=True`` stores a floating tensor in half precision only where that loses nothing measurable
    (every entry within 1e-3 of the tensor's peak magnitude); the others stay fp32.
    """
    path = Path(path)
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if fp16 and v.is_floating_point() and _fp16_lossless(v):
            v = v.half()
        tensors[k] = v
    meta = {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    atomic_write_bytes(_canonical_header(save(tensors, metadata=meta)), path)


def _canonical_header(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted, so equal inputs give equal bytes.

    safetensors writes the header from a hash map, so its key order (and the file's sha256) varies from
    run to run. Tensor offsets are relative to the end of the header, so re-encoding it is safe; the
    header is padded with spaces to a multiple of 8 bytes, as the format requires.
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(dict(sorted(header.items())), separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def _fp16_lossless(v: torch.Tensor, rel_tol: float = 1e-3) -> bool:
    """True when storing ``v`` as fp16 changes no entry by more than ``rel_tol`` of its largest magnitude."""
    peak = float(v.abs().max()) if v.numel() else 0.0
    if peak == 0.0:
        return True
    if peak > 6e4:
        return False
    return float((v.half().float() - v.float()).abs().max()) <= rel_tol * peak


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _unpickling_detail(e: Exception) -> str:
    """The informative line of a weights_only failure (torch wraps it in generic boilerplate)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    keep = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(boiler)]
    return keep[0] if keep else type(e).__name__


_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save's pre-1.6 format: a pickled magic number


def weights_refusal(path: str | Path, e: BaseException) -> str:
    """One line saying why ``torch.load(path, weights_only=True)`` refused a file (torch's own text spans
    several lines of boilerplate): a plain Python pickle, a torch.save file with non-tensor content, or not a
    weights file at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_TORCH_MAGIC))
    except OSError:
        head = b""
    detail = _unpickling_detail(e) if isinstance(e, pickle.UnpicklingError) else type(e).__name__
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return (
            f"{path}: a torch.save file whose content the safe loader (weights_only=True) refuses ({detail}); "
            "expected a state dict of tensors"
        )
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode
        return (
            f"{path}: a plain Python pickle, not a torch.save state dict; refused by the safe loader "
            "(weights_only=True: unpickling it could run arbitrary code); re-save the weights with "
            "torch.save(model.state_dict(), ...) or as .safetensors"
        )
    return f"{path}: not a weights file (neither a torch.save archive nor .safetensors)"


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu"):
    """``torch.load(path, weights_only=True)`` without torch's warnings; raises :class:`ModelLoadError` with one
    line (see :func:`weights_refusal`) when the file is refused, corrupt or truncated."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol N ..." for pickles torch.save did not write
            warnings.filterwarnings("ignore", message=r"(?s).*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelLoadError(weights_refusal(path, e)) from None
    except (OSError, MemoryError):
        raise
    except Exception as e:  # KeyError/IndexError/EOFError/RuntimeError from corrupt or truncated files
        first = str(e).strip().splitlines()
        raise ModelLoadError(
            f"{path}: corrupt or truncated weights file ({type(e).__name__}{': ' + first[0] if first else ''})"
        ) from None


PTH_WRAPPERS = ("state_dict", "model", "ema", "params_ema")  # keys a training checkpoint nests its state dict under


def load_state_dict_file(path: str | Path, wrappers: tuple[str, ...] = PTH_WRAPPERS,
                         levels: int = 1) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict as float32 tensors, metadata) from a .safetensors or .pth/.pt/.ckpt file.

    A .pth's state dict may be nested under the first of ``wrappers`` it has, up to ``levels`` deep
    (e.g. ``{"state_dict": {"params_ema": {...}}}`` with 2); a ``module.`` prefix is removed."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: file not found")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected a weights file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            meta = read_metadata(path)
            with safe_open(str(path), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
        elif suffix in {".pth", ".pt", ".ckpt", ".bin"}:
            obj = safe_torch_load(path)
            meta = {}
            for _ in range(levels):
                if isinstance(obj, dict):
                    for key in wrappers:
                        if key in obj and isinstance(obj[key], dict):
                            obj = obj[key]
                            break
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise ModelLoadError(f"{path}: does not contain a state dict of tensors")
            sd = _strip_prefix(dict(obj))
        else:
            raise ModelLoadError(f"{path}: unsupported weights format {suffix!r} (use .safetensors or .pth)")
    except ModelLoadError:
        raise
    except Exception as e:  # also KeyError/IndexError/TypeError from corrupt pickles
        raise ModelLoadError(f"{path}: corrupt or truncated weights file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, meta


def check_compatible(model: nn.Module, sd: dict[str, torch.Tensor], name: str = "weights") -> None:
    """Raise ModelLoadError unless ``sd`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise ModelLoadError(f"{name} do not match the network architecture: " + "; ".join(problems))


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load a weights file into ``model`` (strict), returning the file's metadata."""
    sd, meta = load_state_dict_file(path)
    load_checked(model, sd, name=str(path))
    return meta


def load_checked(model: nn.Module, sd: dict[str, torch.Tensor], name: str) -> None:
    """``model.load_state_dict(sd)`` after :func:`check_compatible` (one clear error for a foreign state dict)."""
    check_compatible(model, sd, name=name)
    model.load_state_dict(sd)
