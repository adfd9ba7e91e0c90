"""One table of defaults, each overridable by an environment variable ``BSIG_<NAME>``.

Stages and CLI options take their defaults from :data:`DEFAULTS` (read once, when this module is
first imported), so a default is written in exactly one place.  ``BSIG_MEMORY_LIMIT=8GiB bsig
screen …`` changes the default of ``--memory-limit`` (an explicit option still wins); ``bsig
defaults`` lists the table with the values in effect.  Dask's own ``DASK_SCHEDULER_ADDRESS``
(``tcp://host:port``) is the default ``--scheduler`` when ``BSIG_SCHEDULER`` is not set.  Every
setting has a validator: a malformed override (``BSIG_MEMORY_LIMIT=lots``, ``BSIG_ALPHA=0.7``) is a
one-line :class:`~bsig_array.errors.OptionError` naming the variable, raised when the table is read,
not later in a stage.  The settings of one run (memory, workers, scheduler, device, spill, seed,
progress) are gathered once at the boundary into :class:`~bsig_array.runtime.run.RunSpec`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsig_array.errors import BsigError, OptionError
from bsig_array.options import (
    check_choice,
    check_count,
    check_number,
    check_seed,
    check_torch_device,
    parse_memory,
)
from bsig_array.runtime.tasks import check_scheduler
from bsig_array.schema import DEVICES, TIES


def _flag(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


#: A validator: (value as given, the name it was given under) -> the typed value, or a BsigError.
Check = Callable[[Any, str], Any]


def _progress(value: Any, what: str) -> str:
    text = str(value).strip().lower()
    if text != "auto":
        try:
            _flag(text)
        except ValueError:
            raise OptionError(f"{what} must be auto, 1 or 0, got {value!r}") from None
    return text


def _integer(value: Any, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise OptionError(f"{what} must be an integer, got {value!r}") from None


def _workers(value: Any, what: str) -> int | None:
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    return check_count(_integer(value, what), what, minimum=1)


def _count(minimum: int) -> Check:
    return lambda value, what: check_count(_integer(value, what), what, minimum=minimum)


def _fraction(low_open: float, high: float, *, high_closed: bool) -> Check:
    def check(value: Any, what: str) -> float:
        number = check_number(value, what)
        if not (low_open < number < high or (high_closed and number == high)):
            raise OptionError(f"{what} must be in ({low_open:g}, {high:g}{']' if high_closed else ')'}, got {value}")
        return number
    return check


def _positive(value: Any, what: str) -> float:
    number = check_number(value, what)
    if number <= 0:
        raise OptionError(f"{what} must be a number of seconds > 0, got {value}")
    return number


def _choice(choices: tuple[str, ...], noun: str) -> Check:
    return lambda value, what: check_choice(str(value), choices, f"{noun} ({what})")


def _prefixed(check: Callable[[Any], Any], value: Any, what: str) -> Any:
    """``check(value)``, its error prefixed with the name the value was given under."""
    try:
        return check(value)
    except OptionError as exc:
        raise OptionError(f"{what}: {exc}") from None


def _memory(value: Any, what: str) -> int:
    return _prefixed(parse_memory, value, what)


def _scheduler(value: Any, what: str) -> str:
    _prefixed(check_scheduler, str(value), what)
    return str(value)


def _text(value: Any, what: str) -> str:
    return str(value)


def exact_size(n: int) -> str:
    """Bytes as a user writes them when exact (``2GiB``, ``600MiB``), else the number of bytes."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _setting(value: Any, help: str, check: Check, show: Callable[[Any], str] = str) -> Any:
    """A field of :class:`Defaults`: its value, help, the validator every override goes through, its display."""
    return field(default=check(value, "the table's default"), metadata={"help": help, "check": check, "show": show})


