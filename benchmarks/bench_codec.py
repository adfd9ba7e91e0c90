"""Store codec: single-thread decode rate and compression ratio of candidate codecs for ``nll`` chunks.

Every candidate encodes the same ``(models, chunk_tokens)`` chunks, measured in one run:

- ``real``: NLLs written by the real CLI (``bsig corpus --stdlib`` then ``bsig perplexity`` with the
  shipped SmolLM2-135M), as float32 and as float16 (the cast the writer applies for
  ``--store-dtype float16``).  The ratio is measured on the store's values as written; decode rates
  need a chunk of realistic size, so each row of a ``(models, chunk_tokens)`` chunk is a smoothed
  bootstrap of the real NLLs: drawn with replacement, times ``exp(N(0, 0.01))`` (a plain bootstrap
  of a few thousand values repeats each one ~100 times per row, which LZ codecs would exploit and
  real NLLs do not offer).  A row is longer than a Blosc block, so the compressor sees one model's
  NLLs at a time, as in a real chunk.
- ``synth``: the first chunk of a ``bsig synth`` pool (float16 and float32).

Per codec and data: ratio (raw bytes / chunk file bytes), encode rate (zarr write), ``codec`` decode
(the codec alone, in memory, into a preallocated chunk) and ``read`` (one whole chunk read from a
local store through :func:`bsig_array.io.perplexity_store.reader.read_block`, the screen's read
path: Blosc chunks are decoded straight into the output, other codecs through zarr; warm page
cache).  Rates are tokens/s (one token = one column of all models) and GB/s of decoded data, with one
decoder thread, from the best of ``--repeat`` CPU times of this process (the machine may be shared:
wall times, also in the JSON, then measure the neighbours).  Ends with one table per data set and
one JSON line.

The real store (a few thousand tokens) and the synthetic pools are cached under ``--workdir``.

    python benchmarks/bench_codec.py [--workdir DIR] [--chunk-tokens 1048576] [--models 32] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def candidates() -> list[tuple[str, list[Any]]]:
    """Candidate codecs: (label, zarr bytes-to-bytes codecs; empty = no compression)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    out: list[tuple[str, list[Any]]] = []
    grid: tuple[tuple[Any, tuple[int, ...], tuple[Any, ...]], ...] = (
        ("zstd", (1, 3), ("shuffle", "bitshuffle", "noshuffle")),
        ("lz4", (5, 9), ("shuffle", "bitshuffle", "noshuffle")),
        ("lz4hc", (5,), ("shuffle", "bitshuffle")),
        ("blosclz", (5,), ("shuffle", "bitshuffle")),
    )
    for cname, levels, shuffles in grid:
        for level in levels:
            for shuffle in shuffles:
                out.append((f"blosc-{cname}{level}-{shuffle}", [BloscCodec(cname=cname, clevel=level, shuffle=shuffle)]))
    out += [("zarr-zstd1", [ZstdCodec(level=1)]), ("zarr-zstd3", [ZstdCodec(level=3)]), ("none", [])]
    return out


def machine() -> str:
    """CPU model, core count and whether it has AVX-512 (Blosc's shuffles use it)."""
    model, flags = platform.processor() or "cpu", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line
    except OSError:
        pass
    simd = "AVX-512" if "avx512bw" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{os.cpu_count()}-core {simd} {model}"


def _bsig(*args: str) -> None:
    """Run the installed ``bsig`` CLI (the real chain, as a user runs it)."""
    exe = Path(sys.executable).parent / "bsig"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bsig_array.cli.main"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "BSIG_PROGRESS": "0"}
    subprocess.run([*cmd, *args], check=True, env=env)


