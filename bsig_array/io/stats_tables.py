"""The statistics tables of ``bsig stats``: one CSV per overlap level and table, ``DIR/<level>_<table>.csv``.

Tables (:data:`bsig_array.schema.STATS_TABLES`): ``within_cross``, ``family_format``,
``function_matrix``, ``clique``; computed by :mod:`bsig_array.stages.stats`.  ``DIR`` is a local
directory or a URL prefix (``s3://bucket/stats``); each table is replaced whole (a temporary file
renamed locally, one PUT of the complete file on an object store).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bsig_array.io.atomic import atomic_output
from bsig_array.io.location import Location, as_location
from bsig_array.schema import STATS_TABLES


def write_stats(tables: dict[str, pd.DataFrame], out: str | os.PathLike | Location, level: str) -> list[Path | Location]:
    """Write each table as ``OUT/<level>_<table>.csv`` (temp file + rename; staged and uploaded for a URL)."""
    loc = as_location(out)
    if loc.is_local:
        loc.path.mkdir(parents=True, exist_ok=True)
    paths: list[Path | Location] = []
    for key, table in tables.items():
        target = loc.child(f"{level}_{key}.csv")
        with atomic_output(target) as tmp:
            table.to_csv(tmp)
        paths.append(target.path if target.is_local else target)
    return paths


def read_stats(directory: str | os.PathLike | Location) -> dict[str, dict[str, pd.DataFrame]]:
    """Tables written by :func:`write_stats`, keyed by level then table name."""
    loc = as_location(directory)
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for name in sorted(n for n in loc.names() if n.endswith(".csv")):
        stem = name[: -len(".csv")]
        for key in STATS_TABLES:
            if stem.endswith(f"_{key}"):
                with loc.child(name).open("rb") as fh:
                    out.setdefault(stem[: -len(key) - 1], {})[key] = pd.read_csv(fh, index_col=0)
    return out


def table_files(directory: str | os.PathLike | Location | None) -> list[Location]:
    """The ``*.csv`` entries of a stats directory (none when it is not a directory)."""
    if directory is None:
        return []
    loc = as_location(directory)
    return [loc.child(n) for n in sorted(loc.names()) if n.endswith(".csv")] if loc.is_dir() else []
