"""Provenance of every bsig output: what it was made from, and the check that a later stage gets the same.

A record is a small JSON object stored in the output's attributes under :data:`PROVENANCE_ATTR`
(Zarr and NetCDF artifacts; a synthetic pool's in its store) or as :data:`PROVENANCE_FILE` inside a
directory output (stats tables, report); a ``bsig perplexity`` store, filled model by model, holds
one per model row under :data:`MODEL_PROVENANCE_ATTR`.  A record::

    {"artifact": "screen", "bsig_version": "0.1.0", "created": "2026-12-01T09:40:00Z",
     "inputs": {"perplexity": "/data/p.zarr", "performance": "/data/y.csv"},
     "fingerprints": {"perplexity": "…", "performance": "…"},
     "options": {"alpha": 0.01, …}}

``fingerprints`` are of the *content* a result depends on, inherited along the chain (signatures
carry the perplexity fingerprint of the screen they came from), so ``bsig overlap`` can tell that
signatures were selected on another pool.  Two fingerprints exist:

- :func:`performance_fingerprint`: SHA-256 of the sorted model names, the sorted benchmark names and
  the float64 scores in that order.  Not the file bytes: a CSV, its Parquet and its NetCDF
  conversion match; row or column order and benchmark metadata do not count.
- :func:`store_fingerprint`: SHA-256 of the model names (store order), the token count, and the token
  ids and NLLs (as float64) of the first and last :data:`FINGERPRINT_TOKENS` tokens.  Cheap: it reads
  at most two store chunks.  It catches another pool, other models, another size or order of
  tokens, another seed of ``bsig synth``, a model recomputed with another backend; it does **not**
  see changes confined to the middle of the token axis (a single chunk rewritten, a flipped byte:
  those are the checksums' job, ``bsig validate --deep``) nor the chunk layout or codec (a
  re-chunked copy of the same values matches, on purpose).

Locations are recorded without secrets: a URL loses its user, password, query and fragment
(:func:`redact`); local paths are made absolute.  :func:`check_fingerprint` compares a recorded
fingerprint with the one of the input given now and raises one :class:`~bsig_array.errors.InputError`
line naming both, unless the user passed ``--allow-mismatch``; outputs written before records
existed are accepted with a :class:`~bsig_array.errors.BsigWarning`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bsig_array import __version__
from bsig_array.errors import BsigWarning, InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.location import Location, as_location, is_url, redact_url

if TYPE_CHECKING:
    import xarray as xr

#: Attribute holding the JSON record in Zarr and NetCDF outputs.
PROVENANCE_ATTR = "bsig_provenance"
#: File holding the record in directory outputs (stats tables, report).
PROVENANCE_FILE = "provenance.json"
#: String attribute of a ``bsig perplexity`` store: JSON ``{model name: record}``, one record per model row.
MODEL_PROVENANCE_ATTR = "bsig_model_provenance"
#: Tokens at each end of the store that :func:`store_fingerprint` hashes.
FINGERPRINT_TOKENS = 4096
#: How each fingerprinted input is named in messages.
ROLES = {"performance": "performance matrix", "perplexity": "perplexity store"}


def redact(location: str | os.PathLike | Location) -> str:
    """``location`` as it may be recorded: a URL without user, password, query or fragment; a path absolute.

    A :class:`~bsig_array.io.location.Location` is recorded by its URL only: its storage options
    (endpoint, keys) never reach a record.
    """
    text = location.url if isinstance(location, Location) else os.fspath(location)
    return redact_url(text) if is_url(text) else os.path.abspath(text)


def _digest(h: Any) -> str:
    return h.hexdigest()[:32]


def _canonical(values: Any) -> bytes:
    """float64 bytes with one NaN and one zero (-0.0 and NaN payloads must not change a fingerprint)."""
    x = np.asarray(values, dtype=np.float64) + 0.0
    x[np.isnan(x)] = np.nan
    return np.ascontiguousarray(x).tobytes()


def performance_fingerprint(score: xr.DataArray) -> str:
    """Fingerprint of a performance matrix ``score (model, benchmark)``: names and values, not file bytes."""
    score = score.transpose("model", "benchmark")
    models = [str(m) for m in score["model"].values]
    benchmarks = [str(b) for b in score["benchmark"].values]
    rows, cols = np.argsort(models, kind="stable"), np.argsort(benchmarks, kind="stable")
    values = np.asarray(score.values, dtype=np.float64)[np.ix_(rows, cols)]
    h = hashlib.sha256(json.dumps([sorted(models), sorted(benchmarks)]).encode())
    h.update(_canonical(values))
    return _digest(h)


def store_fingerprint(nll: xr.DataArray) -> str:
    """Fingerprint of a perplexity store's ``nll (model, token)`` (see the module docstring for its reach).

    Reads the first and last :data:`FINGERPRINT_TOKENS` tokens through the array's own read path
    (for :func:`~bsig_array.io.perplexity_store.reader.open_store`, the checked one).
    """
    nll = nll.transpose("model", "token")
    d = int(nll.sizes["token"])
    n = min(d, FINGERPRINT_TOKENS)
    ends = []
    for part in (slice(0, n), slice(d - n, d)):
        block = nll.isel(token=part)
        ids = block["token"].values if "token" in block.coords else np.arange(d)[part]
        ends.append((ids, block.values))
    return store_fingerprint_of([str(m) for m in nll["model"].values], d, ends[0], ends[1])


def store_fingerprint_of(
    models: list[str], n_tokens: int, head: tuple[Any, Any], tail: tuple[Any, Any],
) -> str:
    """:func:`store_fingerprint` from its parts, for a writer that knows them before the store is written.

    ``head`` and ``tail`` are ``(token ids, nll (model, n))`` of the first and last
    ``n = min(n_tokens, FINGERPRINT_TOKENS)`` tokens, in the store's dtype.
    """
    h = hashlib.sha256(json.dumps([list(models), int(n_tokens)]).encode())
    for ids, values in (head, tail):
        h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
        h.update(_canonical(values))
    return _digest(h)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and "://" in value:
        return redact(value)  # a scheduler or storage URL may carry credentials
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def make_record(
    artifact: str,
    *,
    inputs: Mapping[str, str | os.PathLike | Location | None] | None = None,
    fingerprints: Mapping[str, str | None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A provenance record of ``artifact`` (the kind of output: ``"screen"``, ``"signatures"``, ...).

    Parameters
    ----------
    inputs
        Role -> path (or URL) of each input read; ``None`` entries are left out.
    fingerprints
        Role -> content fingerprint of what the output depends on (own inputs and inherited ones).
    options
        The options the output was made with (JSON-able values; URLs are redacted).
    """
    return {
        "artifact": artifact,
        "bsig_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": {role: redact(p) for role, p in (inputs or {}).items() if p is not None},
        "fingerprints": {role: fp for role, fp in (fingerprints or {}).items() if fp},
        "options": _jsonable(dict(options or {})),
    }


