"""YAML → dataclass configs (unknown keys are an error, not silently ignored)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def load_config(cls: type[T], path: str | Path | None, overrides: dict | None = None) -> T:
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
    for k, v in list(data.items()):
        if isinstance(v, list):
            data[k] = tuple(v)
    return cls(**data)
