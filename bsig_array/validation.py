"""Input validation with one-line errors that name the problem and the fix."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

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


def _readable(array: zarr.Array, region: tuple[slice, ...]) -> bool:
    try:
        array[region]
    except Exception:  # any codec/storage error means the file is damaged
        return False
    return True


def _first_bad(bad: np.ndarray) -> tuple[int, int]:
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
    BsigError
        Naming how many NaN and inf values, the block's token range and the first model and token
        position affected.
    """
    finite = np.isfinite(block)
    if finite.all():
        return
    bad = ~finite
    n_nan = int(np.isnan(block).sum())
    n_inf = int(bad.sum()) - n_nan
    row, col = _first_bad(bad)
    stop = token_start + block.shape[1] - 1
    raise BsigError(
        f"{label or f'store {path}'}: nll has {n_nan} NaN and {n_inf} inf values in tokens {token_start}..{stop} "
        f"(first: model {models[row]!r}, token position {token_start + col}); "
        "recompute those NLLs or drop those tokens before using the store"
    )


@dataclass
class StoreSummary:
    """What :func:`validate_store` found; :meth:`format` renders it for ``bsig validate``."""

    path: str
    models: list[str]
    n_tokens: int
    chunk_tokens: int
    n_chunks: int
    dtype: str
    bsig_store: bool
    schema_version: int | None
    complete_blocks: int
    total_blocks: int
    coords: list[str]
    deep: bool = False
    nan: int = 0
    inf: int = 0
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        """A one-screen, human-readable summary."""
        names = ", ".join(self.models[:8]) + (f", ... ({len(self.models) - 8} more)" if len(self.models) > 8 else "")
        kind = f"bsig store, schema {self.schema_version}" if self.bsig_store else "plain zarr (no progress record)"
        values = (
            "all chunks readable, no NaN/inf" if self.deep else "not read (pass --deep to stream every chunk)"
        )
        lines = [
            f"store      {self.path} ({kind})",
            f"models     {len(self.models)}: {names}",
            f"tokens     {self.n_tokens:,} in {self.n_chunks:,} chunks of {self.chunk_tokens:,}",
            f"nll dtype  {self.dtype}",
            f"complete   {self.complete_blocks:,}/{self.total_blocks:,} (model, chunk) blocks",
            f"coords     {', '.join(self.coords) or '-'}",
            f"values     {values}",
        ]
        return "\n".join(lines + self.notes)


def validate_store(
    path: str | os.PathLike, *, deep: bool = False, mark_pending: bool = False
) -> StoreSummary:
    """Check a perplexity store; with ``deep`` stream every chunk (one at a time) and check its values.

    Parameters
    ----------
    path
        Store directory.
    deep
        Read every chunk of ``nll`` and the token coordinates: count NaN/inf and find unreadable
        (truncated or corrupt) chunk files.  Memory: one token chunk (all models) at a time.
    mark_pending
        With ``deep``, mark the token chunks of unreadable files unwritten in the progress record, so
        resuming the writer rewrites exactly those (bsig stores only).

    Returns
    -------
    StoreSummary

    Raises
    ------
    BsigError
        On any structural problem, an incomplete store, or (deep) NaN/inf values or unreadable chunks;
        the message counts all problems found and names the first of each kind.
    """
    from bsig_array.progress import progress_bar
    from bsig_array.store import PROGRESS, StoreWriter, chunk_files, open_store, quiet_zarr

    path = Path(path)
    ds = open_store(path, require_complete=not mark_pending, check_values=False)
    with quiet_zarr():
        group = zarr.open_group(path, mode="r", zarr_format=3)
    nll = group["nll"]
    chunk = int(nll.chunks[1])
    n_tokens = int(nll.shape[1])
    n_chunks = -(-n_tokens // chunk)
    models = [str(m) for m in ds["model"].values]
    bsig = PROGRESS in group
    done = np.asarray(group[PROGRESS][:, :], dtype=bool) if bsig else np.ones((len(models), n_chunks), bool)
    version = group.attrs.get("bsig_schema_version")
    summary = StoreSummary(
        path=str(path),
        models=models,
        n_tokens=n_tokens,
        chunk_tokens=chunk,
        n_chunks=n_chunks,
        dtype=str(nll.dtype),
        bsig_store=bsig,
        schema_version=None if version is None else int(version),
        complete_blocks=int(done.sum()),
        total_blocks=int(done.size),
        coords=[c for c in ("token", "doc", "piece") if c in group],
        deep=deep,
    )
    if not deep:
        return summary

    first: tuple[str, int] | None = None
    bad_chunks: list[int] = []
    coords = [group[c] for c in summary.coords]
    with progress_bar("validate", n_chunks, unit="chunks") as bar:
        for j in range(n_chunks):
            cols = slice(j * chunk, min((j + 1) * chunk, n_tokens))
            # A deleted chunk file reads back as the NaN fill value: name it instead of counting NaN.
            missing = [
                k for k, (rows, _) in chunk_files(nll, (slice(0, nll.shape[0]), cols))
                if done[rows, j].any() and not (path / k).exists()
            ]
            summary.unreadable += [f"{k} (missing)" for k in missing]
            bad_chunks += [j] * bool(missing)
            try:
                block = None if missing else np.asarray(nll[:, cols])
            except Exception:  # find the damaged files one by one (only on this error path)
                found = [k for k, part in chunk_files(nll, (slice(0, nll.shape[0]), cols)) if not _readable(nll, part)]
                summary.unreadable += found or [f"nll tokens {cols.start}..{cols.stop - 1}"]
                bad_chunks.append(j)
                block = None
            for coord in coords:
                try:
                    coord[cols]
                except Exception:
                    summary.unreadable += [k for k, part in chunk_files(coord, (cols,)) if not _readable(coord, part)]
                    bad_chunks.append(j)
            if block is not None:
                block = block[done[:, j]]  # unwritten blocks of an incomplete store are NaN by design
                finite = np.isfinite(block)
                if not finite.all():
                    n_nan = int(np.isnan(block).sum())
                    summary.nan += n_nan
                    summary.inf += int((~finite).sum()) - n_nan
                    if first is None:
                        row, col = _first_bad(~finite)
                        first = (str(np.asarray(models)[done[:, j]][row]), cols.start + col)
            bar.advance(1)

    problems = []
    if summary.unreadable:
        extra = f" and {len(summary.unreadable) - 1} more" if len(summary.unreadable) > 1 else ""
        fix = "re-run the writer to rewrite them" if mark_pending and bsig else (
            "rewrite them: 'bsig validate --deep --mark-pending' then re-run the writer, or re-create the store"
        )
        if mark_pending and bsig:
            StoreWriter(path).invalidate(sorted(set(bad_chunks)))
            fix = "they are now marked pending: " + fix
        problems.append(f"{len(summary.unreadable)} unreadable chunk files ({summary.unreadable[0]}{extra}); {fix}")
    if first is not None:
        problems.append(
            f"nll has {summary.nan} NaN and {summary.inf} inf values (first: model {first[0]!r}, "
            f"token position {first[1]}); recompute those NLLs or drop those tokens"
        )
    if problems:
        raise BsigError(f"store {path}: " + "; ".join(problems))
    return summary
