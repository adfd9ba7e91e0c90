"""Perplexity stage (Algorithm 1, steps 1–3): fill one model's row of the perplexity store from a corpus.

The corpus decides the token axis: feature ``i`` of ``corpus.zarr`` is token ``i`` of the store, so
every model scores the same windows and models share one store.  The first run creates the store
from the corpus (all features, one model); later runs add their model with
:meth:`~bsig_array.io.perplexity_store.writer.StoreWriter.add_models` and fill its row chunk by chunk.

Resume: a token chunk is scored in one piece and written with its progress mark last, so a run killed
at any point (even ``kill -9``) leaves only unmarked chunks, and the next run with the same arguments
scores exactly those again.  A chunk's result depends only on its windows and the batch size (batches
are formed inside the chunk), so an interrupted and resumed run writes the same bytes as an
uninterrupted one on the same machine.

One writer per store: a run holds an exclusive ``flock`` on ``<store>.lock`` (released by the OS
when the process dies, so a killed run never blocks the next); a second concurrent run on the same
store fails at once with a one-line error.  The lock file is removed when the run ends, however it
ends; one left by a killed run is taken over (and removed) by the next run.  A run that creates the
store and fails before writing any chunk removes the store again.

A store on an object store (``--store s3://…``) is filled the same way: chunks and progress marks
are PUT straight to it, so a killed run resumes there.  Object stores have no locks, so the lock
file is local (in ``TMPDIR``, named after the store's URL): it keeps two runs on this machine apart,
and runs on different machines must not fill one store at the same time.  A new store is created
complete-but-empty by publishing its metadata with the root ``zarr.json`` last; the corpus stays local.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bsig_array.errors import BsigWarning, InputError
from bsig_array.io.atomic import atomic_output, remove_path
from bsig_array.io.corpus_store import Corpus
from bsig_array.io.location import Location, as_location
from bsig_array.io.perplexity_store.writer import StoreWriter, create_store
from bsig_array.io.provenance import MODEL_PROVENANCE_ATTR, make_record
from bsig_array.io.zarr_format import zarr_array
from bsig_array.models.backends.base import Backend, check_target, get_backend
from bsig_array.options import check_count, check_model_name, check_model_options
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.runtime.progress import Progress, no_progress

#: Corpus attributes that must match between a store and the corpus it is filled from.
_FINGERPRINT = ("sample_rate", "seed", "context_pieces")


@dataclass
class PerplexityResult:
    """What one :func:`extract_perplexity` run did (``store``: a Location for a store on an object store)."""

    store: Path
    model: str
    row: int
    chunks_done: int
    chunks_total: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def lock_path(store: str | os.PathLike | Location) -> Path:
    """The writer lock of ``store``: ``<store>.lock`` beside a local store; for a store on an object
    store (which has no locks) a local file in ``TMPDIR`` named after its URL."""
    loc = as_location(store)
    if loc.is_local:
        return loc.path.with_name(loc.path.name + ".lock")
    digest = hashlib.sha256(loc.key().encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bsig-store-{digest}.lock"


@contextmanager
def store_lock(store: str | os.PathLike | Location) -> Iterator[None]:
    """Hold the exclusive writer lock of ``store`` (:func:`lock_path`; non-blocking: fail if another
    run holds it)."""
    store = as_location(store)
    lock = lock_path(store)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise InputError(
                f"another bsig perplexity run is writing {store} (it holds {lock}); wait for it to finish"
            ) from None
        # The previous holder removes the file when it is done: hold the file that is still there.
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        fh.seek(0)
        left = fh.read().strip()
        if left.isdigit() and int(left) != os.getpid():
            warnings.warn(f"took over {lock}, left by an interrupted bsig perplexity run (pid {left})", BsigWarning,
                          stacklevel=3)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held: no other run can be holding this file
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@contextmanager
def _remove_if_unwritten(store: Location) -> Iterator[None]:
    """Remove ``store`` when this run creates it and fails before any chunk is written (nothing to resume)."""
    existed = _store_exists(store)
    try:
        yield
    except BaseException:
        if not existed and store.exists():
            try:
                written = bool(StoreWriter(store).complete().any())
            except Exception:  # half-created metadata: nothing written either
                written = False
            if not written:
                if store.is_local:
                    remove_path(store.path)
                else:
                    store.remove()
        raise


def _store_exists(store: Location) -> bool:
    """Whether a store is at ``store``; on an object store only a committed one (root ``zarr.json``):
    objects without it are what a killed creation left, and creating the store replaces them."""
    return store.exists() if store.is_local else store.child("zarr.json").exists()


def default_model_name(model: str | Any) -> str:
    """Store name of a model argument: an alias as is, else the folder/file name without ``.gguf``."""
    if not isinstance(model, str):
        return type(model).__name__
    name = Path(model.rstrip("/")).name
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def _corpus_attrs(corpus: Corpus) -> dict[str, Any]:
    counts = corpus.attrs.get("counts", {})
    return {
        "sample_rate": corpus.attrs["sample_rate"],
        "seed": corpus.attrs["seed"],
        "context_pieces": corpus.context_pieces,
        "corpus": as_location(corpus.path).key(),  # resolved path, or URL without credentials
        "corpus_docs": corpus.n_docs,
        "corpus_text_bytes": int(counts.get("text_bytes", -1)),
    }


def open_or_create_store(
    store: str | os.PathLike | Location,
    corpus: Corpus,
    *,
    target: str,
    chunk_tokens: int | None = None,
    dtype: str = "float32",
) -> StoreWriter:
    """Writer for ``store``; created from ``corpus`` on first use, else checked against it.

    The first model row is added by the caller; a new store starts with no models written, so it is
    created (atomically, via a temporary sibling) with a placeholder row that the first caller's
    model takes over.
    """
    store = as_location(store)
    expected = {"target": target, **_corpus_attrs(corpus)}
    if not _store_exists(store):
        with atomic_output(store) as tmp:  # on an object store: replaces a killed creation's leftovers
            create_store(tmp, ["_unassigned"], corpus.n_features, chunk_tokens=chunk_tokens, dtype=dtype, attrs=expected)
        return StoreWriter(store)
    writer = StoreWriter(store)
    if writer.n_tokens != corpus.n_features:
        raise InputError(
            f"store {store} has {writer.n_tokens} tokens but corpus {corpus.path} has {corpus.n_features} features; "
            "use the corpus the store was made from, or a new --store"
        )
    attrs = writer.attrs
    for key in ("target", *_FINGERPRINT, "corpus_docs", "corpus_text_bytes"):
        if key in attrs and attrs[key] != expected[key]:
            raise InputError(
                f"store {store} has {key}={attrs[key]!r} but this run has {expected[key]!r}; "
                "match the store's corpus and --target, or use a new --store"
            )
    return writer


def _claim_row(writer: StoreWriter, name: str, info: dict[str, Any], record: dict[str, Any]) -> int:
    """Row of model ``name``: its existing row, the new store's placeholder row, or a new row.

    ``record`` (the row's provenance) is stored with ``info`` before any chunk of the row is
    written, so a row that reads as complete always has one; a resumed run replaces it.
    """
    model_info = dict(writer.attrs.get("model_info", {}))
    try:
        records = json.loads(writer.attrs.get(MODEL_PROVENANCE_ATTR, "{}"))
        records = dict(records)
    except (TypeError, ValueError):
        raise InputError(
            f"{writer.path}: attribute {MODEL_PROVENANCE_ATTR} is not a JSON object; remove it from "
            "the store's zarr.json (it only records how each row was made) and rerun"
        ) from None
    if name in writer.models:
        row = writer.model_index([name])[0]
    elif writer.models == ["_unassigned"]:
        zarr_array(writer.group, "model")[0] = name
        writer.models = [name]
        row = 0
    else:
        row = writer.add_models([name])[0]
    model_info[name] = info
    records[name] = record
    writer.update_attrs(model_info=model_info, **{MODEL_PROVENANCE_ATTR: json.dumps(records, sort_keys=True)})
    return row


def chunk_nll(backend: Backend, corpus: Corpus, start: int, stop: int, target: str) -> np.ndarray:
    """NLLs of features ``start:stop`` under ``backend`` (float64)."""
    contexts, targets = corpus.windows(start, stop)
    return backend.score(contexts, targets, target)


def extract_perplexity(
    corpus: str | os.PathLike | Corpus,
    store: str | os.PathLike | Location,
    model: str | Any,
    *,
    name: str | None = None,
    backend: str = "transformers",
    target: str = "last-token",
    tokenizer: Any = None,
    source: str | None = None,
    gguf_file: str | None = None,
    batch_size: int = 32,
    device: str = DEFAULTS.model_device,
    dtype: str = "float32",
    max_tokens: int = 512,
    chunk_tokens: int | None = None,
    store_dtype: str = "float32",
    progress: Progress = no_progress,
    trust_remote_code: bool = False,
) -> PerplexityResult:
    """Fill model ``model``'s row of ``store`` with the NLL of every corpus feature (resumable).

    Parameters
    ----------
    corpus
        ``corpus.zarr`` (path or :class:`~bsig_array.io.corpus_store.Corpus`); it defines the token axis.
    store
        Perplexity store (a local directory or an object-store URL); created from the corpus if missing.
    model
        Model name/path/alias/zoo name, or a loaded transformers model (with ``tokenizer``).
    name
        Model name in the store (default: derived from ``model``).
    tokenizer
        Tokenizer of a loaded ``model``.
    source
        Provenance recorded for the model (default: ``model`` itself, or its class name if loaded).
    backend
        ``transformers`` or ``vllm`` (see :mod:`bsig_array.models.backends`).
    target
        ``last-token`` (the paper) or ``piece``.
    batch_size, device, dtype, max_tokens, gguf_file
        Passed to the backend.
    chunk_tokens
        Token chunk size of a new store (resume granularity).
    store_dtype
        ``float32`` or ``float16`` for a new store.
    progress
        Receives one bar over the corpus features, advanced after each chunk is written.
    trust_remote_code
        Let the backend run Python code shipped with the model (``--trust-remote-code``; off by default).
    """
    check_target(target)
    check_model_options(device=device, dtype=dtype, batch_size=batch_size, max_tokens=max_tokens)
    if chunk_tokens is not None:
        check_count(chunk_tokens, "--chunk-tokens", minimum=1)
    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    loc = as_location(store)
    name = check_model_name(name if name is not None else default_model_name(model))
    source = source or (model if isinstance(model, str) else default_model_name(model))
    t0 = time.perf_counter()
    with store_lock(loc), _remove_if_unwritten(loc):
        writer = None
        if _store_exists(loc):
            writer = open_or_create_store(loc, corpus, target=target)
            known = dict(writer.attrs.get("model_info", {})).get(name)
            if name in writer.models and known is not None and known.get("source") != str(source):
                raise InputError(
                    f"model name {name!r} is already in {loc} from {known['source']!r}; pass another --name"
                )
        if writer is not None and name in writer.models:
            row = writer.model_index([name])[0]
            pending = writer.pending(rows=[row])
        else:
            row, pending = -1, None  # every chunk
        tokens = 0
        if pending != []:
            # Load the model before creating anything, so a bad --model leaves no store behind.
            kwargs: dict[str, Any] = dict(device=device, dtype=dtype, batch_size=batch_size, max_tokens=max_tokens)
            if tokenizer is not None:
                kwargs["tokenizer"] = tokenizer
            if gguf_file:
                kwargs["gguf_file"] = gguf_file
            if trust_remote_code:
                kwargs["trust_remote_code"] = True
            scorer = get_backend(backend, model=model, **kwargs)
            if writer is None:
                writer = open_or_create_store(
                    loc, corpus, target=target, chunk_tokens=chunk_tokens, dtype=store_dtype
                )
            local = isinstance(model, str) and Path(model).exists()
            record = make_record(
                "perplexity",
                inputs={"corpus": corpus.path, "model": model if local else None},
                options={"model": None if local else (model if isinstance(model, str) else None), "source": str(source),
                         "gguf_file": gguf_file, "name": name, "backend": backend, "target": target,
                         "batch_size": batch_size, "device": device, "dtype": dtype, "max_tokens": max_tokens,
                         "chunk_tokens": writer.chunk_tokens, "store_dtype": str(writer.nll.dtype),
                         "trust_remote_code": trust_remote_code},
            )
            row = _claim_row(writer, name, {**scorer.info(), "source": str(source), "target": target}, record)
            pending = writer.pending(rows=[row])
            with progress(f"perplexity {name}", corpus.n_features, "tokens") as bar:
                bar.advance(corpus.n_features - sum(writer.chunk_slice(j).stop - writer.chunk_slice(j).start for j in pending))
                for j in pending:
                    sl = writer.chunk_slice(j)
                    nll = chunk_nll(scorer, corpus, sl.start, sl.stop, target)
                    if not np.isfinite(nll).all():
                        raise InputError(f"model {name} gave non-finite NLLs in chunk {j}; check the model weights/dtype")
                    doc, piece = corpus.features(sl.start, sl.stop)
                    token = np.arange(sl.start, sl.stop, dtype=np.int64)
                    writer.write_chunk(j, nll[None, :], rows=[row], token=token, doc=doc, piece=piece)
                    tokens += sl.stop - sl.start
                    bar.advance(sl.stop - sl.start)
    assert writer is not None  # pending is a list only once a writer exists
    result_store = loc.path if loc.is_local else loc  # a Location on an object store (see PerplexityResult)
    return PerplexityResult(result_store, name, row, len(pending), writer.n_chunks, tokens,  # type: ignore[arg-type]
                            time.perf_counter() - t0)
