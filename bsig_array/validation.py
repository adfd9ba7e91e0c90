"""Input validation with one-line errors that name the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from bsig_array.errors import BsigError

MIN_MODELS = 3


def check_store_structure(ds: xr.Dataset, path: str | Path = "store") -> None:
    """Check names, dims, dtype and model list of a perplexity store (no data is read).

    Raises
    ------
    BsigError
        On a missing ``nll``, wrong dims, a non-float dtype, duplicate model names or fewer than
        three models.
    """
    if "nll" not in ds.data_vars:
        raise BsigError(f"{path} has no 'nll' variable (found {sorted(ds.data_vars)}); write NLLs as nll(model, token)")
    nll = ds["nll"]
    if nll.dims != ("model", "token"):
        raise BsigError(f"{path}: nll has dims {nll.dims}, expected ('model', 'token'); transpose or rename before writing")
    if not np.issubdtype(nll.dtype, np.floating):
        raise BsigError(f"{path}: nll has dtype {nll.dtype}, expected float16/float32/float64; cast NLLs to float")
    if "model" not in ds.coords:
        raise BsigError(f"{path}: no 'model' coordinate; name the models with a model(model) str coordinate")
    models = [str(m) for m in np.asarray(ds["model"].values)]
    dup = sorted({m for m in models if models.count(m) > 1})
    if dup:
        raise BsigError(f"{path}: duplicate model names {dup}; give every model a unique name")
    if len(models) < MIN_MODELS:
        raise BsigError(f"{path}: only {len(models)} models, need at least {MIN_MODELS} to rank tokens across models")
