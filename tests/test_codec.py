"""Store codecs: stores written with any codec zarr reads come back identical on every read path, and a
damaged chunk file is one error naming it, whether the fast Blosc decode or zarr reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

from bsig_array.cli.main import main
from bsig_array.errors import InputError
from bsig_array.io.perplexity_store.chunks import StoreSlice, chunk_sources
from bsig_array.io.perplexity_store.reader import decode_whole_chunk, open_store, read_block
from bsig_array.io.perplexity_store.schema import compressor
from bsig_array.io.perplexity_store.writer import create_store

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

MODELS = ["m0", "m1", "m2", "m3"]
N_TOKENS, CHUNK = 300, 100

# label -> compressors of a plain ``to_zarr`` store (None: bsig's own writer, i.e. compressor()).
CODECS = {
    "default": None,
    "blosc-zstd-shuffle": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],  # the earlier default
    "blosc-lz4-bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    "blosc-zstd-noshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")],
    "zstd": [ZstdCodec(level=3)],
    "gzip": [GzipCodec(level=5)],
    "none": [],
}
BLOSC = {"default", "blosc-zstd-shuffle", "blosc-lz4-bitshuffle", "blosc-zstd-noshuffle"}


def values(dtype: str = "float32", n_tokens: int = N_TOKENS) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.gamma(2.0, 1.5, size=(len(MODELS), n_tokens))).astype(dtype)


def write(path: Path, label: str, dtype: str = "float32", n_tokens: int = N_TOKENS) -> Path:
    """A store of :func:`values` written with codec ``label`` (bsig's writer for ``default``)."""
    nll = values(dtype, n_tokens)
    if CODECS[label] is None:
        writer = create_store(path, MODELS, n_tokens, chunk_tokens=CHUNK, dtype=dtype)
        for j in writer.pending():
            sl = writer.chunk_slice(j)
            writer.write_chunk(j, nll[:, sl], token=np.arange(sl.start, sl.stop) * 3)
        return path
    ds = xr.Dataset({"nll": (("model", "token"), nll)}, coords={"model": MODELS, "token": np.arange(n_tokens) * 3})
    encoding = {"nll": {"chunks": (len(MODELS), CHUNK), "compressors": CODECS[label]},
                "token": {"chunks": (CHUNK,), "compressors": CODECS[label]}}
    ds.to_zarr(path, zarr_format=3, encoding=encoding)
    return path


def screen_chunks(path: Path) -> list[np.ndarray]:
    """The chunks as the screen reads them: chunk_sources on the opened store, loaded one by one."""
    ds = open_store(path)
    sources = chunk_sources(ds["nll"], store=path)
    assert all(isinstance(s.nll, StoreSlice) for s in sources)  # the raw store read, not xarray's graph
    return [s.load()[0] for s in sources]


def test_default_codec_is_blosc_and_new_stores_use_it(tmp_path):
    codec = compressor()
    assert isinstance(codec, BloscCodec)
    path = write(tmp_path / "s.zarr", "default")
    codecs = zarr.open_group(path, mode="r")["nll"].metadata.codecs
    assert [type(c) for c in codecs] == [type(codecs[0]), BloscCodec, Crc32cCodec] and codecs[1].cname == codec.cname


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("label", list(CODECS))
def test_every_codec_reads_back_identically(tmp_path, label, dtype):
    path = write(tmp_path / f"{label}.zarr", label, dtype)
    expected = values(dtype)
    ds = open_store(path)
    assert ds["nll"].dtype == expected.dtype
    np.testing.assert_array_equal(ds["nll"].values, expected)
    np.testing.assert_array_equal(np.concatenate(screen_chunks(path), axis=1), expected)
    # Partial blocks (not one whole chunk) go through zarr on every codec.
    array = zarr.open_group(path, mode="r")["nll"]
    np.testing.assert_array_equal(read_block(array, slice(50, 250), path=path), expected[:, 50:250])
    np.testing.assert_array_equal(read_block(array, (slice(1, 3), slice(0, 100)), path=path), expected[1:3, :100])


@pytest.mark.parametrize("label", list(CODECS))
def test_fast_path_handles_blosc_and_leaves_the_rest_to_zarr(tmp_path, label):
    path = write(tmp_path / f"{label}.zarr", label, n_tokens=250)  # short edge chunk: tokens 200..249
    array = zarr.open_group(path, mode="r")["nll"]
    expected = values(n_tokens=250)
    for start, stop in ((0, 100), (200, 250)):
        fast = decode_whole_chunk(array, (slice(0, len(MODELS)), slice(start, stop)))
        if label in BLOSC:
            assert fast is not None
            np.testing.assert_array_equal(fast, expected[:, start:stop])
        else:
            assert fast is None
    # Not one whole chunk: zarr reads it, whatever the codec.
    assert decode_whole_chunk(array, (slice(0, len(MODELS)), slice(0, 50))) is None
    assert decode_whole_chunk(array, (slice(1, len(MODELS)), slice(0, 100))) is None


DAMAGE = {
    "half": lambda data: data[: len(data) // 2],
    "last-bytes": lambda data: data[:-3],  # Blosc alone would read past the end of the buffer
    "empty": lambda data: b"",
    "garbage": lambda data: b"not a chunk of any codec",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("label", ["default", "blosc-lz4-bitshuffle", "zstd", "gzip", "none"])
def test_damaged_chunk_file_is_one_error_naming_it(tmp_path, label, damage):
    path = write(tmp_path / f"{label}.zarr", label)
    chunk = path / "nll" / "c" / "0" / "1"
    chunk.write_bytes(DAMAGE[damage](chunk.read_bytes()))
    ds = open_store(path)
    np.testing.assert_array_equal(ds["nll"][:, :100].values, values()[:, :100])  # other chunks still read
    sources = chunk_sources(ds["nll"], store=path)
    array = zarr.open_group(path, mode="r")["nll"]
    reads = {
        "open_store": lambda: ds["nll"].sum().compute(),
        "screen chunk": lambda: sources[1].load(),
        "partial block": lambda: read_block(array, slice(150, 250), path=path),
    }
    for where, read in reads.items():
        with pytest.raises(InputError) as err:
            read()
        msg = str(err.value)
        assert "chunk file nll/c/0/1 (tokens 100..199) is unreadable" in msg and "\n" not in msg, (where, msg)


def test_damaged_coordinate_chunk_of_a_zstd_store(tmp_path):
    path = write(tmp_path / "zstd.zarr", "zstd")
    chunk = path / "token" / "c" / "2"
    chunk.write_bytes(chunk.read_bytes()[:-4])
    with pytest.raises(InputError, match=r"chunk file token/c/2 \(tokens 200\.\.299\) is unreadable"):
        np.asarray(open_store(path)["token"].values)


@pytest.mark.parametrize("label", ["zstd", "none", "blosc-lz4-bitshuffle"])
def test_screen_cli_on_a_damaged_store_is_one_error_line(tmp_path, capsys, label):
    path = write(tmp_path / "p.zarr", label)
    chunk = path / "nll" / "c" / "0" / "2"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    pd.DataFrame({"model": MODELS, "b1": [0.1, 0.4, 0.3, 0.9], "b2": [0.7, 0.2, 0.5, 0.6]}).to_csv(
        tmp_path / "y.csv", index=False
    )
    with pytest.raises(SystemExit) as exc:
        main(["screen", "--perplexity", str(path), "--performance", str(tmp_path / "y.csv"),
              "--out", str(tmp_path / "s.zarr"), "--alpha", "0.1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exc.value.code not in (0, None)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    assert "chunk file nll/c/0/2 (tokens 200..299) is unreadable" in lines[0]
    assert not (tmp_path / "s.zarr").exists()
