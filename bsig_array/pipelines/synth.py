"""A synthetic pool with planted signal: perplexity store, performance, metadata, truth, questions.

Generative model (all sizes per model ``i``, token ``t``, benchmark ``b`` in cluster ``c``)
-------------------------------------------------------------------------------------------
- Abilities: general ``g_i ~ N(0, 1)``; one ability per cluster (= the benchmark's category),
  ``a_ic = sqrt(rho) g_i + sqrt(1 - rho) e_ic`` (``rho`` = :data:`ABILITY_CORRELATION`).
- Benchmark latent: ``z_ib`` = standardised ``a_ic + w u_ib`` (``w`` = :data:`BENCHMARK_SPECIFIC`),
  so benchmarks of one cluster agree closely and all benchmarks agree somewhat (through ``g``).
- Question format: the pool assigns each benchmark a format (:data:`FORMATS`) round-robin within
  its category (not the shipped table's), so format is independent of the planted clusters.
- Format effect: each model has a skill per format ``h_if ~ N(0, 1)``, independent of every
  ability (e.g. coping with an answer format), that enters the scores but no token:
  ``x_ib = sqrt(1 - lambda) z_ib + sqrt(lambda) h_i,format(b)`` (``lambda`` = :data:`FORMAT_EFFECT`).
  Benchmarks of one format therefore agree in their scores beyond their abilities, as on real
  leaderboards, while the signature tokens know nothing of format: the performance level is
  confounded by format, the signature level is not.
- Scores: accuracy on ``n_b`` questions (log-uniform in 100..1000):
  ``score = Binomial(n_b, chance + (1 - chance) sigmoid(slope_b x_ib - difficulty_b)) / n_b``;
  ``chance`` is 1/4 for multiple choice, 1/2 for true/false, else 0.  Scores are multiples of
  ``1/n_b``, so ties happen as in real accuracies.
- Noise tokens (almost all): ``nll_it = d_t exp(o_i + sigma eps_it)`` with a per-token difficulty
  ``d_t ~ Gamma(0.8, 2.5)`` (mean 2 nats, 99 % below 13; capped at 20), per-model offset ``o_i = -kappa g_i``
  (weak models have higher NLL everywhere) and ``eps ~ N(0, 1)``.
- Planted tokens: each benchmark owns ``planted_per_benchmark`` of them, with
  ``nll_it = d'_t exp(s_t beta x_i + sigma_p eps_it)`` and a moderate difficulty
  ``d'_t = 0.5 + Gamma(2, 0.5)`` (mean 1.5 nats).  Half of them (rounded up, ``kind = "cluster"``)
  track their cluster's ability ``x = a_c`` (shared by the cluster: these make signatures overlap
  within a category), the rest (``kind = "benchmark"``) their benchmark's latent ``x = z_b``.
  ``s_t = -1`` (stronger model, lower NLL; Thrush low tail) for ~70 %, ``+1`` for the rest.
  The noise tokens' shared ``g`` dependence makes every token somewhat correlated with every
  benchmark, as with real models, so screening is not trivial: at the defaults about 90 % of the
  planted tokens fall in the 1 % Thrush tails of their benchmark, and AIC's first pick is usually
  planted, its later picks mostly not (32 models leave little to fit after a few tokens).

Determinism and memory
----------------------
Model-level quantities come from ``SeedSequence(seed, spawn_key=(0,))``; the NLLs of token block
``k`` (:data:`BLOCK_TOKENS` tokens) from ``np.random.default_rng([seed, k])``.  A store chunk is
assembled from the blocks it covers, so the pool is identical for any ``chunk_tokens`` and any
order of writing, and memory is bounded by one chunk.  An interrupted ``synthesize`` resumes:
calling it again with the same parameters writes only the chunks not yet marked complete.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bsig_array.errors import BsigWarning, InputError, OptionError
from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.benchmark_metadata import load_metadata, write_metadata
from bsig_array.io.kinds import SYNTH_POOL, artifact_kind
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.schema import PERPLEXITY_STORE, WRITE_DTYPES, default_chunk_tokens
from bsig_array.io.perplexity_store.writer import StoreWriter, create_store
from bsig_array.io.provenance import (
    FINGERPRINT_TOKENS,
    PROVENANCE_ATTR,
    make_record,
    performance_fingerprint,
    record_attrs,
    store_fingerprint_of,
)
from bsig_array.io.scores import write_performance
from bsig_array.options import check_count, check_seed
from bsig_array.pipelines.synth_questions import write_questions
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress
from bsig_array.schema import METADATA_COLUMNS, MIN_MODELS

BLOCK_TOKENS = 1 << 16
PAPER_BENCHMARKS = 88  # Table 2: the MMLU and BBH rows at the top of the shipped table
MAX_SYNTH = 1 << 20  # cap on --models/--benchmarks: larger values overflow array shapes long before they fit
ABILITY_CORRELATION = 0.5
BENCHMARK_SPECIFIC = 0.5
# Knobs of the generative model (see the module docstring); tuned so screening + AIC find planted
# tokens at m = 32 without making it trivial.
NOISE_SIGMA = 0.35
OFFSET_KAPPA = 0.10
PLANTED_BETA = 0.45  # 0.30 before the format effect, which weakens the planted tokens' link to the scores
PLANTED_SIGMA = 0.25
PLANTED_POSITIVE = 0.3
PLANTED_DIFFICULTY = (0.5, 2.0, 0.5)  # offset, gamma shape, scale: mean 1.5 nats
DIFFICULTY_SHAPE, DIFFICULTY_SCALE = 0.8, 2.5
CHANCE = {"multiple_choice": 0.25, "true_false": 0.5}
FORMATS = ("multiple_choice", "true_false", "free_form")
FORMAT_EFFECT = 0.1  # share of the score latent's variance from the format skill (lambda)
DEFAULT_PLANTED = DEFAULTS.planted
NLL_MAX = 20.0
#: What a pool directory holds; ``bsig synth --overwrite`` refuses to swap out a directory holding more.
POOL_FILES = ("perplexity.zarr", "performance.csv", "metadata.csv", "truth.json", "questions")


@dataclass(frozen=True)
class SynthPaths:
    """Where :func:`synthesize` wrote each output.

    Local paths for a local pool; for a pool on an object store each field is a
    :class:`~bsig_array.io.location.Location` (every reader takes both).
    """

    perplexity: Path
    performance: Path
    truth: Path
    metadata: Path
    questions: Path


@dataclass(frozen=True)
class SynthSpec:
    """Everything about a pool except the per-token NLLs (small: models × benchmarks)."""

    seed: int
    n_tokens: int
    models: list[str]
    metadata: pd.DataFrame  # indexed by benchmark, columns METADATA_COLUMNS
    general: np.ndarray  # (m,)
    ability: np.ndarray  # (m, C), columns in the order of ``clusters``
    clusters: list[str]
    latent: np.ndarray  # (m, B) standardised benchmark latent z
    signal: np.ndarray  # (m, C + B) standardised cluster abilities, then the benchmark latents
    score: np.ndarray  # (m, B)
    n_questions: np.ndarray  # (B,)
    offset: np.ndarray  # (m,)
    planted_token: np.ndarray  # (P,) sorted token ids
    planted_benchmark: np.ndarray  # (P,) benchmark that owns each planted token
    planted_signal: np.ndarray  # (P,) column of ``signal`` each planted token tracks
    planted_sign: np.ndarray  # (P,) -1 or +1

    @property
    def benchmarks(self) -> list[str]:
        return [str(b) for b in self.metadata.index]

    def score_array(self) -> xr.DataArray:
        """``score (model, benchmark)`` with the benchmark metadata coordinates."""
        coords: dict[str, Any] = {
            "model": np.array(self.models, dtype=object),
            "benchmark": np.array(self.benchmarks, dtype=object),
        }
        coords.update({c: ("benchmark", self.metadata[c].to_numpy(dtype=object)) for c in METADATA_COLUMNS})
        return xr.DataArray(self.score, dims=("model", "benchmark"), coords=coords, name="score")

    def truth(self) -> dict[str, Any]:
        """The planted ground truth (the content of truth.json)."""
        bench = {}
        for j, name in enumerate(self.benchmarks):
            mine = self.planted_benchmark == j
            bench[name] = {
                "cluster": str(self.metadata["category"].iloc[j]),
                "planted_tokens": [int(t) for t in self.planted_token[mine]],
                "planted_sign": [int(s) for s in self.planted_sign[mine]],
                "planted_kind": ["cluster" if k < len(self.clusters) else "benchmark" for k in self.planted_signal[mine]],
                "n_questions": int(self.n_questions[j]),
            }
        clusters = {}
        for name in self.clusters:
            cols = np.flatnonzero(self.metadata["category"].to_numpy() == name)
            mine = np.isin(self.planted_benchmark, cols)
            clusters[name] = {
                "benchmarks": [self.benchmarks[j] for j in cols],
                "planted_tokens": [int(t) for t in self.planted_token[mine]],
            }
        return {
            "benchmarks": bench,
            "clusters": clusters,
            "models": {
                m: {"general": float(self.general[i]), "ability": dict(zip(self.clusters, map(float, self.ability[i])))}
                for i, m in enumerate(self.models)
            },
            "n_tokens": self.n_tokens,
            "seed": self.seed,
            "block_tokens": BLOCK_TOKENS,
        }


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _rng(seed: int, key: int) -> np.random.Generator:
    # spawn_key streams never collide with the per-block default_rng([seed, k]) streams.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def choose_benchmarks(n: int, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Metadata of ``n`` benchmarks named after the paper's, every category represented early.

    The paper's 88 Table-2 benchmarks are taken round-robin over categories (table order within a
    category), then the six other named benchmarks, then copies suffixed ``_v2``, ``_v3``, ...; the
    chosen rows are returned in table order.
    """
    if n < 1:
        raise OptionError(f"need at least one benchmark, got {n}; pass --benchmarks >= 1")
    table = load_metadata() if table is None else table
    paper, rest = table.iloc[:PAPER_BENCHMARKS], table.iloc[PAPER_BENCHMARKS:]
    by_cat: dict[str, list[int]] = {}
    for pos, cat in enumerate(paper["category"]):
        by_cat.setdefault(cat, []).append(pos)
    order: list[int] = []
    queues = [list(v) for v in by_cat.values()]
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    chosen = table.iloc[sorted(order[:n])]
    if n > len(paper):
        chosen = pd.concat([chosen, rest.iloc[: n - len(paper)]])
    copies = []
    for k in range(n - len(chosen)):
        row = table.iloc[k % len(table)].copy()
        row.name = f"{table.index[k % len(table)]}_v{2 + k // len(table)}"
        copies.append(row)
    if copies:
        chosen = pd.concat([chosen, pd.DataFrame(copies)])
    chosen.index.name = "benchmark"
    return chosen


