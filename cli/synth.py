"""``bsig synth``: write a planted-signal synthetic pool (store, performance, metadata, truth, questions)."""

from __future__ import annotations

import click

from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS


@click.command("synth")
@click.argument("out", type=Where(file_okay=False))
@click.option("--models", default=32, show_default=True, help="Number of models (>= 3).")
@click.option("--benchmarks", default=88, show_default=True, help="Number of benchmarks (named after the paper's).")
@click.option("--tokens", default=1_000_000, show_default=True, help="Number of tokens (features).")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, help="Seed of every random draw.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True, help="Store dtype.")
@click.option("--chunk-tokens", type=int, default=None, help="Tokens per store chunk [default: 2**20].")
@click.option("--planted", default=DEFAULTS.planted, show_default=True, help="Planted tokens per benchmark.")
@click.option("--questions/--no-questions", default=True, show_default=True, help="Write questions/<benchmark>.jsonl.")
@click.option("--overwrite", is_flag=True, help="Replace an existing pool (otherwise a matching one is resumed).")
def synth(
    out: str,
    models: int,
    benchmarks: int,
    tokens: int,
    seed: int,
    dtype: str,
    chunk_tokens: int | None,
    planted: int,
    questions: bool,
    overwrite: bool,
) -> None:
    """Write a synthetic pool with planted signal to OUT.

    \b
    OUT/perplexity.zarr     nll(model, token), written chunk by chunk (bounded memory, resumable)
    OUT/performance.csv     model column + one score column per benchmark (rounded accuracies)
    OUT/metadata.csv        benchmark, family, format, category, function
    OUT/truth.json          planted tokens per benchmark and cluster (= category)
    OUT/questions/*.jsonl   generated question sets for the semantic overlap

    OUT may be an object-store URL (s3://bucket/pool, with --storage-options): the store's chunks
    and progress marks go straight to it, so re-running the same command after a kill resumes there.
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.pipelines.synth import synthesize

    paths = synthesize(
        out,
        models=models,
        benchmarks=benchmarks,
        tokens=tokens,
        seed=seed,
        dtype=dtype,
        chunk_tokens=chunk_tokens,
        planted_per_benchmark=planted,
        questions=questions,
        overwrite=overwrite,
        progress=rich_progress,
    )
    click.echo(f"wrote {paths.perplexity} ({models} models x {tokens:,} tokens, {dtype}), {paths.performance.name}, "
               f"{paths.metadata.name}, {paths.truth.name}" + (f", {paths.questions.name}/" if questions else ""))
