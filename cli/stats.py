"""``bsig stats``: within/cross-category, family/format, function matrix and maximum clique."""

from __future__ import annotations

import click


@click.command()
@click.option("--overlap", "overlap_path", required=True, type=click.Path(), help="overlap file from bsig overlap")
@click.option("--metadata", type=click.Path(), default=None,
              help="benchmark metadata CSV (benchmark,family,format,category,function); default: the overlap's own")
@click.option("--level", "levels", multiple=True, type=click.Choice(["signature", "performance", "semantic"]),
              default=("signature",), show_default=True, help="overlap level(s) to analyse (repeatable)")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="edge threshold of the clique graph")
@click.option("--bootstrap", "resamples", type=int, default=10_000, show_default=True, help="null resamples (relabelings)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="directory for the CSV tables")
def stats(overlap_path, metadata, levels, threshold, resamples, seed, out):
    """Statistics of the overlap matrices (paper Table 5, Figure 5, Figure 1, max clique)."""
    from rich.console import Console

    from bsig_array.overlap import load_overlap
    from bsig_array.stats import compute_stats, print_stats, write_stats

    overlap = load_overlap(overlap_path)
    console = Console()
    for level in dict.fromkeys(levels):
        tables = compute_stats(overlap, metadata, level=level, threshold=threshold, resamples=resamples, seed=seed)
        write_stats(tables, out, level)
        print_stats(tables, level, console)
    click.echo(f"wrote tables to {out}")
