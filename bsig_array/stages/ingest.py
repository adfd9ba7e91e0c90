"""Ingest stage: a perplexity store from NLLs computed elsewhere (``bsig ingest``).

Two input layouts, both read in streaming fashion (pyarrow record batches, never a whole file):

* **paper** -- the paper repository's output: one Parquet file per model with columns ``text_id``,
  ``chunk_id`` and ``logprobs: list<float>``.  The feature of a row is the *last* entry of its
  ``logprobs`` list and ``nll = -logprob``.  Rows are matched across models by
  ``(text_id, chunk_id)``; tokens are ordered by that key (token id = position), ``doc`` is the
  ``text_id`` when it is integer-like (else its rank among the sorted distinct ``text_id``) and
  ``piece`` is the ``chunk_id``.
* **wide** -- one Parquet or CSV table, token rows x model columns, with optional integer ``token``,
  ``doc`` and ``piece`` columns.

Memory (paper layout).  Rows may come in any order, so a token's position is only known once the key
set is.  Pass 1 streams the key columns of the first file twice (distinct text ids and chunk-id
range, then the keys) and keeps the sorted int64 keys (8 bytes per token).  Pass 2 streams each model's file
once, places its NLLs by key into one float32 vector (4 bytes per token, plus a 1-byte seen-mask)
and spills it to a raw file in a temporary directory next to the output (4 bytes x models x tokens
on disk).  Pass 3 reads one store chunk of every model back with positioned reads (no memory map)
and writes whole chunks.  Peak memory is therefore about 13 bytes per token plus one record batch
(or Parquet row group) and one store chunk, independent of the number of models and of the length
of the ``logprobs`` lists.  Every mismatch between files is found in pass 2, before
the store is created; the store is built under a temporary name and renamed when complete.

The wide layout takes two streaming passes: the first counts the rows and checks every value and id
(:func:`_check_wide`; it keeps the token ids, 8 bytes per token, to find repeats), the second fills a
(model x chunk) buffer written when full.

Nothing that cannot be a log-probability, an NLL or an id reaches a store: positive or non-finite
last logprobs, empty/NaN/inf/negative NLLs, and negative, non-integer or repeated ids are refused
before the store is created, in one line naming the first :data:`SHOW` rows and counting them all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bsig_array.errors import InputError
from bsig_array.io.atomic import atomic_output, check_new_output, scratch_dir
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.schema import NLL_TOLERANCE, PERPLEXITY_STORE, check_block
from bsig_array.io.perplexity_store.writer import StoreWriter, create_store
from bsig_array.io.provenance import FINGERPRINT_TOKENS, make_record, record_attrs, store_fingerprint_of
from bsig_array.io.zarr_format import zarr_array
from bsig_array.options import check_choice, check_count, duplicates
from bsig_array.runtime.progress import Bar, Progress, no_progress

#: An input file: a local path, or a :class:`~bsig_array.io.location.Location` on an object store.
Source = Path | Location
PAPER_COLUMNS = ("text_id", "chunk_id", "logprobs")
COORD_COLUMNS = ("token", "doc", "piece")
BATCH_ROWS = 1 << 16
#: Offending rows a refusal names (it counts them all).
SHOW = 3
_INT32_MAX = np.iinfo(np.int32).max


class _Found:
    """Offending entries of one kind, for one message: how many in all and the first few."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.first: list[str] = []

    def add(self, count: int, shown: Sequence[str]) -> None:
        """Count ``count`` more; ``shown`` names the first :data:`SHOW` of them."""
        self.count += count
        self.first += list(shown)[: max(0, SHOW - len(self.first))]

    def __bool__(self) -> bool:
        return self.count > 0

    def text(self) -> str:
        more = f", and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        return f"{self.count} {self.what} ({'; '.join(self.first)}{more})"


# --------------------------------------------------------------------------------------------- entry


def _source(item: str | os.PathLike | Location) -> Source:
    """``item`` as a local :class:`~pathlib.Path`, or a :class:`Location` when it is remote."""
    loc = as_location(item)
    return loc.path if loc.is_local else loc


def _stem(source: Source) -> str:
    return source.stem if isinstance(source, Path) else Path(source.name).stem


def _readable(source: Source) -> Any:
    """What pyarrow reads: the local path, or a seekable fsspec file (``.gz``/``.bz2`` decompressed)."""
    if isinstance(source, Path):
        return source
    return source.open("rb", compression="infer")


