"""``bsig stats``: within/cross-category, family/format, function matrix and maximum clique."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import LEVELS

if TYPE_CHECKING:
    import pandas as pd


@click.command()
@click.option("--overlap", "overlap_path", required=True, type=click.Path(), help="overlap file from bsig overlap")
@click.option("--metadata", type=click.Path(), default=None,
              help="benchmark metadata CSV (benchmark,family,format,category,function); default: the overlap's own")
@click.option("--level", "levels", multiple=True, type=click.Choice(LEVELS),
              default=("signature",), show_default=True, help="overlap level(s) to analyse (repeatable)")
@click.option("--threshold", type=float, default=DEFAULTS.threshold, show_default=True, help="edge threshold of the clique graph")
@click.option("--bootstrap", "resamples", type=int, default=DEFAULTS.resamples, show_default=True, help="null resamples (relabelings)")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="directory for the CSV tables")
def stats(overlap_path, metadata, levels, threshold, resamples, seed, out):
    """Statistics of the overlap matrices (paper Table 5, Figure 5, Figure 1, max clique)."""
    from bsig_array.io.overlap_file import load_overlap
    from bsig_array.io.stats_tables import write_stats
    from bsig_array.stages.stats import compute_stats

    overlap = load_overlap(overlap_path)
    console = Console()
    for level in dict.fromkeys(levels):
        tables = compute_stats(overlap, metadata, level=level, threshold=threshold, resamples=resamples, seed=seed)
        write_stats(tables, out, level)
        print_stats(tables, level, console)
    click.echo(f"wrote tables to {out}")


def print_stats(tables: dict[str, pd.DataFrame], level: str, console: Console | None = None) -> None:
    """Print the tables with rich."""
    console = console or Console()
    titles = {
        "within_cross": "within- vs cross-category overlap",
        "family_format": "same vs different family / format (Mann–Whitney U)",
        "function_matrix": "mean overlap between functions",
        "clique": "maximum clique",
    }
    for key, frame in tables.items():
        title = f"{level}: {titles.get(key, key)}"
        if key == "clique":
            title += f" (overlap > {frame.attrs.get('threshold', '?')}, {len(frame)} benchmarks)"
        table = Table(title=title)
        table.add_column(frame.index.name or "")
        for col in frame.columns:
            table.add_column(str(col), justify="right")
        for idx, row in frame.iterrows():
            table.add_row(str(idx), *[_fmt(v) for v in row])
        console.print(table)


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)