def record_attrs(record: Mapping[str, Any]) -> dict[str, str]:
    """``{PROVENANCE_ATTR: json}``: merge it into an output's attributes."""
    return {PROVENANCE_ATTR: json.dumps(record, sort_keys=True)}


def read_record(attrs: Mapping[str, Any], what: str = "output") -> dict[str, Any] | None:
    """The record in ``attrs``, or ``None`` for an output written before records existed."""
    text = attrs.get(PROVENANCE_ATTR)
    if text is None:
        return None
    try:
        record = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError):
        raise InputError(f"{what}: its provenance record ({PROVENANCE_ATTR}) is not valid JSON; recreate it") from None
    if not isinstance(record, dict):
        raise InputError(f"{what}: its provenance record ({PROVENANCE_ATTR}) is not an object; recreate it")
    return record


def write_record_file(directory: str | os.PathLike | Location, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``DIRECTORY/provenance.json`` (atomically; on an object store one PUT).

    Returns the local path (for a URL, its :class:`~bsig_array.io.location.Location`).
    """
    loc = as_location(directory).child(PROVENANCE_FILE)
    with atomic_output(loc) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return loc.path if loc.is_local else loc  # type: ignore[return-value]  # a Location: every reader takes both


def read_record_file(directory: str | os.PathLike | Location) -> dict[str, Any] | None:
    """The record of a directory output (a local path or a URL), or ``None`` when it has none."""
    loc = as_location(directory).child(PROVENANCE_FILE)
    if loc.is_local:
        if not loc.path.is_file():
            return None
    elif not loc.exists() or loc.is_dir():
        return None
    try:
        return read_record({PROVENANCE_ATTR: loc.read_bytes().decode("utf-8")}, str(loc))
    except UnicodeDecodeError:
        raise InputError(f"{loc} is not UTF-8 text; recreate it (or delete it)") from None


def fingerprints_of(record: Mapping[str, Any] | None) -> dict[str, str]:
    """The fingerprints a record carries (to inherit them into a derived output)."""
    return dict((record or {}).get("fingerprints", {}))


def derived_record(
    artifact: str, parents: Mapping[str, Any], sources: Mapping[str, Any], *, options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of an output made from other bsig outputs: their fingerprints, merged.

    ``parents`` maps roles to the loaded inputs (objects with ``attrs``; others are ignored, as are
    inputs without a record); ``sources`` the paths to record.
    """
    prints: dict[str, str] = {}
    for role, parent in parents.items():
        attrs = getattr(parent, "attrs", None)
        if isinstance(attrs, Mapping):
            prints.update(fingerprints_of(read_record(attrs, f"{role} {sources.get(role, '')}".strip())))
    return make_record(artifact, inputs=sources, fingerprints=prints, options=options)


def check_fingerprint(
    record: Mapping[str, Any] | None,
    role: str,
    fingerprint: str,
    *,
    artifact: str,
    given: str,
    allow_mismatch: bool = False,
) -> None:
    """Refuse an input whose content is not what ``artifact`` was made from.

    Parameters
    ----------
    record
        ``artifact``'s provenance record (``None``: written before records existed, a warning).
    role
        ``"performance"`` or ``"perplexity"``.
    fingerprint
        Fingerprint of the input given now.
    artifact, given
        How to name the recorded output and the input in the message (e.g. ``"screen S.zarr"``,
        ``"Y2.csv"``).
    allow_mismatch
        ``--allow-mismatch``: a mismatch is a warning instead of an error.

    Raises
    ------
    InputError
        One line naming both, when the fingerprints differ and ``allow_mismatch`` is false.
    """
    what = ROLES.get(role, role)
    if record is None:
        warnings.warn(
            f"{artifact} has no provenance record (written by an older bsig), so it cannot be checked "
            f"against the {what} {given}", BsigWarning, stacklevel=2,
        )
        return
    recorded = fingerprints_of(record).get(role)
    if recorded is None or recorded == fingerprint:
        return
    source = record.get("inputs", {}).get(role)
    made_from = f"{source}, " if source else ""
    message = (
        f"the {what} {given} (fingerprint {fingerprint[:8]}) is not the one {artifact} was made from "
        f"({made_from}fingerprint {recorded[:8]})"
    )
    if allow_mismatch:
        warnings.warn(f"{message}; used anyway (--allow-mismatch)", BsigWarning, stacklevel=2)
        return
    raise InputError(f"{message}; pass the matching {what}, or --allow-mismatch to use it anyway")


def check_consistent(records: Mapping[str, Mapping[str, Any] | None], *, allow_mismatch: bool = False) -> None:
    """Refuse outputs made from different inputs: every role's fingerprint must agree across ``records``.

    ``records`` maps how to name each output (``"screen S.zarr"``) to its record; outputs without a
    record are skipped with a warning.
    """
    seen: dict[str, tuple[str, str]] = {}
    for name, record in records.items():
        if record is None:
            warnings.warn(f"{name} has no provenance record (written by an older bsig); its inputs are not checked",
                          BsigWarning, stacklevel=2)
            continue
        for role, fp in sorted(fingerprints_of(record).items()):
            if role not in seen:
                seen[role] = (name, fp)
                continue
            first, first_fp = seen[role]
            if fp != first_fp:
                message = (
                    f"{name} and {first} were made from different {ROLES.get(role, role)}s "
                    f"(fingerprints {fp[:8]} and {first_fp[:8]})"
                )
                if allow_mismatch:
                    warnings.warn(f"{message}; used together anyway (--allow-mismatch)", BsigWarning, stacklevel=2)
                    continue
                raise InputError(f"{message}; pass outputs of one chain, or --allow-mismatch to combine them anyway")


def name(role: str, sources: Mapping[str, Any] | None, fallback: str | None = None) -> str:
    """How to name input ``role`` in a message: its path when known, else ``fallback`` or ``"the <role>"``."""
    path = (sources or {}).get(role)
    return os.fspath(path) if path is not None else (fallback or f"the {role}")
