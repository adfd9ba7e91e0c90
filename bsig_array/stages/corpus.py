"""Corpus stage: documents in, whitespace pieces split, features sampled, ``corpus.zarr`` out.

Documents come from JSONL(.gz) or Parquet records with a ``text`` field (RedPajama format) or from
Python's standard library (an in-the-wild corpus that exists offline on any machine).  A feature
is one whitespace piece; piece ``i`` of input record ``r`` is kept when
``default_rng([seed, r]).random(n_pieces)[i] < sample_rate``, so the draw of one document never
depends on the others (``max_docs`` keeps a prefix of the same features).  The store's layout is
owned by :mod:`bsig_array.io.corpus_store`.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import os
import sysconfig
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bsig_array.errors import InputError, OptionError
from bsig_array.io.atomic import atomic_output, check_new_output
from bsig_array.io.corpus_store import CORPUS_STORE, CorpusWriter
from bsig_array.io.location import Location, as_location, redact_url
from bsig_array.options import check_count, check_optional_count, check_seed
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress

DEFAULT_MAX_DOC_CHARS = 16 * 2**20


@dataclass
class CorpusStats:
    """Counts of what :func:`build_corpus` read, kept, fixed and skipped."""

    records: int = 0  # input records read (documents, including empty and unreadable ones)
    bad_records: int = 0  # unparsable lines or records without a string ``text`` field
    empty_docs: int = 0  # documents with no piece (empty or whitespace only)
    replaced_docs: int = 0  # documents with invalid UTF-8 (bytes replaced by U+FFFD)
    truncated_docs: int = 0  # documents longer than ``max_doc_chars``, cut to that length
    docs: int = 0  # stored documents (with at least one feature)
    pieces: int = 0  # whitespace pieces in all non-empty documents
    features: int = 0  # sampled features
    text_bytes: int = 0  # UTF-8 bytes of the stored documents
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.records:,} records: {self.docs:,} documents stored, {self.features:,} features from "
            f"{self.pieces:,} pieces; {self.empty_docs:,} empty, {self.bad_records:,} unreadable, "
            f"{self.replaced_docs:,} with invalid UTF-8 (replaced), {self.truncated_docs:,} truncated"
        )


def _valid_utf8(text: str, stats: CorpusStats) -> str:
    # Lone surrogates (from JSON "\ud800" escapes) cannot be stored as UTF-8: replace and count.
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        stats.replaced_docs += 1
        return text.encode("utf-8", "replace").decode("utf-8")


def _decode(raw: bytes, stats: CorpusStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.replaced_docs += 1
        return raw.decode("utf-8", "replace")


def _jsonl_documents(path: Location, stats: CorpusStats) -> Iterator[str | None]:
    """Records of one JSONL(.gz) file; a file without a single readable record is refused (it is not a corpus)."""
    good = bad = 0
    try:
        for text in _jsonl_records(path, stats):
            good, bad = (good + 1, bad) if text is not None else (good, bad + 1)
            yield text
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises BadGzipFile (an OSError) for a plain file and EOFError for a truncated one;
        # click would turn an EOFError into "aborted", so it is named here
        kind = "truncated" if isinstance(exc, EOFError) else "unreadable"
        raise InputError(
            f"corpus input {path} is {kind} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "re-download it or pass an uncompressed .jsonl"
        ) from None
    if bad and not good:
        raise InputError(
            f"corpus input {path}: none of its {bad:,} records is a JSON object with a string 'text' field; "
            "pass JSON lines like {\"text\": \"...\"}"
        )


def _jsonl_records(path: Location, stats: CorpusStats) -> Iterator[str | None]:
    # Streamed line by line (an object store's file reads ahead in blocks): memory stays O(line).
    with path.open("rb") as raw, (gzip.GzipFile(fileobj=raw, mode="rb") if path.name.lower().endswith(".gz") else raw) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                line_text, bad_bytes = line.decode("utf-8"), False
            except UnicodeDecodeError:
                line_text, bad_bytes = line.decode("utf-8", "replace"), True
            try:
                record = json.loads(line_text)
            except json.JSONDecodeError:
                record = None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                stats.bad_records += 1
                yield None
            elif bad_bytes:
                stats.replaced_docs += 1
                yield text
            else:
                yield _valid_utf8(text, stats)


def _parquet_documents(path: Location, stats: CorpusStats) -> Iterator[str | None]:
    if path.is_local:
        yield from _parquet_records(path, path.path, stats)
        return
    # A URL is read through its fsspec file: ranged reads of the footer, then of each row group.
    with path.open("rb") as fh:
        yield from _parquet_records(path, fh, stats)


def _parquet_records(path: Location, source: Any, stats: CorpusStats) -> Iterator[str | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"corpus input {path} is not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if "text" not in pf.schema_arrow.names:
        raise InputError(f"{path} has no 'text' column (columns: {pf.schema_arrow.names}); rename the text column")
    kind = pf.schema_arrow.field("text").type
    binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    if not (binary or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"corpus input {path}: column 'text' holds {kind}, not strings; store the documents as text")
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value is None:
                stats.bad_records += 1
                yield None
            elif binary:
                yield _decode(value, stats)
            else:
                yield _valid_utf8(value, stats)


def iter_documents(paths: Sequence[str | os.PathLike | Location], stats: CorpusStats) -> Iterator[str | None]:
    """Stream the ``text`` of every record of JSONL(.gz) or Parquet files (local paths or URLs), in order.

    Yields None for a record that cannot be read (counted in ``stats.bad_records``) so record
    numbers stay aligned with the input.
    """
    for p in paths:
        path = as_location(p)
        if path.is_dir() or not path.exists():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise InputError(f"corpus input {path} {what}; pass JSONL or Parquet files with a 'text' field")
        name = path.name.lower()
        if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")):
            yield from _jsonl_documents(path, stats)
        elif name.endswith((".parquet", ".pq")):
            yield from _parquet_documents(path, stats)
        else:
            raise InputError(f"cannot read {path}: use .jsonl, .jsonl.gz or .parquet files with a 'text' field")


def stdlib_files() -> list[Path]:
    """The Python standard library's ``.py`` files (sorted; no site-packages): an offline corpus."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts)


