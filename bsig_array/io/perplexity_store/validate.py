"""``bsig validate``: check a perplexity store's structure and, deeply, every chunk of it.

The deep scan reads one token chunk (all models) at a time, counts NaN/inf, names unreadable or
missing chunk files and can mark their chunks pending so resuming the writer rewrites them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.reader import chunk_files, open_store
from bsig_array.io.perplexity_store.schema import NLL, PROGRESS, TOKEN_COORDS, first_bad
from bsig_array.io.perplexity_store.writer import StoreWriter
from bsig_array.io.zarr_format import quiet_zarr, zarr_array
from bsig_array.runtime.progress import Progress, no_progress


def _readable(array: zarr.Array, region: tuple[slice, ...]) -> bool:
    try:
        array[region]
    except Exception:  # any codec/storage error means the file is damaged
        return False
    return True


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
    path: str | os.PathLike, *, deep: bool = False, mark_pending: bool = False, progress: Progress = no_progress
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
    progress
        Receives one bar over the chunks of the deep scan.

    Returns
    -------
    StoreSummary

    Raises
    ------
    InputError
        On any structural problem, an incomplete store, or (deep) NaN/inf values or unreadable chunks;
        the message counts all problems found and names the first of each kind.
    """
    path = Path(path)
    ds = open_store(path, require_complete=not mark_pending, check_values=False)
    with quiet_zarr():
        group = zarr.open_group(path, mode="r", zarr_format=3)
    nll = zarr_array(group, NLL)
    chunk = int(nll.chunks[1])
    n_tokens = int(nll.shape[1])
    n_chunks = -(-n_tokens // chunk)
    models = [str(m) for m in ds["model"].values]
    bsig = PROGRESS in group
    done = np.asarray(zarr_array(group, PROGRESS)[:, :], dtype=bool) if bsig else np.ones((len(models), n_chunks), bool)
    version: Any = group.attrs.get("bsig_schema_version")
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
        coords=[c for c in TOKEN_COORDS if c in group],
        deep=deep,
    )
    if not deep:
        return summary

    first: tuple[str, int] | None = None
    bad_chunks: list[int] = []
    coords = [zarr_array(group, c) for c in summary.coords]
    with progress("validate", n_chunks, unit="chunks") as bar:
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
                        row, col = first_bad(~finite)
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
        raise InputError(f"store {path}: " + "; ".join(problems))
    return summary
