"""The whole chain on an embedded default: synth → screen → select → overlap → stats → report.

:func:`run_demo` writes a planted synthetic pool (:func:`bsig_array.pipelines.synth.synthesize`, with generated
question sets), runs every stage on it with the library defaults, and measures how much of the
planted truth came back:

- ``first_token_planted``: share of benchmarks whose first selected signature token is one of the
  tokens planted for that benchmark (``truth.json``);
- ``first_token_in_cluster``: the same against the planted tokens of the benchmark's cluster;
- ``signature_tokens_in_cluster``: share of all signature tokens planted in the benchmark's cluster;
- ``within_minus_cross``: mean signature overlap of benchmark pairs in the same planted cluster minus
  that of pairs in different clusters (positive = the clusters were recovered).

Layout of ``OUT``: ``pool/`` (perplexity.zarr, performance.csv, metadata.csv, truth.json,
questions/), ``screen.zarr``, ``signatures.zarr``, ``overlap.nc``, ``stats/``, ``report/report.html``,
``summary.json``.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bsig_array.io.overlap_file import write_overlap
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.scores import align_performance, load_performance
from bsig_array.io.screen_output import load_screen_summary, open_screen
from bsig_array.io.signatures import write_signatures
from bsig_array.io.stats_tables import write_stats
from bsig_array.pipelines.synth import synthesize
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.schema import LEVELS
from bsig_array.stages.overlap import compute_overlaps
from bsig_array.stages.report import write_report
from bsig_array.stages.screen.driver import screen
from bsig_array.stages.select import select_signatures
from bsig_array.stages.stats import compute_stats


def recovery(signatures: xr.Dataset, overlap: xr.Dataset, truth: dict[str, Any]) -> dict[str, float]:
    """How much planted truth the signatures and the signature overlap recovered (see module doc)."""
    bench = truth["benchmarks"]
    clusters = {name: set(c["planted_tokens"]) for name, c in truth.get("clusters", {}).items()}
    tok = signatures["signature_token"].transpose("benchmark", "step").values
    names = [str(b) for b in signatures["benchmark"].values]
    firsts = [(b, int(row[0])) for b, row in zip(names, tok) if row[0] >= 0]
    planted = [t in set(bench[b]["planted_tokens"]) for b, t in firsts]
    in_cluster = [t in clusters.get(bench[b]["cluster"], set()) for b, t in firsts]
    all_tokens = [(b, int(t)) for b, row in zip(names, tok) for t in row if t >= 0]
    all_in_cluster = [t in clusters.get(bench[b]["cluster"], set()) for b, t in all_tokens]
    m = np.asarray(overlap["signature"].transpose("benchmark_a", "benchmark_b").values, dtype=float)
    cl = np.array([bench[str(b)]["cluster"] for b in overlap["benchmark_a"].values])
    a, b = np.triu_indices(len(cl), 1)
    ok = np.isfinite(m[a, b])
    same = (cl[a] == cl[b]) & ok
    diff = (cl[a] != cl[b]) & ok
    within = float(m[a, b][same].mean()) if same.any() else float("nan")
    cross = float(m[a, b][diff].mean()) if diff.any() else float("nan")
    return {
        "benchmarks": len(names),
        "benchmarks_with_signature": len(firsts),
        "first_token_planted": float(np.mean(planted)) if planted else float("nan"),
        "first_token_in_cluster": float(np.mean(in_cluster)) if in_cluster else float("nan"),
        "signature_tokens_in_cluster": float(np.mean(all_in_cluster)) if all_in_cluster else float("nan"),
        "mean_signature_length": float((tok >= 0).sum(axis=1).mean()) if len(tok) else 0.0,
        "within_cluster_overlap": within,
        "cross_cluster_overlap": cross,
        "within_minus_cross": within - cross,
    }


def run_demo(
    out: str | os.PathLike = "demo-out",
    *,
    models: int = DEFAULTS.demo_models,
    benchmarks: int = DEFAULTS.demo_benchmarks,
    tokens: int = DEFAULTS.demo_tokens,
    seed: int = 0,
    semantic_bootstrap: int = 10,
    resamples: int = 10_000,
    memory_limit: str = DEFAULTS.demo_memory_limit,
    encoder: Any = None,
    log: Callable[[str], None] = print,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Run the whole chain under ``out`` and return a summary (also written to ``summary.json``).

    Parameters
    ----------
    out
        Output directory (replaced pieces: everything the demo writes).
    models, benchmarks, tokens
        Size of the synthetic pool.
    seed
        Seed of the pool, the selection shuffle and the semantic sampling.
    semantic_bootstrap
        Samples per pair for the semantic overlap.
    resamples
        Null relabelings of the category statistics.
    memory_limit
        Memory limit handed to screen and select.
    encoder
        Sentence-transformers model or path for the semantic level (default: offline MiniLM).
    log
        Receives one line per finished stage.
    progress
        Receives every stage's bars.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def done(stage: str, t0: float, detail: str) -> None:
        timings[stage] = round(time.perf_counter() - t0, 2)
        log(f"[{stage}] {detail} ({timings[stage]:.1f} s)")

    t0 = time.perf_counter()
    paths = synthesize(
        out / "pool", models=models, benchmarks=benchmarks, tokens=tokens, seed=seed, overwrite=True, progress=progress
    )
    done("synth", t0, f"{models} models x {benchmarks} benchmarks x {tokens:,} tokens -> {paths.perplexity}")

    t0 = time.perf_counter()
    nll = open_store(paths.perplexity)["nll"]
    score = align_performance(load_performance(paths.performance, metadata=paths.metadata), nll["model"].values)
    screened = screen(
        nll, score, memory_limit=memory_limit, store=paths.perplexity, out=out / "screen.zarr", overwrite=True,
        progress=progress,
    )
    done("screen", t0, f"k = {screened.attrs.get('k')} tokens per tail -> {out / 'screen.zarr'}")

    t0 = time.perf_counter()
    signatures = select_signatures(
        open_screen(out / "screen.zarr"), score, seed=seed, memory_limit=memory_limit, progress=progress
    )
    write_signatures(signatures, out / "signatures.zarr", overwrite=True)
    signatures = signatures.load()
    done("select", t0, f"mean signature length {float((signatures['signature_token'] >= 0).sum('step').mean()):.1f}")

    t0 = time.perf_counter()
    overlap = compute_overlaps(
        signatures, nll, score, questions=paths.questions, bootstrap=semantic_bootstrap, encoder=encoder, seed=seed,
        progress=progress,
    )
    write_overlap(overlap, out / "overlap.nc")
    done("overlap", t0, f"signature, performance, semantic -> {out / 'overlap.nc'}")

    t0 = time.perf_counter()
    stats = {}
    for level in LEVELS:
        if np.isfinite(overlap[level].values).any():
            stats[level] = compute_stats(overlap, level=level, resamples=resamples, seed=seed)
            write_stats(stats[level], out / "stats", level)
    done("stats", t0, f"{', '.join(stats)} -> {out / 'stats'}")

    truth = json.loads(Path(paths.truth).read_text())
    summary: dict[str, Any] = {"out": str(out), **recovery(signatures, overlap, truth)}

    t0 = time.perf_counter()
    screen_small = load_screen_summary(out / "screen.zarr")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3g}</td></tr>" for k, v in summary.items() if isinstance(v, float))
    page = write_report(
        out / "report", overlap=overlap, screen=screen_small, signatures=signatures, stats=stats,
        title="bsig demo: planted synthetic pool",
        extra_html=f"<h2>Recovered planted truth</h2><table class=tbl>{rows}</table>",
    )
    done("report", t0, str(page))

    summary.update(report=str(page), seconds=round(time.perf_counter() - start, 1), timings=timings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
