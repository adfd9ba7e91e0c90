"""Damaged stores are named, never read as wrong values (issue 11, item 3).

Real stores are written with the package's writers and damaged on disk (truncated, emptied, a
garbage header, 400 random bytes inside, replaced by a directory, deleted, Zarr v2 metadata) or
written with bad values (negative, fractional or repeated token ids, no tokens, negative or constant
NLLs).  ``bsig validate --deep``, ``bsig screen`` and ``bsig select`` must each answer with a
non-zero exit and exactly one ``bsig: error:`` line naming the file, never a traceback, and leave
the damaged input as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from test_cli_errors import run_cli

from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

MODELS = [f"m{i}" for i in range(6)]
N_TOKENS, CHUNK = 600, 200


def nll_values(n_tokens: int = N_TOKENS) -> np.ndarray:
    return np.random.default_rng(5).gamma(2.0, 1.5, size=(len(MODELS), n_tokens)).astype("f4")


def write_store(path: Path, nll: np.ndarray | None = None, token: np.ndarray | None = None) -> Path:
    """A store written by bsig's own writer (checksummed chunks)."""
    nll = nll_values() if nll is None else nll
    writer = create_store(path, MODELS, nll.shape[1], chunk_tokens=CHUNK, with_doc_piece=False)
    for j in writer.pending():
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, nll[:, sl], token=None if token is None else token[sl])
    return path


def write_performance(path: Path) -> Path:
    rng = np.random.default_rng(1)
    pd.DataFrame({"model": MODELS, "b0": rng.random(len(MODELS)), "b1": rng.random(len(MODELS))}).to_csv(path, index=False)
    return path


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file under ``path`` (directories as None): a damaged input must stay as it was."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def one_error(capsys, *args, names: tuple[str, ...] = ()) -> str:
    """Run the CLI; assert a non-zero exit, one ``bsig: error:`` line holding ``names``, no traceback."""
    code, _, err = run_cli(capsys, *args)
    lines = err.splitlines()
    assert code not in (0, None), err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------- damage to chunk files


def flip_inside(data: bytes) -> bytes:
    """400 random bytes written inside the chunk (past any header, before the checksum)."""
    noise = np.random.default_rng(9).bytes(400)
    at = min(64, max(0, len(data) - 404))
    return data[:at] + noise + data[at + 400 :]


DAMAGE = {
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),
    "zero-bytes": lambda f: f.write_bytes(b""),
    "garbage-header": lambda f: f.write_bytes(b"\xff" * 16 + f.read_bytes()[16:]),
    "flipped-inside": lambda f: f.write_bytes(flip_inside(f.read_bytes())),
    "directory": lambda f: (f.unlink(), f.mkdir()),
    "deleted": lambda f: f.unlink(),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """One store, its scores and a screen of it, made once; tests damage copies."""
    root = tmp_path_factory.mktemp("pristine")
    store = write_store(root / "s.zarr")
    perf = write_performance(root / "y.csv")
    code, _, _ = run_cli_quiet("screen", "--perplexity", store, "--performance", perf, "--out", root / "screen.zarr",
                               "--alpha", "0.2")
    assert code in (0, None)
    code, _, _ = run_cli_quiet("select", "--screen", root / "screen.zarr", "--performance", perf,
                               "--out", root / "sig.zarr")
    assert code in (0, None)
    code, _, _ = run_cli_quiet("overlap", "--signatures", root / "sig.zarr", "--perplexity", store,
                               "--performance", perf, "--out", root / "overlap.zarr")
    assert code in (0, None)
    return {"store": store, "perf": perf, "screen": root / "screen.zarr", "signatures": root / "sig.zarr",
            "overlap": root / "overlap.zarr"}


def run_cli_quiet(*args: str) -> tuple[int, str, str]:
    from bsig_array.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    return exc.value.code, "", ""


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("chunk", ["nll/c/0/1", "token/c/1"])
def test_damaged_store_chunk_is_one_line_in_validate_and_screen(tmp_path, capsys, pristine, damage, chunk):
    store = copy(pristine["store"], tmp_path / "s.zarr")
    DAMAGE[damage](store / chunk)
    before = snapshot(store)
    word = "missing" if damage == "deleted" else "unreadable"
    line = one_error(capsys, "validate", store, "--deep", names=(chunk,))
    assert word in line and "NaN" not in line and "duplicate" not in line
    line = one_error(capsys, "screen", "--perplexity", store, "--performance", pristine["perf"],
                     "--out", tmp_path / "o.zarr", names=(chunk, word, "tokens 200..399"))
    assert "NaN" not in line and "occurs" not in line  # not misread as fill values
    assert snapshot(store) == before and not (tmp_path / "o.zarr").exists()


def test_checksum_catches_what_the_codec_would_decode(tmp_path, pristine):
    """400 random bytes inside an lz4 frame may still decompress: only the checksum catches them."""
    store = copy(pristine["store"], tmp_path / "s.zarr")
    DAMAGE["flipped-inside"](store / "nll" / "c" / "0" / "1")
    with pytest.raises(InputError, match=r"nll/c/0/1 \(tokens 200\.\.399\) is unreadable .*checksum"):
        open_store(store)["nll"].sum().compute()


