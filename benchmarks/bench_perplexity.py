"""Pipeline overhead of ``bsig perplexity``: store tokens/s against the bare batched model forward.

Peers, on exactly the same windows, batches and padding (measured in the same run, interleaved,
best of ``--repeat``):

- ``forward``: ``model(input_ids, attention_mask)`` per batch (full logits), nothing else;
- ``decoder``: the decoder alone (no LM head at all) — a lower bound for any NLL pipeline.

The pipeline is :func:`bsig_array.stages.perplexity.extract_perplexity` into a fresh store: corpus read,
window building, tokenization, forward, NLL gather, Zarr writes, progress records.  Target: overhead
(pipeline time / forward time - 1) <= 15%.

    python benchmarks/bench_perplexity.py [--model smollm2-135m|tiny] [--windows 96] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from pathlib import Path

from bsig_array.runtime.memory import peak_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local folder, or 'tiny' (random GPT-2)")
    parser.add_argument("--windows", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context-pieces", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from bsig_array.io.corpus_store import Corpus
    from bsig_array.models.backends.base import encode_windows
    from bsig_array.models.backends.transformers_backend import TransformersBackend
    from bsig_array.models.loading import build_tiny_gpt2, load_causal_lm
    from bsig_array.stages.corpus import build_corpus, stdlib_documents
    from bsig_array.stages.perplexity import extract_perplexity

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bsig-bench-"))
    try:
        name = str(build_tiny_gpt2(tmp / "tiny")) if args.model == "tiny" else args.model
        model, tok = load_causal_lm(name)
        docs = list(itertools.islice(stdlib_documents(), 30))
        build_corpus(docs, tmp / "c.zarr", sample_rate=0.01, context_pieces=args.context_pieces)
        corpus = Corpus(tmp / "c.zarr")
        n = min(args.windows, corpus.n_features)
        # Score exactly the first n features: a corpus of those features only.
        contexts, targets = corpus.windows(0, n)
        backend = TransformersBackend(model, tokenizer=tok, batch_size=args.batch_size)
        encoded = encode_windows(tok, contexts, targets, max_tokens=backend.max_tokens)
        batches = [backend.pad(encoded, idx) for idx in backend.batches(encoded)]
        subwords = sum(len(ids) for ids, _ in encoded)

        def run_forward() -> None:
            with torch.inference_mode():
                for ids, mask in batches:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)

        def run_decoder() -> None:
            with torch.inference_mode():
                for ids, mask in batches:
                    backend.decoder(input_ids=ids, attention_mask=mask, use_cache=False)

        def run_pipeline() -> None:
            store = tmp / "p.zarr"
            shutil.rmtree(store, ignore_errors=True)
            extract_perplexity(sub, store, model, tokenizer=tok, name="m", batch_size=args.batch_size, chunk_tokens=n)

        # A corpus whose features are exactly the n windows above (same order).
        sub = _prefix_corpus(corpus, n, tmp / "sub.zarr")
        assert sub.windows(0, n) == (contexts, targets)
        best = {"forward": float("inf"), "decoder": float("inf"), "pipeline": float("inf")}
        run_forward()  # warm-up
        for _ in range(args.repeat):
            for key, fn in (("forward", run_forward), ("pipeline", run_pipeline), ("decoder", run_decoder)):
                t = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - t)
        print(f"model {args.model}: {n} windows, {subwords} subword tokens, batch {args.batch_size}, "
              f"threads {torch.get_num_threads()}")
        for key, sec in best.items():
            print(f"  {key:9s} {sec:8.3f} s  {n / sec:9.1f} store tokens/s  {subwords / sec:10.1f} subword tokens/s")
        print(f"pipeline / forward = {best['pipeline'] / best['forward']:.3f} (overhead "
              f"{100 * (best['pipeline'] / best['forward'] - 1):+.1f}%, target <= +15%)")
        print(f"pipeline / decoder-only = {best['pipeline'] / best['decoder']:.3f}")
        print(f"peak RSS {peak_rss() / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prefix_corpus(corpus, n: int, out: Path):
    """A corpus with the first ``n`` features of ``corpus`` (same documents, same windows)."""
    import zarr

    from bsig_array.io.corpus_store import Corpus

    src = zarr.open_group(corpus.path, mode="r")
    last_doc = int(src["feature_doc"][n - 1])
    dst = zarr.open_group(out, mode="w", zarr_format=3)
    end = int(src["doc_offset"][last_doc + 1])
    for name, data in (("text", src["text"][:end]), ("doc_offset", src["doc_offset"][: last_doc + 2]),
                       ("doc_source", src["doc_source"][: last_doc + 1]), ("feature_doc", src["feature_doc"][:n]),
                       ("feature_piece", src["feature_piece"][:n])):
        dst.create_array(name, data=data, dimension_names=list(src[name].metadata.dimension_names))
    dst.attrs.update(dict(src.attrs))
    return Corpus(out)


if __name__ == "__main__":
    main()
