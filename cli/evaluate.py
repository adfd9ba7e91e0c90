"""``bsig evaluate``: lm-eval scores of one local model -> its row of the performance CSV."""

from __future__ import annotations

import click


@click.command("evaluate")
@click.option("--model", required=True, help="Local folder, .gguf file, alias (smollm2-135m, gemma3-270m) or zoo name.")
@click.option("--name", default=None, help="Model name in the CSV (default: from --model; match the store's name).")
@click.option("--tasks", required=True, help="Comma-separated lm-eval task names.")
@click.option("--include-path", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder(s) with task YAMLs (default: the shipped bsig_* tasks).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Performance CSV to create or update.")
@click.option("--gguf-file", default=None, help="GGUF file inside the --model folder.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N items of each task.")
@click.option("--metric", default="acc", show_default=True, help="lm-eval metric to record.")
def evaluate(model: str, name: str | None, tasks: str, include_path: tuple[str, ...], out: str, gguf_file: str | None,
             batch_size: int, device: str, limit: int | None, metric: str) -> None:
    """Run lm-eval (Python API) on local task YAMLs and add the model's row to the performance CSV.

    Relative data_files paths in a task YAML are resolved against the YAML's folder.
    """
    from bsig_array.stages.evaluate import TASKS_DIR, evaluate_model, update_performance
    from bsig_array.stages.perplexity import default_model_name

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    scores = evaluate_model(model, names, include_path=include_path or (TASKS_DIR,), gguf_file=gguf_file,
                            batch_size=batch_size, device=device, limit=limit, metric=metric)
    row = name or default_model_name(model)
    table = update_performance(out, row, scores)
    shown = ", ".join(f"{t}={v:.3f}" for t, v in scores.items())
    click.echo(f"{out}: {row}: {shown} ({len(table)} models)")
