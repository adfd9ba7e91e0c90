"""``bsig stats``: within/cross-category, family/format, function matrix and maximum clique."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from bsig_array.cli.storage import Where
from bsig_array.errors import InputError
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import LEVELS, STATS_TABLES

if TYPE_CHECKING:
    import pandas as pd


@click.command()
@click.option("--overlap", "overlap_path", required=True, type=Where(), help="overlap file from bsig overlap")
@click.option("--metadata", type=Where(), default=None,
              help="benchmark metadata CSV (benchmark,family,format,category,function); default: the overlap's own")
@click.option("--level", "levels", multiple=True, type=click.Choice(LEVELS),
              help="overlap level(s) to analyse (repeatable; default: every level the overlap file holds)")
@click.option("--threshold", type=float, default=DEFAULTS.threshold, show_default=True, help="edge threshold of the clique graph")
@click.option("--permutations", "--bootstrap", "resamples", type=int, default=DEFAULTS.resamples, show_default=True,
              help="benchmark-label permutations of the tests (all of them, exactly, when n! is not larger)")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--out", required=True, type=Where(), help="directory for the CSV tables")
@click.option("--overwrite", is_flag=True, help="Replace the stats tables already in --out (the folder is replaced as one unit).")
def stats(overlap_path, metadata, levels, threshold, resamples, seed, out, overwrite):
    """Statistics of the overlap matrices (paper Table 5, Figure 5, Figure 1, max clique)."""
    from bsig_array.io.atomic import check_output_files
    from bsig_array.io.location import as_location
    from bsig_array.io.overlap_file import load_overlap, present_levels
    from bsig_array.io.provenance import derived_record
    from bsig_array.io.stats_tables import stats_table_names, write_stats_folder
    from bsig_array.stages.stats import compute_stats

    check_output_files(out, [f"{level}_{t}.csv" for level in levels for t in STATS_TABLES], overwrite=overwrite,
                       what="stats table", inputs=[overlap_path, metadata])
    overlap = load_overlap(overlap_path)
    console = Console()
    chosen = list(dict.fromkeys(levels or present_levels(overlap)))
    if not levels:  # the file's levels: their tables are known once it is read
        check_output_files(out, [f"{level}_{t}.csv" for level in chosen for t in STATS_TABLES], overwrite=overwrite,
                           what="stats table", inputs=[overlap_path, metadata])
    # A stats folder is one run (one provenance.json): tables of other levels would not belong to it.
    others = sorted(n for n in stats_table_names(out) if not any(n == f"{lv}_{t}.csv" for lv in chosen for t in STATS_TABLES))
    if others:
        raise InputError(
            f"stats folder {as_location(out)} holds tables this run does not write ({', '.join(others[:4])}"
            f"{', …' if len(others) > 4 else ''}); a stats folder holds one run: pass --level for each of their levels, "
            "remove them, or pick another --out")
    # Every level computed before anything is written, then the folder is replaced as one unit.
    results = {level: compute_stats(overlap, metadata, level=level, threshold=threshold, resamples=resamples, seed=seed)
               for level in chosen}
    options = {"levels": chosen, "threshold": threshold, "resamples": resamples, "seed": seed}
    write_stats_folder(results, out, derived_record("stats", {"overlap": overlap}, {"overlap": overlap_path, "metadata": metadata},
                                                    options=options))
    for level, tables in results.items():
        print_stats(tables, level, console)
    click.echo(f"wrote tables to {as_location(out)}")  # a URL without credentials


def print_stats(tables: dict[str, pd.DataFrame], level: str, console: Console | None = None) -> None:
    """Print the tables with rich."""
    console = console or Console()
    titles = {
        "within_cross": "within- vs cross-category overlap",
        "family_format": "same vs different family / format (p_value: benchmark-label permutations; "
                         "U_paper, p_paper: the paper's Mann–Whitney U, which treats pairs as independent)",
        "function_matrix": "mean overlap between functions",
        "clique": "maximum clique",
    }
    for key, frame in tables.items():
        title = f"{level}: {titles.get(key, key)}"
        if key == "clique":
            n = int(frame["n_cliques"].iloc[0]) if len(frame) else 0
            title += f" (overlap > {frame.attrs.get('threshold', '?')}: {n} maximum clique{'s' * (n != 1)}"
            title += f" of {int(frame['size'].iloc[0])})" if n else ", no pair above it)"
        elif "n_pairs_excluded" in frame.columns and len(frame) and frame["n_pairs_excluded"].max() > 0:
            title += f" ({int(frame['n_pairs_excluded'].max())} pairs with an unknown label left out)"
        if "reason" in frame.attrs:
            title += f" (skipped: {frame.attrs['reason']})"
        if "note" in frame.columns:  # "not testable: …" rows: said in the title, not in a narrow column
            notes = [f"{idx}: {note}" for idx, note in frame["note"].items() if isinstance(note, str) and note]
            if notes:
                title += " (" + "; ".join(notes) + ")"
            frame = frame.drop(columns="note")
        table = Table(title=title)
        table.add_column(frame.index.name or "")
        for col in frame.columns:
            table.add_column(str(col), justify="right")
        for idx, row in frame.iterrows():
            table.add_row(str(idx), *[("n/a" if col == "diff_pct" and not np.isfinite(v) else _fmt(v)) for col, v in row.items()])
        console.print(table)


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)
