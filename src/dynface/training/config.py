"""YAML → dataclass configs: unknown keys and values of the wrong type are errors, not silently ignored or left to
fail inside the training loop (after the run folder and a checkpoint were made)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")
# counts that must be at least 1 (0 or less would divide by zero or make empty batches)
AT_LEAST_ONE = frozenset({"batch_size", "log_every", "sample_count", "swt_levels", "delta"})


class ConfigError(ValueError):
    pass


def _checked(name: str, v, kind):
    """``v`` as config field ``name`` of type ``kind`` takes it (a YAML ``1e-3``, which PyYAML reads as a string, as
    a float; a list as a tuple), else a :class:`ConfigError` naming the field, the value and the type."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    want = origin or kind
    bad = ConfigError(f"{name} must be {getattr(want, '__name__', want)}, got {v!r}")
    if want is bool:
        if not isinstance(v, bool):
            raise bad
        return v
    if want is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad
    elif want is float:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise bad from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad
        v = float(v)
    elif want is str:
        if not isinstance(v, str):
            raise bad
        return v
    elif want is dict:
        if not isinstance(v, dict):
            raise bad
        return v
    elif want is tuple:
        fixed = bool(args) and args[-1] is not Ellipsis  # tuple[float, float] against tuple[float, ...]
        if not isinstance(v, (list, tuple)) or (fixed and len(v) != len(args)):
            raise bad
        kinds = args if fixed else [args[0] if args else typing.Any] * len(v)
        return tuple(_checked(f"{name}[{i}]", x, k) for i, (x, k) in enumerate(zip(v, kinds, strict=True)))
    else:
        return v
    if v < (1 if name in AT_LEAST_ONE else 0):  # no count, rate, weight or time limit here is negative
        raise ConfigError(f"{name} must be at least {1 if name in AT_LEAST_ONE else 0}, got {v!r}")
    return v


def load_config(cls: type[T], path: str | Path | None, overrides: dict | None = None,
                nested: dict[str, type] | None = None, choices: dict[str, typing.Iterable[str]] | None = None) -> T:
    """``cls`` from the YAML file ``path`` and ``overrides`` (``--set``). ``nested``: fields that hold overrides of
    another dataclass (``unet`` → UNetConfig), whose keys must be that class's; ``choices``: the allowed values of a
    field (``preset``)."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    data.update(overrides or {})
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"unknown config keys for {cls.__name__}: {', '.join(unknown)} (valid: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    for k, v in list(data.items()):
        data[k] = _checked(k, v, hints[k])
    for k, sub in (nested or {}).items():
        known = {f.name for f in dataclasses.fields(sub)}  # type: ignore[arg-type]
        bad = sorted(set(data.get(k) or {}) - known)
        if bad:
            raise ConfigError(f"unknown keys in {k}: {', '.join(map(str, bad))} (valid: {', '.join(sorted(known))})")
    for k, allowed in (choices or {}).items():
        allowed = sorted(allowed)
        if k in data and data[k] not in allowed:
            raise ConfigError(f"unknown {k} {data[k]!r}; choose from {', '.join(allowed)}")
    return cls(**data)