@dataclass(frozen=True)
class Defaults:
    """Defaults of every stage and command; field ``x`` is overridden by ``BSIG_X``.

    Each field has a validator (its metadata ``check``) that turns a given value or an environment
    variable's text into the typed value, or raises: the table's own values, ``BSIG_*`` overrides and
    the options of :class:`~bsig_array.runtime.run.RunSpec` all pass through it, so a setting is
    parsed and checked in one place.
    """

    memory_limit: int = _setting("2GiB", "peak-memory promise of screen and select (--memory-limit)",
                                 _memory, exact_size)
    workers: int | None = _setting(None, "at most this many tasks at once (--workers; empty: CPU count, lowered "
                                   "to fit memory)", _workers, lambda v: "auto" if v is None else str(v))
    # The embedded default of bsig demo: sized so the whole chain runs in well under 3 minutes on 2 CPU cores.
    demo_models: int = _setting(32, "models of the bsig demo pool", _count(3))
    demo_benchmarks: int = _setting(32, "benchmarks of the bsig demo pool", _count(2))
    demo_tokens: int = _setting(200_000, "tokens of the bsig demo pool", _count(2))
    demo_memory_limit: int = _setting("1GiB", "memory limit of bsig demo", _memory, exact_size)
    demo_bootstrap: int = _setting(10, "semantic-overlap samples per benchmark pair in bsig demo", _count(1))
    alpha: float = _setting(0.01, "fraction of tokens kept per tail by the screen (--alpha)",
                            _fraction(0.0, 0.5, high_closed=False))
    ties: str = _setting("average", "ranking of tied NLLs for Thrush (--ties)", _choice(TIES, "ties rule"))
    scheduler: str = _setting(
        "threads", "where stage tasks run (--scheduler; default DASK_SCHEDULER_ADDRESS when that is set)", _scheduler
    )
    device: str = _setting("auto", "device of the screen and selection kernels (--device)", _choice(DEVICES, "device"))
    model_device: str = _setting("cpu", "torch device of language models (--device of perplexity and evaluate)",
                                 lambda value, what: _prefixed(check_torch_device, value, what))
    spill_dir: str = _setting(
        "", "directory of the screen's spill (empty: next to a local --out, else TMPDIR); on a multi-host "
        "dask cluster, a directory every worker mounts", _text
    )
    storage_timeout: float = _setting(60, "seconds an object store may take to connect or to answer a read "
                                      "before the request is retried", _positive, "{:g}".format)
    storage_retries: int = _setting(3, "retries of an object-store request that timed out or lost its connection "
                                    "(each prints a warning; then one error)", _count(0))
    chunk_tokens: int = _setting(1 << 20, "tokens per chunk of a new perplexity store (--chunk-tokens)", _count(1))
    context_pieces: int = _setting(30, "preceding pieces of context per corpus feature", _count(1))
    sample_rate: float = _setting(0.02, "fraction of corpus pieces kept as features (paper: 1/50)",
                                  _fraction(0.0, 1.0, high_closed=True))
    # The real-model zoo pool (bsig_array/pipelines/zoo_pool.py): a small corpus, short contexts.
    zoo_sample_rate: float = _setting(0.004, "fraction of corpus pieces kept by the zoo pool",
                                      _fraction(0.0, 1.0, high_closed=True))
    zoo_context_pieces: int = _setting(8, "preceding pieces of context in the zoo pool", _count(1))
    lasso_alpha: float = _setting(1e-3, "Lasso penalty of bsig select --method lasso",
                                  _fraction(0.0, float("inf"), high_closed=False))
    bootstrap: int = _setting(1000, "semantic-overlap samples per benchmark pair", _count(1))
    resamples: int = _setting(10_000, "null relabelings of the category statistics", _count(1))
    threshold: float = _setting(0.5, "edge threshold of the maximum-clique graph", check_number)
    planted: int = _setting(30, "planted tokens per benchmark of bsig synth", _count(1))
    seed: int = _setting(0, "seed of every random draw", lambda value, what: check_seed(_integer(value, what), what))
    cache: str = _setting(str(Path.home() / ".cache" / "bsig"), "cache of dequantized models", _text)
    progress: str = _setting("auto", "progress bars on stderr: auto (when a terminal), 1 or 0", _progress)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Defaults:
        """The table with every ``BSIG_<NAME>`` override in ``environ`` (default: ``os.environ``) applied.

        Raises
        ------
        OptionError
            When an override does not parse as the setting's type.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = env_name(f.name)
            if var not in environ:
                continue
            values[f.name] = check_setting(f.name, environ[var], source=var)
        dask_address = environ.get(DASK_SCHEDULER_ADDRESS, "").strip()
        if "scheduler" not in values and dask_address:  # Dask's own variable: a cluster to run on
            values["scheduler"] = check_setting("scheduler", dask_address, source=DASK_SCHEDULER_ADDRESS)
        return cls(**values)

    def rows(self) -> list[tuple[str, str, Any, str]]:
        """``(setting, environment variable, value in effect, help)`` for every setting."""
        return [(f.name, env_name(f.name), shown(f.name, getattr(self, f.name)), f.metadata["help"])
                for f in dataclasses.fields(self)]


def check_setting(name: str, value: Any, *, source: str) -> Any:
    """``value`` of setting ``name`` through the table's validator; ``source`` names where it came from.

    Raises
    ------
    OptionError
        One line naming ``source`` (``BSIG_ALPHA``, ``--memory-limit``), the value, why, and for a
        variable how to fix it.
    """
    spec = _FIELDS[name]
    try:
        return spec.metadata["check"](value, source)
    except (BsigError, TypeError, ValueError, OverflowError) as exc:
        why = str(exc) if isinstance(exc, BsigError) else f"{source}: {value!r} is not a valid {name.replace('_', ' ')}"
        if source.startswith("BSIG_"):
            why += f"; unset it or set e.g. {source}={shown(name, spec.default)}"
        raise OptionError(why) from None


def shown(name: str, value: Any) -> str:
    """A setting's value as a user writes it (``2GiB`` for a memory limit, ``auto`` for no worker bound)."""
    return str(_FIELDS[name].metadata["show"](value))


_FIELDS = {f.name: f for f in dataclasses.fields(Defaults)}


#: Dask's environment variable naming a running scheduler (the default ``--scheduler`` unless
#: ``BSIG_SCHEDULER`` is set).
DASK_SCHEDULER_ADDRESS = "DASK_SCHEDULER_ADDRESS"


def env_name(setting: str) -> str:
    """Environment variable that overrides ``setting``: ``BSIG_`` + the name in upper case."""
    return "BSIG_" + setting.upper()


def progress_enabled(setting: str, is_terminal: bool) -> bool:
    """Whether to draw progress bars for the ``progress`` setting (``auto``: when stderr is a terminal)."""
    return is_terminal if setting == "auto" else _flag(setting)  # validated by the table


#: The defaults in effect for this process.
DEFAULTS = Defaults.from_env()
