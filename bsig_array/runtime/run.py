"""The settings of one run, parsed once where they enter: :class:`RunSpec`.

A command (or a pipeline, or a library caller) builds one ``RunSpec`` from its options, the
``BSIG_*`` variables and the defaults table (:mod:`bsig_array.runtime.defaults`), and hands it to the
stages it runs.  Below that boundary nothing parses or defaults these settings again: the memory limit
is bytes, the worker bound an int or None, the scheduler checked, the seed in range.  Everything a
stage needs beyond them (alpha, ties, coefficients, ...) is an argument of that stage.

``workers`` means the same everywhere: an upper bound on concurrent tasks *before* planning; each
stage's memory plan may lower it to fit ``memory_limit``, never raise it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bsig_array.runtime.defaults import DEFAULTS, Defaults, check_setting
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.runtime.tasks import check_scheduler, describe_scheduler

#: Option names of the settings, as the CLI spells them (messages name what the user typed).
OPTION_NAMES = {
    "memory_limit": "--memory-limit", "workers": "--workers", "scheduler": "--scheduler", "device": "--device",
    "spill_dir": "BSIG_SPILL_DIR", "seed": "--seed",
}


def _checked(key: str, value: Any, source: str) -> Any:
    """A given setting through the table's validator; a scheduler may also be a ``distributed.Client``."""
    if key == "scheduler" and not isinstance(value, str):  # a Client handed in by a library caller
        check_scheduler(value)
        return value
    return check_setting(key, value, source=source)


@dataclass(frozen=True)
class RunSpec:
    """How and where one run executes; built once at the boundary by :meth:`build`.

    Attributes
    ----------
    memory_limit : int
        Peak-memory promise in bytes.
    workers : int or None
        Upper bound on concurrent tasks before planning (None: the CPU count, or the cluster's threads).
    scheduler : str or distributed.Client
        ``threads``, ``processes``, ``synchronous``, a dask.distributed address, or a Client (library use).
    device : str
        ``auto``, ``cpu`` or ``gpu``, as asked (resolved against the hardware by the stage that runs kernels).
    spill_dir : str or None
        Directory of the screen's spill (None: next to a local output, else TMPDIR).
    seed : int
        Seed of every random draw of the run.
    progress : Progress
        Receives the run's progress bars (:mod:`bsig_array.runtime.progress`).
    """

    memory_limit: int
    workers: int | None
    scheduler: Any
    device: str
    spill_dir: str | None
    seed: int
    progress: Progress = no_progress

    @classmethod
    def build(
        cls,
        *,
        memory_limit: str | int | None = None,
        workers: int | str | None = None,
        scheduler: Any = None,
        device: str | None = None,
        spill_dir: str | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
        defaults: Defaults = DEFAULTS,
        names: dict[str, str] | None = None,
    ) -> RunSpec:
        """The run's settings: each given value checked, each missing one from ``defaults``.

        Parameters
        ----------
        memory_limit, workers, scheduler, device, spill_dir, seed
            As given by the user (``"2GiB"``, ``4``, ``"tcp://host:8786"`` ...); None takes the
            default in effect (the table with its ``BSIG_*`` overrides, already checked).
        progress
            The progress sink of the run (default: none).
        defaults
            The table to take missing values from.
        names
            Setting -> the name the user gave it under, for messages (default :data:`OPTION_NAMES`).

        Raises
        ------
        OptionError
            One line naming the option and the value that is not valid.
        """
        names = {**OPTION_NAMES, **(names or {})}
        given = dict(memory_limit=memory_limit, workers=workers, scheduler=scheduler, device=device,
                     spill_dir=spill_dir, seed=seed)
        values = {key: getattr(defaults, key) if value is None else _checked(key, value, names[key])
                  for key, value in given.items()}
        values["spill_dir"] = values["spill_dir"] or None
        return cls(**values, progress=progress or no_progress)

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with some settings changed, each checked as :meth:`build` checks it."""
        return dataclasses.replace(self, **{key: value if key == "progress" else _checked(key, value, OPTION_NAMES[key])
                                            for key, value in changes.items()})

    def record(self) -> dict[str, Any]:
        """The settings as recorded in an output's provenance (bytes, not text; no progress sink)."""
        return dict(memory_limit=int(self.memory_limit), workers=self.workers, device=self.device,
                    scheduler=describe_scheduler(self.scheduler), seed=int(self.seed))