def assign_formats(categories: pd.Series) -> list[str]:
    """Question formats round-robin within each category, each category starting one format later.

    Every category gets every format (given three benchmarks), so format carries no information
    about the category.
    """
    seen: dict[str, int] = {}
    out = []
    for cat in categories:
        k = seen.setdefault(str(cat), len(seen))
        seen[str(cat)] = k + 1
        out.append(FORMATS[k % len(FORMATS)])
    return out


def make_spec(
    *,
    models: int = 32,
    benchmarks: int = 88,
    tokens: int = 1_000_000,
    seed: int = DEFAULTS.seed,
    planted_per_benchmark: int = DEFAULT_PLANTED,
) -> SynthSpec:
    """Draw the model-level part of a pool (abilities, scores, planted token ids)."""
    models = check_count(models, "--models", minimum=0, maximum=MAX_SYNTH)
    benchmarks = check_count(benchmarks, "--benchmarks", minimum=0, maximum=MAX_SYNTH)
    tokens = check_count(tokens, "--tokens", minimum=1)
    seed = check_seed(seed)
    if models < MIN_MODELS:
        raise OptionError(f"need at least {MIN_MODELS} models, got {models}; pass --models >= {MIN_MODELS}")
    if planted_per_benchmark < 0:
        raise OptionError(f"planted tokens per benchmark must be >= 0, got {planted_per_benchmark}")
    meta = choose_benchmarks(benchmarks)
    n_planted = benchmarks * planted_per_benchmark
    if tokens < max(n_planted, 1):
        raise OptionError(
            f"{tokens} tokens cannot hold {n_planted} planted tokens ({benchmarks} benchmarks x {planted_per_benchmark}); "
            "pass more --tokens or fewer --benchmarks"
        )
    rng = _rng(seed, 0)
    clusters = list(dict.fromkeys(meta["category"]))
    cluster_of = np.array([clusters.index(c) for c in meta["category"]])
    general = rng.standard_normal(models)
    ability = np.sqrt(ABILITY_CORRELATION) * general[:, None] + np.sqrt(1 - ABILITY_CORRELATION) * rng.standard_normal(
        (models, len(clusters))
    )
    specific = _standardise(rng.standard_normal((models, benchmarks)))
    cluster_part = _standardise(ability)
    latent = _standardise(cluster_part[:, cluster_of] + BENCHMARK_SPECIFIC * specific)
    slope = rng.uniform(0.8, 1.6, benchmarks)
    difficulty = rng.normal(0.0, 0.7, benchmarks)
    meta = meta.assign(format=assign_formats(meta["category"]))
    format_of = np.array([FORMATS.index(f) for f in meta["format"]])
    skill = _rng(seed, 1).standard_normal((models, len(FORMATS)))  # own stream: the other draws are unchanged
    shown = np.sqrt(1 - FORMAT_EFFECT) * latent + np.sqrt(FORMAT_EFFECT) * skill[:, format_of]
    chance = meta["format"].map(CHANCE).fillna(0.0).to_numpy()
    n_questions = np.round(np.exp(rng.uniform(np.log(100), np.log(1000), benchmarks))).astype(int)
    p = chance + (1 - chance) / (1 + np.exp(-(slope * shown - difficulty)))
    score = rng.binomial(n_questions, p) / n_questions
    for j in np.flatnonzero(np.ptp(score, axis=0) == 0):  # a constant benchmark is unusable: redraw
        while np.ptp(score[:, j]) == 0:
            score[:, j] = rng.binomial(n_questions[j], p[:, j]) / n_questions[j]
    offset = -OFFSET_KAPPA * general + 0.03 * rng.standard_normal(models)
    planted = np.sort(rng.choice(tokens, size=n_planted, replace=False)).astype(np.int64)
    owner = rng.permutation(np.repeat(np.arange(benchmarks), planted_per_benchmark))
    # ceil(P/2) tokens of each benchmark track its cluster's ability, the rest its own latent.
    rank_in_owner = np.empty(n_planted, dtype=np.int64)
    rank_in_owner[np.argsort(owner, kind="stable")] = np.tile(np.arange(planted_per_benchmark), benchmarks)
    n_cluster = -(-planted_per_benchmark // 2)
    tracks = np.where(rank_in_owner < n_cluster, cluster_of[owner], len(clusters) + owner)
    sign = np.where(rng.random(n_planted) < PLANTED_POSITIVE, 1, -1)
    width = max(2, len(str(models - 1)))
    return SynthSpec(
        seed=int(seed),
        n_tokens=int(tokens),
        models=[f"synth-m{i:0{width}d}" for i in range(models)],
        metadata=meta,
        general=general,
        ability=ability,
        clusters=clusters,
        latent=latent,
        signal=np.hstack([cluster_part, latent]),
        score=score,
        n_questions=n_questions,
        offset=offset,
        planted_token=planted,
        planted_benchmark=owner,
        planted_signal=tracks,
        planted_sign=sign,
    )


def generate_block(spec: SynthSpec, k: int) -> np.ndarray:
    """NLLs (m, n) float32 of token block ``k`` (tokens ``k*BLOCK_TOKENS`` onwards)."""
    start = k * BLOCK_TOKENS
    stop = min(start + BLOCK_TOKENS, spec.n_tokens)
    n, m = stop - start, len(spec.models)
    rng = np.random.default_rng([spec.seed, k])
    difficulty = rng.standard_gamma(DIFFICULTY_SHAPE, size=n, dtype=np.float32)
    difficulty *= DIFFICULTY_SCALE
    nll = rng.standard_normal((m, n), dtype=np.float32)
    nll *= NOISE_SIGMA
    nll += spec.offset.astype(np.float32)[:, None]
    lo, hi = np.searchsorted(spec.planted_token, [start, stop])
    if hi > lo:
        cols = spec.planted_token[lo:hi] - start
        z = spec.signal[:, spec.planted_signal[lo:hi]] * spec.planted_sign[lo:hi]
        nll[:, cols] = PLANTED_BETA * z + PLANTED_SIGMA * rng.standard_normal((m, hi - lo))
        difficulty[cols] = PLANTED_DIFFICULTY[0] + rng.standard_gamma(PLANTED_DIFFICULTY[1], size=hi - lo) * PLANTED_DIFFICULTY[2]
    np.exp(nll, out=nll)
    nll *= difficulty
    np.minimum(nll, NLL_MAX, out=nll)  # the rare extreme token saturates, as a tiny-probability floor would
    return nll


def generate_range(spec: SynthSpec, start: int, stop: int) -> np.ndarray:
    """NLLs (m, stop - start) float32 of tokens ``start..stop`` (assembled from whole blocks)."""
    out = np.empty((len(spec.models), stop - start), dtype=np.float32)
    for k in range(start // BLOCK_TOKENS, -(-stop // BLOCK_TOKENS)):
        b0 = k * BLOCK_TOKENS
        block = generate_block(spec, k)
        lo, hi = max(start, b0), min(stop, b0 + block.shape[1])
        out[:, lo - start : hi - start] = block[:, lo - b0 : hi - b0]
    return out


def _spec_attrs(spec: SynthSpec, planted_per_benchmark: int) -> dict[str, Any]:
    return {
        "models": len(spec.models),
        "benchmarks": len(spec.benchmarks),
        "tokens": spec.n_tokens,
        "seed": spec.seed,
        "planted_per_benchmark": planted_per_benchmark,
        "block_tokens": BLOCK_TOKENS,
    }


def _record(spec: SynthSpec, params: dict[str, Any], chunk_tokens: int) -> dict[str, Any]:
    """The pool's provenance record, made before any chunk is written (it goes into the new store's
    attributes, so a store that opens as complete always carries it): the store fingerprint comes
    from the generated end tokens, which are exactly what the store will hold."""
    n, d = min(spec.n_tokens, FINGERPRINT_TOKENS), spec.n_tokens
    ends = [(np.arange(a, b, dtype=np.int64), generate_range(spec, a, b).astype(params["dtype"]))
            for a, b in ((0, n), (d - n, d))]
    prints = {"perplexity": store_fingerprint_of(spec.models, d, ends[0], ends[1]),
              "performance": performance_fingerprint(spec.score_array())}
    return make_record("synth", fingerprints=prints, options=params | {"chunk_tokens": chunk_tokens})


def _pool_paths(out: Location) -> SynthPaths:
    def at(name: str) -> Path:
        child = out.child(name)
        return child.path if child.is_local else child  # type: ignore[return-value]  # a Location: see SynthPaths

    return SynthPaths(
        perplexity=at("perplexity.zarr"),
        performance=at("performance.csv"),
        truth=at("truth.json"),
        metadata=at("metadata.csv"),
        questions=at("questions"),
    )


def _write_text(path: str | os.PathLike | Location, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_small(target: Location, write: Callable[[Path], object]) -> None:
    """``write(path)`` at ``target``: directly when local (the writers there are atomic themselves);
    on an object store into a local staging path that :func:`atomic_output` publishes when whole."""
    if target.is_local:
        write(target.path)
        return
    with atomic_output(target) as tmp:
        write(tmp)


def synthesize(
    out: str | os.PathLike | Location,
    *,
    models: int = 32,
    benchmarks: int = 88,
    tokens: int = 1_000_000,
    seed: int = DEFAULTS.seed,
    dtype: str = "float32",
    chunk_tokens: int | None = None,
    planted_per_benchmark: int = DEFAULT_PLANTED,
    questions: bool = True,
    overwrite: bool = False,
    progress: Progress = no_progress,
) -> SynthPaths:
    """Write a planted-signal pool under ``out`` chunk by chunk (memory: about one chunk).

    Parameters
    ----------
    out
        Output directory or object-store URL (``s3://bucket/pool``); receives ``perplexity.zarr``,
        ``performance.csv``, ``metadata.csv``, ``truth.json`` and ``questions/<benchmark>.jsonl``.
        On an object store the store's chunks and progress marks go straight to it (so a killed run
        resumes there) and the small files are staged locally and published whole.
    models, benchmarks, tokens
        Pool size (m ≥ 3; ``tokens`` ≥ ``benchmarks * planted_per_benchmark``).
    seed
        Seed of every random draw; the pool is a pure function of the parameters (not of
        ``chunk_tokens`` or ``dtype``, except for float16 rounding).
    dtype
        Store dtype, ``float32`` or ``float16``.
    chunk_tokens
        Tokens per store chunk (default: the store's default, 2**20).
    planted_per_benchmark
        Planted tokens per benchmark (see the module docstring).
    questions
        Also write the generated question sets.
    overwrite
        Replace an existing pool.  Without it, an existing store written with the same parameters
        is resumed (only unfinished chunks are written) and anything else is refused.
    progress
        Receives one bar ("synth") over the tokens (already-written chunks count at the start).

    Returns
    -------
    SynthPaths
    """
    loc = as_location(out)
    spec = make_spec(models=models, benchmarks=benchmarks, tokens=tokens, seed=seed, planted_per_benchmark=planted_per_benchmark)
    chunk = default_chunk_tokens(tokens, chunk_tokens)  # a bad --chunk-tokens fails before anything is written
    if dtype not in WRITE_DTYPES:
        raise OptionError(f"unsupported store dtype {dtype!r}; use float32 or float16")
    params = _spec_attrs(spec, planted_per_benchmark) | {"dtype": dtype}
    store_path = loc.child("perplexity.zarr")
    found = artifact_kind(loc)
    if found not in ("empty directory", SYNTH_POOL):  # nothing there yet, a file, another kind
        check_new_output(loc, overwrite=overwrite, what="synth output", kind=SYNTH_POOL)
    if found == SYNTH_POOL and overwrite:
        foreign = sorted(name for name in loc.names() if name not in POOL_FILES)
        if foreign:
            raise InputError(f"{loc} also holds {foreign[:3]}, which are not part of a pool; move them or pick another directory")
        # Write the new pool aside and swap it in whole: the old pool stays until the new one is
        # complete.  On an object store (no rename) the new pool is staged locally and published:
        # the old pool's objects go first, the new store's root zarr.json comes last.
        with atomic_output(loc) as tmp:
            synthesize(tmp, models=models, benchmarks=benchmarks, tokens=tokens, seed=seed, dtype=dtype,
                       chunk_tokens=chunk_tokens, planted_per_benchmark=planted_per_benchmark, questions=questions,
                       progress=progress)
        return _pool_paths(loc)
    writer = None
    if found == SYNTH_POOL and store_path.is_remote and not store_path.child("zarr.json").exists():
        # The pool's store whose publication was cut short (no root zarr.json: never complete, nothing
        # of it marked; its leftovers need not even look like a store yet): made again below.
        warnings.warn(f"replacing {store_path}: an incomplete {PERPLEXITY_STORE} without its root zarr.json, "
                      "left by an interrupted bsig run", BsigWarning, stacklevel=2)
    elif found == SYNTH_POOL:
        try:
            writer = StoreWriter(store_path)
        except InputError:
            writer = None
        same = writer is not None and writer.attrs.get("synth") == params
        if same and writer is not None and chunk_tokens is not None:
            same = writer.chunk_tokens == default_chunk_tokens(tokens, chunk_tokens)
        if not same:
            raise InputError(f"{store_path} already exists with other contents; pass --overwrite to replace it")
        if writer is not None and PROVENANCE_ATTR not in writer.attrs:  # begun by a bsig without records
            writer.update_attrs(**record_attrs(_record(spec, params, writer.chunk_tokens)))
    if writer is None:
        if loc.is_local:
            loc.path.mkdir(parents=True, exist_ok=True)
        attrs = {"source": "bsig synth", "synth": params, "seed": int(seed), "target": "last-token",
                 **record_attrs(_record(spec, params, chunk))}
        # A kill while creating leaves no half-made store to resume (on an object store: one without
        # its root zarr.json, which the next run replaces).
        with atomic_output(store_path) as tmp:
            create_store(tmp, spec.models, tokens, chunk_tokens=chunk_tokens, dtype=dtype, with_doc_piece=False, attrs=attrs)
        writer = StoreWriter(store_path)
    pending = writer.pending()
    # Generate chunk i+1 while chunk i is compressed and written (numpy and Blosc release the GIL);
    # memory stays at two chunks.
    slices = [writer.chunk_slice(j) for j in pending]
    with ThreadPoolExecutor(max_workers=1) as executor, progress("synth", tokens, "tokens") as bar:
        bar.advance(tokens - sum(sl.stop - sl.start for sl in slices))
        future = executor.submit(generate_range, spec, slices[0].start, slices[0].stop) if slices else None
        for i, (j, sl) in enumerate(zip(pending, slices)):
            assert future is not None  # submitted before the loop (slices is not empty)
            nll = future.result()
            if i + 1 < len(slices):
                future = executor.submit(generate_range, spec, slices[i + 1].start, slices[i + 1].stop)
            writer.write_chunk(j, nll, token=np.arange(sl.start, sl.stop, dtype=np.int64))
            del nll
            bar.advance(sl.stop - sl.start)

    # The small files come after the store is complete; on an object store each is staged locally
    # and published whole (one PUT per file; the question set as one directory).
    paths = _pool_paths(loc)
    write_performance(spec.score_array(), loc.child("performance.csv"))
    write_metadata(spec.metadata, loc.child("metadata.csv"))
    _write_text(loc.child("truth.json"), json.dumps(spec.truth() | {"params": params}, indent=1))
    if questions:
        _write_small(loc.child("questions"), lambda p: write_questions(
            p, spec.benchmarks, list(spec.metadata["category"]), seed=seed))
    return paths


@dataclass(frozen=True)
class SynthPool:
    """A small pool held in memory (tests, strategies): ``nll (m, n)``, ``score``, truth."""

    spec: SynthSpec
    nll: np.ndarray

    @property
    def score(self) -> xr.DataArray:
        return self.spec.score_array()

    def dataset(self) -> xr.Dataset:
        """``nll (model, token)`` as an in-memory Dataset shaped like an opened store."""
        return xr.Dataset(
            {"nll": (("model", "token"), self.nll)},
            coords={"model": np.array(self.spec.models, dtype=object), "token": np.arange(self.nll.shape[1], dtype=np.int64)},
        )


def simulate(
    *,
    models: int = 8,
    benchmarks: int = 8,
    tokens: int = 5_000,
    seed: int = DEFAULTS.seed,
    planted_per_benchmark: int = 5,
    dtype: str = "float32",
) -> SynthPool:
    """The same pool as :func:`synthesize` with these parameters, in memory (keep it small)."""
    spec = make_spec(models=models, benchmarks=benchmarks, tokens=tokens, seed=seed, planted_per_benchmark=planted_per_benchmark)
    return SynthPool(spec=spec, nll=generate_range(spec, 0, tokens).astype(dtype, copy=False))