def real_nll(workdir: Path, max_docs: int, threads: int) -> np.ndarray:
    """NLLs (models, tokens) float32 of SmolLM2-135M on the standard-library corpus (built once)."""
    import zarr

    corpus, store = workdir / "stdlib-corpus.zarr", workdir / "real-smollm2.zarr"
    if not (corpus / "zarr.json").exists():
        _bsig("corpus", "--stdlib", "--out", str(corpus), "--max-docs", str(max_docs), "--overwrite")
    done = store / "_complete" / "zarr.json"
    if not (done.exists() and np.asarray(zarr.open_array(store, path="_complete", mode="r")[:]).all()):
        # Resumable: an interrupted run picks up the chunks still pending.
        _bsig("perplexity", "--corpus", str(corpus), "--store", str(store), "--model", "smollm2-135m",
              "--threads", str(threads), "--batch-size", "16")
    return np.asarray(zarr.open_array(store, path="nll", mode="r")[:], dtype=np.float32)


def synth_chunk(workdir: Path, dtype: str, models: int, tokens: int, chunk: int) -> np.ndarray:
    """First ``(models, chunk)`` chunk of a ``bsig synth`` pool (written once)."""
    import zarr

    out = workdir / f"synth-{dtype}-{models}x{tokens}-c{chunk}"
    _bsig("synth", str(out), "--models", str(models), "--tokens", str(tokens), "--dtype", dtype,
          "--chunk-tokens", str(chunk), "--benchmarks", "8", "--no-questions")
    return np.asarray(zarr.open_array(out / "perplexity.zarr", path="nll", mode="r")[:, :chunk])


def resample(nll: np.ndarray, models: int, width: int, seed: int = 0) -> np.ndarray:
    """A (models, width) smoothed bootstrap of the rows of ``nll`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows = [nll[i % nll.shape[0]] for i in range(models)]
    jitter = np.exp(rng.normal(0.0, 0.01, (models, width)))
    return np.stack([r[rng.integers(0, r.size, width)] for r in rows]) * jitter


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Fastest of ``repeat`` calls after a warm-up: (process CPU seconds, wall seconds)."""
    fn()
    cpu, wall = [], []
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return min(cpu), min(wall)


def write_chunk_store(path: Path, data: np.ndarray, codecs: list[Any]) -> float:
    """One-chunk zarr v3 array ``nll`` under group ``path`` (bytes + ``codecs``); CPU seconds of the write."""
    import zarr

    shutil.rmtree(path, ignore_errors=True)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    arr = group.create_array("nll", shape=data.shape, chunks=data.shape, dtype=data.dtype,
                             compressors=codecs or None, fill_value=np.nan)
    t = time.process_time()
    arr[:] = data
    return time.process_time() - t


def codec_decoder(codecs: list[Any], raw: bytes, out: np.ndarray) -> Callable[[], Any]:
    """The codec alone: decode ``raw`` into ``out`` (no file read, no zarr)."""
    import numcodecs.blosc
    import numcodecs.zstd
    from zarr.codecs import BloscCodec, ZstdCodec

    if not codecs:
        view = np.frombuffer(raw, dtype=out.dtype).reshape(out.shape)
        return lambda: np.copyto(out, view)
    if isinstance(codecs[0], BloscCodec):
        return lambda: numcodecs.blosc.decompress(raw, out)
    if isinstance(codecs[0], ZstdCodec):
        return lambda: numcodecs.zstd.decompress(raw, out)
    raise ValueError(f"no in-memory decoder for {codecs}")