@pytest.mark.parametrize("damage", ["truncated", "zero-bytes", "garbage-header", "flipped-inside", "directory", "deleted"])
@pytest.mark.parametrize("chunk", ["candidate_nll/c/0/0", "candidate_token/c/0/0/0/0", "candidate_column/c/0/0/0/0"])
def test_damaged_screen_output_is_one_line_in_select(tmp_path, capsys, pristine, damage, chunk):
    screen = copy(pristine["screen"], tmp_path / "screen.zarr")
    DAMAGE[damage](screen / chunk)
    before = snapshot(screen)
    one_error(capsys, "select", "--screen", screen, "--performance", pristine["perf"], "--out", tmp_path / "sig.zarr",
              names=(chunk, "screen store"))
    assert snapshot(screen) == before and not (tmp_path / "sig.zarr").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage-header", "flipped-inside", "directory", "deleted"])
def test_damaged_signatures_and_overlap_are_one_line(tmp_path, capsys, pristine, damage):
    sig = copy(pristine["signatures"], tmp_path / "sig.zarr")
    DAMAGE[damage](sig / "signature_token" / "c" / "0" / "0")
    one_error(capsys, "overlap", "--signatures", sig, "--perplexity", pristine["store"], "--performance",
              pristine["perf"], "--out", tmp_path / "o.zarr", names=("signatures store", "signature_token/c/0/0"))
    overlap = copy(pristine["overlap"], tmp_path / "overlap.zarr")
    DAMAGE[damage](overlap / "signature" / "c" / "0" / "0")
    one_error(capsys, "stats", "--overlap", overlap, "--out", tmp_path / "stats",
              names=("overlap file", "signature/c/0/0"))


def test_old_store_without_checksum_still_reads(tmp_path, capsys, pristine):
    """Stores written before the checksum codec (Blosc, no crc32c) open and screen as before."""
    from zarr.codecs import BloscCodec

    nll = nll_values()
    ds = xr.Dataset({"nll": (("model", "token"), nll)}, coords={"model": MODELS, "token": np.arange(N_TOKENS)})
    codec = {"compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]}
    ds.to_zarr(tmp_path / "old.zarr", zarr_format=3,
               encoding={"nll": {"chunks": (len(MODELS), CHUNK), **codec}, "token": {"chunks": (CHUNK,), **codec}})
    codecs = zarr.open_group(tmp_path / "old.zarr", mode="r")["nll"].metadata.codecs
    assert [type(c).__name__ for c in codecs] == ["BytesCodec", "BloscCodec"]
    assert run_cli(capsys, "validate", tmp_path / "old.zarr", "--deep")[0] == 0
    code, _, err = run_cli(capsys, "screen", "--perplexity", tmp_path / "old.zarr", "--performance", pristine["perf"],
                           "--out", tmp_path / "o.zarr", "--alpha", "0.2")
    assert code in (0, None), err
    new = xr.open_zarr(pristine["screen"])["candidate_token"].values
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "o.zarr")["candidate_token"].values, new)


def test_zarr_v2_store_is_one_line(tmp_path, capsys, pristine):
    xr.Dataset({"nll": (("model", "token"), nll_values())}, coords={"model": MODELS}).to_zarr(
        tmp_path / "v2.zarr", zarr_format=2
    )
    for args in (["validate", tmp_path / "v2.zarr", "--deep"],
                 ["screen", "--perplexity", tmp_path / "v2.zarr", "--performance", pristine["perf"], "--out", tmp_path / "o"],
                 ["select", "--screen", tmp_path / "v2.zarr", "--performance", pristine["perf"], "--out", tmp_path / "o"]):
        one_error(capsys, *args, names=("v2.zarr", "Zarr v2 store", "zarr_format=3"))


# ------------------------------------------------------------------------------------------ bad values

