"""``bsig performance``: import a leaderboard table or lm-eval results, show or convert a performance matrix."""

from __future__ import annotations

import contextlib
import warnings as warnings_module

import click
import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

from bsig_array.cli.storage import Where
from bsig_array.errors import BsigWarning
from bsig_array.io.atomic import check_new_output
from bsig_array.io.leaderboard import (
    DUPLICATE_RULES,
    MISSING_RULES,
    SCALES,
    check_import_output,
    import_leaderboard,
    performance_warnings,
)
from bsig_array.io.lm_eval_results import import_lm_eval, parse_metric_overrides
from bsig_array.io.location import as_location, local_copy
from bsig_array.io.provenance import make_record, performance_fingerprint, record_attrs
from bsig_array.io.scores import (
    PERFORMANCE,
    align_performance,
    check_scores,
    load_performance,
    write_performance,
)
from bsig_array.schema import METADATA_COLUMNS


@click.group("performance")
def performance() -> None:
    """Performance matrices score(model, benchmark): import, inspect, convert."""


def _summary(score: xr.DataArray) -> str:
    missing = int(np.isnan(score.values).sum())
    text = f"{score.sizes['model']} models x {score.sizes['benchmark']} benchmarks"
    return text + (f", {missing} missing scores" if missing else "")


def _provenance(artifact: str, score: xr.DataArray, inputs: dict, options: dict) -> dict[str, str]:
    """Attributes holding the output's provenance record (kept by NetCDF/Zarr outputs, not by CSV)."""
    return record_attrs(make_record(artifact, inputs=inputs, fingerprints={"performance": performance_fingerprint(score)},
                                    options=options))


def _warn(lines: list[str]) -> None:
    for line in lines:  # the same one-line form as every other warning (cli/main.py)
        click.echo(f"bsig: warning: {line}", err=True)


@performance.command("import")
@click.argument("path", type=Where(exists=True))
@click.option("--out", required=True, type=Where(dir_okay=True), help="Output .csv, .nc or .zarr.")
@click.option("--model-column", default=None, help="Column naming the models [default: model, model_name, fullname, name, ...].")
@click.option("--columns", multiple=True, metavar="GLOB[,GLOB]",
              help="Score columns, names or globs (repeatable) [default: numeric columns except Rank, Average, #Params, ...].")
@click.option("--scale", type=click.Choice(list(SCALES)), default="auto", show_default=True,
              help="auto: a column with values in (1, 100] is percent and divided by 100; percent: divide all; fraction: keep.")
@click.option("--duplicates", type=click.Choice(list(DUPLICATE_RULES)), default="newest", show_default=True,
              help="Several rows of one model: keep the newest (by --date-column, else the last row), mean, max, first, or refuse.")
@click.option("--date-column", default=None, help="Date of each run, for --duplicates newest [default: date, submission_date, ...].")
@click.option("--missing", type=click.Choice(list(MISSING_RULES)), default="refuse", show_default=True,
              help="Missing scores: refuse, drop the models that lack one, or drop the benchmarks that lack one.")
@click.option("--task-names", type=click.Choice(["benchmark", "raw"]), default="benchmark", show_default=True,
              help="Map column/task names onto the metadata's benchmark names, or keep them.")
