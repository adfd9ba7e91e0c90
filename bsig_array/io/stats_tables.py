"""The statistics tables of ``bsig stats``: one CSV per overlap level and table, ``DIR/<level>_<table>.csv``.

Tables (:data:`bsig_array.schema.STATS_TABLES`): ``within_cross``, ``family_format``,
``function_matrix``, ``clique``; computed by :mod:`bsig_array.stages.stats`.  ``DIR`` is a local
directory or a URL prefix (``s3://bucket/stats``).

A stats folder is **one output**, the tables of one run plus its ``provenance.json``, whose
``tables`` entry (the manifest) maps every table file to the SHA-256 of its bytes
(:func:`write_stats_folder`):

- locally the whole folder is built aside (other files already in ``DIR`` are carried over as hard
  links) and swapped in at once by :func:`~bsig_array.io.atomic.atomic_output`, so a killed run
  leaves the old folder or the new one, never a mix;
- on an object store (no rename) ``provenance.json`` is first replaced by a record marked
  ``incomplete``, then the tables are put one by one, then the final record with the manifest (the
  commit), so a killed run leaves a folder that readers refuse as incomplete.

:func:`read_stats` checks every table against the manifest and refuses a folder whose tables do not
all belong to the one run recorded there (a table missing, changed, or not listed), naming it.  A
folder whose record has no manifest (an older bsig) is read with a
:class:`~bsig_array.errors.BsigWarning`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bsig_array.errors import BsigWarning, InputError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.kinds import is_debris
from bsig_array.io.location import Location, as_location
from bsig_array.io.provenance import PROVENANCE_FILE, read_record_file
from bsig_array.schema import STATS_TABLES

#: Key of the manifest (``{table file: sha256}``) in a stats folder's ``provenance.json``.
MANIFEST_KEY = "tables"
#: Key marking the record an object-store write puts first (removed by the final record).
INCOMPLETE_KEY = "incomplete"


def table_name(level: str, key: str) -> str:
    """File name of table ``key`` of ``level``."""
    return f"{level}_{key}.csv"


def split_table_name(name: str) -> tuple[str, str] | None:
    """``(level, table)`` of a stats table file name, else ``None``."""
    if not name.endswith(".csv") or is_debris(name):
        return None
    stem = name[: -len(".csv")]
    for key in STATS_TABLES:
        if stem.endswith(f"_{key}") and len(stem) > len(key) + 1:
            return stem[: -len(key) - 1], key
    return None


def stats_table_names(directory: str | os.PathLike | Location | None) -> list[str]:
    """The stats table files (``<level>_<table>.csv``) in ``directory`` (none when it is not a directory)."""
    if directory is None:
        return []
    loc = as_location(directory)
    return sorted(n for n in loc.names() if split_table_name(n) is not None) if loc.is_dir() else []


def _csv_bytes(table: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    table.to_csv(buf)
    return buf.getvalue().encode("utf-8")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_bytes(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(record), indent=1, sort_keys=True) + "\n").encode("utf-8")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_stats_folder(
    results: Mapping[str, Mapping[str, pd.DataFrame]],
    out: str | os.PathLike | Location,
    record: Mapping[str, Any],
) -> list[Path | Location]:
    """Write the tables of one run (``{level: {table: frame}}``) and ``record`` + manifest as one output.

    Every stats table already in ``out`` is replaced or removed (the caller checks first that this
    loses nothing: :func:`bsig_array.io.atomic.check_output_files`); other files in ``out`` are kept.
    See the module docstring for how the write is made atomic.  Returns the table paths (for a URL,
    their :class:`~bsig_array.io.location.Location`).
    """
    loc = as_location(out)
    files = {table_name(level, key): _csv_bytes(frame) for level, tables in results.items() for key, frame in tables.items()}
    final = {**record, MANIFEST_KEY: {name: _digest(data) for name, data in files.items()}}
    final.pop(INCOMPLETE_KEY, None)
    if loc.is_local:
        target = Path(os.path.realpath(loc.path))  # a symlinked folder: replace what it points at
        with atomic_output(target) as tmp:
            tmp.mkdir()
            if target.is_dir():
                shutil.copymode(target, tmp)
                for entry in target.iterdir():  # other files of the folder come along (hard links)
                    if entry.name == PROVENANCE_FILE or split_table_name(entry.name) is not None or is_debris(entry.name):
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=_link_or_copy)
                    elif entry.is_symlink():
                        os.symlink(os.readlink(entry), tmp / entry.name)
                    else:
                        _link_or_copy(str(entry), str(tmp / entry.name))
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            (tmp / PROVENANCE_FILE).write_bytes(_record_bytes(final))
        return [loc.path / name for name in files]
    # Object store: uncommit, replace, commit (each step one PUT or DELETE).
    with atomic_output(loc.child(PROVENANCE_FILE)) as tmp:
        tmp.write_bytes(_record_bytes({**record, INCOMPLETE_KEY: True}))
    for name in stats_table_names(loc):
        if name not in files:
            loc.child(name).remove()
    for name, data in files.items():
        with atomic_output(loc.child(name)) as tmp:
            tmp.write_bytes(data)
    with atomic_output(loc.child(PROVENANCE_FILE)) as tmp:
        tmp.write_bytes(_record_bytes(final))
    return [loc.child(name) for name in files]


def write_stats(tables: dict[str, pd.DataFrame], out: str | os.PathLike | Location, level: str) -> list[Path | Location]:
    """Write one level's tables as a stats folder of their own (:func:`write_stats_folder`, a bare record)."""
    return write_stats_folder({level: tables}, out, {"artifact": "stats"})