BAD_VALUES = {
    "negative token id": ("token", lambda t, n: (t.__setitem__(250, -1), n), ("token id -1", "position 250", "negative")),
    "duplicate token id": ("token", lambda t, n: (t.__setitem__(450, 7), n), ("token id 7 occurs 2 times",)),
    "negative nll": ("nll", lambda t, n: (t, n.__setitem__((2, 333), -0.5)), ("negative", "'m2'", "token position 333")),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_alike_by_validate_and_screen(tmp_path, capsys, pristine, case):
    _, change, names = BAD_VALUES[case]
    token, nll = np.arange(N_TOKENS, dtype=np.int64), nll_values()
    change(token, nll)
    store = write_store(tmp_path / "s.zarr", nll, token)
    one_error(capsys, "validate", store, "--deep", names=names)
    one_error(capsys, "screen", "--perplexity", store, "--performance", pristine["perf"], "--out", tmp_path / "o.zarr",
              names=names)
    assert not (tmp_path / "o.zarr").exists()


def test_constant_model_is_warned_alike_by_validate_and_screen(tmp_path, capsys, pristine):
    nll = nll_values()
    nll[3] = 1.25  # one model wrote the same NLL for every token
    store = write_store(tmp_path / "s.zarr", nll)
    for args in (["validate", store, "--deep"],
                 ["screen", "--perplexity", store, "--performance", pristine["perf"], "--out", tmp_path / "o.zarr"]):
        code, _, err = run_cli(capsys, *args)
        assert code in (0, None) and "Traceback" not in err
        warned = [line for line in err.splitlines() if line.startswith("bsig: warning: ")]
        assert len(warned) == 1 and "['m3']" in warned[0] and "same NLL (1.25)" in warned[0], err


def test_tiny_negative_nll_within_tolerance_passes(tmp_path, capsys):
    nll = nll_values()
    nll[1, 10] = -1e-7  # rounding of a log-probability of 1
    assert run_cli(capsys, "validate", write_store(tmp_path / "s.zarr", nll), "--deep")[0] == 0


def plain(path: Path, token: np.ndarray, n_tokens: int = N_TOKENS) -> Path:
    nll = nll_values(n_tokens)
    xr.Dataset({"nll": (("model", "token"), nll)}, coords={"model": MODELS, "token": token}).chunk(
        {"token": CHUNK}
    ).to_zarr(path, zarr_format=3)
    return path


@pytest.mark.parametrize(
    "case, token, names",
    [
        ("fractional ids", np.arange(N_TOKENS) + 0.5, ("token id 0.5", "not an integer")),
        ("text ids", np.array([f"t{i}" for i in range(N_TOKENS)], dtype=object), ("token ids have dtype",)),
        ("no tokens", np.zeros(0, dtype=np.int64), ("no tokens",)),
    ],
)
def test_plain_store_with_bad_token_axis(tmp_path, capsys, pristine, case, token, names):
    store = plain(tmp_path / "p.zarr", token, n_tokens=len(token))
    one_error(capsys, "validate", store, "--deep", names=names)
    one_error(capsys, "screen", "--perplexity", store, "--performance", pristine["perf"], "--out", tmp_path / "o.zarr",
              names=names)


# ------------------------------------------------------------------ progress record, names, corpus


@pytest.mark.parametrize("damage", ["truncated", "garbage-header", "flipped-inside", "directory"])
@pytest.mark.parametrize("chunk", ["_complete/c/0/1", "model/c/0"])
def test_damaged_progress_record_or_model_names_are_one_line(tmp_path, capsys, pristine, damage, chunk):
    store = copy(pristine["store"], tmp_path / "s.zarr")
    DAMAGE[damage](store / chunk)
    one_error(capsys, "validate", store, names=(chunk,))
    one_error(capsys, "screen", "--perplexity", store, "--performance", pristine["perf"], "--out", tmp_path / "o.zarr",
              names=(chunk,))


@pytest.mark.parametrize("damage", ["truncated", "zero-bytes", "flipped-inside", "directory", "deleted"])
@pytest.mark.parametrize("array", ["feature_doc", "text"])
def test_damaged_corpus_is_named(tmp_path, damage, array):
    from bsig_array.io.corpus_store import Corpus, feature_context
    from bsig_array.stages.corpus import build_corpus

    docs = [" ".join(f"w{i}x{j}" for j in range(60)) for i in range(20)]
    build_corpus(docs, tmp_path / "c.zarr", sample_rate=1.0)
    context, target = feature_context(tmp_path / "c.zarr", [5, 70])
    assert target == ["w0x5", "w1x10"] and context[0].endswith("w0x4")
    DAMAGE[damage](tmp_path / "c.zarr" / array / "c" / "0")
    with pytest.raises(InputError, match=rf"corpus store .*: chunk file {array}/c/0 \(positions 0\.\.\d+\) is (unreadable|missing)"):
        feature_context(Corpus(tmp_path / "c.zarr"), [5, 70])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_check_block_row_extremes_match_numpy(dtype):
    """check_block's float16 fast path (integer view of the bits) gives numpy's min and max, and
    still finds every negative, NaN and inf value."""
    from bsig_array.io.perplexity_store.schema import check_block

    block = np.random.default_rng(3).gamma(2.0, 1.5, size=(5, 300)).astype(dtype)
    block[2, 7] = 0.0
    lo, hi = check_block(block, MODELS[:5], 0)
    np.testing.assert_array_equal(lo, block.min(axis=1))
    np.testing.assert_array_equal(hi, block.max(axis=1))
    for value, words in ((-0.25, "1 negative values"), (np.nan, "1 NaN"), (np.inf, "1 inf"), (-np.inf, "1 inf")):
        bad = block.copy()
        bad[4, 123] = value
        with pytest.raises(InputError, match=rf"{words}.*model 'm4', token position 123"):
            check_block(bad, MODELS[:5], 0)
    bad = block.copy()
    bad[1, 1] = -0.0  # a negative zero is a zero
    check_block(bad, MODELS[:5], 0)
