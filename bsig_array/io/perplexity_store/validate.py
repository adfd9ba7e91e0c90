"""``bsig validate``: check a perplexity store's structure and, deeply, every chunk of it.

The deep scan reads one token chunk (all models) at a time, counts NaN/inf, names unreadable or
missing chunk files and can mark their chunks pending so resuming the writer rewrites them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from bsig_array.errors import InputError
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.reader import chunk_files, open_store, read_block
from bsig_array.io.perplexity_store.schema import (
    NLL,
    PROGRESS,
    TOKEN_COORDS,
    check_block,
    check_constant_rows,
    first_bad,
)
from bsig_array.io.perplexity_store.writer import StoreWriter, progress_record, read_progress
from bsig_array.io.zarr_format import missing_chunks, open_group, zarr_array
from bsig_array.runtime.progress import Progress, no_progress


def _read(
    array: zarr.Array, region: tuple[slice, ...], path: str, written: bool, summary: StoreSummary, values: list[str]
) -> np.ndarray | None:
    """``read_block`` of one chunk (no value check); a damaged or missing file is added to
    ``summary.unreadable`` by key, a token-id problem to ``values``; ``None`` then."""
    try:
        return read_block(array, region, path=path, check_values=False, require_chunks=written)
    except InputError as exc:
        files = list(chunk_files(array, region))
        missing = {key for key, _ in missing_chunks(array, region)} if written else set()
        damaged = [f"{key} (missing)" if key in missing else key for key, part in files if key in missing or not _readable(array, part)]
        if damaged:
            summary.unreadable += damaged
        else:
            values.append(str(exc).split(": ", 1)[1])
        return None


def _readable(array: zarr.Array, region: tuple[slice, ...]) -> bool:
    try:
        read_block(array, region, check_values=False, require_chunks=False, check_ids=False)
    except InputError:
        return False
    return True


class TokenIds:
    """Uniqueness of the token ids over the whole store, chunk by chunk: ids that increase across
    chunks (every bsig writer's) cost nothing; otherwise the ids are read again and sorted at the end
    (8 bytes per token)."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.increasing = True

    def add(self, ids: np.ndarray) -> None:
        """Take the ids of the next chunk (integral and non-negative: read_block checked them)."""
        if self.increasing and ids.size:
            self.increasing = bool(np.all(ids[1:] > ids[:-1])) and (self.last is None or ids[0] > self.last)
            self.last = int(ids[-1])

    def duplicate(self, token: zarr.Array, path: str) -> str | None:
        """The screen's message for the first repeated id, or ``None`` (reads ``token`` again unless
        the ids increased throughout)."""
        if self.increasing:
            return None
        s = np.sort(read_block(token, (slice(None),), path=path, require_chunks=False).astype(np.int64))
        dup = np.flatnonzero(s[1:] == s[:-1])
        if not dup.size:
            return None
        tok = int(s[dup[0]])
        return (
            f"token id {tok} occurs {int(np.count_nonzero(s == tok))} times; screening needs unique token ids "
            "(write the token coordinate when creating the store)"
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
    path: str | os.PathLike | Location, *, deep: bool = False, mark_pending: bool = False, progress: Progress = no_progress
) -> StoreSummary:
    """Check a perplexity store; with ``deep`` stream every chunk (one at a time) and check its values.

    Parameters
    ----------
    path
        Store directory or object-store URL.
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
    loc = as_location(path)
    path = str(loc)  # how messages name it (a URL without credentials)
    ds = open_store(loc, require_complete=not mark_pending, check_values=False)
    group = open_group(loc)
    nll = zarr_array(group, NLL)
    chunk = int(nll.chunks[1])
    n_tokens = int(nll.shape[1])
    n_chunks = -(-n_tokens // chunk)
    models = [str(m) for m in ds["model"].values]
    bsig = PROGRESS in group
    done = (
        read_progress(progress_record(group, loc, (len(models), n_chunks)), loc).astype(bool) if bsig
        else np.ones((len(models), n_chunks), bool)
    )
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

    coords = [zarr_array(group, c) for c in summary.coords]
    first: tuple[str, int] | None = None  # first NaN/inf: (model, token position)
    values: list[str] = []  # other value problems (negative NLLs, token ids), as the stages word them
    bad_chunks: list[int] = []
    ids = TokenIds()
    lo = np.full(len(models), np.inf)
    hi = np.full(len(models), -np.inf)
    with progress("validate", n_chunks, unit="chunks") as bar:
        for j in range(n_chunks):
            cols = slice(j * chunk, min((j + 1) * chunk, n_tokens))
            written = bool(done[:, j].any())  # unwritten blocks of an incomplete store are NaN by design
            # Every read goes through the stages' read path (read_block): the same checksums,
            # missing-chunk and token-id checks as the screen's.
            damaged = len(summary.unreadable)
            block = _read(nll, (slice(0, nll.shape[0]), cols), path, written, summary, values)
            for coord in coords:
                part = _read(coord, (cols,), path, written, summary, values)
                if part is not None and written and coord.path.rsplit("/", 1)[-1] == "token":
                    ids.add(part)
            if len(summary.unreadable) > damaged:  # damaged files (not bad values): --mark-pending rewrites them
                bad_chunks.append(j)
            if block is not None and written:
                rows = done[:, j]
                block = block[rows]
                names = [m for m, r in zip(models, rows) if r]
                finite = np.isfinite(block)
                if not finite.all():
                    n_nan = int(np.isnan(block).sum())
                    summary.nan += n_nan
                    summary.inf += int((~finite).sum()) - n_nan
                    if first is None:
                        row, col = first_bad(~finite)
                        first = (names[row], cols.start + col)
                try:
                    row_lo, row_hi = check_block(block, names, cols.start, path=path)
                except InputError as exc:
                    if finite.all():  # negative NLLs (NaN/inf are counted over the store above)
                        values.append(str(exc).split(": ", 1)[1])
                    with np.errstate(invalid="ignore"):
                        row_lo = np.where(finite, block, np.inf).min(axis=1)
                        row_hi = np.where(finite, block, -np.inf).max(axis=1)
                lo[rows] = np.minimum(lo[rows], row_lo)
                hi[rows] = np.maximum(hi[rows], row_hi)
            bar.advance(1)

    problems = []
    if summary.unreadable:
        extra = f" and {len(summary.unreadable) - 1} more" if len(summary.unreadable) > 1 else ""
        fix = "re-run the writer to rewrite them" if mark_pending and bsig else (
            "rewrite them: 'bsig validate --deep --mark-pending' then re-run the writer, or re-create the store"
        )
        if mark_pending and bsig:
            StoreWriter(loc).invalidate(sorted(set(bad_chunks)))
            fix = "they are now marked pending: " + fix
        problems.append(f"{len(summary.unreadable)} unreadable chunk files ({summary.unreadable[0]}{extra}); {fix}")
    if first is not None:
        problems.append(
            f"nll has {summary.nan} NaN and {summary.inf} inf values (first: model {first[0]!r}, "
            f"token position {first[1]}); recompute those NLLs or drop those tokens"
        )
    problems += values[:1]
    duplicate = ids.duplicate(zarr_array(group, "token"), path) if "token" in group and not summary.unreadable else None
    if duplicate:
        problems.append(duplicate)
    if not problems:
        check_constant_rows(lo, hi, models, np.asarray(done.all(axis=1)), path=path)
    if problems:
        raise InputError(f"store {path}: " + "; ".join(problems))
    return summary


def repair_progress(path: str | os.PathLike | Location) -> str:
    """Rebuild the progress record of a bsig store from the chunks that verify
    (:meth:`StoreWriter.rebuild_progress`) and say what it marked, for ``bsig validate --repair-progress``."""
    loc = as_location(path)
    if not loc.exists():
        raise InputError(f"store {loc} does not exist; pass the perplexity store whose progress record is damaged")
    writer = StoreWriter(loc)
    marked, total = writer.rebuild_progress()
    rest = "every block verifies: the store is complete" if marked == total else (
        f"the other {total - marked:,} are unmarked: run the command that wrote the store again to write them"
    )
    return f"rebuilt the progress record of {loc}: {marked:,} of {total:,} (model, chunk) blocks verify and are marked; {rest}"
