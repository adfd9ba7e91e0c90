"""The corpus store ``corpus.zarr``: documents and the sampled features (docs/DESIGN.md §3).

A feature is one whitespace piece of one document (``text.split()``); its context is the up to
``context_pieces`` (30) preceding pieces of the same document, joined by single spaces
(:func:`context_of`).  :class:`CorpusWriter` writes the store, :class:`Corpus` reads it and rebuilds
each feature's window, :func:`feature_context` does so for given feature ids.

Layout (Zarr v3)::

    text          (byte,)     uint8   UTF-8 text of the stored documents, concatenated
    doc_offset    (doc_edge,) int64   byte offset of each document in ``text`` (n_docs + 1 entries)
    doc_source    (doc,)      int64   input record number of each stored document (0-based, all inputs)
    feature_doc   (feature,)  int64   stored document of each feature
    feature_piece (feature,)  int32   index of the target piece within its document

Only documents with at least one feature are stored.  Attributes: ``bsig_corpus_version``,
``sample_rate``, ``seed``, ``context_pieces``, ``max_doc_chars``, ``inputs``, ``counts`` and
``complete`` (set last; the stage writes the store under a temporary name and renames it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from bsig_array.errors import InputError
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.io.location import Location, as_location
from bsig_array.io.zarr_format import (
    ALL_CHUNKS_ATTR,
    open_group,
    quiet_zarr,
    read_checked,
    require_zarr_v3,
    with_checksum,
    zarr_array,
)

CORPUS_SCHEMA_VERSION = 1
#: The artifact kind (docs/DESIGN.md §3): a Zarr store, marked by ``doc_offset``.
CORPUS_STORE = register_kind(ArtifactKind(
    "corpus store", owner=__name__, precedence=30, zarr=True, directory=True, markers=(("doc_offset",),)))
#: Elements per chunk of ``text`` and of the index arrays.
_TEXT_CHUNK = 8 * 2**20
_INDEX_CHUNK = 2**20


def context_of(pieces: Sequence[str], i: int, context_pieces: int) -> str:
    """The context of piece ``i``: up to ``context_pieces`` preceding pieces, space-joined."""
    return " ".join(pieces[max(0, i - context_pieces) : i])


class _Appender:
    """Buffers 1-D values and appends them to a Zarr array in large blocks (bounded memory)."""

    def __init__(self, array: zarr.Array, limit: int) -> None:
        self.array, self.limit, self.size = array, limit, 0
        self.parts: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        self.parts.append(values)
        self.size += len(values)
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.array.append(np.concatenate(self.parts))
            self.parts, self.size = [], 0


class CorpusWriter:
    """Writes a new ``corpus.zarr`` at ``path``, document by document, in bounded memory.

    Call :meth:`add_document` for every document that has features, then :meth:`close` with the
    attributes; only :meth:`close` marks the store ``complete``.  Write to a temporary path and
    rename it when done (:func:`bsig_array.io.atomic.atomic_output`).
    """

    def __init__(self, path: str | os.PathLike | Location) -> None:
        self.group = open_group(path, mode="w")
        self.text = _Appender(self._array("text", "uint8", _TEXT_CHUNK, "byte"), _TEXT_CHUNK)
        self.offsets = _Appender(self._array("doc_offset", "int64", _INDEX_CHUNK, "doc_edge"), _INDEX_CHUNK)
        self.source = _Appender(self._array("doc_source", "int64", _INDEX_CHUNK, "doc"), _INDEX_CHUNK)
        self.feature_doc = _Appender(self._array("feature_doc", "int64", _INDEX_CHUNK, "feature"), _INDEX_CHUNK)
        self.feature_piece = _Appender(self._array("feature_piece", "int32", _INDEX_CHUNK, "feature"), _INDEX_CHUNK)
        self.offsets.add(np.zeros(1, dtype=np.int64))
        self.n_docs = 0
        self.n_bytes = 0

    def _array(self, name: str, dtype: str, chunk: int, dim: str) -> zarr.Array:
        return self.group.create_array(
            name, shape=(0,), chunks=(chunk,), dtype=dtype, dimension_names=[dim], compressors=with_checksum(),
            config={"write_empty_chunks": True},  # type: ignore[arg-type]  # every chunk a file: a missing one is damage
        )

    def add_document(self, record: int, text: str, pieces: np.ndarray) -> int:
        """Store document ``text`` (input record ``record``) with its feature piece indices; its UTF-8 size."""
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        self.n_bytes += len(raw)
        self.text.add(raw)
        self.offsets.add(np.array([self.n_bytes], dtype=np.int64))
        self.source.add(np.array([record], dtype=np.int64))
        self.feature_doc.add(np.full(len(pieces), self.n_docs, dtype=np.int64))
        self.feature_piece.add(np.asarray(pieces).astype(np.int32))
        self.n_docs += 1
        return len(raw)

    def close(self, attrs: Mapping[str, Any]) -> None:
        """Flush every buffer, write ``attrs`` (plus the schema version and ``complete``) and consolidate."""
        for appender in (self.text, self.offsets, self.source, self.feature_doc, self.feature_piece):
            appender.flush()
        self.group.attrs.update(
            {**attrs, "bsig_corpus_version": CORPUS_SCHEMA_VERSION, ALL_CHUNKS_ATTR: 1, "complete": True}
        )
        with quiet_zarr():
            zarr.consolidate_metadata(self.group.store)


class Corpus:
    """Read access to a ``corpus.zarr``: features and the text windows they stand for.

    Parameters
    ----------
    path
        A store written by :func:`build_corpus`.
    """

    def __init__(self, path: str | os.PathLike | Location) -> None:
        self.path = as_location(path)  # prints as the URL without credentials
        if not self.path.exists():
            raise InputError(f"corpus store {self.path} does not exist; build one with bsig corpus")
        require_zarr_v3(self.path, "corpus store")
        try:
            self.group = open_group(self.path)
        except InputError:
            raise
        except Exception:
            raise InputError(f"{self.path} is not a corpus store; build one with bsig corpus") from None
        attrs: dict[str, Any] = dict(self.group.attrs)
        if not attrs.get("complete") or "feature_doc" not in self.group:
            raise InputError(f"{self.path} is not a complete corpus store; rebuild it with bsig corpus")
        self.attrs = attrs
        self.context_pieces = int(attrs["context_pieces"])
        self.all_chunks = bool(attrs.get(ALL_CHUNKS_ATTR))  # older corpora skipped all-zero chunks
        self.n_features = int(zarr_array(self.group, "feature_doc").shape[0])
        self.n_docs = int(zarr_array(self.group, "doc_source").shape[0])

    def features(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(doc, piece)`` of features ``start:stop``."""
        stop = self.n_features if stop is None else stop
        return self.read("feature_doc", start, stop), self.read("feature_piece", start, stop)

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Positions ``start:stop`` of array ``name``; a damaged chunk file is one :class:`InputError`."""
        return read_checked(
            zarr_array(self.group, name), slice(start, stop), what=f"corpus store {self.path}",
            fix="the file is truncated or corrupt: rebuild the corpus with bsig corpus",
            require_chunks=self.all_chunks,
        )

    def take(self, name: str, positions: np.ndarray) -> np.ndarray:
        """Array ``name`` at ``positions``, reading (checked) only the chunks that hold them."""
        array = zarr_array(self.group, name)
        width = int(array.chunks[0])
        out = np.empty(positions.shape, dtype=array.dtype)
        chunk = positions // width
        for c in np.unique(chunk):
            start = int(c) * width
            at = chunk == c
            out[at] = self.read(name, start, min(start + width, array.shape[0]))[positions[at] - start]
        return out

    def doc_texts(self, first: int, last: int) -> list[str]:
        """Text of stored documents ``first..last`` (inclusive), read in one contiguous slice."""
        edges = self.read("doc_offset", first, last + 2)
        raw = self.read("text", int(edges[0]), int(edges[-1])).tobytes()
        rel = edges - edges[0]
        try:
            return [raw[rel[i] : rel[i + 1]].decode("utf-8") for i in range(len(rel) - 1)]
        except UnicodeDecodeError:
            raise InputError(
                f"corpus store {self.path}: the text of documents {first}..{last} is not UTF-8; "
                "the store is damaged: rebuild it with bsig corpus"
            ) from None

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


def open_corpus(path: str | os.PathLike | Location) -> Corpus:
    """Open a corpus store (a local path or a URL) for reading."""
    return Corpus(path)


def feature_context(
    corpus: Corpus | str | os.PathLike | Location, token_ids: Sequence[int] | np.ndarray
) -> tuple[list[str], list[str]]:
    """Rebuild the context (≤ ``context_pieces`` preceding pieces) and target piece of each feature.

    Parameters
    ----------
    corpus
        A :class:`Corpus` or the path (or URL) of ``corpus.zarr``.
    token_ids
        Feature ids (the perplexity store's ``token`` coordinate); -1 gives empty strings (padding).
    """
    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    ids = np.asarray(token_ids, dtype=np.int64).ravel()
    valid = ids >= 0
    if (ids[valid] >= corpus.n_features).any():
        bad = int(ids[valid].max())
        raise InputError(f"feature id {bad} is beyond corpus {corpus.path} ({corpus.n_features} features); wrong --corpus?")
    if valid.any():
        docs, pieces = corpus.take("feature_doc", ids[valid]), corpus.take("feature_piece", ids[valid])
    else:
        docs, pieces = np.empty(0, np.int64), np.empty(0, np.int32)
    ctx, tgt = corpus._windows(np.asarray(docs), np.asarray(pieces))
    contexts = [""] * len(ids)
    targets = [""] * len(ids)
    for k, pos in enumerate(np.flatnonzero(valid)):
        contexts[pos], targets[pos] = ctx[k], tgt[k]
    return contexts, targets
