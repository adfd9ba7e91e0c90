"""``bsig report``: PNG figures and one self-contained HTML page."""

from __future__ import annotations

import click

from bsig_array.cli.storage import Where


@click.command()
@click.option("--out", required=True, type=Where(), help="output directory (figures/ and report.html)")
@click.option("--overlap", "overlap_path", type=Where(), default=None, help="overlap file from bsig overlap")
@click.option("--screen", "screen_path", type=Where(), default=None, help="screen.zarr from bsig screen (coefficient distributions, each token's tail, null FDR)")
@click.option("--signatures", "signatures_path", type=Where(), default=None, help="signatures.zarr from bsig select")
@click.option("--stats", "stats_dir", type=Where(), default=None,
              help="tables from bsig stats (default: computed here from --overlap)")
@click.option("--corpus", "corpus_path", type=Where(), default=None, help="corpus.zarr, to show each signature token's context and target")
@click.option("--metadata", type=Where(), default=None, help="benchmark metadata CSV when stats are computed here")
@click.option("--title", default="bsig report", show_default=True)
@click.option("--allow-mismatch", is_flag=True,
              help="combine outputs made from different performance matrices or stores (warns instead of refusing)")
@click.option("--overwrite", is_flag=True, help="Replace report.html and figures/ already in --out.")
def report(out, overlap_path, screen_path, signatures_path, stats_dir, corpus_path, metadata, title, allow_mismatch,
           overwrite):
    """Figures (one heatmap per overlap level present, coefficient distributions, within/cross bars, function
    matrix), a signature table with warnings, and report.html."""
    from bsig_array.io.atomic import atomic_entries, check_output_files
    from bsig_array.io.location import as_location
    from bsig_array.io.provenance import derived_record, write_record_file
    from bsig_array.io.stats_tables import table_files
    from bsig_array.stages.report import load_inputs, write_report

    # --stats may be --out itself (report.html beside the tables): its tables are the inputs.
    tables = table_files(stats_dir) or [stats_dir]
    check_output_files(out, ["report.html", "figures"], overwrite=overwrite, what="report",
                       inputs=[overlap_path, screen_path, signatures_path, corpus_path, metadata, *tables])
    inputs = load_inputs(overlap=overlap_path, screen=screen_path, signatures=signatures_path, stats=stats_dir,
                         corpus=corpus_path, metadata=metadata, allow_mismatch=allow_mismatch)
    # Page and figures are made aside and swapped in (uploaded, on an object store) when complete:
    # a failure keeps the old report.
    target = as_location(out)
    with atomic_entries(target, ["report.html", "figures"]) as scratch:
        path = target.child(*write_report(scratch, title=title, **inputs).relative_to(scratch).parts)
    sources = {"overlap": overlap_path, "screen": screen_path, "signatures": signatures_path, "stats": stats_dir,
               "corpus": corpus_path, "metadata": metadata}
    write_record_file(target, derived_record("report", inputs, sources, options={"title": title}))
    click.echo(f"report: {path}")
