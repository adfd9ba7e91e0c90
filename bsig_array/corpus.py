"""The in-the-wild corpus: documents, their whitespace pieces and the sampled features (DESIGN §1).

A feature is one whitespace piece of one document (``text.split()``, Python's whitespace split);
its context is the up to ``context_pieces`` (30) preceding pieces of the same document, joined by
single spaces.  Features are drawn by uniform seeded downsampling: piece ``i`` of input record ``r``
is kept when ``default_rng([seed, r]).random(n_pieces)[i] < sample_rate``, so the draw of one
document never depends on the others (``--max-docs`` keeps a prefix of the same features).

Layout of ``corpus.zarr`` (Zarr v3, written by :func:`build_corpus`)::

    text          (byte,)     uint8   UTF-8 text of the stored documents, concatenated
    doc_offset    (doc_edge,) int64   byte offset of each document in ``text`` (n_docs + 1 entries)
    doc_source    (doc,)      int64   input record number of each stored document (0-based, all inputs)
    feature_doc   (feature,)  int64   stored document of each feature
    feature_piece (feature,)  int32   index of the target piece within its document

Only documents with at least one feature are stored.  Attributes: ``sample_rate``, ``seed``,
``context_pieces``, ``max_doc_chars``, ``inputs``, the counts of :class:`CorpusStats` and
``complete`` (the store is written under a temporary name and renamed when done).
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import os
import shutil
import sysconfig
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from bsig_array.errors import BsigError

CORPUS_SCHEMA_VERSION = 1
DEFAULT_MAX_DOC_CHARS = 16 * 2**20
_TEXT_CHUNK = 8 * 2**20
_INDEX_CHUNK = 2**20


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


def _jsonl_documents(path: Path, stats: CorpusStats) -> Iterator[str | None]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
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


def _parquet_documents(path: Path, stats: CorpusStats) -> Iterator[str | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if "text" not in pf.schema_arrow.names:
        raise BsigError(f"{path} has no 'text' column (columns: {pf.schema_arrow.names}); rename the text column")
    binary = pa.types.is_binary(pf.schema_arrow.field("text").type) or pa.types.is_large_binary(
        pf.schema_arrow.field("text").type
    )
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value is None:
                stats.bad_records += 1
                yield None
            elif binary:
                yield _decode(value, stats)
            else:
                yield _valid_utf8(value, stats)


def iter_documents(paths: Sequence[str | os.PathLike], stats: CorpusStats) -> Iterator[str | None]:
    """Stream the ``text`` of every record of JSONL(.gz) or Parquet files, in order.

    Yields None for a record that cannot be read (counted in ``stats.bad_records``) so record
    numbers stay aligned with the input.
    """
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise BsigError(f"corpus input {path} does not exist; pass JSONL or Parquet files with a 'text' field")
        name = path.name.lower()
        if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")):
            yield from _jsonl_documents(path, stats)
        elif name.endswith((".parquet", ".pq")):
            yield from _parquet_documents(path, stats)
        else:
            raise BsigError(f"cannot read {path}: use .jsonl, .jsonl.gz or .parquet files with a 'text' field")


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


def context_of(pieces: Sequence[str], i: int, context_pieces: int) -> str:
    """The context of piece ``i``: up to ``context_pieces`` preceding pieces, space-joined."""
    return " ".join(pieces[max(0, i - context_pieces) : i])


class _Appender:
    """Buffers 1-D values and appends them to a Zarr array in large blocks (bounded memory)."""

    def __init__(self, array: zarr.Array, limit: int) -> None:
        self.array, self.limit, self.parts, self.size = array, limit, [], 0

    def add(self, values: np.ndarray) -> None:
        self.parts.append(values)
        self.size += len(values)
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.array.append(np.concatenate(self.parts))
            self.parts, self.size = [], 0


def build_corpus(
    documents: Iterable[str | None],
    out: str | os.PathLike,
    *,
    sample_rate: float = 0.02,
    seed: int = 0,
    context_pieces: int = 30,
    max_docs: int | None = None,
    max_doc_chars: int = DEFAULT_MAX_DOC_CHARS,
    stats: CorpusStats | None = None,
    inputs: Sequence[str] = (),
    overwrite: bool = False,
    progress: Any = None,
) -> CorpusStats:
    """Split documents into pieces, sample features and write ``corpus.zarr``.

    Parameters
    ----------
    documents
        Document texts in input order (None for an unreadable record: it keeps its record number).
    out
        Path of the corpus store; written under a temporary name and renamed when complete.
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
        Optional bar with ``advance(n)``, advanced once per record.
    """
    if not 0.0 < sample_rate <= 1.0:
        raise BsigError(f"sample rate {sample_rate} is outside (0, 1]; pass e.g. --sample-rate 0.02")
    if context_pieces < 0:
        raise BsigError(f"context pieces must be >= 0, got {context_pieces}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise BsigError(f"{out} already exists; pass --overwrite or choose another --out")
    stats = CorpusStats() if stats is None else stats
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(tmp, mode="w", zarr_format=3)

    def make(name: str, dtype: str, chunk: int, dim: str) -> zarr.Array:
        return group.create_array(name, shape=(0,), chunks=(chunk,), dtype=dtype, dimension_names=[dim])

    text = _Appender(make("text", "uint8", _TEXT_CHUNK, "byte"), _TEXT_CHUNK)
    offsets = _Appender(make("doc_offset", "int64", _INDEX_CHUNK, "doc_edge"), _INDEX_CHUNK)
    source = _Appender(make("doc_source", "int64", _INDEX_CHUNK, "doc"), _INDEX_CHUNK)
    fdoc = _Appender(make("feature_doc", "int64", _INDEX_CHUNK, "feature"), _INDEX_CHUNK)
    fpiece = _Appender(make("feature_piece", "int32", _INDEX_CHUNK, "feature"), _INDEX_CHUNK)
    offsets.add(np.zeros(1, dtype=np.int64))
    try:
        # islice stops before the reader pulls (and counts) record max_docs + 1.
        for record, doc in enumerate(itertools.islice(documents, max_docs)):
            stats.records += 1
            if progress is not None:
                progress.advance(1)
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
            raw = np.frombuffer(doc.encode("utf-8"), dtype=np.uint8)
            stats.text_bytes += len(raw)
            text.add(raw)
            offsets.add(np.array([stats.text_bytes], dtype=np.int64))
            source.add(np.array([record], dtype=np.int64))
            fdoc.add(np.full(len(keep), stats.docs, dtype=np.int64))
            fpiece.add(keep.astype(np.int32))
            stats.docs += 1
            stats.features += len(keep)
        for appender in (text, offsets, source, fdoc, fpiece):
            appender.flush()
        if stats.features == 0:
            raise BsigError(
                f"no features: {stats.records} records gave {stats.pieces} pieces at sample rate {sample_rate}; "
                "check the 'text' field or raise --sample-rate"
            )
        counts = {k: v for k, v in dataclasses.asdict(stats).items() if k != "extra"}
        group.attrs.update(
            {
                "bsig_corpus_version": CORPUS_SCHEMA_VERSION,
                "sample_rate": float(sample_rate),
                "seed": int(seed),
                "context_pieces": int(context_pieces),
                "max_doc_chars": int(max_doc_chars),
                "inputs": [str(i) for i in inputs],
                "counts": counts,
                "complete": True,
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "consolidated metadata is not in the v3 spec"
            zarr.consolidate_metadata(group.store)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


class Corpus:
    """Read access to a ``corpus.zarr``: features and the text windows they stand for.

    Parameters
    ----------
    path
        A store written by :func:`build_corpus`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.group = zarr.open_group(self.path, mode="r", zarr_format=3)
        except Exception:
            raise BsigError(f"{self.path} is not a corpus store; build one with bsig corpus") from None
        attrs = dict(self.group.attrs)
        if not attrs.get("complete") or "feature_doc" not in self.group:
            raise BsigError(f"{self.path} is not a complete corpus store; rebuild it with bsig corpus")
        self.attrs = attrs
        self.context_pieces = int(attrs["context_pieces"])
        self.n_features = int(self.group["feature_doc"].shape[0])
        self.n_docs = int(self.group["doc_source"].shape[0])

    def features(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(doc, piece)`` of features ``start:stop``."""
        stop = self.n_features if stop is None else stop
        return self.group["feature_doc"][start:stop], self.group["feature_piece"][start:stop]

    def doc_texts(self, first: int, last: int) -> list[str]:
        """Text of stored documents ``first..last`` (inclusive), read in one contiguous slice."""
        edges = self.group["doc_offset"][first : last + 2]
        raw = self.group["text"][int(edges[0]) : int(edges[-1])].tobytes()
        rel = edges - edges[0]
        return [raw[rel[i] : rel[i + 1]].decode("utf-8") for i in range(len(rel) - 1)]

    def windows(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """``(contexts, targets)`` of features ``start:stop`` (consecutive features share documents)."""
        docs, pieces = self.features(start, stop)
        return self._windows(docs, pieces)

    def _windows(self, docs: np.ndarray, pieces: np.ndarray) -> tuple[list[str], list[str]]:
        contexts: list[str] = []
        targets: list[str] = []
        if len(docs) == 0:
            return contexts, targets
        first, last = int(docs.min()), int(docs.max())
        split: dict[int, list[str]] = {}
        if last - first < 4 * len(docs):  # contiguous range: one read
            texts = self.doc_texts(first, last)
            get = lambda d: texts[d - first]  # noqa: E731
        else:
            get = lambda d: self.doc_texts(d, d)[0]  # noqa: E731
        for d, i in zip(docs.tolist(), pieces.tolist()):
            if d not in split:
                split[d] = get(d).split()
            words = split[d]
            contexts.append(context_of(words, i, self.context_pieces))
            targets.append(words[i])
        return contexts, targets


def open_corpus(path: str | os.PathLike) -> Corpus:
    """Open a corpus store for reading."""
    return Corpus(path)


def feature_context(corpus: Corpus | str | os.PathLike, token_ids: Sequence[int]) -> tuple[list[str], list[str]]:
    """Rebuild the context (≤ ``context_pieces`` preceding pieces) and target piece of each feature.

    Parameters
    ----------
    corpus
        A :class:`Corpus` or the path of ``corpus.zarr``.
    token_ids
        Feature ids (the perplexity store's ``token`` coordinate); -1 gives empty strings (padding).
    """
    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    ids = np.asarray(token_ids, dtype=np.int64).ravel()
    valid = ids >= 0
    if (ids[valid] >= corpus.n_features).any():
        bad = int(ids[valid].max())
        raise BsigError(f"feature id {bad} is beyond corpus {corpus.path} ({corpus.n_features} features); wrong --corpus?")
    docs = corpus.group["feature_doc"].get_coordinate_selection(ids[valid]) if valid.any() else np.empty(0, np.int64)
    pieces = corpus.group["feature_piece"].get_coordinate_selection(ids[valid]) if valid.any() else np.empty(0, np.int32)
    ctx, tgt = corpus._windows(np.asarray(docs), np.asarray(pieces))
    contexts = [""] * len(ids)
    targets = [""] * len(ids)
    for k, pos in enumerate(np.flatnonzero(valid)):
        contexts[pos], targets[pos] = ctx[k], tgt[k]
    return contexts, targets
