"""Hostile input, as a new user would type it: every case must fail the same way.

Each case runs the real ``bsig`` entry point in-process (:func:`tests.test_cli_errors.run_cli`) on a
tiny synthetic pool built once per module (with the package's own ``bsig synth``/``screen``/...),
and asserts the promise of the CLI: a non-zero exit, exactly one ``bsig: error:`` line on stderr,
no traceback anywhere, every input byte-identical afterwards, no pre-existing output changed and no
new output left behind.  The cases cover options (ranges, non-finite floats, overflow, unknown
names and schemes), input files (not UTF-8, binary, directories, empty, wrong suffix, wrong kind,
truncated gzip, non-string text, string list columns) and paths taken from inputs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bsig_array.cli.main import main
from bsig_array.io.perplexity_store.writer import create_store
from tests.test_cli_errors import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

#: the whole pool is tiny: every stage runs on it in well under a second
POOL = dict(models=8, benchmarks=4, tokens=2000, chunk=1000)


def _ok(*args: object) -> None:
    """Run a command that must succeed (fixture building)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    assert exc.value.code in (0, None), args


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A synthetic pool, its screen/signatures/overlap/stats/corpus, and a folder of bad files."""
    root = tmp_path_factory.mktemp("hostile")
    pool = root / "pool"
    _ok("synth", pool, "--models", POOL["models"], "--benchmarks", POOL["benchmarks"], "--tokens", POOL["tokens"],
        "--chunk-tokens", POOL["chunk"], "--planted", 5)
    _ok("screen", "--perplexity", pool / "perplexity.zarr", "--performance", pool / "performance.csv",
        "--out", root / "screen.zarr", "--alpha", 0.05, "--workers", 1)
    _ok("select", "--screen", root / "screen.zarr", "--performance", pool / "performance.csv",
        "--out", root / "signatures.zarr", "--no-loocv", "--workers", 1)
    _ok("overlap", "--signatures", root / "signatures.zarr", "--perplexity", pool / "perplexity.zarr",
        "--performance", pool / "performance.csv", "--metadata", pool / "metadata.csv", "--out", root / "overlap.nc")
    _ok("stats", "--overlap", root / "overlap.nc", "--out", root / "stats", "--permutations", 5)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"word{i} " * 40}) + "\n" for i in range(20)))
    _ok("corpus", docs, "--out", root / "corpus.zarr", "--sample-rate", 0.5)
    _bad_files(root / "bad", pool)
    return root


def _bad_files(bad: Path, pool: Path) -> None:
    bad.mkdir()
    perf = (pool / "performance.csv").read_text()
    (bad / "latin1.csv").write_bytes(perf.replace("model", "mod\xe9l", 1).encode("latin-1"))
    (bad / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (bad / "binary.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    (bad / "empty.csv").write_bytes(b"")
    (bad / "scores.json").write_text(perf)
    (bad / "adir.csv").mkdir()
    (bad / "header_only.csv").write_text("model,bench\n")
    frame = pd.read_csv(pool / "performance.csv")
    frame[frame.columns[1]] = "high"
    frame.to_csv(bad / "text_scores.csv", index=False)
    (bad / "not_gzip.jsonl.gz").write_text('{"text": "plain text, not gzip"}\n')
    blob = gzip.compress("".join(json.dumps({"text": f"doc {i} " * 30}) + "\n" for i in range(200)).encode())
    (bad / "truncated.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    (bad / "int_text.jsonl").write_text('{"text": 5}\n{"text": ["a", "b"]}\n')
    (bad / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (bad / "no_text.jsonl").write_text('{"body": "x"}\n')
    pq.write_table(pa.table({"text": pa.array([1, 2, 3])}), bad / "int_text.parquet")
    # paper-format NLL file whose logprobs are strings; a wide table with a text column
    pq.write_table(pa.table({"text_id": [0, 1], "chunk_id": [0, 0], "logprobs": [["a", "b"], ["c"]]}),
                   bad / "strings.parquet")
    pd.DataFrame({"m0": ["x", "y", "z"], "m1": [1.0, 2.0, 3.0], "m2": [1.0, 2.0, 3.0]}).to_csv(bad / "wide_text.csv", index=False)
    (bad / "garbage.nc").write_bytes(b"CDF\x01" + bytes(range(256)))
    (bad / "results_bad.json").write_text("{not json")
    (bad / "questions").mkdir()
    bench = pd.read_csv(pool / "performance.csv").columns[1]
    (bad / "latin1_questions").mkdir()
    (bad / "latin1_questions" / f"{bench}.jsonl").write_bytes('{"question": "caf\xe9?"}\n'.encode("latin-1"))
    (bad / "json_questions").mkdir()
    (bad / "json_questions" / f"{bench}.jsonl").write_text('{"question": "fine"}\n{not json\n')
    (bad / "existing_file").write_text("precious\n")
    # damaged copies of the pool's store: a truncated NLL chunk, a deleted one, garbage in a token chunk
    for name, damage in (("truncated", "nll/c/0/1"), ("deleted", "nll/c/0/1"), ("garbage", "token/c/1")):
        store = shutil.copytree(pool / "perplexity.zarr", bad / f"{name}.zarr")
        chunk = store / damage
        if name == "truncated":
            chunk.write_bytes(chunk.read_bytes()[:20])
        elif name == "deleted":
            chunk.unlink()
        else:
            chunk.write_bytes(b"\x00garbage" * 10)
    # incomplete stores: one written by bsig ingest (which cannot resume), one by bsig perplexity
    for name, attrs in (("ingest_partial", {"source": "wide-table"}), ("perplexity_partial", {"target": "last-token"})):
        writer = create_store(bad / f"{name}.zarr", [f"synth-m{i:03d}" for i in range(8)], 2000, chunk_tokens=1000,
                              attrs=attrs)
        writer.write_chunk(0, np.random.default_rng(2).random((8, 1000)).astype("f4"))
    # more models than the screening kernels are exact for
    models = [f"m{i:03d}" for i in range(201)]
    writer = create_store(bad / "big.zarr", models, 40, chunk_tokens=40)
    writer.write_chunk(0, np.random.default_rng(0).random((201, 40)).astype("f4"))
    rng = np.random.default_rng(1)
    pd.DataFrame({"model": models, "a": rng.random(201), "b": rng.random(201)}).to_csv(bad / "big.csv", index=False)


def _digest(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` -> a hash of its bytes ('dir' for folders)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if "__pycache__" in rel:
            continue
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# (id, argv with {w} = the module's world and {new} = a fresh path, fragments expected in the error)
P = "{w}/pool/perplexity.zarr"
Y = "{w}/pool/performance.csv"
S = "{w}/screen.zarr"
G = "{w}/signatures.zarr"
OV = "{w}/overlap.nc"
B = "{w}/bad"
SCREEN = ["screen", "--perplexity", P, "--performance", Y, "--out", "{new}/s.zarr"]
SELECT = ["select", "--screen", S, "--performance", Y, "--out", "{new}/g.zarr"]
OVERLAP = ["overlap", "--signatures", G, "--perplexity", P, "--performance", Y, "--out", "{new}/o.nc"]
STATS = ["stats", "--overlap", OV, "--out", "{new}/stats"]
CORPUS = ["corpus", "{w}/docs.jsonl", "--out", "{new}/c.zarr"]
SYNTH = ["synth", "{new}/pool", "--models", "4", "--benchmarks", "2", "--tokens", "100"]
DEMO = ["demo", "--out", "{new}/demo", "--models", "4", "--benchmarks", "2", "--tokens", "200"]
PLAN = ["plan", "--tokens", "1e6", "--models", "8", "--benchmarks", "4"]
PERPLEXITY = ["perplexity", "--corpus", "{w}/corpus.zarr", "--store", "{new}/p.zarr", "--model", "{new}/no-model"]
EVALUATE = ["evaluate", "--model", "{new}/no-model", "--tasks", "bsig_add", "--out", "{new}/y.csv"]

CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # --- synth
    ("synth-models-2", SYNTH[:2] + ["--models", "2"], ("--models",)),
    ("synth-seed-negative", SYNTH + ["--seed", "-1"], ("seed",)),
    ("synth-tokens-0", SYNTH[:2] + ["--tokens", "0"], ("tokens",)),
    ("synth-models-overflow", SYNTH[:2] + ["--models", "99999999999999999999999"], ("models",)),
    ("synth-chunk-tokens-0", SYNTH + ["--chunk-tokens", "0"], ("chunk",)),
    ("synth-dtype-int8", SYNTH + ["--dtype", "int8"], ("int8",)),
    ("synth-planted-negative", SYNTH + ["--planted", "-1"], ("planted",)),
    ("synth-benchmarks-0", SYNTH[:2] + ["--models", "4", "--benchmarks", "0"], ("benchmark",)),
    # --- ingest / validate
    ("ingest-string-list-column", ["ingest", f"{B}/strings.parquet", "--out", "{new}/p.zarr"], ("strings.parquet",)),
    ("ingest-binary-parquet", ["ingest", f"{B}/binary.parquet", "--out", "{new}/p.zarr"], ("binary.parquet",)),
    ("ingest-empty-csv", ["ingest", f"{B}/empty.csv", "--out", "{new}/p.zarr"], ("empty.csv",)),
    ("ingest-wide-text-column", ["ingest", f"{B}/wide_text.csv", "--out", "{new}/p.zarr"], ("wide_text.csv",)),
    ("ingest-batch-rows-0", ["ingest", f"{B}/strings.parquet", "--out", "{new}/p.zarr", "--batch-rows", "0"], ("batch-rows",)),
    ("ingest-chunk-tokens-negative", ["ingest", f"{B}/wide_text.csv", "--out", "{new}/p.zarr", "--chunk-tokens", "-5"],
     ("chunk",)),
    ("validate-missing", ["validate", "{new}/nothing.zarr"], ("nothing.zarr",)),
    ("validate-a-damaged-file", ["validate", f"{B}/binary.csv"], ("binary.csv",)),  # a good CSV validates (a score table)
    ("validate-performance-binary", ["validate", P, "--performance", f"{B}/binary.csv"], ("binary.csv",)),
    ("validate-performance-latin1", ["validate", P, "--performance", f"{B}/latin1.csv"], ("latin1.csv",)),
    # --- performance files
    ("performance-show-latin1", ["performance", "show", f"{B}/latin1.csv"], ("latin1.csv", "UTF-8")),
    ("performance-show-binary", ["performance", "show", f"{B}/binary.csv"], ("binary.csv",)),
    ("performance-show-binary-parquet", ["performance", "show", f"{B}/binary.parquet"], ("binary.parquet",)),
    ("performance-show-directory", ["performance", "show", f"{B}/adir.csv"], ("adir.csv",)),
    ("performance-show-empty", ["performance", "show", f"{B}/empty.csv"], ("empty.csv",)),
    ("performance-show-header-only", ["performance", "show", f"{B}/header_only.csv"], ("header_only.csv",)),
    ("performance-show-wrong-suffix", ["performance", "show", f"{B}/scores.json"], ("scores.json",)),
    ("performance-show-text-scores", ["performance", "show", f"{B}/text_scores.csv"], ("text_scores.csv",)),
    ("performance-convert-bad-suffix", ["performance", "convert", Y, "{new}/y.xyz"], (".xyz",)),
    ("performance-import-bad-json", ["performance", "import-lm-eval", f"{B}/results_bad.json", "--out", "{new}/y.csv"],
     ("results_bad.json",)),
    # --- screen
    ("screen-workers-0", SCREEN + ["--workers", "0"], ("--workers",)),
    ("screen-workers-negative", SCREEN + ["--workers", "-3"], ("--workers",)),
    ("screen-alpha-nan", SCREEN + ["--alpha", "nan"], ("alpha",)),
    ("screen-alpha-inf", SCREEN + ["--alpha", "inf"], ("alpha",)),
    ("screen-memory-limit-negative", SCREEN + ["--memory-limit", "-1"], ("memory",)),
    ("screen-memory-limit-words", SCREEN + ["--memory-limit", "lots"], ("memory",)),
    ("screen-memory-limit-nan", SCREEN + ["--memory-limit", "nan"], ("memory",)),
    ("screen-scheduler-unknown-scheme", SCREEN + ["--scheduler", "xyz://host:1"], ("xyz://",)),
    ("screen-scheduler-unknown-name", SCREEN + ["--scheduler", "fast"], ("fast",)),
    ("screen-null-permutations-negative", SCREEN + ["--null-permutations", "-1"], ("permutations",)),
    ("screen-seed-negative", SCREEN + ["--seed", "-1"], ("seed",)),
    ("screen-seed-overflow", SCREEN + ["--seed", str(2**64)], ("seed", str(2**32 - 1))),
    ("screen-null-permutations-overflow", SCREEN + ["--null-permutations", "1" + "0" * 30],
     ("permutations", str(2**63 - 1))),
    ("screen-device-tpu", SCREEN + ["--device", "tpu"], ("tpu",)),
    ("screen-perplexity-is-csv", ["screen", "--perplexity", Y, "--performance", Y, "--out", "{new}/s.zarr"],
     ("performance.csv",)),
    ("screen-performance-latin1", ["screen", "--perplexity", P, "--performance", f"{B}/latin1.csv", "--out", "{new}/s.zarr"],
     ("latin1.csv",)),
    ("screen-more-than-200-models", ["screen", "--perplexity", f"{B}/big.zarr", "--performance", f"{B}/big.csv",
                                     "--out", "{new}/s.zarr"], ("201 models", "at most 200")),
    ("screen-scheduler-no-port", SCREEN + ["--scheduler", "tcp://"], ("tcp://",)),
    ("screen-performance-directory", ["screen", "--perplexity", P, "--performance", f"{B}/adir.csv", "--out",
                                      "{new}/s.zarr"], ("adir.csv",)),
    # --- select
    ("select-delta-nan", SELECT + ["--delta", "nan"], ("--delta",)),
    ("select-delta-inf", SELECT + ["--delta", "inf"], ("--delta",)),
    ("select-max-features-0", SELECT + ["--max-features", "0"], ("--max-features",)),
    ("select-lasso-alpha-nan", SELECT + ["--lasso-alpha", "nan"], ("--lasso-alpha",)),
    ("select-workers-0", SELECT + ["--workers", "0"], ("--workers",)),
    ("select-seed-negative", SELECT + ["--seed", "-1"], ("seed",)),
    ("select-memory-limit-0", SELECT + ["--memory-limit", "0"], ("memory",)),
    ("select-scheduler-unknown-scheme", SELECT + ["--scheduler", "xyz://host:1"], ("xyz://",)),
    ("select-screen-is-store", ["select", "--screen", P, "--performance", Y, "--out", "{new}/g.zarr"], ("perplexity.zarr",)),
    # --- overlap
    ("overlap-bootstrap-negative", OVERLAP + ["--bootstrap", "-1"], ("bootstrap",)),
    ("overlap-seed-negative", OVERLAP + ["--seed", "-1"], ("seed",)),
    ("overlap-signatures-missing", ["overlap", "--signatures", "{new}/none.zarr", "--perplexity", P, "--performance", Y,
                                    "--out", "{new}/o.nc"], ("none.zarr",)),
    ("overlap-performance-binary", ["overlap", "--signatures", G, "--perplexity", P, "--performance",
                                    f"{B}/binary.csv", "--out", "{new}/o.nc"], ("binary.csv",)),
    ("overlap-metadata-binary", OVERLAP + ["--metadata", f"{B}/binary.csv"], ("binary.csv",)),
    ("overlap-out-bad-suffix", OVERLAP[:-1] + ["{new}/o.xyz"], (".xyz",)),
    # --- stats
    ("stats-threshold-nan", STATS + ["--threshold", "nan"], ("--threshold",)),
    ("stats-threshold-inf", STATS + ["--threshold", "inf"], ("--threshold",)),
    ("stats-permutations-0", STATS + ["--permutations", "0"], ("--permutations",)),
    ("stats-seed-negative", STATS + ["--seed", "-1"], ("seed",)),
    ("stats-overlap-garbage", ["stats", "--overlap", f"{B}/garbage.nc", "--out", "{new}/stats"], ("garbage.nc",)),
    ("stats-overlap-is-csv", ["stats", "--overlap", Y, "--out", "{new}/stats"], ("performance.csv",)),
    ("stats-metadata-binary", STATS + ["--metadata", f"{B}/binary.csv"], ("binary.csv",)),
    # --- report
    ("report-overlap-garbage", ["report", "--out", "{new}/rep", "--overlap", f"{B}/garbage.nc"], ("garbage.nc",)),
    ("report-stats-missing", ["report", "--out", "{new}/rep", "--stats", "{new}/none"], ("none",)),
    ("report-screen-is-csv", ["report", "--out", "{new}/rep", "--screen", Y], ("performance.csv",)),
    # --- corpus
    ("corpus-not-gzip", ["corpus", f"{B}/not_gzip.jsonl.gz", "--out", "{new}/c.zarr"], ("not_gzip.jsonl.gz",)),
    ("corpus-truncated-gzip", ["corpus", f"{B}/truncated.jsonl.gz", "--out", "{new}/c.zarr"], ("truncated.jsonl.gz",)),
    ("corpus-int-text", ["corpus", f"{B}/int_text.jsonl", "--out", "{new}/c.zarr"], ("int_text.jsonl",)),
    ("corpus-int-text-parquet", ["corpus", f"{B}/int_text.parquet", "--out", "{new}/c.zarr"], ("int_text.parquet",)),
    ("corpus-binary-jsonl", ["corpus", f"{B}/binary.jsonl", "--out", "{new}/c.zarr"], ("binary.jsonl",)),
    ("corpus-no-text-field", ["corpus", f"{B}/no_text.jsonl", "--out", "{new}/c.zarr"], ("no_text.jsonl",)),
    ("corpus-directory", ["corpus", f"{B}/adir.csv", "--out", "{new}/c.zarr"], ("adir.csv",)),
    ("corpus-max-docs-negative", CORPUS + ["--max-docs", "-1"], ("--max-docs",)),
    ("corpus-sample-rate-nan", CORPUS + ["--sample-rate", "nan"], ("sample",)),
    ("corpus-context-pieces-negative", CORPUS + ["--context-pieces", "-1"], ("context",)),
    ("corpus-seed-negative", CORPUS + ["--seed", "-1"], ("seed",)),
    # --- perplexity (options are checked before the model is loaded)
    ("perplexity-threads-negative", PERPLEXITY + ["--threads", "-1"], ("--threads",)),
    ("perplexity-batch-size-0", PERPLEXITY + ["--batch-size", "0"], ("batch",)),
    ("perplexity-max-tokens-0", PERPLEXITY + ["--max-tokens", "0"], ("max",)),
    ("perplexity-dtype-int8", PERPLEXITY + ["--dtype", "int8"], ("int8",)),
    ("perplexity-device-tpu", PERPLEXITY + ["--device", "tpu"], ("tpu",)),
    ("perplexity-chunk-tokens-0", PERPLEXITY + ["--chunk-tokens", "0"], ("chunk",)),
    ("perplexity-missing-model", PERPLEXITY, ("no-model",)),
    ("perplexity-name-padded", PERPLEXITY + ["--name", " m0 "], ("spaces",)),
    # --- evaluate
    ("evaluate-limit-0", EVALUATE + ["--limit", "0"], ("--limit",)),
    ("evaluate-batch-size-0", EVALUATE + ["--batch-size", "0"], ("batch",)),
    ("evaluate-device-tpu", EVALUATE + ["--device", "tpu"], ("tpu",)),
    ("evaluate-out-is-directory", EVALUATE[:-1] + [f"{B}/questions"], ("questions",)),
    ("evaluate-unknown-task", EVALUATE[:3] + ["--tasks", "no_such_task"] + EVALUATE[5:], ("no_such_task",)),
    # --- demo, plan, defaults
    ("demo-models-2", DEMO[:3] + ["--models", "2"], ("models",)),
    ("demo-seed-negative", DEMO + ["--seed", "-1"], ("seed",)),
    ("demo-memory-limit-words", DEMO + ["--memory-limit", "lots"], ("memory",)),
    ("demo-tokens-0", DEMO + ["--tokens", "0"], ("tokens",)),
    ("demo-models-overflow", DEMO[:3] + ["--models", "9" * 25], ("--models",)),
    ("demo-semantic-bootstrap-negative", DEMO + ["--semantic-bootstrap", "-1"], ("bootstrap",)),
    ("plan-tokens-nan", ["plan", "--tokens", "nan", "--models", "8", "--benchmarks", "4"], ("--tokens",)),
    ("plan-models-overflow", ["plan", "--tokens", "1e6", "--models", "10" * 15, "--benchmarks", "4"], ("models",)),
    ("plan-workers-0", PLAN + ["--workers", "0"], ("--workers",)),
    ("plan-alpha-inf", PLAN + ["--alpha", "inf"], ("alpha",)),
    ("plan-memory-limit-inf", PLAN + ["--memory-limit", "inf"], ("memory",)),
    ("defaults-extra-argument", ["defaults", "extra"], ("extra",)),
    # --- more wrong kinds and bad values
    ("performance-import-bad-metric-override", ["performance", "import-lm-eval", f"{B}/results_bad.json", "--out",
                                                "{new}/y.csv", "--metric", "no-equals-sign"], ("no-equals-sign",)),
    ("performance-show-store-is-csv", ["performance", "show", Y, "--store", f"{B}/questions"], ("questions",)),
    ("select-corpus-is-csv", SELECT + ["--corpus", Y, "--no-loocv"], ("performance.csv",)),
    ("report-signatures-is-csv", ["report", "--out", "{new}/rep", "--signatures", Y], ("performance.csv",)),
    ("overlap-questions-is-a-file", OVERLAP + ["--questions", Y], ("performance.csv",)),
    ("overlap-questions-not-utf8", OVERLAP + ["--questions", f"{B}/latin1_questions"], ("latin1_questions", "UTF-8")),
    ("overlap-questions-bad-json", OVERLAP + ["--questions", f"{B}/json_questions"], ("json_questions", ":2")),
    ("overlap-encoder-missing", OVERLAP + ["--questions", "{w}/pool/questions", "--encoder", "{new}/no-encoder"],
     ("no-encoder",)),
    ("ingest-duplicate-model-names", ["ingest", f"{B}/wide_text.csv", "--out", "{new}/p.zarr", "--model-names", "m1,m1"],
     ("m1",)),
    ("plan-json-is-a-directory", PLAN + ["--json", f"{B}/questions"], ("questions",)),
    ("stats-level-unknown", STATS + ["--level", "bogus"], ("bogus",)),
    # --- incomplete stores: the message names the writer that can finish them
    ("screen-incomplete-ingest-store", ["screen", "--perplexity", f"{B}/ingest_partial.zarr", "--performance", Y,
                                        "--out", "{new}/s.zarr"], ("incomplete", "ingest does not resume", "--overwrite")),
    ("screen-incomplete-perplexity-store", ["screen", "--perplexity", f"{B}/perplexity_partial.zarr", "--performance",
                                            Y, "--out", "{new}/s.zarr"], ("incomplete", "bsig perplexity again")),
    # --- damaged stores (one checked read path)
    ("screen-truncated-nll-chunk", ["screen", "--perplexity", f"{B}/truncated.zarr", "--performance", Y, "--out",
                                    "{new}/s.zarr"], ("truncated.zarr",)),
    ("screen-deleted-nll-chunk", ["screen", "--perplexity", f"{B}/deleted.zarr", "--performance", Y, "--out",
                                  "{new}/s.zarr"], ("deleted.zarr",)),
    ("validate-deep-deleted-nll-chunk", ["validate", f"{B}/deleted.zarr", "--deep"], ("deleted.zarr",)),
    ("validate-deep-garbage-token-chunk", ["validate", f"{B}/garbage.zarr", "--deep"], ("garbage.zarr",)),
    # --- a failing run never touches an existing output (bad option after --overwrite)
    ("synth-overwrite-bad-seed", ["synth", "{w}/pool", "--overwrite", "--seed", "-1"], ("seed",)),
    ("screen-overwrite-bad-workers", ["screen", "--perplexity", P, "--performance", Y, "--out", S, "--overwrite",
                                      "--workers", "0"], ("--workers",)),
    ("select-overwrite-bad-delta", ["select", "--screen", S, "--performance", Y, "--out", G, "--overwrite",
                                    "--delta", "nan"], ("--delta",)),
    ("overlap-existing-bad-bootstrap", OVERLAP[:-1] + [OV, "--overwrite", "--bootstrap", "0"], ("bootstrap",)),
    ("stats-existing-bad-threshold", ["stats", "--overlap", OV, "--out", "{w}/stats", "--overwrite", "--threshold", "nan"],
     ("--threshold",)),
    ("corpus-overwrite-bad-max-docs", ["corpus", "{w}/docs.jsonl", "--out", "{w}/corpus.zarr", "--overwrite",
                                       "--max-docs", "-1"], ("--max-docs",)),
    ("ingest-overwrite-bad-input", ["ingest", f"{B}/strings.parquet", "--out", P, "--overwrite"], ("strings.parquet",)),
    # --- outputs pointed at inputs or at something of another kind
    ("screen-out-is-its-input", ["screen", "--perplexity", P, "--performance", Y, "--out", P, "--overwrite"],
     ("perplexity.zarr",)),
    ("overlap-out-is-a-store", OVERLAP[:-1] + [S], ("screen.zarr",)),
    ("synth-out-is-a-file", ["synth", f"{B}/existing_file"], ("existing_file",)),
    ("stats-out-is-a-file", STATS[:-1] + [f"{B}/existing_file"], ("existing_file",)),
    ("report-out-is-a-file", ["report", "--out", f"{B}/existing_file", "--overlap", OV], ("existing_file",)),
    ("corpus-out-is-its-input", ["corpus", "{w}/docs.jsonl", "--out", "{w}/docs.jsonl", "--overwrite"], ("docs.jsonl",)),
]

@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile(case, world, tmp_path, capsys):
    name, argv, fragments = case
    new = tmp_path / "new"
    new.mkdir()
    args = [a.format(w=world, new=new) for a in argv]
    before = _digest(world)
    started = time.monotonic()
    code, out, err = run_cli(capsys, *args)
    assert code not in (0, None), f"{name}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    for fragment in fragments:
        assert fragment.format(w=world, new=new) in lines[0], lines[0]
    assert time.monotonic() - started < 30, "a refusal must not wait"
    assert _digest(world) == before, "an input changed"
    assert list(new.iterdir()) == [], f"left behind: {list(new.iterdir())}"


def test_unreachable_scheduler_fails_within_its_timeout(world, tmp_path, capsys, monkeypatch):
    """A valid tcp:// address with nothing behind it: one line naming the address and the timeout."""
    import socket

    from bsig_array.runtime import tasks

    monkeypatch.setattr(tasks, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    before = _digest(world)
    started = time.monotonic()
    code, out, err = run_cli(capsys, "screen", "--perplexity", world / "pool" / "perplexity.zarr", "--performance",
                             world / "pool" / "performance.csv", "--out", tmp_path / "s.zarr", "--scheduler", address)
    assert code not in (0, None) and "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    assert f"cannot reach dask scheduler at {address} within 2 s" in err
    assert time.monotonic() - started < 20
    assert _digest(world) == before and not (tmp_path / "s.zarr").exists()


def test_padded_model_names_match_the_same_way_everywhere(tmp_path, capsys):
    """Surrounding spaces are ignored when names are matched, whether they sit in a store, a CSV or a
    NetCDF table; a table that lists one name twice that way is refused, and --name refuses padding."""
    import xarray as xr

    store = tmp_path / "p.zarr"
    writer = create_store(store, ["m0 ", " m1", "m2", "m3"], 20, chunk_tokens=20)
    writer.write_chunk(0, np.random.default_rng(0).random((4, 20)).astype("f4"))
    score = xr.DataArray(np.array([[0.1], [0.5], [0.3], [0.9]]), dims=("model", "benchmark"),
                         coords={"model": ["m0", "m1", " m2", "m3"], "benchmark": ["a"]}, name="score")
    score.to_netcdf(tmp_path / "y.nc")
    code, out, err = run_cli(capsys, "validate", store, "--performance", tmp_path / "y.nc")
    assert code == 0 and "models match the store" in out, err
    (tmp_path / "y.csv").write_text("model,a\n m0,0.1\nm1 ,0.5\nm2,0.3\nm3,0.9\n")
    code, out, err = run_cli(capsys, "validate", store, "--performance", tmp_path / "y.csv")
    assert code == 0, err
    score.assign_coords(model=["m0", "m0 ", "m2", "m3"]).to_netcdf(tmp_path / "twice.nc")
    code, _, err = run_cli(capsys, "validate", store, "--performance", tmp_path / "twice.nc")
    assert code == 2 and err.startswith("bsig: error: ") and "['m0'] more than once (ignoring surrounding spaces)" in err
