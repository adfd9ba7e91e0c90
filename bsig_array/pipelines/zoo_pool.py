"""A real pool from the model zoo: zoo models x a standard-library corpus -> perplexity store + lm-eval scores.

Runs the corpus, perplexity and evaluate stages for every zoo variant
(:mod:`bsig_array.models.zoo`); used by ``benchmarks/e2e_real.py`` and the slow end-to-end test.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bsig_array.io.perplexity_store.writer import StoreWriter
from bsig_array.models.zoo import DEFAULT_ZOO, VARIANTS, load_variant
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.stages.corpus import build_corpus, stdlib_documents
from bsig_array.stages.evaluate import GENERATORS, evaluate_model, update_performance
from bsig_array.stages.perplexity import extract_perplexity


@dataclass
class ZooPool:
    """Paths written by :func:`build_zoo_pool`."""

    corpus: Path
    perplexity: Path
    performance: Path
    seconds: dict[str, float]


def build_zoo_pool(
    out: str | os.PathLike,
    *,
    variants: Sequence[str] = DEFAULT_ZOO,
    n_docs: int = 40,
    sample_rate: float = DEFAULTS.zoo_sample_rate,
    seed: int = DEFAULTS.seed,
    context_pieces: int = DEFAULTS.zoo_context_pieces,
    tasks: Sequence[str] | None = None,
    limit: int | None = 12,
    batch_size: int = 16,
    max_tokens: int = 128,
    loader: Callable[[str], tuple[Any, Any, str]] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ZooPool:
    """Real pool: zoo models x a stdlib corpus sample -> perplexity store + lm-eval performance CSV.

    Resumable: models already complete in the store, and already in the CSV, are skipped.

    Parameters
    ----------
    out
        Output folder (``corpus.zarr``, ``perplexity.zarr``, ``performance.csv``).
    variants
        Zoo model names (default: the 8 of :data:`DEFAULT_ZOO`).
    n_docs, sample_rate, seed, context_pieces
        Corpus: the first ``n_docs`` standard-library files, downsampled.
    tasks, limit
        lm-eval tasks (default: all shipped ``bsig_*`` tasks) and items per task.
    batch_size, max_tokens
        Perplexity batching and window cap.
    loader
        ``name -> (model, tokenizer, description)``; default: :func:`load_variant` of the zoo.
    log
        Called with one line per finished step.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool = ZooPool(out / "corpus.zarr", out / "perplexity.zarr", out / "performance.csv", {})
    tasks = list(tasks or GENERATORS)
    t = time.perf_counter()
    if not pool.corpus.exists():
        build_corpus(itertools.islice(stdlib_documents(), n_docs), pool.corpus, sample_rate=sample_rate, seed=seed,
                     context_pieces=context_pieces, inputs=["stdlib"])
    pool.seconds["corpus"] = time.perf_counter() - t
    for name in variants:
        done_store = False
        if pool.perplexity.exists():
            writer = StoreWriter(pool.perplexity)
            done_store = name in writer.models and not writer.pending(rows=writer.model_index([name]))
        done_scores = pool.performance.exists() and name in set(pd.read_csv(pool.performance)["model"])
        if done_store and done_scores:
            continue
        t = time.perf_counter()
        model, tok, description = loader(name) if loader else (*load_variant(name), VARIANTS[name].describe())
        pool.seconds[f"{name}/load"] = time.perf_counter() - t
        t = time.perf_counter()
        res = extract_perplexity(pool.corpus, pool.perplexity, model, tokenizer=tok, name=name,
                                 source=description, batch_size=batch_size, max_tokens=max_tokens)
        pool.seconds[f"{name}/perplexity"] = time.perf_counter() - t
        t = time.perf_counter()
        if not done_scores:
            scores = evaluate_model(name, tasks, limit=limit, batch_size=batch_size, loaded=(model, tok))
            update_performance(pool.performance, name, scores)
        pool.seconds[f"{name}/evaluate"] = time.perf_counter() - t
        log(f"{name}: {res.tokens} tokens in {res.seconds:.0f} s, scores in {pool.seconds[f'{name}/evaluate']:.0f} s")
        del model
    return pool
