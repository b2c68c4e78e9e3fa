"""argparse value types shared by the sub-commands: numbers within bounds, with one wording for every flag."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def number(kind: type = int, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           noun: str | None = None) -> Callable[[str], int | float]:
    """An argparse ``type``: ``kind(s)`` within [lo, hi] (``lo_open``: > lo); either bound may be None. Errors read
    ``not an integer: 'x'`` / ``not a number: 'x'`` and ``must be >= 1, got 0`` / ``must be between 1 and 8, got 9``."""
    noun = noun or ("an integer" if kind is int else "a number")

    def parse(s: str) -> int | float:
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {s!r}") from None
        if v != v:  # NaN
            raise argparse.ArgumentTypeError(f"not {noun}: {s!r}")
        below = lo is not None and not (v > lo if lo_open else v >= lo)
        above = hi is not None and not v <= hi
        if below or above:
            f = (lambda b: str(int(b))) if kind is int else (lambda b: f"{b:g}")  # 2**63 - 1 in full, not 9.22e+18
            if lo is not None and hi is not None:
                raise argparse.ArgumentTypeError(f"must be between {f(lo)} and {f(hi)}, got {s}")
            if lo is not None:
                raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {f(lo)}, got {s}")
            raise argparse.ArgumentTypeError(f"must be <= {f(hi)}, got {s}")
        return v

    return parse
