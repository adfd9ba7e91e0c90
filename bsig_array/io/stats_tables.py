"""The statistics tables of ``bsig stats``: one CSV per overlap level and table, ``DIR/<level>_<table>.csv``.

Tables (:data:`bsig_array.schema.STATS_TABLES`): ``within_cross``, ``family_format``,
``function_matrix``, ``clique``; computed by :mod:`bsig_array.stages.stats`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bsig_array.io.atomic import atomic_output
from bsig_array.schema import STATS_TABLES


def write_stats(tables: dict[str, pd.DataFrame], out: str | os.PathLike, level: str) -> list[Path]:
    """Write each table as ``OUT/<level>_<table>.csv`` (temp file + rename)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, table in tables.items():
        path = out / f"{level}_{key}.csv"
        with atomic_output(path) as tmp:
            table.to_csv(tmp)
        paths.append(path)
    return paths


def read_stats(directory: str | os.PathLike) -> dict[str, dict[str, pd.DataFrame]]:
    """Tables written by :func:`write_stats`, keyed by level then table name."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for path in sorted(Path(directory).glob("*.csv")):
        for key in STATS_TABLES:
            if path.stem.endswith(f"_{key}"):
                out.setdefault(path.stem[: -len(key) - 1], {})[key] = pd.read_csv(path, index_col=0)
    return out
