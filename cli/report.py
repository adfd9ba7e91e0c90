"""``bsig report``: PNG figures and one self-contained HTML page."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", required=True, type=click.Path(), help="output directory (figures/ and report.html)")
@click.option("--overlap", "overlap_path", type=click.Path(), default=None, help="overlap file from bsig overlap")
@click.option("--screen", "screen_path", type=click.Path(), default=None, help="screen.zarr from bsig screen")
@click.option("--signatures", "signatures_path", type=click.Path(), default=None, help="signatures.zarr from bsig select")
@click.option("--stats", "stats_dir", type=click.Path(), default=None,
              help="tables from bsig stats (default: computed here from --overlap)")
@click.option("--corpus", "corpus_path", type=click.Path(), default=None, help="corpus.zarr, to show signature contexts")
@click.option("--metadata", type=click.Path(), default=None, help="benchmark metadata CSV when stats are computed here")
@click.option("--title", default="bsig report", show_default=True)
def report(out, overlap_path, screen_path, signatures_path, stats_dir, corpus_path, metadata, title):
    """Figures (heatmaps, coefficient distributions, within/cross bars, function matrix) and report.html."""
    from bsig_array.stages.report import load_inputs, write_report

    inputs = load_inputs(overlap=overlap_path, screen=screen_path, signatures=signatures_path, stats=stats_dir,
                         corpus=corpus_path, metadata=metadata)
    path = write_report(out, title=title, **inputs)
    click.echo(f"report: {path}")
