"""``bsig performance``: import lm-eval results, show or convert a performance matrix."""

from __future__ import annotations

import click
import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

from bsig_array.io.lm_eval_results import import_lm_eval, parse_metric_overrides
from bsig_array.io.scores import (
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


@performance.command("import-lm-eval")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=True), help="Output .csv, .nc or .zarr.")
@click.option("--metric", "metrics", multiple=True, metavar="TASK=METRIC", help="Metric of a task, e.g. gsm8k=exact_match,flexible-extract (repeatable).")
@click.option("--model-name-from", type=click.Choice(["model_name", "dir"]), default="model_name", show_default=True,
              help="Model name from the results' model_name/model_args, or from the results folder name.")
@click.option("--include", multiple=True, metavar="GLOB", help="Keep only tasks matching these globs (repeatable).")
@click.option("--task-names", type=click.Choice(["benchmark", "raw"]), default="benchmark", show_default=True,
              help="Map lm-eval task names onto the paper's benchmark names (mmlu_anatomy -> anatomy), or keep them.")
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV [default: shipped table].")
def import_lm_eval_cmd(
    paths: tuple[str, ...],
    out: str,
    metrics: tuple[str, ...],
    model_name_from: str,
    include: tuple[str, ...],
    task_names: str,
    metadata: str | None,
) -> None:
    """Read lm-eval results_*.json files under PATHS (recursively) into a performance matrix.

    Default metric per task: acc_norm,none, then acc,none, then exact_match,strict-match / any
    exact_match, then the first numeric metric; the newest results file wins for a (model, task).
    """
    score = import_lm_eval(
        paths,
        metrics=parse_metric_overrides(metrics),
        model_name_from=model_name_from,
        include=list(include) or None,
        task_names=task_names,
        metadata=metadata,
    )
    write_performance(score, out)
    click.echo(f"wrote {out}: {_summary(score)}")


@performance.command("show")
@click.argument("path", type=click.Path(exists=True))
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV.")
@click.option("--store", type=click.Path(exists=True, file_okay=False), default=None,
              help="Also check the models against this perplexity store.")
def show(path: str, metadata: str | None, store: str | None) -> None:
    """Print a performance matrix's benchmarks with metadata and score range, and check it."""
    score = load_performance(path, metadata=metadata)
    table = Table(title=f"{path}: {_summary(score)}")
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
    if store is not None:
        from bsig_array.io.perplexity_store.reader import open_store

        align_performance(score, open_store(store, require_complete=False))
        click.echo(f"ok: models match {store}; scores are complete and every benchmark varies")
    else:
        check_scores(score)
        click.echo("ok: scores are complete and every benchmark varies")


@performance.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False), default=None, help="Benchmark metadata CSV.")
def convert(src: str, dst: str, metadata: str | None) -> None:
    """Convert a performance matrix between CSV/Parquet/NetCDF/Zarr (NetCDF/Zarr keep the metadata)."""
    score = load_performance(src, metadata=metadata)
    write_performance(score, dst)
    click.echo(f"wrote {dst}: {_summary(score)}")