def measure(label: str, codecs: list[Any], data: np.ndarray, speed: bool, repeat: int, tmp: Path) -> dict[str, Any]:
    """Ratio (and with ``speed`` encode/decode rates) of one codec on one chunk ``data``."""
    import zarr

    from bsig_array.io.perplexity_store.reader import read_block

    store = tmp / f"{label}.zarr"
    write_s = write_chunk_store(store, data, codecs)
    raw = (store / "nll" / "c" / "0" / "0").read_bytes()
    row: dict[str, Any] = {"ratio": data.nbytes / len(raw)}
    if not speed:
        return row
    arr = zarr.open_array(store, path="nll", mode="r")
    out = np.empty_like(data)
    decode_s, decode_wall = best(codec_decoder(codecs, raw, out), repeat)
    assert np.array_equal(out, data, equal_nan=True), f"{label}: codec round trip differs"
    key = (slice(None), slice(0, data.shape[1]))
    read_s, read_wall = best(lambda: read_block(arr, key, check_values=False), repeat)
    assert np.array_equal(read_block(arr, key, check_values=False), data, equal_nan=True), f"{label}: read differs"
    tokens, gb = data.shape[1], data.nbytes / 1e9
    row.update(
        encode_gb_s=gb / write_s, decode_mtok_s=tokens / decode_s / 1e6, decode_gb_s=gb / decode_s,
        read_mtok_s=tokens / read_s / 1e6, read_gb_s=gb / read_s,
        decode_wall_gb_s=gb / decode_wall, read_wall_gb_s=gb / read_wall,
    )
    shutil.rmtree(store)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bsig-bench-codec",
                        help="cache of the real store and the synthetic pools")
    parser.add_argument("--chunk-tokens", type=int, default=1 << 20, help="tokens per measured chunk (the store default)")
    parser.add_argument("--models", type=int, default=32, help="models per measured chunk")
    parser.add_argument("--synth-tokens", type=int, default=1 << 20)
    parser.add_argument("--max-docs", type=int, default=60, help="standard-library files in the real corpus")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of bsig perplexity")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated codec labels (default: all)")
    args = parser.parse_args()

    import numcodecs.blosc
    import zarr

    numcodecs.blosc.set_nthreads(1)  # single-thread decode: the screen runs one chunk per worker thread
    zarr.config.set({"threading.max_workers": 1, "async.concurrency": 1})
    args.workdir.mkdir(parents=True, exist_ok=True)

    real = real_nll(args.workdir, args.max_docs, args.threads)
    w, m = args.chunk_tokens, args.models
    datasets: list[tuple[str, np.ndarray, bool]] = []  # name, chunk, measure speed
    for dtype in ("float16", "float32"):
        short = dtype.replace("float", "f")
        datasets.append((f"real-{short} as written {real.shape[0]}x{real.shape[1]}", real.astype(dtype), False))
        datasets.append((f"real-{short} resampled {m}x{w}", resample(real, m, w).astype(dtype), True))
    for dtype in ("float16", "float32"):
        chunk = synth_chunk(args.workdir, dtype, m, args.synth_tokens, w)
        datasets.append((f"synth-{dtype.replace('float', 'f')} {chunk.shape[0]}x{chunk.shape[1]}", chunk, True))

    wanted = {s for s in args.only.split(",") if s}
    chosen = [(label, c) for label, c in candidates() if not wanted or label in wanted]
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name, data, speed in datasets:
            for label, codecs in chosen:
                row = measure(label, codecs, data, speed, args.repeat, Path(tmp))
                results.append({"data": name, "codec": label, **row})
                print(f"  {name:34s} {label:26s} " + " ".join(f"{k}={v:.3g}" for k, v in row.items()),
                      file=sys.stderr, flush=True)

    print(f"\nmachine: {machine()}; one decoder thread; best of {args.repeat} (CPU time)")
    cols = ("ratio", "encode_gb_s", "decode_mtok_s", "decode_gb_s", "read_mtok_s", "read_gb_s")
    by = {(r["data"], r["codec"]): r for r in results}
    for name, _, _ in datasets:
        print(f"\n{name}\n{'codec':26s} " + " ".join(f"{c:>13s}" for c in cols))
        for label, _ in chosen:
            r = by[(name, label)]
            print(f"{label:26s} " + " ".join(f"{r[c]:13.3g}" if c in r else f"{'':13s}" for c in cols))
    print("(ratio = raw / file bytes; decode = codec alone, read = whole-chunk read_block; M tokens/s, GB/s decoded)")
    print(json.dumps({"machine": machine(), "chunk": [m, w], "repeat": args.repeat, "results": results}))


if __name__ == "__main__":
    main()
