"""``bsig corpus``: documents (JSONL/Parquet ``text``, or the Python standard library) -> corpus.zarr."""

from __future__ import annotations

from collections.abc import Iterator

import click

from bsig_array.cli.storage import Where
from bsig_array.errors import OptionError
from bsig_array.runtime.defaults import DEFAULTS


@click.command("corpus")
@click.argument("inputs", nargs=-1, type=Where(dir_okay=False))
@click.option("--out", required=True, type=Where(), help="Corpus store to write (corpus.zarr).")
@click.option("--stdlib", is_flag=True, help="Use the Python standard library's source files as the corpus.")
@click.option("--sample-rate", default=DEFAULTS.sample_rate, show_default=True, help="Fraction of pieces kept as features (paper: 1/50).")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, help="Seed of the downsampling.")
@click.option("--context-pieces", default=DEFAULTS.context_pieces, show_default=True, help="Preceding pieces of context per feature.")
@click.option("--max-docs", type=int, default=None, help="Read at most this many input records.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def corpus(
    inputs: tuple[str, ...],
    out: str,
    stdlib: bool,
    sample_rate: float,
    seed: int,
    context_pieces: int,
    max_docs: int | None,
    overwrite: bool,
) -> None:
    """Split documents on whitespace into pieces and sample features (piece + ≤30 preceding pieces).

    INPUTS are JSONL(.gz) or Parquet files whose records have a `text` field (RedPajama format).
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.corpus_store import CORPUS_STORE
    from bsig_array.io.location import as_location
    from bsig_array.stages.corpus import CorpusStats, build_corpus, iter_documents, stdlib_documents, stdlib_files

    if bool(inputs) == stdlib:
        raise OptionError("give either INPUTS (JSONL/Parquet files) or --stdlib, not both or neither")
    check_new_output(out, overwrite=overwrite, what="corpus store", kind=CORPUS_STORE, inputs=inputs)
    stats = CorpusStats()
    docs: Iterator[str | None]
    if stdlib:
        docs, total, names = stdlib_documents(stats), len(stdlib_files()), ["stdlib"]
    else:
        # Recorded in the store: URLs without credentials (str of a Location).
        docs, total, names = iter_documents(inputs, stats), None, [str(as_location(i)) for i in inputs]
    build_corpus(
        docs,
        out,
        sample_rate=sample_rate,
        seed=seed,
        context_pieces=context_pieces,
        max_docs=max_docs,
        stats=stats,
        inputs=names,
        overwrite=overwrite,
        progress=rich_progress,
        total=total,
    )
    click.echo(f"{as_location(out)}: {stats.summary()}")