@click.option("--metric", "metrics", multiple=True, metavar="TASK=METRIC", help="lm-eval results only: metric of a task (repeatable).")
@click.option("--metadata", type=Where(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV [default: shipped table].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def import_cmd(
    path: str,
    out: str,
    model_column: str | None,
    columns: tuple[str, ...],
    scale: str,
    duplicates: str,
    date_column: str | None,
    missing: str,
    task_names: str,
    metrics: tuple[str, ...],
    metadata: str | None,
    overwrite: bool,
) -> None:
    """Import a leaderboard table (CSV/TSV/Parquet/JSON) or lm-eval results (0.3 or 0.4) at PATH.

    Every choice the import makes (model column, ignored columns, renamed benchmarks, percent
    scale, duplicate runs, missing scores) is printed; problems the matrix still has are warned.
    """
    check_import_output(path, out, overwrite=overwrite, metadata=metadata)
    with local_copy(path) as here, local_copy(metadata) as meta:  # URLs: read from a temporary copy
        assert here is not None  # a path was given
        result = import_leaderboard(
            here,
            model_column=model_column,
            columns=list(columns) or None,
            scale=scale,
            duplicates=duplicates,
            date_column=date_column,
            missing=missing,
            task_names=task_names,
            metadata=meta,
            metrics=parse_metric_overrides(metrics),
        )
        warned = performance_warnings(result.score, meta)
    for note in result.notes:
        click.echo(note)
    options = dict(model_column=model_column, columns=list(columns), scale=scale, duplicates=duplicates,
                   date_column=date_column, missing=missing, task_names=task_names, metrics=list(metrics))
    write_performance(result.score, out,
                      attrs=_provenance("performance import", result.score, {"table": path, "metadata": metadata}, options))
    click.echo(f"wrote {as_location(out)}: {_summary(result.score)}")
    _warn(warned)


@performance.command("import-lm-eval")
@click.argument("paths", nargs=-1, required=True, type=Where(exists=True))
@click.option("--out", required=True, type=Where(dir_okay=True), help="Output .csv, .nc or .zarr.")
@click.option("--metric", "metrics", multiple=True, metavar="TASK=METRIC", help="Metric of a task, e.g. gsm8k=exact_match,flexible-extract (repeatable).")
@click.option("--model-name-from", type=click.Choice(["model_name", "dir"]), default="model_name", show_default=True,
              help="Model name from the results' model_name/model_args, or from the results folder name.")
@click.option("--include", multiple=True, metavar="GLOB", help="Keep only tasks matching these globs (repeatable).")
@click.option("--task-names", type=click.Choice(["benchmark", "raw"]), default="benchmark", show_default=True,
              help="Map lm-eval task names onto the paper's benchmark names (mmlu_anatomy -> anatomy), or keep them.")
@click.option("--metadata", type=Where(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV [default: shipped table].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def import_lm_eval_cmd(
    paths: tuple[str, ...],
    out: str,
    metrics: tuple[str, ...],
    model_name_from: str,
    include: tuple[str, ...],
    task_names: str,
    metadata: str | None,
    overwrite: bool,
) -> None:
    """Read lm-eval results*.json files (0.3 or 0.4 layout) under PATHS (recursively) into a performance matrix.

    Default metric per task: acc_norm,none (0.3: acc_norm), then acc,none (acc), then mc2, then
    exact_match,strict-match / any exact_match, then the first numeric metric; the newest results
    file wins for a (model, task).
    """
    check_new_output(out, overwrite=overwrite, what="performance output", kind=PERFORMANCE, inputs=[*paths, metadata])
    with contextlib.ExitStack() as stack:  # URLs: read from temporary copies
        here = [str(stack.enter_context(local_copy(p))) for p in paths]
        score = import_lm_eval(
            here,
            metrics=parse_metric_overrides(metrics),
            model_name_from=model_name_from,
            include=list(include) or None,
            task_names=task_names,
            metadata=stack.enter_context(local_copy(metadata)),
        )
    options = dict(metrics=list(metrics), model_name_from=model_name_from, include=list(include), task_names=task_names)
    sources = {f"results:{i}": p for i, p in enumerate(paths)} | {"metadata": metadata}
    write_performance(score, out, attrs=_provenance("performance import-lm-eval", score, sources, options))
    click.echo(f"wrote {as_location(out)}: {_summary(score)}")


@performance.command("show")
@click.argument("path", type=Where(exists=True))
@click.option("--metadata", type=Where(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV.")
@click.option("--store", type=Where(exists=True, file_okay=False), default=None,
              help="Also check the models against this perplexity store.")
def show(path: str, metadata: str | None, store: str | None) -> None:
    """Print a performance matrix's benchmarks with metadata and score range, check it, and warn.

    Warnings (one line each, on stderr): benchmarks without metadata, zero or below-chance scores,
    duplicated benchmarks or models, scores that look like percent.
    """
    with local_copy(metadata) as meta:
        score = load_performance(path, metadata=meta)
        warnings = performance_warnings(score, meta)
    table = Table(title=f"{as_location(path)}: {_summary(score)}")
    for heading in ("benchmark", *METADATA_COLUMNS, "min", "max", "distinct"):
        table.add_column(heading, justify="right" if heading in ("min", "max", "distinct") else "left")
    for j, name in enumerate(score["benchmark"].values):
        col = score.values[:, j]
        table.add_row(
            str(name),
            *(str(score[c].values[j]) for c in METADATA_COLUMNS),
            f"{np.nanmin(col):.4g}" if np.isfinite(col).any() else "-",
            f"{np.nanmax(col):.4g}" if np.isfinite(col).any() else "-",
            str(len(np.unique(col[np.isfinite(col)]))),
        )
    Console().print(table)
    with warnings_module.catch_warnings():  # the range warning is one of `warnings` already, said once below
        warnings_module.simplefilter("ignore", BsigWarning)
        if store is not None:
            from bsig_array.io.perplexity_store.reader import open_store

            align_performance(score, open_store(store, require_complete=False))
            checked = f"models match {store}; scores are complete and every benchmark varies"
        else:
            check_scores(score)
            checked = "scores are complete and every benchmark varies"
    _warn(warnings)
    count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
    click.echo(f"{count} (see above); {checked}" if warnings else f"ok: {checked}")


@performance.command("convert")
@click.argument("src", type=Where(exists=True))
@click.argument("dst", type=Where())
@click.option("--metadata", type=Where(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV.")
@click.option("--overwrite", is_flag=True, help="Replace an existing DST.")
def convert(src: str, dst: str, metadata: str | None, overwrite: bool) -> None:
    """Convert a performance matrix between CSV/Parquet/NetCDF/Zarr (NetCDF/Zarr keep the metadata)."""
    check_new_output(dst, overwrite=overwrite, what="performance output", kind=PERFORMANCE, inputs=[src, metadata])
    with local_copy(metadata) as meta:
        score = load_performance(src, metadata=meta)
    write_performance(score, dst, attrs=_provenance("performance convert", score, {"source": src, "metadata": metadata}, {}))
    click.echo(f"wrote {as_location(dst)}: {_summary(score)}")
