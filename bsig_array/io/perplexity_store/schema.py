"""Schema of the perplexity store: names, layout constants and the checks every reader applies.

Layout of a store (Zarr v3 group, docs/DESIGN.md §3)::

    nll       (model, token)  float32|float16   chunks (all models, chunk_tokens), Blosc-lz4 + crc32c
    model     (model,)        str               coordinate
    token     (token,)        int64             feature id (coordinate, written chunk by chunk)
    doc       (token,)        int64             source document of each feature      (optional)
    piece     (token,)        int32             piece index of the target in its doc (optional)
    _complete (model, chunk)  uint8             progress record: 1 = block written

The writer is :mod:`.writer`, the one read path :mod:`.reader`, the deep scan :mod:`.validate`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec

from bsig_array.errors import BsigWarning, InputError, OptionError
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.options import duplicates
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import MIN_MODELS

SCHEMA_VERSION = 1
#: Name of the NLL variable.
NLL = "nll"
#: The artifact kind (docs/DESIGN.md §3): a Zarr store, marked by its ``nll`` array.
PERPLEXITY_STORE = register_kind(ArtifactKind(
    "perplexity store", owner=__name__, precedence=40, zarr=True, directory=True, markers=((NLL,),)))
#: Name of the progress record (model, chunk).
PROGRESS = "_complete"
#: Per-token coordinates a store may carry.
TOKEN_COORDS = ("token", "doc", "piece")
#: Value dtypes a store may hold; bsig writes float32 (default) or float16.
FLOAT_DTYPES = ("float16", "float32", "float64")
WRITE_DTYPES = ("float32", "float16")


def default_chunk_tokens(n_tokens: int, chunk_tokens: int | None = None) -> int:
    """Tokens per chunk: ``chunk_tokens`` if given, else the default (2**20, ``BSIG_CHUNK_TOKENS``),
    capped at the axis."""
    size = DEFAULTS.chunk_tokens if chunk_tokens is None else int(chunk_tokens)
    if size < 1:
        raise OptionError(f"chunk size must be positive, got {size}; pass a positive --chunk-tokens")
    return max(1, min(size, int(n_tokens)))


def compressor() -> BloscCodec:
    """Codec of the ``nll`` chunks and the per-token coordinates: Blosc lz4, byte shuffle, level 5.

    Chosen by ``benchmarks/bench_codec.py`` (docs/formats.md, "Store codec"): every screen pass decodes the
    whole store, and lz4 decodes 8x (float16, at the speed of a copy) and 2.5x (float32) faster
    than zstd-3 for a ratio of 1.00 and 1.11 against zstd's 1.11 and 1.16.  Stores written with any
    other codec zarr reads still open (:mod:`.reader`).
    """
    # Byte shuffle groups the exponent bytes of neighbouring NLLs, which lz4 shrinks in float32;
    # float16 blocks it cannot shrink are stored raw, so decoding them is a copy.
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def check_store_structure(ds: xr.Dataset, path: str | Path = "store") -> None:
    """Check names, dims, dtype and model list of a perplexity store (no data is read).

    Raises
    ------
    InputError
        On a missing ``nll``, wrong dims, a non-float dtype, duplicate model names or fewer than
        three models.
    """
    if "nll" not in ds.data_vars:
        raise InputError(f"{path} has no 'nll' variable (found {sorted(ds.data_vars, key=str)}); write NLLs as nll(model, token)")
    nll = ds["nll"]
    if nll.dims != ("model", "token"):
        raise InputError(f"{path}: nll has dims {nll.dims}, expected ('model', 'token'); transpose or rename before writing")
    if not np.issubdtype(nll.dtype, np.floating):
        raise InputError(f"{path}: nll has dtype {nll.dtype}, expected float16/float32/float64; cast NLLs to float")
    if "model" not in ds.coords:
        raise InputError(f"{path}: no 'model' coordinate; name the models with a model(model) str coordinate")
    models = [str(m) for m in np.asarray(ds["model"].values)]
    dup = duplicates(models)
    if dup:
        raise InputError(f"{path}: duplicate model names {dup}; give every model a unique name")
    if len(models) < MIN_MODELS:
        raise InputError(f"{path}: only {len(models)} models, need at least {MIN_MODELS} to rank tokens across models")
    if nll.sizes["token"] == 0:
        raise InputError(f"{path}: the store has no tokens; write NLLs for at least one token")
    if "token" in ds.coords:
        kind = ds["token"].dtype.kind
        if kind not in "iuf":
            raise InputError(f"{path}: token ids have dtype {ds['token'].dtype}, expected integers; write int64 token ids")


#: NLLs below ``-NLL_TOLERANCE`` are refused: a negative log-likelihood is at least 0, up to rounding.
NLL_TOLERANCE = 1e-6


def check_token_ids(ids: np.ndarray, start: int, *, path: str | os.PathLike = "store") -> None:
    """Raise unless token ids (of positions ``start``...) are integral and non-negative.

    A negative id would be taken for padding (−1 pads signatures) and never enter a signature; a
    fractional one would be truncated.  Integer ids cost one ``min`` pass.
    """
    if ids.size == 0:
        return
    if ids.dtype.kind == "f":
        bad = ~np.isfinite(ids) | (ids != np.round(ids))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"store {path}: token id {float(ids[i])!r} at position {start + i} is not an integer; "
                "write integral (int64) token ids"
            )
    if ids.min() < 0:
        i = int(np.argmax(ids < 0))
        raise InputError(
            f"store {path}: token id {ids[i]} at position {start + i} is negative; token ids must be >= 0 "
            "(negative ids are signature padding): renumber the tokens"
        )


def first_bad(bad: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first True in token order (lowest column, then lowest row)."""
    col = int(np.argmax(bad.any(axis=0)))
    return int(np.argmax(bad[:, col])), col


