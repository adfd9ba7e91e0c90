"""Reusable hypothesis strategies: score vectors and NLL matrices with ties, small planted pools.

Import them from any test module: ``from strategies import nll_matrices`` (pytest's default
rootdir-relative import mode puts ``tests/`` on ``sys.path``).

Ties are the point: scores are accuracies ``k / n_questions`` with few questions, and NLLs are drawn
from a small grid of values that are exact in float16, float32 and float64 (multiples of 1/8 up to
15), so casting to any supported dtype keeps exactly the ties that were drawn.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bsig_array.pipelines.synth import SynthPool, simulate

NLL_DTYPES = ("float16", "float32", "float64")


@st.composite
def score_vectors(
    draw: st.DrawFn,
    m: int | None = None,
    *,
    min_models: int = 3,
    max_models: int = 12,
    allow_constant: bool = False,
) -> np.ndarray:
    """One benchmark's scores, float64 (m,): accuracies ``k / n`` with small ``n`` (ties likely).

    Parameters
    ----------
    m
        Number of models (drawn from ``min_models..max_models`` when None).
    allow_constant
        Allow all-equal vectors (invalid input for screening; useful for error tests).
    """
    m = draw(st.integers(min_models, max_models)) if m is None else m
    n_questions = draw(st.integers(2, 20))
    k = draw(hnp.arrays(np.int64, m, elements=st.integers(0, n_questions)))
    if not allow_constant and np.all(k == k[0]):
        k[draw(st.integers(0, m - 1))] = (k[0] + 1) % (n_questions + 1)
    return k / n_questions


@st.composite
def score_matrices(
    draw: st.DrawFn,
    m: int | None = None,
    *,
    min_benchmarks: int = 1,
    max_benchmarks: int = 5,
    min_models: int = 3,
    max_models: int = 12,
) -> np.ndarray:
    """Scores of several benchmarks, float64 (B, m), each row non-constant with ties likely."""
    m = draw(st.integers(min_models, max_models)) if m is None else m
    b = draw(st.integers(min_benchmarks, max_benchmarks))
    return np.stack([draw(score_vectors(m)) for _ in range(b)])


@st.composite
def nll_matrices(
    draw: st.DrawFn,
    m: int | None = None,
    n: int | None = None,
    *,
    dtype: str | None = None,
    min_models: int = 3,
    max_models: int = 12,
    max_tokens: int = 40,
    levels: int | None = None,
) -> np.ndarray:
    """NLLs (m, n) of a dtype in :data:`NLL_DTYPES`, non-negative, with ties within columns.

    Values are multiples of 1/8 in [0, 15]; ``levels`` (drawn when None) limits how many distinct
    values a matrix uses, so small ``levels`` gives many ties.  ``-0.0`` never occurs.
    """
    m = draw(st.integers(min_models, max_models)) if m is None else m
    n = draw(st.integers(1, max_tokens)) if n is None else n
    dtype = draw(st.sampled_from(NLL_DTYPES)) if dtype is None else dtype
    levels = draw(st.integers(1, 121)) if levels is None else levels
    grid = np.arange(121) / 8.0
    chosen = grid[draw(st.lists(st.integers(0, 120), min_size=levels, max_size=levels, unique=True))]
    idx = draw(hnp.arrays(np.int64, (m, n), elements=st.integers(0, levels - 1)))
    return chosen[idx].astype(dtype)


@st.composite
def screening_inputs(
    draw: st.DrawFn,
    *,
    min_models: int = 3,
    max_models: int = 10,
    max_tokens: int = 40,
    max_benchmarks: int = 4,
    dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A matching pair ``(P (m, n) NLLs, Y (B, m) scores)`` for screening kernels."""
    m = draw(st.integers(min_models, max_models))
    P = draw(nll_matrices(m, max_tokens=max_tokens, dtype=dtype))
    Y = draw(score_matrices(m, max_benchmarks=max_benchmarks))
    return P, Y


@st.composite
def planted_pools(
    draw: st.DrawFn,
    *,
    min_models: int = 4,
    max_models: int = 10,
    max_benchmarks: int = 6,
    tokens: int = 2_000,
    planted_per_benchmark: int = 4,
) -> SynthPool:
    """A small in-memory planted pool (:func:`bsig_array.pipelines.synth.simulate`) with a drawn seed."""
    return simulate(
        models=draw(st.integers(min_models, max_models)),
        benchmarks=draw(st.integers(1, max_benchmarks)),
        tokens=tokens,
        seed=draw(st.integers(0, 2**31 - 1)),
        planted_per_benchmark=planted_per_benchmark,
    )
