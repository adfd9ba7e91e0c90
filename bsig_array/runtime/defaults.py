"""One table of defaults, each overridable by an environment variable ``BSIG_<NAME>``.

Stages and CLI options take their defaults from :data:`DEFAULTS` (read once, when this module is
first imported), so a default is written in exactly one place.  ``BSIG_MEMORY_LIMIT=8GiB bsig
screen …`` changes the default of ``--memory-limit`` (an explicit option still wins); ``bsig
defaults`` lists the table with the values in effect.  Dask's own ``DASK_SCHEDULER_ADDRESS``
(``tcp://host:port``) is the default ``--scheduler`` when ``BSIG_SCHEDULER`` is not set.  A malformed override is a one-line
:class:`~bsig_array.errors.OptionError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsig_array.errors import OptionError


def _flag(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


def _setting(value: Any, help: str, parse: Callable[[str], Any] | None = None) -> Any:
    return field(default=value, metadata={"help": help, "parse": parse or type(value)})


@dataclass(frozen=True)
class Defaults:
    """Defaults of every stage and command; field ``x`` is overridden by ``BSIG_X``."""

    memory_limit: str = _setting("2GiB", "peak-memory promise of screen and select (--memory-limit)")
    # The embedded default of bsig demo: sized so the whole chain runs in well under 3 minutes on 2 CPU cores.
    demo_models: int = _setting(32, "models of the bsig demo pool")
    demo_benchmarks: int = _setting(32, "benchmarks of the bsig demo pool")
    demo_tokens: int = _setting(200_000, "tokens of the bsig demo pool")
    demo_memory_limit: str = _setting("1GiB", "memory limit of bsig demo")
    alpha: float = _setting(0.01, "fraction of tokens kept per tail by the screen (--alpha)")
    ties: str = _setting("average", "ranking of tied NLLs for Thrush (--ties)")
    scheduler: str = _setting(
        "threads", "where stage tasks run (--scheduler; default DASK_SCHEDULER_ADDRESS when that is set)"
    )
    device: str = _setting("auto", "screening device (--device)")
    spill_dir: str = _setting(
        "", "directory of the screen's spill (empty: next to a local --out, else TMPDIR); on a multi-host "
        "dask cluster, a directory every worker mounts"
    )
    chunk_tokens: int = _setting(1 << 20, "tokens per chunk of a new perplexity store (--chunk-tokens)")
    context_pieces: int = _setting(30, "preceding pieces of context per corpus feature")
    sample_rate: float = _setting(0.02, "fraction of corpus pieces kept as features (paper: 1/50)")
    lasso_alpha: float = _setting(1e-3, "Lasso penalty of bsig select --method lasso")
    bootstrap: int = _setting(1000, "semantic-overlap samples per benchmark pair")
    resamples: int = _setting(10_000, "null relabelings of the category statistics")
    threshold: float = _setting(0.5, "edge threshold of the maximum-clique graph")
    planted: int = _setting(30, "planted tokens per benchmark of bsig synth")
    seed: int = _setting(0, "seed of every random draw")
    cache: str = _setting(str(Path.home() / ".cache" / "bsig"), "cache of dequantized models")
    progress: str = _setting("auto", "progress bars on stderr: auto (when a terminal), 1 or 0")

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
            text = environ[var]
            try:
                values[f.name] = f.metadata["parse"](text)
            except (TypeError, ValueError):
                kind = type(f.default).__name__
                raise OptionError(
                    f"environment variable {var}={text!r} is not a valid {kind}; unset it or give e.g. "
                    f"{var}={f.default!r}"
                ) from None
        dask_address = environ.get(DASK_SCHEDULER_ADDRESS, "").strip()
        if "scheduler" not in values and dask_address:  # Dask's own variable: a cluster to run on
            values["scheduler"] = dask_address
        return cls(**values)

    def rows(self) -> list[tuple[str, str, Any, str]]:
        """``(setting, environment variable, value in effect, help)`` for every setting."""
        return [(f.name, env_name(f.name), getattr(self, f.name), f.metadata["help"]) for f in dataclasses.fields(self)]


#: Dask's environment variable naming a running scheduler (the default ``--scheduler`` unless
#: ``BSIG_SCHEDULER`` is set).
DASK_SCHEDULER_ADDRESS = "DASK_SCHEDULER_ADDRESS"


def env_name(setting: str) -> str:
    """Environment variable that overrides ``setting``: ``BSIG_`` + the name in upper case."""
    return "BSIG_" + setting.upper()


def progress_enabled(setting: str, is_terminal: bool) -> bool:
    """Whether to draw progress bars for the ``progress`` setting (``auto``: when stderr is a terminal)."""
    if setting.strip().lower() == "auto":
        return is_terminal
    try:
        return _flag(setting)
    except ValueError:
        raise OptionError(f"BSIG_PROGRESS={setting!r} is not auto, 1 or 0; unset it or give BSIG_PROGRESS=0") from None


#: The defaults in effect for this process.
DEFAULTS = Defaults.from_env()