def check_stats_folder(directory: str | os.PathLike | Location, contents: Mapping[str, bytes] | None = None) -> None:
    """Refuse a stats folder whose tables do not all belong to the run its ``provenance.json`` records.

    ``contents`` are the table files' bytes when already read (``{name: bytes}``, every table of the folder).

    Raises
    ------
    InputError
        One line naming the folder and the first table that is missing, changed or not listed, or
        saying that the folder was left incomplete by an interrupted run.
    """
    loc = as_location(directory)
    record = read_record_file(loc)
    if record is None:
        return  # written before records existed: the report's provenance check says so
    fix = "rerun bsig stats --overwrite into it, or pick another --stats folder"
    if record.get(INCOMPLETE_KEY):
        raise InputError(f"stats folder {loc} is incomplete: an interrupted bsig stats run left it half written; {fix}")
    manifest = record.get(MANIFEST_KEY)
    if manifest is None:
        warnings.warn(f"stats folder {loc}: its provenance.json lists no tables (written by an older bsig), so they "
                      "cannot be checked to come from one run", BsigWarning, stacklevel=2)
        return
    if not isinstance(manifest, dict):
        raise InputError(f"stats folder {loc}: the table list in its provenance.json is not an object; {fix}")
    present = set(stats_table_names(loc) if contents is None else contents)
    for name in sorted(present - set(manifest)):
        raise InputError(f"stats folder {loc} mixes runs: {name} is not one of the tables of the run recorded in its "
                         f"provenance.json ({len(manifest)} tables); remove it, rerun bsig stats --overwrite with its level "
                         "too, or pick another --stats folder")
    for name, digest in sorted(manifest.items()):
        if name not in present:
            raise InputError(f"stats folder {loc} is incomplete: {name}, a table of the run recorded in its provenance.json, "
                             f"is missing; {fix}")
        data = loc.child(name).read_bytes() if contents is None else contents[name]
        if _digest(data) != digest:
            raise InputError(f"stats folder {loc} mixes runs: {name} is not the table the run recorded in its provenance.json "
                             f"wrote (another run or an edit replaced it); {fix}")


def read_stats(directory: str | os.PathLike | Location) -> dict[str, dict[str, pd.DataFrame]]:
    """Tables written by :func:`write_stats_folder`, keyed by level then table name (checked first:
    :func:`check_stats_folder`)."""
    loc = as_location(directory)
    contents = {name: loc.child(name).read_bytes() for name in stats_table_names(loc)}  # read once, checked and parsed
    check_stats_folder(loc, contents)
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for name, data in contents.items():
        split = split_table_name(name)
        assert split is not None
        level, key = split
        out.setdefault(level, {})[key] = pd.read_csv(io.BytesIO(data), index_col=0)
    return out


def table_files(directory: str | os.PathLike | Location | None) -> list[Location]:
    """The ``*.csv`` entries of a stats directory (none when it is not a directory)."""
    if directory is None:
        return []
    loc = as_location(directory)
    return [loc.child(n) for n in sorted(loc.names()) if n.endswith(".csv")] if loc.is_dir() else []