def _row_extremes(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's minimum and maximum (NaN makes both NaN): two row reductions, no mask.

    numpy reduces float16 without SIMD (~30x slower than float32); the bits of non-negative finite
    float16 values sort as the values do, so their integer view gives the same answer at integer speed.
    """
    if block.dtype == np.float16:
        bits = block.view(np.uint16)
        hi = bits.max(axis=1)
        if hi.max() < 0x7C00:  # no sign bit, no inf/NaN (exponent all ones)
            return bits.min(axis=1).view(np.float16), hi.view(np.float16)
    return block.min(axis=1), block.max(axis=1)


def check_block(
    block: np.ndarray,
    models: Sequence[str],
    token_start: int,
    *,
    path: str | os.PathLike = "store",
    label: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raise if a block of ``nll`` holds NaN, inf or negative NLLs; stages call it on every block
    they stream.  Returns each row's minimum and maximum (:func:`check_constant_rows` folds them).

    Parameters
    ----------
    block
        NLL values (model, token) of one block.
    models
        Names of the block's rows.
    token_start
        Token position of the block's first column (for the message).
    path
        Store path (for the message).
    label
        Replaces ``"store PATH"`` at the start of the message (e.g. ``"input x.csv"``).

    Raises
    ------
    InputError
        Naming how many NaN and inf values, the block's token range and the first model and token
        position affected; or the first NLL below ``-NLL_TOLERANCE``.
    """
    if block.size == 0:
        return np.full(block.shape[0], np.inf), np.full(block.shape[0], -np.inf)
    lo, hi = _row_extremes(block)
    if lo.min() >= -NLL_TOLERANCE and hi.max() < np.inf:
        return lo, hi
    finite = np.isfinite(block)
    if finite.all():
        row, col = first_bad(block < -NLL_TOLERANCE)
        raise InputError(
            f"{label or f'store {path}'}: nll has {int((block < -NLL_TOLERANCE).sum())} negative values in tokens "
            f"{token_start}..{token_start + block.shape[1] - 1} (first: model {models[row]!r}, token position "
            f"{token_start + col}, nll {float(block[row, col]):.6g}); NLLs are -log p >= 0: "
            "store natural-log negative log-likelihoods, not log-probabilities"
        )
    bad = ~finite
    n_nan = int(np.isnan(block).sum())
    n_inf = int(bad.sum()) - n_nan
    row, col = first_bad(bad)
    stop = token_start + block.shape[1] - 1
    raise InputError(
        f"{label or f'store {path}'}: nll has {n_nan} NaN and {n_inf} inf values in tokens {token_start}..{stop} "
        f"(first: model {models[row]!r}, token position {token_start + col}); "
        "recompute those NLLs or drop those tokens before using the store"
    )


def check_constant_rows(
    lo: np.ndarray, hi: np.ndarray, models: Sequence[str], whole: np.ndarray | None = None, *,
    path: str | os.PathLike = "store",
) -> None:
    """Warn (:class:`~bsig_array.errors.BsigWarning`) about models whose NLL is the same at every token.

    Such a row ties every token, so it carries no ranking information, and is usually the mark of a
    broken run (one constant written for every token); the ranks stay well defined (midranks), so
    ``bsig validate --deep`` and ``bsig screen`` both warn rather than refuse.  ``lo``/``hi`` are the
    folded row extremes of :func:`check_block`; ``whole`` marks the rows read in full (an incomplete
    store's unwritten rows are skipped).
    """
    flat = (lo == hi) if whole is None else (lo == hi) & whole
    if flat.any():
        names = [str(m) for m, f in zip(models, flat) if f]
        warnings.warn(
            f"store {path}: model(s) {names} have the same NLL ({float(lo[np.argmax(flat)]):.6g}) at every token; "
            "such a row ties every token and carries no ranking information: check the run that wrote it",
            BsigWarning, stacklevel=2,
        )
