"""Sizes, durations and rates as ``bsig plan`` prints them."""

from __future__ import annotations


def format_size(n: float) -> str:
    """Binary size to three significant digits, up to PiB: ``1.75 GiB``, ``954 GiB``, ``0.98 TiB``."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        value = n / scale
        if abs(value) >= 0.975 or unit == "KiB" and abs(n) >= 1000:  # 1000 GiB reads better as 0.98 TiB
            digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """A duration in the largest fitting unit: ``0.4 s``, ``12 s``, ``3.5 min``, ``2.1 h``, ``4.0 d``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    for unit, scale, limit in (("min", 60, 120 * 60), ("h", 3600, 48 * 3600), ("d", 86400, 730 * 86400)):
        if seconds < limit:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds / (365.25 * 86400):.1f} y"


def format_rate(per_s: float, unit: str = "tok/s") -> str:
    """``2.21 M tok/s``."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.3g} {prefix} {unit}"
    return f"{per_s:.3g} {unit}"