def expand_inputs(inputs: Sequence[str | os.PathLike | Location]) -> list[Source]:
    """Files named by ``inputs``; a directory (or object-store prefix) stands for the ``*.parquet``
    files in it (sorted)."""
    files: list[Source] = []
    for item in inputs:
        p = _source(item)
        if p.is_dir():
            if isinstance(p, Path):
                found: list[Source] = list(sorted(p.glob("*.parquet")))
            else:
                found = [p.child(n) for n in sorted(p.names()) if n.endswith(".parquet")]
            if not found:
                raise InputError(f"directory {p} holds no *.parquet files; pass the per-model Parquet files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise InputError(f"input {p} does not exist; check the path")
    if not files:
        raise InputError("no input files given; pass Parquet/CSV files or a directory of per-model Parquet files")
    return files


def detect_format(files: Sequence[Source]) -> str:
    """``"paper"`` when every file is Parquet with ``text_id``, ``chunk_id``, ``logprobs``; else ``"wide"``."""
    if all(f.suffix == ".parquet" for f in files):
        names = [set(_parquet_file(f).schema_arrow.names) for f in files]
        if all(set(PAPER_COLUMNS) <= n for n in names):
            return "paper"
    if len(files) != 1:
        raise InputError(
            f"got {len(files)} input files but they are not per-model Parquet files with columns "
            f"{list(PAPER_COLUMNS)}; pass one wide table (token rows x model columns) or the paper-repo files"
        )
    return "wide"


def ingest(
    inputs: Sequence[str | os.PathLike | Location],
    out: str | os.PathLike | Location,
    *,
    format: str = "auto",
    model_names: Sequence[str] | None = None,
    chunk_tokens: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    batch_rows: int = BATCH_ROWS,
    progress: Progress = no_progress,
) -> Path:
    """Ingest NLL files into a perplexity store at ``out`` and return its path.

    Parameters
    ----------
    inputs
        Paper layout: one Parquet file per model (or a directory of them).  Wide layout: one
        Parquet/CSV file.  Local paths or object-store URLs (read as streams of byte ranges).
    out
        Store directory (or object-store URL) to create.  On an object store the store is built in a
        local staging directory and published when complete (root ``zarr.json`` last), so, as on
        disk, a killed ingest leaves nothing that opens and ``--overwrite`` keeps the old store
        until the new one is whole.
    format
        ``"paper"``, ``"wide"`` or ``"auto"`` (detected from the Parquet columns).
    model_names
        Paper layout: one name per file (default: the file stems).  Wide layout: the model columns to
        take (default: every column except ``token``, ``doc``, ``piece``).
    chunk_tokens, dtype, overwrite
        As in :func:`bsig_array.io.perplexity_store.writer.create_store`.
    batch_rows
        Rows per record batch read from the inputs.
    progress
        Receives the bars of the reading and writing passes.
    """
    check_count(batch_rows, "--batch-rows", minimum=1)
    if chunk_tokens is not None:
        check_count(chunk_tokens, "--chunk-tokens", minimum=1)
    files = expand_inputs(inputs)
    if format == "auto":
        format = detect_format(files)
    check_choice(format, ("auto", "paper", "wide"), "input format")
    if format == "wide" and len(files) != 1:
        raise InputError(f"the wide layout takes one table, got {len(files)} files; merge them or use --format paper")
    # Leftovers of an ingest killed while publishing to an object store are replaced (check_new_output).
    out = check_new_output(out, overwrite=overwrite, what="store", kind=PERPLEXITY_STORE, inputs=[*inputs, *files])
    # Build next to the target and rename at the end: a failed or killed ingest never leaves a
    # store at `out`, and --overwrite keeps the old store until the new one is complete.  A killed
    # ingest is not resumed: the next one removes its debris (named by pid), says so and starts over.
    # Folders made for the output go again when the ingest refuses its input: a refusal writes nothing.
    made = _missing_folders(out)
    try:
        _build(files, out, format, model_names, chunk_tokens, dtype, batch_rows, progress)
    except BaseException:
        for folder in made:  # deepest first; only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return out


def _missing_folders(out: Path) -> list[Path]:
    """The folders above a local ``out`` that do not exist yet, deepest first."""
    if not isinstance(out, Path):
        return []
    made, parent = [], Path(os.path.abspath(out)).parent
    while not parent.exists() and parent != parent.parent:
        made.append(parent)
        parent = parent.parent
    return made


def _build(files: list[Source], out: Path, format: str, model_names: Sequence[str] | None, chunk_tokens: int | None,
           dtype: str, batch_rows: int, progress: Progress) -> None:
    """The store at ``out``, built beside it and swapped in when complete (:func:`ingest`)."""
    with atomic_output(out) as partial:
        if format == "paper":
            ingest_paper(files, partial, model_names=model_names, chunk_tokens=chunk_tokens, dtype=dtype,
                         overwrite=True, batch_rows=batch_rows, progress=progress)
        else:
            ingest_wide(files[0], partial, models=model_names, chunk_tokens=chunk_tokens, dtype=dtype,
                        overwrite=True, batch_rows=batch_rows, progress=progress)
        # The record goes in before the swap: a store at `out` always carries it.
        writer = StoreWriter(partial)
        sources = {f"nll:{m}": f for m, f in zip(writer.models, files)} if format == "paper" else {"nll": files[0]}
        writer.update_attrs(**record_attrs(make_record(
            "ingest", inputs=sources, fingerprints={"perplexity": _fingerprint(writer)},
            options={"format": format, "model_names": list(model_names) if model_names else None,
                     "chunk_tokens": writer.chunk_tokens, "dtype": dtype},
        )))


def _fingerprint(writer: StoreWriter) -> str:
    """:func:`~bsig_array.io.provenance.store_fingerprint` of the store just written (read through
    the writer: the checked reader would refuse a store of fewer than three models, which ingest allows)."""
    d = writer.n_tokens
    n = min(d, FINGERPRINT_TOKENS)
    token = zarr_array(writer.group, "token")
    head, tail = slice(0, n), slice(d - n, d)
    return store_fingerprint_of(writer.models, d, (token[head], writer.nll[:, head]), (token[tail], writer.nll[:, tail]))


def _parquet_file(path: Source) -> pq.ParquetFile:
    try:
        # pre_buffer would read every column chunk of the file ahead (memory ~ file size).
        return pq.ParquetFile(_readable(path), pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {path} as Parquet ({exc}); check the file") from None


# --------------------------------------------------------------------------------------- paper layout


class _KeyIndex:
    """Sorted (doc, chunk) keys of the token axis and the lookup from a batch's rows to positions."""

    def __init__(self, docs: np.ndarray, doc_is_int: bool, chunk_min: int, chunk_span: int, keys: np.ndarray):
        self.docs = docs  # distinct text ids, sorted; a doc's code is its index here
        self.doc_is_int = doc_is_int
        self.doc_lookup = pd.Index(docs)
        self.chunk_min = chunk_min
        self.chunk_span = chunk_span
        self.keys = keys  # sorted unique int64 keys code * chunk_span + (chunk_id - chunk_min)

    @property
    def n(self) -> int:
        return len(self.keys)

    def codes(self, text_id: pa.Array) -> np.ndarray:
        """Code of each text id of a batch; -1 where it is not in the index."""
        if self.doc_is_int and pa.types.is_integer(text_id.type):
            values = text_id.cast(pa.int64()).to_numpy(zero_copy_only=False)
        elif self.doc_is_int:  # ids written as strings/floats in this file: non-integers find no code
            try:
                values = _int_like(text_id)
            except (ValueError, pa.ArrowException):
                values = pd.to_numeric(text_id.to_numpy(zero_copy_only=False), errors="coerce")
        else:
            values = np.asarray(text_id.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        return self.doc_lookup.get_indexer(values)

    def describe(self, key: int) -> str:
        """``text_id=..., chunk_id=...`` of a key, for messages."""
        code, rel = divmod(int(key), self.chunk_span)
        doc = int(self.docs[code]) if self.doc_is_int else str(self.docs[code])
        return f"text_id={doc!r}, chunk_id={rel + self.chunk_min}"

    def positions(self, text_id: pa.Array, chunk_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Token position of each row, a mask of rows whose key is in the index, and whether the
        batch repeats a key."""
        codes = self.codes(text_id)
        rel = chunk_id - self.chunk_min
        keys = codes.astype(np.int64) * self.chunk_span + rel
        # Look up in sorted order: monotone queries walk self.keys cache-friendly (~5x faster).
        order = np.argsort(keys)
        ordered = keys[order]
        pos = np.empty(len(keys), dtype=np.int64)
        pos[order] = np.searchsorted(self.keys, ordered)
        ok = (codes >= 0) & (rel >= 0) & (rel < self.chunk_span) & (pos < self.n)
        ok[ok] &= self.keys[pos[ok]] == keys[ok]
        return pos, ok, bool((ordered[1:] == ordered[:-1]).any())

    def coords(self, sl: slice) -> tuple[np.ndarray, np.ndarray]:
        """``doc`` (int64) and ``piece`` (int32) of the tokens in ``sl``."""
        codes, rel = np.divmod(self.keys[sl], self.chunk_span)
        doc = self.docs[codes].astype(np.int64) if self.doc_is_int else codes
        return doc, (rel + self.chunk_min).astype(np.int32)


def _int_like(values: pa.Array) -> np.ndarray:
    """Integer ids as int64; raises ValueError when a value is not integer-like."""
    if pa.types.is_integer(values.type):
        return values.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_floating(values.type):
        out = values.to_numpy(zero_copy_only=False)
        if not np.all(np.isfinite(out)) or not np.all(out == np.round(out)):
            raise ValueError("non-integral float id")
        return out.astype(np.int64)
    strings = values.cast(pa.string()).to_numpy(zero_copy_only=False)
    return np.array([int(s) for s in strings], dtype=np.int64)  # ValueError on a non-integer string


def _batches(path: Source, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    pf = _parquet_file(path)
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"{path} lacks columns {missing}; paper-repo files have {list(PAPER_COLUMNS)}")
    try:
        yield from pf.iter_batches(batch_size=batch_rows, columns=list(columns))
    except pa.ArrowException as exc:
        raise InputError(f"cannot read {path} ({exc}); the file is truncated or corrupt") from None


def _chunk_ids(batch: pa.RecordBatch, path: Source) -> np.ndarray:
    col = batch.column("chunk_id")
    if col.null_count:
        raise InputError(f"{path}: chunk_id has {col.null_count} empty values; every row needs an integer chunk_id")
    try:
        return _int_like(col)
    except (ValueError, pa.ArrowException):
        raise InputError(f"{path}: chunk_id must be integers (got {col.type}); fix the file") from None


def _key_index(path: Source, batch_rows: int) -> _KeyIndex:
    """Pass 1: the key set of one file, sorted, with duplicates refused.

    Two streaming reads of the key columns only: the first finds the distinct text ids and the
    chunk-id range, the second writes each row's key straight into the preallocated key array, so
    memory stays at 8 bytes per token plus the distinct text ids.
    """
    distinct: pa.Array | None = None
    pending: list[pa.Array] = []
    n, chunk_min, chunk_max = 0, None, None
    bad_chunk = _Found("chunk_ids are negative or above 2**31-1")
    for batch in _batches(path, ("text_id", "chunk_id"), batch_rows):
        text = batch.column("text_id")
        if text.null_count:
            raise InputError(f"{path}: text_id has {text.null_count} empty values; every row needs a text_id")
        chunk = _chunk_ids(batch, path)
        rows = np.flatnonzero((chunk < 0) | (chunk > _INT32_MAX))
        bad_chunk.add(len(rows), [f"text_id={text[r].as_py()!r}, chunk_id={int(chunk[r])}" for r in rows[:SHOW]])
        if len(chunk):
            lo, hi = int(chunk.min()), int(chunk.max())
            chunk_min = lo if chunk_min is None else min(chunk_min, lo)
            chunk_max = hi if chunk_max is None else max(chunk_max, hi)
        pending.append(pc.unique(text))
        if sum(len(a) for a in pending) > max(0 if distinct is None else len(distinct), 1 << 20):
            distinct, pending = _distinct(distinct, pending), []  # compact: bounded by the doc count
        n += batch.num_rows
    if n == 0:
        raise InputError(f"{path} has no rows; nothing to ingest")
    if bad_chunk:
        raise InputError(f"{path}: {bad_chunk.text()}; chunk_id is the piece id, a non-negative 32-bit integer: renumber them")
    distinct = _distinct(distinct, pending)
    try:
        docs = np.unique(_int_like(distinct))
        doc_is_int = True
    except (ValueError, pa.ArrowException):
        docs = np.unique(np.asarray(distinct.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=str)).astype(object)
        doc_is_int = False
    if doc_is_int and docs[0] < 0:
        negative = docs[docs < 0]
        raise InputError(
            f"{path}: {len(negative)} integer text_ids are negative ({', '.join(str(int(d)) for d in negative[:SHOW])}"
            f"{', …' if len(negative) > SHOW else ''}); an integer text_id is the doc id, a non-negative integer: renumber them"
        )
    assert chunk_min is not None and chunk_max is not None  # n > 0 rows, each with a chunk_id
    span = chunk_max - chunk_min + 1
    if len(docs) * span >= 2**62:
        raise InputError(f"{path}: chunk_id range {chunk_min}..{chunk_max} is too wide to index; renumber chunk_id per text")
    index = _KeyIndex(docs, doc_is_int, chunk_min, span, np.empty(0, np.int64))
    keys = np.empty(n, np.int64)
    start = 0
    for batch in _batches(path, ("text_id", "chunk_id"), batch_rows):
        stop = start + batch.num_rows
        if stop > n:
            break
        keys[start:stop] = index.codes(batch.column("text_id")).astype(np.int64) * span + (_chunk_ids(batch, path) - chunk_min)
        start = stop
    if start != n:
        raise InputError(f"{path} changed while reading; ingest it again")
    keys.sort()
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if len(dup):
        raise InputError(
            f"{path}: {len(dup)} duplicate (text_id, chunk_id) rows, first ({index.describe(keys[dup[0]])}); "
            "keep one row per feature"
        )
    index.keys = keys
    return index


def _distinct(distinct: pa.Array | None, pending: list[pa.Array]) -> pa.Array:
    parts = ([] if distinct is None else [distinct]) + pending
    return pa.concat_arrays(parts).unique()


def _last_logprob(batch: pa.RecordBatch, path: Source) -> np.ndarray:
    """The last entry of each row's ``logprobs`` list (float64)."""
    lists = batch.column("logprobs")
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise InputError(f"{path}: logprobs has type {lists.type}, expected list<float>; write per-row lists of log-probabilities")
    inner = lists.type.value_type
    if not (pa.types.is_floating(inner) or pa.types.is_integer(inner)):
        raise InputError(f"{path}: logprobs has type {lists.type}, expected list<float>; write numbers, not {inner}")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    if (lengths == 0).any():
        row = int(np.argmax(lengths == 0))
        raise InputError(f"{path}: row {row} of a batch has an empty or missing logprobs list; every row needs at least one log-probability")
    offsets = lists.offsets.to_numpy(zero_copy_only=False)
    last = pc.take(lists.values, pa.array(offsets[1:] - 1))
    return pc.fill_null(last.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _fill_model(path: Source, name: str, reference: str, index: _KeyIndex, batch_rows: int, bar: Bar) -> np.ndarray:
    """Pass 2 for one model: its NLL per token position, with every row matched to the key set."""
    nll = np.full(index.n, np.nan, dtype=np.float32)
    seen = np.zeros(index.n, dtype=bool)
    positive = _Found("last logprobs are positive")
    nonfinite = _Found("last logprobs are NaN/inf")
    for batch in _batches(path, PAPER_COLUMNS, batch_rows):
        chunk = _chunk_ids(batch, path)
        pos, ok, repeated = index.positions(batch.column("text_id"), chunk)
        if not ok.all():
            row = int(np.argmax(~ok))
            text = batch.column("text_id")[row].as_py()
            raise InputError(
                f"row (text_id={text!r}, chunk_id={int(chunk[row])}) is in {path} (model {name!r}) but not in "
                f"{reference}; every model's file must hold the same (text_id, chunk_id) rows"
            )
        if repeated or seen[pos].any():
            raise InputError(f"{path} (model {name!r}) repeats (text_id, chunk_id) rows; keep one row per feature")
        seen[pos] = True
        logprob = _last_logprob(batch, path)
        text = batch.column("text_id")
        finite = np.isfinite(logprob)
        for found, rows in ((nonfinite, np.flatnonzero(~finite)), (positive, np.flatnonzero(finite & (logprob > NLL_TOLERANCE)))):
            found.add(len(rows), [f"text_id={text[r].as_py()!r}, chunk_id={int(chunk[r])}: {logprob[r]:g}" for r in rows[:SHOW]])
        nll[pos] = -logprob
        bar.advance(batch.num_rows)
    if not seen.all():
        at = int(np.argmax(~seen))
        raise InputError(
            f"row ({index.describe(index.keys[at])}) is in {reference} but missing from {path} "
            f"(model {name!r}); every model's file must hold the same rows"
        )
    problems = [f.text() for f in (positive, nonfinite) if f]
    if problems:
        raise InputError(
            f"{path} (model {name!r}): {', '.join(problems)}; a log-probability is a finite number <= 0 "
            "(nll = -logprob): recompute them, or pass NLLs as a wide table"
        )
    return nll


def ingest_paper(
    files: Sequence[Source],
    out: Path,
    *,
    model_names: Sequence[str] | None = None,
    chunk_tokens: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    batch_rows: int = BATCH_ROWS,
    progress: Progress = no_progress,
) -> Path:
    """Ingest the paper repository's per-model Parquet files (see the module docstring)."""
    files = [_source(f) for f in files]
    names = [_stem(f) for f in files] if model_names is None else [str(n) for n in model_names]
    if len(names) != len(files):
        raise InputError(f"got {len(names)} model names for {len(files)} files; give one name per file")
    dup = duplicates(names)
    if dup:
        raise InputError(f"duplicate model names {dup}; rename the files or pass --model-names")
    index = _key_index(files[0], batch_rows)
    reference = f"{files[0]} (model {names[0]!r})"
    # pid in the name: the next ingest removes the spill of a killed one (and says so).
    staging = scratch_dir(out.parent, ".bsig-ingest-")
    try:
        spills: list[Path] = []
        for path, name in zip(files, names):
            with progress(f"ingest: {name}", _parquet_file(path).metadata.num_rows, unit="rows") as bar:
                spill = staging / f"{len(spills)}.f32"
                _fill_model(path, name, reference, index, batch_rows, bar).tofile(spill)
                spills.append(spill)
        writer = create_store(
            out, names, index.n, chunk_tokens=chunk_tokens, dtype=dtype, overwrite=overwrite,
            attrs={"source": "paper-parquet", "model_sources": {n: str(f) for n, f in zip(names, files)},
                   "doc_ids": "text_id" if index.doc_is_int else "rank of text_id among sorted distinct ids"},
        )
        _write_from_spills(writer, spills, index, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_from_spills(writer: StoreWriter, spills: Sequence[Path], index: _KeyIndex, progress: Progress) -> None:
    """Pass 3: one store chunk of every model at a time, by positioned reads of the spill files."""
    itemsize = np.dtype(np.float32).itemsize
    with progress("ingest: write store", writer.n_chunks, unit="chunks") as bar:
        for j in writer.pending():
            sl = writer.chunk_slice(j)
            width = sl.stop - sl.start
            block = np.empty((len(spills), width), dtype=np.float32)
            for i, spill in enumerate(spills):
                block[i] = np.fromfile(spill, dtype=np.float32, count=width, offset=sl.start * itemsize)
            doc, piece = index.coords(sl)
            writer.write_chunk(j, block, token=np.arange(sl.start, sl.stop, dtype=np.int64), doc=doc, piece=piece)
            bar.advance(1)


# ---------------------------------------------------------------------------------------- wide layout


def _wide_reader(
    path: Source, batch_rows: int, column_types: dict | None = None
) -> tuple[pa.Schema, Callable[[list[str]], Iterator[pa.RecordBatch]]]:
    """Record batches of a wide Parquet/CSV table and its column names."""
    if path.suffix == ".parquet":
        pf = _parquet_file(path)
        return pf.schema_arrow, lambda cols: pf.iter_batches(batch_size=batch_rows, columns=cols)
    if path.suffix not in (".csv", ".tsv", ".txt") and not path.name.endswith((".csv.gz", ".csv.bz2")):
        raise InputError(f"cannot tell the format of {path}; use a .parquet or .csv file")
    parse = pacsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
    read = pacsv.ReadOptions(block_size=1 << 22)
    try:
        with pacsv.open_csv(_readable(path), read_options=read, parse_options=parse) as reader:
            schema = reader.schema
    except pa.ArrowException as exc:
        raise InputError(f"cannot read {path} as CSV ({exc}); check the file") from None

    def batches(cols: list[str]) -> Iterator[pa.RecordBatch]:
        # ids as text: _ids names a non-integer id by its row instead of failing the whole parse
        types = {c: (pa.string() if c in COORD_COLUMNS else pa.float64()) for c in cols}
        convert = pacsv.ConvertOptions(include_columns=cols, column_types=types)
        with pacsv.open_csv(_readable(path), read_options=read, parse_options=parse, convert_options=convert) as reader:
            yield from reader

    return schema, batches


def ingest_wide(
    path: Source,
    out: Path,
    *,
    models: Sequence[str] | None = None,
    chunk_tokens: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    batch_rows: int = BATCH_ROWS,
    progress: Progress = no_progress,
) -> Path:
    """Ingest one wide table (token rows x model columns, optional ``token``/``doc``/``piece``)."""
    path = _source(path)
    schema, batches = _wide_reader(path, batch_rows)
    columns = list(schema.names)
    coords = [c for c in COORD_COLUMNS if c in columns]
    names = [c for c in columns if c not in COORD_COLUMNS] if models is None else [str(m) for m in models]
    absent = [n for n in names if n not in columns]
    if absent:
        raise InputError(f"{path} has no columns {absent} (it has {columns}); check --model-names")
    dup = duplicates([c for c in columns if c in names or c in COORD_COLUMNS])
    if dup:
        raise InputError(f"{path} has several columns named {dup}; give every column its own name")
    dup = duplicates(names)
    if dup:
        raise InputError(f"duplicate model names {dup}; name each model column of {path} once in --model-names")
    if path.suffix == ".parquet":
        for n in names:
            t = schema.field(n).type
            if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
                raise InputError(f"{path}: model column {n!r} has type {t}, expected float NLLs; cast it to float")
    wanted = coords + names

    def stream(cols: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            yield from batches(cols)
        except pa.ArrowInvalid as exc:
            raise InputError(f"cannot read {path}: {str(exc).splitlines()[0]}; NLL columns must be numbers and token/doc/piece integers") from None

    n_tokens = _check_wide(path, stream(wanted), names, coords)

    writer = create_store(
        out, names, n_tokens, chunk_tokens=chunk_tokens, dtype=dtype, overwrite=overwrite,
        with_doc_piece="doc" in coords or "piece" in coords,
        attrs={"source": "wide-table", "model_sources": {n: str(path) for n in names}},
    )
    chunk = writer.chunk_tokens
    buf = np.empty((len(names), chunk), dtype=np.float64)
    cbuf = {c: np.zeros(chunk, dtype=np.int64) for c in ("token", "doc", "piece")}
    fill, j, row = 0, 0, 0
    with progress("ingest", n_tokens, unit="rows") as bar:
        for batch in stream(wanted):
            table = {c: batch.column(c) for c in wanted}
            done = 0
            while done < batch.num_rows:
                if j == writer.n_chunks:
                    raise InputError(f"{path} changed while reading (more than {n_tokens} rows); ingest it again")
                take = min(batch.num_rows - done, chunk - fill)
                for i, n in enumerate(names):  # values and ids were checked by _check_wide
                    buf[i, fill:fill + take] = table[n].slice(done, take).to_numpy(zero_copy_only=False)
                for c in coords:
                    cbuf[c][fill:fill + take] = _ids(table[c].slice(done, take), path, c)[0]
                fill += take
                done += take
                sl = writer.chunk_slice(j)
                if fill == sl.stop - sl.start:
                    _write_wide_chunk(writer, j, buf[:, :fill], cbuf, coords, fill, path, names)
                    j, fill = j + 1, 0
            row += batch.num_rows
            bar.advance(batch.num_rows)
    if j != writer.n_chunks:
        raise InputError(f"{path} changed while reading ({row} rows, expected {n_tokens}); ingest it again")
    return out


def _ids(col: pa.Array, path: Source, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids of an id column as int64 and a mask of the entries that are not integers (empty,
    fractional, text); integer-valued floats (``3.0``) count as integers."""
    t = col.type
    if pa.types.is_integer(t):
        bad = col.is_null().to_numpy(zero_copy_only=False)
        try:
            return pc.fill_null(col, 0).cast(pa.int64()).to_numpy(zero_copy_only=False), bad
        except pa.ArrowInvalid:  # uint64 beyond int64
            t, col = pa.float64(), col.cast(pa.float64(), safe=False)
    if pa.types.is_floating(t):
        f = np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(f) | (f != np.round(f)) | (np.abs(f) >= 2.0**63)
        return np.where(bad, 0, f).astype(np.int64), bad
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pc.utf8_trim_whitespace(col)
        ok = pc.fill_null(pc.match_substring_regex(text, r"^[+-]?\d{1,18}(\.0*)?$"), False)
        digits = pc.if_else(ok, pc.replace_substring_regex(text, r"\.0*$", ""), "0")
        return digits.cast(pa.int64()).to_numpy(zero_copy_only=False), ~ok.to_numpy(zero_copy_only=False)
    raise InputError(f"{path}: column {name!r} has type {t}, expected integer ids; cast it to int64")


def _check_wide(path: Source, batches: Iterator[pa.RecordBatch], names: list[str], coords: list[str]) -> int:
    """Pass 1 of the wide layout: count the rows and refuse, before anything is written, every value
    that cannot be an NLL (empty, NaN, inf, negative) and every id that cannot be one (empty or not an
    integer, negative, a token id repeated), naming the first few rows (from 0, header not counted)
    and counting all of them.  Keeps the token ids (8 bytes per token) for the duplicate check."""
    bad_nll = _Found("values cannot be NLLs")
    bad_id = {c: (_Found("are not integers"), _Found("are negative" + (" or above 2**31-1" if c == "piece" else "")))
              for c in coords}
    tokens: list[np.ndarray] = []
    row = 0
    for batch in batches:
        for n in names:
            col = batch.column(n)
            values = np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False))
            empty = col.is_null().to_numpy(zero_copy_only=False)
            with np.errstate(invalid="ignore"):
                bad = empty | ~np.isfinite(values) | (values < -NLL_TOLERANCE)
            rows = np.flatnonzero(bad)
            bad_nll.add(len(rows), [f"row {row + r} model {n!r}: {'empty' if empty[r] else f'{values[r]:g}'}" for r in rows[:SHOW]])
        for c in coords:
            col = batch.column(c)
            ids, wrong = _ids(col, path, c)
            rows = np.flatnonzero(wrong)
            bad_id[c][0].add(len(rows), [f"row {row + r}: {col[r].as_py()!r}" for r in rows[:SHOW]])
            rows = np.flatnonzero(~wrong & ((ids < 0) | ((ids > _INT32_MAX) if c == "piece" else False)))
            bad_id[c][1].add(len(rows), [f"row {row + r}: {int(ids[r])}" for r in rows[:SHOW]])
            if c == "token":
                tokens.append(np.where(wrong | (ids < 0), -1, ids))
        row += batch.num_rows
    if row < 1:
        raise InputError(f"{path} has no rows; nothing to ingest")
    problems = [f"{c} ids: {f.text()}" for c, found in bad_id.items() for f in found if f]
    if tokens:
        problems += _duplicate_tokens(np.concatenate(tokens))
    if problems:
        raise InputError(f"{path}: {', '.join(problems)}; token, doc and piece must be non-negative integers and "
                         "token ids unique: fix the id columns (or drop the token column to number tokens by row)")
    if bad_nll:
        raise InputError(f"{path}: {bad_nll.text()}; an NLL is a finite number >= 0 (nll = -logprob): fix or drop those rows")
    return row


def _duplicate_tokens(ids: np.ndarray) -> list[str]:
    """The problem ``token ids: N repeat …`` naming the first repeated ids in row order (``-1``: refused already)."""
    ordered = np.sort(ids)
    repeat = (ordered[1:] == ordered[:-1]) & (ordered[1:] >= 0)
    if not repeat.any():
        return []
    values = np.unique(ordered[1:][repeat])
    del ordered
    rows = np.flatnonzero(np.isin(ids, values))
    shown: dict[int, list[int]] = {}
    for r in rows:
        v = int(ids[r])
        if v in shown or len(shown) < SHOW:
            shown.setdefault(v, []).append(int(r))
    first = [f"id {v} at rows {', '.join(map(str, rs[:SHOW]))}{', …' if len(rs) > SHOW else ''}" for v, rs in shown.items()]
    more = f", and {len(values) - len(first)} more ids" if len(values) > len(first) else ""
    return [f"token ids: {int(repeat.sum())} rows repeat an earlier id ({'; '.join(first)}{more})"]


def _write_wide_chunk(writer: StoreWriter, j: int, block: np.ndarray, cbuf: dict, coords: list[str],
                      width: int, path: Source, names: list[str]) -> None:
    sl = writer.chunk_slice(j)
    check_block(block, names, sl.start, label=f"input {path}")
    token = cbuf["token"][:width].copy() if "token" in coords else np.arange(sl.start, sl.stop, dtype=np.int64)
    doc = cbuf["doc"][:width].copy() if "doc" in coords else None
    piece = cbuf["piece"][:width].astype(np.int32) if "piece" in coords else None
    if "doc" in coords or "piece" in coords:
        doc = np.full(width, -1, np.int64) if doc is None else doc
        piece = np.full(width, -1, np.int32) if piece is None else piece
    writer.write_chunk(j, block, token=token, doc=doc, piece=piece)
