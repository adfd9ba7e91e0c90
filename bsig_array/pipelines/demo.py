"""The whole chain on an embedded default: synth → screen → select → overlap → stats → report.

:func:`run_demo` writes a planted synthetic pool (:func:`bsig_array.pipelines.synth.synthesize`, with generated
question sets), runs every stage on it with the library defaults, and measures how much of the
planted truth came back:

- ``first_token_planted``: share of benchmarks whose first selected signature token is one of the
  tokens planted for that benchmark (``truth.json``);
- ``first_token_in_cluster``: the same against the planted tokens of the benchmark's cluster;
- ``signature_tokens_in_cluster``: share of all signature tokens planted in the benchmark's cluster;
- ``within_minus_cross``: mean signature overlap of benchmark pairs in the same planted cluster minus
  that of pairs in different clusters (positive = the clusters were recovered);
- ``separation``: that within − cross for the signature level in both signature modes (``paper``:
  the plain mean of z-scores; ``signed``: tokens oriented by their association with the benchmark),
  each raw, controlled for general ability and (signatures selected on perplexity) on the nll
  scale, and for the performance level raw and controlled;
- ``format_effect``: per level, mean overlap of same-format minus different-format pairs with the
  benchmark-label permutation p-value and the paper's Mann–Whitney p-value.  The pool's scores carry
  a format skill that no token carries (:mod:`bsig_array.pipelines.synth`), so the performance
  level shows a format effect (confounded) and the signature level should not.

Layout of ``OUT``: ``pool/`` (perplexity.zarr, performance.csv, metadata.csv, truth.json,
questions/), ``screen.zarr``, ``signatures.zarr``, ``overlap.nc``, ``stats/``, ``report/report.html``,
``summary.json``.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.kinds import DEMO_OUTPUT
from bsig_array.io.overlap_file import present_levels, write_overlap
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.scores import align_performance, load_performance
from bsig_array.io.screen_output import load_screen_summary, open_screen
from bsig_array.io.signatures import write_signatures
from bsig_array.io.stats_tables import write_stats_folder
from bsig_array.options import check_count
from bsig_array.pipelines.synth import make_spec, synthesize
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.run import RunSpec
from bsig_array.schema import SIGNATURE_MODES
from bsig_array.stages.overlap import compute_overlaps, controlled_spearman_matrix, signature_profiles, spearman_matrix
from bsig_array.stages.report import write_report
from bsig_array.stages.screen.driver import screen
from bsig_array.stages.select import select_signatures
from bsig_array.stages.stats import compute_stats


def separation(m: np.ndarray, clusters: Sequence[str]) -> dict[str, float]:
    """Mean overlap of distinct pairs in the same planted cluster (``within``), in different ones (``cross``), and ``diff``."""
    cl = np.asarray(clusters)
    a, b = np.triu_indices(len(cl), 1)
    values = np.asarray(m, dtype=float)[a, b]
    ok = np.isfinite(values)
    same, other = (cl[a] == cl[b]) & ok, (cl[a] != cl[b]) & ok
    within = float(values[same].mean()) if same.any() else float("nan")
    cross = float(values[other].mean()) if other.any() else float("nan")
    return {"within": within, "cross": cross, "diff": within - cross}


def option_separation(signatures: xr.Dataset, nll: xr.DataArray, score: xr.DataArray, truth: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Planted-cluster :func:`separation` of each overlap option (signature modes, control) on one pool.

    ``score`` must be aligned to the store's models.
    """
    names = [str(b) for b in signatures["benchmark"].values]
    y = np.asarray(score.sel(benchmark=names).transpose("model", "benchmark").values, dtype=float)
    clusters = [truth["benchmarks"][b]["cluster"] for b in names]
    covariate = str(signatures.attrs.get("covariate", "perplexity"))
    out = {}
    for mode in SIGNATURE_MODES:
        profiles = signature_profiles(signatures, nll, mode=mode, score=y)
        out[f"signature ({mode})"] = separation(spearman_matrix(profiles)[0], clusters)
        out[f"signature ({mode}, controlled)"] = separation(controlled_spearman_matrix(profiles, y)[0], clusters)
        if covariate != "nll":  # perplexities are heavy-tailed (stages/overlap.py): the log scale for comparison
            profiles = signature_profiles(signatures, nll, mode=mode, score=y, covariate="nll")
            out[f"signature ({mode}, nll)"] = separation(spearman_matrix(profiles)[0], clusters)
    out["performance"] = separation(spearman_matrix(y)[0], clusters)
    out["performance (controlled)"] = separation(controlled_spearman_matrix(y, y)[0], clusters)
    return out


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
    sep = separation(
        overlap["signature"].transpose("benchmark_a", "benchmark_b").values,
        [bench[str(b)]["cluster"] for b in overlap["benchmark_a"].values],
    )
    within, cross = sep["within"], sep["cross"]
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
    semantic_bootstrap: int = DEFAULTS.demo_bootstrap,
    resamples: int = DEFAULTS.resamples,
    encoder: Any = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    run: RunSpec | None = None,
) -> dict[str, Any]:
    """Run the whole chain under ``out`` and return a summary (also written to ``summary.json``).

    Parameters
    ----------
    out
        Output directory, built aside and swapped in whole when complete.
    models, benchmarks, tokens
        Size of the synthetic pool.
    semantic_bootstrap
        Samples per pair for the semantic overlap.
    resamples
        Null relabelings of the category statistics.
    encoder
        Sentence-transformers model or path for the semantic level (default: offline MiniLM).
    log
        Receives one line per finished stage.
    overwrite
        Replace an existing demo output (it stays as it was if the run fails or is killed).
    run
        The run's settings (:class:`~bsig_array.runtime.run.RunSpec`), handed to every stage; its
        ``seed`` seeds the pool, the selection shuffle and the semantic sampling.  Default: the
        defaults in effect with the demo's own memory limit (``DEFAULTS.demo_memory_limit``).
    """
    # every option is checked before the output folder appears
    run = RunSpec.build(memory_limit=DEFAULTS.demo_memory_limit) if run is None else run
    make_spec(models=models, benchmarks=benchmarks, tokens=tokens, seed=run.seed)
    check_count(semantic_bootstrap, "--semantic-bootstrap", minimum=1)
    check_count(resamples, "resamples", minimum=1)
    final = check_new_output(out, overwrite=overwrite, what="demo output", kind=DEMO_OUTPUT)
    with atomic_output(final) as work:
        return _chain(work, final, models=models, benchmarks=benchmarks, tokens=tokens,
                      semantic_bootstrap=semantic_bootstrap, resamples=resamples, encoder=encoder, log=log, run=run)


