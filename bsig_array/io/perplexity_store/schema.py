"""Schema of the perplexity store: names, layout constants and the checks every reader applies.

Layout of a store (Zarr v3 group, docs/DESIGN.md §3)::

    nll       (model, token)  float32|float16   chunks (all models, chunk_tokens), Blosc-lz4
    model     (model,)        str               coordinate
    token     (token,)        int64             feature id (coordinate, written chunk by chunk)
    doc       (token,)        int64             source document of each feature      (optional)
    piece     (token,)        int32             piece index of the target in its doc (optional)
    _complete (model, chunk)  uint8             progress record: 1 = block written

The writer is :mod:`.writer`, the one read path :mod:`.reader`, the deep scan :mod:`.validate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec

from bsig_array.errors import InputError, OptionError
from bsig_array.options import duplicates
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import MIN_MODELS

SCHEMA_VERSION = 1
#: Name of the NLL variable.
NLL = "nll"
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

    Chosen by ``benchmarks/bench_codec.py`` (README, "Store codec"): every screen pass decodes the
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


def first_bad(bad: np.ndarray) -> tuple[int, int]:
    """(row, column) of the first True in token order (lowest column, then lowest row)."""
    col = int(np.argmax(bad.any(axis=0)))
    return int(np.argmax(bad[:, col])), col


def check_block(
    block: np.ndarray,
    models: Sequence[str],
    token_start: int,
    *,
    path: str | os.PathLike = "store",
    label: str | None = None,
) -> None:
    """Raise if a block of ``nll`` holds NaN or inf; stages call it on every block they stream.

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
        position affected.
    """
    finite = np.isfinite(block)
    if finite.all():
        return
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