def stdlib_documents(stats: CorpusStats | None = None) -> Iterator[str]:
    """Text of each standard-library source file (code, comments and docstrings), one document each."""
    stats = CorpusStats() if stats is None else stats
    for path in stdlib_files():
        yield _decode(path.read_bytes(), stats)


def write_stdlib_jsonl(path: str | os.PathLike, max_docs: int | None = None) -> Path:
    """Write the standard library's source files as a RedPajama-style JSONL (``{"text": ...}`` lines)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(stdlib_documents()):
            if max_docs is not None and i >= max_docs:
                break
            fh.write(json.dumps({"text": text}) + "\n")
    return path


def sample_pieces(n_pieces: int, record: int, sample_rate: float, seed: int) -> np.ndarray:
    """Indices of the pieces of input record ``record`` that become features (seeded, per record)."""
    if sample_rate >= 1.0:
        return np.arange(n_pieces, dtype=np.int64)
    draw = np.random.default_rng([seed, record]).random(n_pieces)
    return np.flatnonzero(draw < sample_rate)


def build_corpus(
    documents: Iterable[str | None],
    out: str | os.PathLike | Location,
    *,
    sample_rate: float = DEFAULTS.sample_rate,
    seed: int = DEFAULTS.seed,
    context_pieces: int = DEFAULTS.context_pieces,
    max_docs: int | None = None,
    max_doc_chars: int = DEFAULT_MAX_DOC_CHARS,
    stats: CorpusStats | None = None,
    inputs: Sequence[str] = (),
    overwrite: bool = False,
    progress: Progress = no_progress,
    total: int | None = None,
) -> CorpusStats:
    """Split documents into pieces, sample features and write ``corpus.zarr``.

    Parameters
    ----------
    documents
        Document texts in input order (None for an unreadable record: it keeps its record number).
    out
        Path or URL of the corpus store; written under a temporary name and renamed when complete
        (for a URL: staged locally and uploaded, root metadata last).
    sample_rate
        Probability that a piece becomes a feature (the paper used 1/50).
    seed
        Seed of the downsampling.
    context_pieces
        Preceding pieces of context per feature (recorded for the perplexity stage).
    max_docs
        Stop after this many input records.
    max_doc_chars
        Longer documents are cut to this many characters (counted in ``truncated_docs``).
    stats
        Counter to fill (the reader may already have counted bad records into it).
    inputs
        Input names recorded in the attributes.
    progress
        Receives one bar ("corpus"), advanced once per input record.
    total
        Number of input records, if known (for the bar).
    """
    if not 0.0 < sample_rate <= 1.0:
        raise OptionError(f"sample rate {sample_rate} is outside (0, 1]; pass e.g. --sample-rate 0.02")
    context_pieces = check_count(context_pieces, "--context-pieces")
    max_docs = check_optional_count(max_docs, "--max-docs", minimum=1)
    seed = check_seed(seed)
    out = check_new_output(out, overwrite=overwrite, what="corpus store", kind=CORPUS_STORE)
    stats = CorpusStats() if stats is None else stats
    if max_docs is not None and total is not None:
        total = min(total, max_docs)
    with atomic_output(out) as tmp, progress("corpus", total, "docs") as bar:
        writer = CorpusWriter(tmp)
        # islice stops before the reader pulls (and counts) record max_docs + 1.
        for record, doc in enumerate(itertools.islice(documents, max_docs)):
            stats.records += 1
            bar.advance(1)
            if doc is None:
                continue
            if len(doc) > max_doc_chars:
                stats.truncated_docs += 1
                doc = doc[:max_doc_chars]
            pieces = doc.split()
            if not pieces:
                stats.empty_docs += 1
                continue
            stats.pieces += len(pieces)
            keep = sample_pieces(len(pieces), record, sample_rate, seed)
            if len(keep) == 0:
                continue
            stats.text_bytes += writer.add_document(record, doc, keep)
            stats.docs += 1
            stats.features += len(keep)
        if stats.features == 0:
            raise InputError(
                f"no features: {stats.records} records gave {stats.pieces} pieces at sample rate {sample_rate}; "
                "check the 'text' field or raise --sample-rate"
            )
        writer.close(
            {
                "sample_rate": float(sample_rate),
                "seed": int(seed),
                "context_pieces": int(context_pieces),
                "max_doc_chars": int(max_doc_chars),
                "inputs": [redact_url(str(i)) for i in inputs],  # a URL may carry credentials
                "counts": {k: v for k, v in dataclasses.asdict(stats).items() if k != "extra"},
            }
        )
    return stats
