"""The options every running command shares, and the one place they become a :class:`RunSpec`.

``--memory-limit``, ``--workers``, ``--scheduler``, ``--device`` and ``--seed`` mean the same on every
command that has them; their defaults are the table's (:mod:`bsig_array.runtime.defaults`, with the
``BSIG_*`` overrides), shown in ``--help`` but not filled in by click, so :meth:`RunSpec.build` sees
exactly what the user typed and checks it once.  ``--coefficients`` is the one name of the screening
coefficients; the old spellings (``--method``, ``--methods``, ``--screen-method``) still work for one
release, hidden, with a deprecation line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from bsig_array.runtime.defaults import DEFAULTS, shown
from bsig_array.runtime.run import RunSpec
from bsig_array.schema import DEVICES

F = TypeVar("F", bound=Callable[..., Any])

#: Help of each shared option (a command may word one differently).
HELP = {
    "memory_limit": "Peak memory promise, e.g. 2GiB; sets block sizes and concurrency, refuses a plan that cannot fit.",
    "workers": "At most this many tasks at once (default: CPU count, lowered to fit --memory-limit).",
    "scheduler": "threads, processes, synchronous, or a dask.distributed address (tcp://host:port).",
    "device": "gpu: CUDA kernels (needs CuPy and a CUDA GPU); auto: gpu when available.",
    "seed": "Seed of the run's random draws.",
}


def run_options(*names: str, help: dict[str, str] | None = None, memory_default: str = "memory_limit") -> Callable[[F], F]:
    """Add the shared options ``names`` (of :data:`HELP`) to a command; their values stay None unless given.

    ``memory_default`` names the table entry shown as ``--memory-limit``'s default (``demo_memory_limit``
    for ``bsig demo``).
    """
    texts = {**HELP, **(help or {})}
    options = {
        "memory_limit": lambda: click.option(
            "--memory-limit", default=None, help=texts["memory_limit"],
            show_default=shown(memory_default, getattr(DEFAULTS, memory_default))),
        "workers": lambda: click.option("--workers", type=int, default=None, help=texts["workers"]),
        "scheduler": lambda: click.option("--scheduler", default=None, show_default=str(DEFAULTS.scheduler),
                                          help=texts["scheduler"]),
        "device": lambda: click.option("--device", type=click.Choice(DEVICES), default=None,
                                       show_default=DEFAULTS.device, help=texts["device"]),
        "seed": lambda: click.option("--seed", type=int, default=None, show_default=str(DEFAULTS.seed),
                                     help=texts["seed"]),
    }

    def decorate(command: F) -> F:
        for name in reversed(names):
            command = options[name]()(command)
        return command

    return decorate


def build_run(*, bars: bool = True, **given: Any) -> RunSpec:
    """The command's :class:`RunSpec` from the options it was given (None: the default in effect).

    ``bars``: draw the run's progress on stderr (:mod:`bsig_array.cli.progress`, per ``BSIG_PROGRESS``).
    """
    from bsig_array.cli.progress import rich_progress

    return RunSpec.build(**given, progress=rich_progress if bars else None)


def coefficients_option(old: str, choices: tuple[str, ...], default: str, help: str) -> Callable[[F], F]:
    """``--coefficients`` plus the command's old spelling ``old`` as a hidden, deprecated alias.

    The command receives ``coefficients`` only; giving both spellings with different values is an error.
    """

    def merge(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            click.echo(f"bsig: warning: {old} is deprecated and will be removed in the next release; "
                       "use --coefficients", err=True)
            earlier = ctx.params.get("coefficients")
            if earlier not in (None, value):
                raise click.UsageError(f"give --coefficients or {old}, not both")
            ctx.params["coefficients"] = value
        return None

    def fill(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        earlier = ctx.params.get("coefficients")
        if value is not None and earlier not in (None, value):
            raise click.UsageError(f"give --coefficients or {old}, not both")
        if value is not None:
            return value
        return earlier if earlier is not None else default

    def decorate(command: F) -> F:
        command = click.option(old, "deprecated_coefficients", type=click.Choice(choices), default=None, hidden=True,
                               expose_value=False, callback=merge, is_eager=False)(command)
        command = click.option("--coefficients", type=click.Choice(choices), default=None, show_default=default,
                               callback=fill, help=help)(command)
        return command

    return decorate
