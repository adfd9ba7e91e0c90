"""Every Zarr store bsig writes opens in plain ``xr.open_zarr(path)`` without a warning.

bsig relies on consolidated metadata (one read to open a store): a store written without it, or
whose consolidated copy is stale (an array resized after consolidating), makes xarray warn that it
falls back to reading every array's metadata (or, worse, read the old shapes); zarr's notice that
consolidated metadata is not yet part of the v3 specification must not reach a command's stderr.
Each artifact kind is built by the real command, opened with warnings as errors, and compared with
what bsig's own reader returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from bsig_array.cli.main import cli
from bsig_array.io.corpus_store import Corpus
from bsig_array.io.overlap_file import load_overlap
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.scores import load_performance
from bsig_array.io.screen_output import open_screen
from bsig_array.io.signatures import load_signatures

POOL = ["--models", "8", "--benchmarks", "4", "--tokens", "2000", "--chunk-tokens", "1000", "--planted", "5"]


def bsig(*args: object) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """One store of every Zarr kind bsig writes, each made by its command."""
    root = tmp_path_factory.mktemp("open-warnings")
    pool = root / "pool"
    bsig("synth", pool, *POOL)
    bsig("screen", "--perplexity", pool / "perplexity.zarr", "--performance", pool / "performance.csv",
         "--out", root / "screen.zarr", "--alpha", 0.05, "--workers", 1)
    bsig("select", "--screen", root / "screen.zarr", "--performance", pool / "performance.csv",
         "--out", root / "signatures.zarr", "--no-loocv", "--workers", 1)
    bsig("overlap", "--signatures", root / "signatures.zarr", "--perplexity", pool / "perplexity.zarr",
         "--performance", pool / "performance.csv", "--out", root / "overlap.zarr")
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": f"doc{i} " + "w " * 40}) + "\n" for i in range(10)))
    bsig("corpus", root / "docs.jsonl", "--out", root / "corpus.zarr", "--sample-rate", 0.5)
    bsig("performance", "convert", pool / "performance.csv", root / "performance.zarr")
    return {
        "perplexity": pool / "perplexity.zarr", "screen": root / "screen.zarr", "signatures": root / "signatures.zarr",
        "overlap": root / "overlap.zarr", "corpus": root / "corpus.zarr", "performance": root / "performance.zarr",
    }


def _corpus(path: Path) -> xr.Dataset:
    corpus = Corpus(path)
    return xr.Dataset({name: (corpus.group[name].metadata.dimension_names[0], corpus.read(name, 0, corpus.group[name].shape[0]))
                       for name in ("text", "doc_offset", "doc_source", "feature_doc", "feature_piece")})


#: what bsig reads for each kind
READERS = {
    "perplexity": lambda p: open_store(p),
    "screen": open_screen,
    "signatures": load_signatures,
    "overlap": load_overlap,
    "corpus": _corpus,
    "performance": lambda p: load_performance(p).to_dataset(),
}

KINDS = [
    "perplexity", "screen", "signatures", "overlap", "corpus", "performance",
]


@pytest.mark.parametrize("kind", KINDS)
def test_plain_open_zarr_is_silent_and_equal(stores, kind):
    path = stores[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(path).load()
    ours = READERS[kind](path)
    shared = [name for name in ours.variables if name in plain.variables]
    assert shared, (kind, list(plain.variables), list(ours.variables))
    for name in shared:
        assert plain[name].dims == ours[name].dims, (kind, name)
        np.testing.assert_array_equal(np.asarray(plain[name].values), np.asarray(ours[name].values), err_msg=f"{kind} {name}")


def test_consolidated_metadata_is_current(stores):
    """The consolidated copy in each root zarr.json equals every array's own metadata (not stale)."""
    for kind, path in stores.items():
        listed = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
        own = {p.parent.relative_to(path).as_posix(): json.loads(p.read_text()) for p in path.rglob("zarr.json") if p.parent != path}
        assert listed == own, kind


def test_commands_print_no_consolidated_metadata_notice(tmp_path):
    """A command that writes and consolidates Zarr stores (from several threads) keeps zarr's notice off stderr."""
    env = {**os.environ, "PYTHONWARNINGS": "default", "BSIG_PROGRESS": "0"}
    script = (
        "from bsig_array.cli.main import main\n"
        "import sys\n"
        f"for argv in ({['synth', str(tmp_path / 'pool'), *POOL]!r}, "
        f"['corpus', {str(tmp_path / 'd.jsonl')!r}, '--out', {str(tmp_path / 'c.zarr')!r}, '--sample-rate', '0.5']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
    )
    (tmp_path / "d.jsonl").write_text('{"text": "a b c d e f g h"}\n' * 5)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Consolidated metadata" not in run.stderr, run.stderr
    assert "consolidated metadata" not in run.stderr.lower(), run.stderr
