"""Checks of user-given values: options, choices and name lists, each failing with one clear line.

Stages call these at their boundary (before any work), so the CLI and library users get the same
:class:`~bsig_array.errors.OptionError` for the same mistake; the CLI adds nothing of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from bsig_array.errors import InputError, OptionError
from bsig_array.schema import COEFFICIENTS


def check_choice(value: str, choices: Sequence[str], what: str, fix: str = "") -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises
    ------
    OptionError
        ``unknown <what> '<value>'; use a, b or c`` (plus ``fix`` when given).
    """
    if value not in choices:
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise OptionError(f"unknown {what} {value!r}; use {listed}" + (f" {fix}" if fix else ""))
    return value


def resolve_coefficients(coefficients: str | Sequence[str]) -> tuple[str, ...]:
    """``"both"``/``"thrush"``/``"preselect"`` or a sequence of them → tuple in :data:`COEFFICIENTS` order."""
    if isinstance(coefficients, str):
        coefficients = COEFFICIENTS if coefficients == "both" else (coefficients,)
    out = tuple(dict.fromkeys(str(c) for c in coefficients))
    bad = [c for c in out if c not in COEFFICIENTS]
    if bad or not out:
        raise OptionError(f"unknown screening method(s) {bad or list(out)}; use thrush, preselect or both")
    return tuple(c for c in COEFFICIENTS if c in out)


def check_alpha(alpha: float) -> float:
    """The screen's tail fraction: a number in (0, 0.5)."""
    try:
        ok = 0.0 < float(alpha) < 0.5  # False for NaN
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(f"alpha must be in (0, 0.5) (the fraction kept per tail), got {alpha}; e.g. --alpha 0.01")
    return float(alpha)


_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_memory(text: str | int | float) -> int:
    """Bytes in a memory size such as ``"2GiB"``, ``"500 MB"``, ``"1.5g"`` or ``1e9``.

    Decimal units (kB, MB, GB, TB; also k, m, g, t) are powers of 1000, binary ones (KiB, MiB, GiB,
    TiB) powers of 1024.

    Raises
    ------
    OptionError
        On an unparsable or non-positive size.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise OptionError(f"cannot read memory size {text!r}; write it like 2GiB, 500MB or 1e9")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise OptionError(f"memory size must be positive, got {text!r}; write it like 2GiB")
    return size


#: Largest integer option: counts and sizes become int64 array shapes and offsets.
MAX_INT = 2**63 - 1
#: Seeds are stored as attributes and passed to numpy; one range for every stage.
MAX_SEED = 2**32 - 1


def check_count(value: int, what: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """An integer option in ``[minimum, maximum]`` (e.g. ``--null-permutations``); refuses NaN and overflow."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and minimum <= int(value) <= maximum
        too_big = int(value) > maximum
    except (TypeError, ValueError, OverflowError):
        ok = too_big = False
    if not ok:
        bound = f">= {minimum}" if maximum == MAX_INT and not too_big else f"in [{minimum}, {maximum}]"
        raise OptionError(f"{what} must be an integer {bound}, got {value}")
    return int(value)


def check_optional_count(value: int | None, what: str, *, minimum: int = 1) -> int | None:
    """``None`` (the default applies) or an integer >= ``minimum`` (``--workers``, ``--max-docs``, ``--limit``)."""
    return None if value is None else check_count(value, what, minimum=minimum)


def check_seed(seed: int, what: str = "--seed") -> int:
    """A seed: an integer in ``[0, 2**32 - 1]`` (numpy's range)."""
    return check_count(seed, what, minimum=0, maximum=MAX_SEED)


def check_nonnegative(value: float, what: str) -> float:
    """A finite number >= 0 (e.g. ``--delta``)."""
    return check_number(value, what, minimum=0.0)


def check_number(value: float, what: str, *, minimum: float | None = None) -> float:
    """A finite float, at least ``minimum`` when given; refuses NaN and inf (``--threshold``, ``--delta``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and (minimum is None or number >= minimum)):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise OptionError(f"{what} must be a finite number{bound}, got {value}")
    return number


def check_path_name(name: str, what: str) -> str:
    """A name that becomes one file name under an output folder (model, benchmark, task names).

    Refuses what could leave the folder or name something else: empty names, ``/`` or ``\\``,
    ``.``/``..``, NUL and other control characters, and surrounding whitespace (a padded name
    would name another file than its unpadded twin).

    Raises
    ------
    OptionError
        Naming the value and the rule.
    """
    text = str(name)
    bad = (
        not text or text in (".", "..") or text != text.strip() or any(c in text for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in text)
    )
    if bad:
        raise OptionError(
            f"{what} {text!r} cannot be used as a file name; names must be non-empty, without '/', '\\', "
            "control characters or surrounding spaces, and not '.' or '..'"
        )
    return text


def duplicates(names: Iterable[str]) -> list[str]:
    """Names that occur more than once, sorted."""
    seen: set[str] = set()
    dup: set[str] = set()
    for name in names:
        (dup if name in seen else seen).add(name)
    return sorted(dup)


def check_unique_models(models: Sequence[str], where: str) -> None:
    """Refuse a model list with repeated names (``where`` names the artifact in the message).

    Raises
    ------
    InputError
        ``<where>: duplicate model names [...]; give every model a unique name``.
    """
    dup = duplicates(str(m) for m in models)
    if dup:
        raise InputError(f"{where}: duplicate model names {dup}; give every model a unique name")


#: Weight dtypes a language model can be loaded in (``--dtype`` of perplexity).
MODEL_DTYPES = ("float32", "bfloat16", "float16")


def check_torch_device(device: str) -> str:
    """A torch device for a language model: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise OptionError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps")
    return text


def check_model_options(*, device: str, dtype: str = "float32", batch_size: int = 1,
                        max_tokens: int | None = None) -> None:
    """Options of the commands that run a language model, checked before it loads (and before any lock)."""
    check_torch_device(device)
    check_choice(dtype, MODEL_DTYPES, "dtype", "(--dtype)")
    check_count(batch_size, "--batch-size", minimum=1)
    if max_tokens is not None:
        check_count(max_tokens, "--max-tokens", minimum=2)


def check_model_name(name: str, what: str = "model name") -> str:
    """A model name to record (``--name``): non-empty, printable, without surrounding spaces.

    Model names are matched across stores and score tables after stripping surrounding spaces
    (:func:`bsig_array.io.scores.align_performance`), so a padded name is refused rather than
    written as a second spelling of the same model.  ``/`` is allowed: hub names have one.
    """
    text = str(name)
    if not text.strip() or text != text.strip() or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise OptionError(
            f"{what} {text!r} is empty, has surrounding spaces or control characters; give it as plain text "
            "(names are matched with surrounding spaces ignored)"
        )
    return text
