"""``bsig defaults``: the table of defaults in effect, with the ``BSIG_*`` variable that overrides each."""

from __future__ import annotations

import click


@click.command("defaults")
def defaults() -> None:
    """List every default (as in effect now) and the environment variable that overrides it."""
    from rich.console import Console
    from rich.table import Table

    from bsig_array.runtime.defaults import DEFAULTS

    table = Table(title="bsig defaults (override with the environment variable; an explicit option still wins)")
    for column in ("setting", "environment variable", "value", "meaning"):
        table.add_column(column)
    for name, var, value, meaning in DEFAULTS.rows():
        table.add_row(name, var, str(value), meaning)
    Console().print(table)