def _chain(
    out: Path, final: Path, *, models: int, benchmarks: int, tokens: int, semantic_bootstrap: int,
    resamples: int, encoder: Any, log: Callable[[str], None], run: RunSpec,
) -> dict[str, Any]:
    """The chain of :func:`run_demo`, written under ``out`` (a temporary sibling of ``final``)."""
    seed, progress = run.seed, run.progress
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
    done("synth", t0, f"{models} models x {benchmarks} benchmarks x {tokens:,} tokens -> {final / paths.perplexity.relative_to(out)}")

    t0 = time.perf_counter()
    nll = open_store(paths.perplexity)["nll"]
    score = align_performance(load_performance(paths.performance, metadata=paths.metadata), nll["model"].values)
    screened = screen(
        nll, score, store=paths.perplexity, out=out / "screen.zarr", overwrite=True, run=run,
    )
    done("screen", t0, f"k = {screened.attrs.get('k')} tokens per tail -> {final / 'screen.zarr'}")

    t0 = time.perf_counter()
    signatures = select_signatures(
        open_screen(out / "screen.zarr"), score, run=run
    )
    write_signatures(signatures, out / "signatures.zarr", overwrite=True)
    signatures = signatures.load()
    done("select", t0, f"mean signature length {float((signatures['signature_token'] >= 0).sum('step').mean()):.1f}")

    t0 = time.perf_counter()
    overlap = compute_overlaps(
        signatures, nll, score, questions=paths.questions, bootstrap=semantic_bootstrap, encoder=encoder, seed=seed,
        control="general", progress=progress,
    )
    write_overlap(overlap, out / "overlap.nc")
    done("overlap", t0, f"{', '.join(present_levels(overlap))} -> {final / 'overlap.nc'}")

    t0 = time.perf_counter()
    stats = {}
    for level in present_levels(overlap):
        stats[level] = compute_stats(overlap, level=level, resamples=resamples, seed=seed)
    write_stats_folder(stats, out / "stats", {"artifact": "stats"})  # one folder, one run
    done("stats", t0, f"{', '.join(stats)} -> {final / 'stats'}")

    truth = json.loads(Path(paths.truth).read_text())
    summary: dict[str, Any] = {"out": str(final), **recovery(signatures, overlap, truth)}
    summary["separation"] = option_separation(signatures, nll, score, truth)
    summary["format_effect"] = {
        level: {key: float(tables["family_format"].loc["format", key]) for key in ("diff", "p_value", "p_paper")}
        for level, tables in stats.items()
        if level != "semantic" and "format" in tables["family_format"].index
    }

    t0 = time.perf_counter()
    screen_small = load_screen_summary(out / "screen.zarr")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3g}</td></tr>" for k, v in summary.items() if isinstance(v, float))
    page = write_report(
        out / "report", overlap=overlap, screen=screen_small, signatures=signatures, stats=stats,
        title="bsig demo: planted synthetic pool",
        extra_html=f"<h2>Recovered planted truth</h2><table class=tbl>{rows}</table>" + _story_html(summary),
    )
    done("report", t0, str(final / page.relative_to(out)))

    summary.update(report=str(final / page.relative_to(out)), seconds=round(time.perf_counter() - start, 1), timings=timings)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _story_html(summary: dict[str, Any]) -> str:
    """The planted-cluster separation per option and the format confound, as two HTML tables."""
    sep = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['within']:.3f}</td><td>{v['cross']:.3f}</td><td>{v['diff']:+.3f}</td></tr>"
        for k, v in summary["separation"].items()
    )
    fmt = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['diff']:+.3f}</td><td>{v['p_value']:.2g}</td><td>{v['p_paper']:.2g}</td></tr>"
        for k, v in summary["format_effect"].items()
    )
    return (
        "<h2>Planted clusters: within − cross overlap per option</h2><table class=tbl>"
        f"<tr><th>overlap</th><th>within</th><th>cross</th><th>within − cross</th></tr>{sep}</table>"
        "<h2>Format confound: same − different format</h2>"
        "<p>The scores carry a per-format skill that no token carries: a format effect at a level is confounding.</p>"
        "<table class=tbl><tr><th>level</th><th>same − different</th><th>p (benchmark-label permutations)</th>"
        f"<th>p (paper's Mann–Whitney, pairs as independent)</th></tr>{fmt}</table>"
    )
