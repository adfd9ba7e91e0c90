"""The signatures store ``signatures.zarr``: schema, writer and readers (docs/DESIGN.md §3).

Variables::

    signature_token  (benchmark, step)  int64    selected token ids in selection order, -1 padded
    aic              (benchmark, step)  float64  AIC after each step (NaN padded)
    coefficient      (benchmark, step)  float64  coefficients of the final OLS fit
    intercept, r2, r2_adj, loocv_r2, aic_null, n_selected, n_candidates  (benchmark,)
    context, target  (benchmark, step)  str      with a corpus: each token's context and target piece

The selection stage fills one :class:`BenchmarkSelection` per benchmark; :func:`build_signatures`
assembles them, :func:`write_signatures` writes atomically, :func:`load_signatures` reads back and
:func:`signature_sets` gives each benchmark's token ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.corpus_store import Corpus, feature_context
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.io.location import Location, as_location
from bsig_array.io.zarr_format import open_artifact, write_zarr
from bsig_array.schema import BENCHMARK, STEP

#: The artifact kind (docs/DESIGN.md §3): a Zarr store, marked by ``signature_token``.
SIGNATURES = register_kind(ArtifactKind(
    "signatures store", owner=__name__, precedence=20, zarr=True, directory=True, markers=(("signature_token",),)))


@dataclass
class BenchmarkSelection:
    """Selection result of one benchmark (``columns`` index the benchmark's candidates)."""

    columns: np.ndarray
    aic: np.ndarray
    coefficient: np.ndarray
    intercept: float
    r2: float
    r2_adj: float
    loocv_r2: float
    aic_null: float


def build_signatures(
    results: Sequence[BenchmarkSelection], candidates: Sequence[np.ndarray], benchmarks: Sequence[str],
    benchmark_coords: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Assemble the signatures of ``benchmarks`` (``candidates[b]`` = token ids of benchmark b's candidates)."""
    B = len(benchmarks)
    S = max([r.columns.size for r in results] + [1])
    token = np.full((B, S), -1, dtype=np.int64)
    aic = np.full((B, S), np.nan)
    coef = np.full((B, S), np.nan)
    for b, (r, tokens) in enumerate(zip(results, candidates)):
        k = r.columns.size
        token[b, :k] = tokens[r.columns]
        aic[b, :k] = r.aic
        coef[b, :k] = r.coefficient

    def summary(attr: str) -> np.ndarray:
        return np.array([getattr(r, attr) for r in results], dtype=np.float64)

    dims = (BENCHMARK, STEP)
    ds = xr.Dataset(
        {
            "signature_token": (dims, token),
            "aic": (dims, aic),
            "coefficient": (dims, coef),
            "intercept": (BENCHMARK, summary("intercept")),
            "r2": (BENCHMARK, summary("r2")),
            "r2_adj": (BENCHMARK, summary("r2_adj")),
            "loocv_r2": (BENCHMARK, summary("loocv_r2")),
            "aic_null": (BENCHMARK, summary("aic_null")),
            "n_selected": (BENCHMARK, np.array([r.columns.size for r in results], dtype=np.int64)),
            "n_candidates": (BENCHMARK, np.array([c.size for c in candidates], dtype=np.int64)),
        },
        coords={
            BENCHMARK: list(benchmarks), STEP: np.arange(S),
            **{k: (BENCHMARK, v) for k, v in (benchmark_coords or {}).items()},
        },
    )
    ds["signature_token"].attrs["description"] = "selected token ids in selection order, -1 padded"
    ds["aic"].attrs["description"] = "AIC (statsmodels OLS with intercept) after each step, NaN padded"
    ds["coefficient"].attrs["description"] = "coefficients of the final fit on the covariate scale, NaN padded"
    ds["loocv_r2"].attrs["description"] = "leave-one-model-out R2 of the whole selection (screen not refit)"
    ds["aic_null"].attrs["description"] = "AIC of the intercept-only model"
    return ds


def write_signatures(ds: xr.Dataset, out: str | os.PathLike | Location, *, overwrite: bool = False) -> Path:
    """Write signatures to ``out`` (Zarr v3) atomically: a temporary directory renamed at the end, or
    for a URL a local staging directory published with its root ``zarr.json`` last.  Returns the
    path (for a URL its :class:`~bsig_array.io.location.Location`, printable without credentials)."""
    out = check_new_output(out, overwrite=overwrite, what="signatures", kind=SIGNATURES)
    with atomic_output(out) as tmp:
        write_zarr(ds, tmp, all_chunks=True)
    return out


def attach_contexts(signatures: xr.Dataset, corpus: Corpus | str | os.PathLike) -> xr.Dataset:
    """Add ``context`` and ``target`` (benchmark, step) text of every signature token.

    Parameters
    ----------
    signatures
        Signatures (:func:`build_signatures` or :func:`load_signatures`).
    corpus
        ``corpus.zarr`` (or an open :class:`~bsig_array.io.corpus_store.Corpus`) whose features
        are the perplexity store's token ids.

    Returns
    -------
    xr.Dataset
        A copy with ``context`` (≤ 30 preceding pieces) and ``target``; padding gets empty strings.
    """
    token = np.asarray(signatures["signature_token"].values)
    contexts, targets = feature_context(corpus, token.ravel())
    shape = token.shape
    out = signatures.copy()
    out["context"] = ((BENCHMARK, STEP), np.array(contexts, dtype=object).reshape(shape))
    out["target"] = ((BENCHMARK, STEP), np.array(targets, dtype=object).reshape(shape))
    out["context"].attrs["description"] = "the token's preceding pieces (at most the corpus's context_pieces)"
    out["target"].attrs["description"] = "the token's target piece"
    return out


def load_signatures(path: str | os.PathLike | Location) -> xr.Dataset:
    """Open a signatures store (``bsig select`` output; a path or URL) with its small variables loaded."""
    ds = open_artifact(path, what="signatures store", command="bsig select", load=True)
    if "signature_token" not in ds:
        raise InputError(f"{as_location(path)} has no signature_token variable; pass the output of bsig select")
    return ds


def signature_sets(signatures: xr.Dataset) -> dict[str, np.ndarray]:
    """Token ids of each benchmark's signature, in selection order (the −1 padding removed)."""
    if "signature_token" not in signatures:
        raise InputError("signatures have no 'signature_token' variable; pass the output of bsig select")
    tok = np.asarray(signatures["signature_token"].transpose(BENCHMARK, ...).values, dtype=np.int64)
    names = [str(b) for b in signatures[BENCHMARK].values]
    return {b: row[row >= 0] for b, row in zip(names, tok.reshape(len(names), -1))}
