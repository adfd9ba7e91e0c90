"""``bsig validate PATH``: check any artifact bsig writes, by the kind found at ``PATH``.

For every Zarr artifact (perplexity store, corpus store, screen output, signatures store, overlap or
performance ``.zarr``) every metadata document is read: the root ``zarr.json`` and the ``zarr.json``
of every array and group, each must parse as a Zarr v3 document and agree with the consolidated
copy in the root (readers use only that copy, so a damaged array document goes unnoticed until the
store is consolidated again or opened without it).  With ``deep``, every chunk file of every array is
read through the checked read (:func:`~bsig_array.io.zarr_format.read_checked`: crc32c checksums;
a missing file where the writer writes every chunk).  The perplexity store adds its own checks
(:func:`bsig_array.io.perplexity_store.validate.validate_store`).  Files (overlap ``.nc``,
performance tables) and stats folders are read whole by their readers.  The first problem is one
:class:`~bsig_array.errors.InputError` naming the document or chunk file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bsig_array.errors import InputError
from bsig_array.io.corpus_store import CORPUS_STORE
from bsig_array.io.kinds import (
    DIRECTORY,
    EMPTY_DIRECTORY,
    FILE,
    ZARR_STORE,
    artifact_kind,
    is_debris,
    is_zarr_kind,
    with_article,
)
from bsig_array.io.location import Location, as_location
from bsig_array.io.overlap_file import OVERLAP_FILE
from bsig_array.io.perplexity_store.schema import NLL, PERPLEXITY_STORE, TOKEN_COORDS
from bsig_array.io.questions import QUESTIONS
from bsig_array.io.scores import PERFORMANCE
from bsig_array.io.screen_output import SCREEN_OUTPUT
from bsig_array.io.signatures import SIGNATURES
from bsig_array.io.zarr_format import (
    ALL_CHUNKS_ATTR,
    chunk_exists,
    chunk_files,
    missing_message,
    open_group,
    quiet_zarr,
    read_checked,
    require_zarr_v3,
)
from bsig_array.runtime.progress import Progress, no_progress

if TYPE_CHECKING:
    from bsig_array.io.perplexity_store.validate import StoreSummary

#: The command that writes each artifact kind (how a damaged one is made again).
COMMANDS = {
    PERPLEXITY_STORE: "bsig synth, bsig ingest or bsig perplexity (--overwrite)",
    CORPUS_STORE: "bsig corpus --overwrite",
    SCREEN_OUTPUT: "bsig screen --overwrite",
    SIGNATURES: "bsig select --overwrite",
    OVERLAP_FILE: "bsig overlap --overwrite",
    PERFORMANCE: "bsig performance",
}


@dataclass
class ArtifactSummary:
    """What :func:`validate_artifact` checked; :meth:`format` renders it for ``bsig validate``."""

    path: str
    kind: str
    lines: list[str] = field(default_factory=list)
    store: StoreSummary | None = None  # a perplexity store's own summary

    def format(self) -> str:
        """A one-screen, human-readable summary."""
        if self.store is not None:
            return self.store.format()
        return "\n".join([f"artifact   {self.path} ({self.kind})", *self.lines])


def _recreate(kind: str) -> str:
    return f"re-create it with {COMMANDS.get(kind, 'the command that wrote it')}"


def _document(loc: Location, key: str, what: str, fix: str) -> dict[str, Any]:
    """The parsed metadata document ``key`` of the store at ``loc`` (a Zarr v3 node's dict)."""
    def bad(problem: str) -> InputError:
        return InputError(f"{what}: metadata document {key} {problem}; {fix}")

    try:
        data = loc.child(*key.split("/")).read_bytes()
    except FileNotFoundError:
        raise bad("is missing") from None
    except IsADirectoryError:
        raise bad("is a directory, not a file") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise bad(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") not in ("array", "group"):
        raise bad("is not a Zarr v3 array or group document")
    return doc


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return key
    return "?"


def check_metadata(path: str | os.PathLike | Location, kind: str) -> int:
    """Read every metadata document of the Zarr store at ``path``; returns how many were read.

    Raises :class:`InputError` naming the first document that is missing, does not parse, or
    disagrees with the consolidated copy in the root ``zarr.json``.
    """
    loc = as_location(path)
    what, fix = f"{kind} {loc}", _recreate(kind)
    require_zarr_v3(loc, kind)
    root = _document(loc, "zarr.json", what, fix)
    if root["node_type"] != "group":
        raise InputError(f"{what}: metadata document zarr.json is an array's, not a group's; {fix}")
    on_disk = set()
    for key in loc.walk_files():
        parts = key.split("/")
        if parts[-1] == "zarr.json" and len(parts) > 1 and not any(is_debris(p) for p in parts):
            on_disk.add("/".join(parts[:-1]))
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata")
    if isinstance(consolidated, dict):
        nodes = sorted(set(consolidated) | on_disk)
        for name in nodes:
            key = f"{name}/zarr.json"
            if name not in consolidated:
                raise InputError(
                    f"{what}: metadata document {key} is not in the consolidated metadata of zarr.json "
                    f"(the store changed after it was consolidated); {fix}"
                )
            doc = _document(loc, key, what, fix)
            copy = consolidated[name]
            if doc != copy:
                field_name = _first_difference(doc, copy if isinstance(copy, dict) else {})
                raise InputError(
                    f"{what}: metadata document {key} disagrees with its consolidated copy in zarr.json "
                    f"(field {field_name!r}); one of them is damaged: {fix}"
                )
    else:
        nodes = sorted(on_disk)
        for name in nodes:
            _document(loc, f"{name}/zarr.json", what, fix)
    return 1 + len(nodes)


def check_chunks(
    path: str | os.PathLike | Location, kind: str, *, skip: tuple[str, ...] = (), progress: Progress = no_progress
) -> tuple[int, int]:
    """Read every chunk file of every array (but ``skip``) through the checked read, one at a time.

    A missing chunk file is damage where the writer wrote every chunk (:data:`ALL_CHUNKS_ATTR`);
    elsewhere it reads as the fill value, as zarr does.  Returns (arrays, chunk files read).
    """
    loc = as_location(path)
    what, fix = f"{kind} {loc}", f"the file is truncated or corrupt: {_recreate(kind)}"
    with quiet_zarr():
        group = open_group(loc)
        arrays = sorted((name, array) for name, array in group.arrays() if name not in skip)
        complete = bool(group.attrs.get(ALL_CHUNKS_ATTR))
    files = [(array, key, part) for _, array in arrays for key, part in chunk_files(array, tuple(slice(0, n) for n in array.shape))]
    read = 0
    with progress("validate", len(files), unit="chunks") as bar:
        for array, key, part in files:
            if not chunk_exists(array, key):
                if complete:
                    raise InputError(missing_message(array, [(key, part)], what=what, fix=fix))
            else:
                read_checked(array, part, what=what, fix=fix)
                read += 1
            bar.advance(1)
    return len(arrays), read


def validate_artifact(
    path: str | os.PathLike | Location, *, deep: bool = False, mark_pending: bool = False,
    progress: Progress = no_progress,
) -> ArtifactSummary:
    """Check the artifact at ``path``, of any kind bsig writes (a perplexity store: :func:`check_metadata`,
    then :func:`bsig_array.io.perplexity_store.validate.validate_store`, whose summary is ``store``).

    ``mark_pending`` applies to a perplexity store only (see ``validate_store``).

    Raises
    ------
    InputError
        Nothing there, an unknown kind, or the first damaged metadata document, chunk file or table.
    """
    loc = as_location(path)
    kind = artifact_kind(loc)
    if kind is None:
        raise InputError(f"{loc} does not exist; pass an artifact that bsig wrote")
    if kind in (EMPTY_DIRECTORY, DIRECTORY):
        return _directory(loc, kind, deep=deep, progress=progress)
    if kind == FILE:
        return _file(loc)
    if kind in (PERPLEXITY_STORE, ZARR_STORE):  # a Zarr store of no known kind: say what a store lacks
        from bsig_array.io.perplexity_store.validate import validate_store

        kind = PERPLEXITY_STORE
        documents = check_metadata(loc, kind)  # first: readers use only the consolidated copy
        store = validate_store(loc, deep=deep, mark_pending=mark_pending, progress=progress)
        store.notes.append(f"metadata   {documents} documents parse and agree with the consolidated copy")
        if deep:  # nll and the token coordinates were read by validate_store's scan
            check_chunks(loc, kind, skip=(NLL, *TOKEN_COORDS))
        return ArtifactSummary(str(loc), f"{kind}, Zarr v3", store=store)
    if is_zarr_kind(kind) or (loc.is_dir() and (loc.suffix == ".zarr" or loc.child("zarr.json").exists())):
        return _zarr(loc, kind, deep=deep, progress=progress)
    return _directory(loc, kind, deep=deep, progress=progress)


def _zarr(loc: Location, kind: str, *, deep: bool, progress: Progress) -> ArtifactSummary:
    summary = ArtifactSummary(str(loc), f"{kind}, Zarr v3")
    documents = check_metadata(loc, kind)
    summary.lines.append(f"metadata   {documents} documents parse and agree with the consolidated copy")
    if deep:
        arrays, files = check_chunks(loc, kind, progress=progress)
        summary.lines.append(f"chunks     {files:,} chunk files of {arrays} arrays read, checksums verified")
    else:
        summary.lines.append("chunks     not read (pass --deep to read every chunk and verify its checksum)")
    if kind == PERFORMANCE:
        summary.lines.append(_performance(loc))
    return summary


def _performance(loc: Location) -> str:
    from bsig_array.io.scores import load_performance

    score = load_performance(loc)
    return f"table      read as a performance matrix: {score.sizes['model']} models x {score.sizes['benchmark']} benchmarks"


def _file(loc: Location) -> ArtifactSummary:
    suffix = loc.suffix.lower()
    if suffix == ".nc":
        from bsig_array.io.overlap_file import load_overlap, present_levels

        ds = load_overlap(loc)
        return ArtifactSummary(str(loc), "overlap file, netCDF", [
            f"contents   read whole: {ds.sizes.get('benchmark_a', 0)} benchmarks, levels {', '.join(present_levels(ds)) or '-'}",
            "checksums  none (netCDF3 carries none; the file parsed and every variable was read)",
        ])
    if suffix in (".csv", ".parquet", ".tsv"):
        return ArtifactSummary(str(loc), "table", [_performance(loc), "checksums  none (plain table; every row was parsed)"])
    raise InputError(
        f"{loc} is a file bsig validate does not know (suffix {loc.suffix or 'none'!r}); it checks Zarr artifacts, "
        "overlap .nc files, performance tables (.csv/.parquet) and stats folders"
    )


def _directory(loc: Location, kind: str, *, deep: bool, progress: Progress) -> ArtifactSummary:
    from bsig_array.io.stats_tables import read_stats, table_files

    names = sorted(n for n in loc.names() if not is_debris(n))
    if kind in (DIRECTORY, EMPTY_DIRECTORY):
        if not table_files(loc):
            raise InputError(f"{loc} is {with_article(kind)} holding no artifact bsig writes; pass a store, screen, signatures, "
                             "overlap, performance table, stats folder, synthetic pool or demo output")
        tables = read_stats(loc)
        n = sum(len(t) for t in tables.values())
        if not n:
            raise InputError(f"{loc} holds .csv files but no stats tables (LEVEL_TABLE.csv); pass the output of bsig stats")
        return ArtifactSummary(str(loc), "stats folder", [
            f"tables     {n} tables of {len(tables)} levels parsed ({', '.join(sorted(tables))})",
            "checksums  none (plain CSV)",
        ])
    if kind == QUESTIONS:
        return ArtifactSummary(str(loc), kind, [f"files      {len(names)} question files (plain text: no checksums, not read)"])
    # A composite (synthetic pool, demo output): every member artifact in turn.
    summary = ArtifactSummary(str(loc), kind)
    for name in names:
        child = loc.child(name)
        child_kind = artifact_kind(child)
        known = child_kind not in (None, FILE, EMPTY_DIRECTORY, DIRECTORY, ZARR_STORE, QUESTIONS)
        if known or (child_kind == FILE and child.suffix.lower() == ".nc") or name in ("performance.csv", "stats"):
            sub = validate_artifact(child, deep=deep, progress=progress)
            summary.lines.append(f"member     {name}: {sub.kind}, checked")
        else:
            summary.lines.append(f"member     {name}: not checked (no checksums or schema to verify)")
    return summary
