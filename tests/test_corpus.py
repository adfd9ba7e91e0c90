"""bsig corpus: windows equal a literal whitespace split; sampling, bad input and CLI behaviour."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bsig_array.errors import BsigError
from bsig_array.io.corpus_store import Corpus, feature_context
from bsig_array.stages.corpus import (
    CorpusStats,
    build_corpus,
    iter_documents,
    stdlib_documents,
    write_stdlib_jsonl,
)

# Pieces drawn from a small alphabet so repeats are common; separators include Unicode whitespace.
words = st.text(alphabet="ab,é.(){}'\"x1", min_size=1, max_size=4)
seps = st.sampled_from([" ", "  ", "\n", "\t", "\u00a0", "\u2003", " \r\n"])
docs_st = st.lists(
    st.builds(lambda ws, s, lead: lead + s.join(ws), st.lists(words, max_size=50), seps, st.sampled_from(["", " ", "\n"])),
    min_size=1,
    max_size=8,
)


def literal_windows(docs: list[str], context_pieces: int) -> list[tuple[int, str, str]]:
    """(record, context, target) of every piece, straight from the definition."""
    out = []
    for r, doc in enumerate(docs):
        pieces = doc.split()
        for i, p in enumerate(pieces):
            out.append((r, " ".join(pieces[max(0, i - context_pieces) : i]), p))
    return out


@settings(max_examples=25)
@given(docs=docs_st, context_pieces=st.integers(0, 5))
def test_windows_match_literal_split(tmp_path_factory, docs, context_pieces):
    assume(any(d.split() for d in docs))  # an all-empty input is refused (tested below)
    out = tmp_path_factory.mktemp("c") / "c.zarr"
    stats = build_corpus(docs, out, sample_rate=1.0, context_pieces=context_pieces)
    corpus = Corpus(out)
    expected = literal_windows(docs, context_pieces)
    assert corpus.n_features == len(expected) == stats.features
    contexts, targets = corpus.windows(0, corpus.n_features)
    assert contexts == [e[1] for e in expected]
    assert targets == [e[2] for e in expected]
    source = corpus.group["doc_source"][:]
    doc, _ = corpus.features()
    assert source[doc].tolist() == [e[0] for e in expected]
    assert stats.empty_docs == sum(1 for d in docs if not d.split())
    # Any order and -1 padding through feature_context.
    ids = np.random.default_rng(0).permutation(corpus.n_features)[:7].tolist() + [-1]
    ctx, tgt = feature_context(out, ids)
    assert ctx == [expected[i][1] for i in ids[:-1]] + [""]
    assert tgt == [expected[i][2] for i in ids[:-1]] + [""]


def test_sampling_is_seeded_uniform_and_prefix_stable(tmp_path):
    docs = [" ".join(f"w{r}_{i}" for i in range(400)) for r in range(50)]  # 20,000 pieces
    a = build_corpus(docs, tmp_path / "a.zarr", sample_rate=0.1, seed=3)
    b = build_corpus(docs, tmp_path / "b.zarr", sample_rate=0.1, seed=3)
    c = build_corpus(docs, tmp_path / "c.zarr", sample_rate=0.1, seed=4)
    d = build_corpus(docs, tmp_path / "d.zarr", sample_rate=0.1, seed=3, max_docs=20)
    _, ta = Corpus(tmp_path / "a.zarr").windows(0, a.features)
    _, tb = Corpus(tmp_path / "b.zarr").windows(0, b.features)
    _, tc = Corpus(tmp_path / "c.zarr").windows(0, c.features)
    _, td = Corpus(tmp_path / "d.zarr").windows(0, d.features)
    assert ta == tb and ta != tc
    assert td == ta[: len(td)] and d.records == 20
    # Binomial(20000, 0.1): sd ~ 42, so +-250 is a 6-sigma band.
    assert abs(a.features - 2000) < 250
    # Uniform over positions: kept piece indices spread over the whole document.
    pos = Corpus(tmp_path / "a.zarr").features()[1]
    assert abs(pos.mean() - 199.5) < 15


def test_bad_input_is_counted(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"text": "hello world"}).encode(),
        b'{"text": "bad \xff\xfe bytes here"}',
        b"not json at all",
        json.dumps({"id": 3}).encode(),
        json.dumps({"text": "   \n\t "}).encode(),
        json.dumps({"text": "lone \ud800 surrogate"}).encode(),
        b"",
        json.dumps({"text": "x " * 100}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = CorpusStats()
    build_corpus(iter_documents([path], stats), tmp_path / "c.zarr", sample_rate=1.0, stats=stats, max_doc_chars=50)
    assert (stats.records, stats.bad_records, stats.empty_docs) == (7, 2, 1)
    assert (stats.replaced_docs, stats.truncated_docs, stats.docs) == (2, 1, 4)
    corpus = Corpus(tmp_path / "c.zarr")
    _, targets = corpus.windows(0, corpus.n_features)
    assert targets[:2] == ["hello", "world"]
    assert "\ufffd" in targets[3] and targets.count("x") == 25
    assert corpus.group["doc_source"][:].tolist() == [0, 1, 5, 6]  # blank lines are not records
    assert corpus.attrs["counts"]["bad_records"] == 2


def test_parquet_equals_jsonl(tmp_path):
    texts = ["alpha beta gamma", "", "delta  epsilon\nzeta eta"]
    jl = tmp_path / "in.jsonl"
    jl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pqf = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts, "meta": [1, 2, 3]}), pqf)
    for name, src in (("j.zarr", jl), ("p.zarr", pqf)):
        stats = CorpusStats()
        build_corpus(iter_documents([src], stats), tmp_path / name, sample_rate=1.0, stats=stats)
    cj, cp = Corpus(tmp_path / "j.zarr"), Corpus(tmp_path / "p.zarr")
    assert cj.windows(0, cj.n_features) == cp.windows(0, cp.n_features)
    with pytest.raises(BsigError, match="no 'text' column"):
        pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
        list(iter_documents([tmp_path / "bad.parquet"], CorpusStats()))


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(BsigError, match="sample rate"):
        build_corpus(["a b"], tmp_path / "c.zarr", sample_rate=0.0)
    with pytest.raises(BsigError, match="no features"):
        build_corpus(["", "  "], tmp_path / "c.zarr", sample_rate=1.0)
    assert not (tmp_path / "c.zarr").exists() and not list(tmp_path.iterdir())  # no partial output left
    build_corpus(["a b"], tmp_path / "c.zarr", sample_rate=1.0)
    with pytest.raises(BsigError, match="already exists"):
        build_corpus(["a b"], tmp_path / "c.zarr", sample_rate=1.0)
    with pytest.raises(BsigError, match="does not exist"):
        list(iter_documents([tmp_path / "missing.jsonl"], CorpusStats()))


def test_stdlib_corpus_offline(tmp_path):
    path = write_stdlib_jsonl(tmp_path / "std.jsonl", max_docs=3)
    stats = CorpusStats()
    first = list(zip(range(3), stdlib_documents()))
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == [d for _, d in first]
    build_corpus(iter_documents([path], stats), tmp_path / "c.zarr", sample_rate=0.5, stats=stats)
    assert stats.records == 3 and stats.features > 0


def test_cli(tmp_path):
    out = tmp_path / "c.zarr"
    run = subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", "corpus", "--stdlib", "--max-docs", "4", "--sample-rate", "0.1",
         "--out", str(out)],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "4 records" in run.stdout and Corpus(out).attrs["inputs"] == ["stdlib"]
    bad = subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", "corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
