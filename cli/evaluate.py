"""``bsig evaluate``: lm-eval scores of one local model -> its row of the performance CSV."""

from __future__ import annotations

from pathlib import Path

import click

from bsig_array.cli.storage import Where


@click.command("evaluate")
@click.option("--model", required=True, help="Local folder, .gguf file, alias (smollm2-135m, gemma3-270m) or zoo name.")
@click.option("--name", default=None, help="Model name in the CSV (default: from --model; match the store's name).")
@click.option("--tasks", required=True, help="Comma-separated lm-eval task names.")
@click.option("--include-path", multiple=True, type=Where(exists=True, file_okay=False),
              help="Folder(s) with task YAMLs (default: the shipped bsig_* tasks).")
@click.option("--out", required=True, type=Where(dir_okay=False), help="Performance CSV to create or update.")
@click.option("--gguf-file", default=None, help="GGUF file inside the --model folder.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N items of each task.")
@click.option("--metric", default="acc", show_default=True, help="lm-eval metric to record.")
@click.option("--trust-remote-code", is_flag=True,
              help="Run Python code shipped inside the model folder (auto_map); only for code you trust.")
@click.option("--overwrite", is_flag=True, help="Replace the model's row if --out already has one.")
def evaluate(model: str, name: str | None, tasks: str, include_path: tuple[str, ...], out: str, gguf_file: str | None,
             batch_size: int, device: str, limit: int | None, metric: str, trust_remote_code: bool,
             overwrite: bool) -> None:
    """Run lm-eval (Python API) on local task YAMLs and add the model's row to the performance CSV.

    Relative data_files paths in a task YAML are resolved against the YAML's folder.
    """
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.kinds import FILE
    from bsig_array.io.location import as_location
    from bsig_array.io.scores import check_model_row
    from bsig_array.options import check_model_name
    from bsig_array.stages.evaluate import TASKS_DIR, evaluate_model, update_performance
    from bsig_array.stages.perplexity import default_model_name

    row = check_model_name(name or default_model_name(model))  # before the model runs
    # Before the work: --out is a CSV that gets this row (other rows stay), never one of the inputs.
    check_new_output(out, overwrite=True, what="performance CSV", kind=FILE,
                     inputs=[model if Path(model).exists() else None, *include_path])
    check_model_row(out, row, overwrite=overwrite)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    scores = evaluate_model(model, names, include_path=include_path or (TASKS_DIR,), gguf_file=gguf_file,
                            batch_size=batch_size, device=device, limit=limit, metric=metric,
                            trust_remote_code=trust_remote_code)
    table = update_performance(out, row, scores)
    shown = ", ".join(f"{t}={v:.3f}" for t, v in scores.items())
    click.echo(f"{as_location(out)}: {row}: {shown} ({len(table)} models)")  # a URL without credentials
