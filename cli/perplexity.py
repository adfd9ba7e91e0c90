"""``bsig perplexity``: one model's NLL of every corpus feature -> its row of the perplexity store."""

from __future__ import annotations

from pathlib import Path

import click

from bsig_array.cli.storage import Where
from bsig_array.models.backends.base import BACKENDS
from bsig_array.schema import TARGETS


@click.command("perplexity")
@click.option("--corpus", "corpus_path", required=True, type=Where(exists=True, file_okay=False), help="corpus.zarr from bsig corpus.")
@click.option("--store", required=True, type=Where(), help="Perplexity store to create or fill.")
@click.option("--model", required=True, help="Local folder, .gguf file, alias (smollm2-135m, gemma3-270m) or zoo name.")
@click.option("--name", default=None, help="Model name in the store (default: from --model).")
@click.option("--gguf-file", default=None, help="GGUF file inside the --model folder.")
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default="transformers", show_default=True)
@click.option("--target", type=click.Choice(TARGETS), default="last-token", show_default=True,
              help="last-token: the piece's last subword (paper); piece: the whole piece's NLL.")
@click.option("--batch-size", default=32, show_default=True, help="Windows per forward pass.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--dtype", default="float32", show_default=True, help="Weight dtype (float32; bfloat16 on GPU).")
@click.option("--max-tokens", default=512, show_default=True, help="Longest window in tokens (keeps the last ones).")
@click.option("--chunk-tokens", type=int, default=None, help="Token chunk size of a new store (resume granularity).")
@click.option("--store-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--trust-remote-code", is_flag=True,
              help="Run Python code shipped inside the model folder (auto_map); only for code you trust.")
def perplexity(corpus_path: str, store: str, model: str, name: str | None, gguf_file: str | None, backend: str,
               target: str, batch_size: int, device: str, dtype: str, max_tokens: int, chunk_tokens: int | None,
               store_dtype: str, threads: int | None, trust_remote_code: bool) -> None:
    """Score every corpus feature with one model and write its row of the store (resumable).

    Only one bsig perplexity run may write a store at a time (lock file STORE.lock; for a store on
    an object store, a lock file in TMPDIR: runs on other machines must not fill it at the same time).
    """
    from bsig_array.cli.progress import rich_progress
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.corpus_store import Corpus
    from bsig_array.io.location import as_location
    from bsig_array.io.perplexity_store.schema import PERPLEXITY_STORE
    from bsig_array.options import check_optional_count
    from bsig_array.stages.perplexity import extract_perplexity

    check_optional_count(threads, "--threads", minimum=1)
    if threads:
        import torch

        torch.set_num_threads(threads)
    # The store is created or filled (never replaced): it may exist, but only as a perplexity store
    # (or, on an object store, as the leftovers of a killed creation, which the run replaces).
    check_new_output(store, overwrite=True, what="store", kind=PERPLEXITY_STORE,
                     inputs=[corpus_path, model if Path(model).exists() else None])
    corpus = Corpus(corpus_path)
    result = extract_perplexity(
        corpus, store, model, name=name, backend=backend, target=target, gguf_file=gguf_file,
        batch_size=batch_size, device=device, dtype=dtype, max_tokens=max_tokens, chunk_tokens=chunk_tokens,
        store_dtype=store_dtype, progress=rich_progress, trust_remote_code=trust_remote_code,
    )
    click.echo(
        f"{as_location(store)}: model {result.model!r} (row {result.row}): {result.chunks_done} of {result.chunks_total} chunks "
        f"written now, {result.tokens:,} tokens in {result.seconds:.1f} s ({result.tokens_per_second:,.0f} tokens/s)"
    )
