"""Semantic overlap (Algorithms 2–3) with the real offline all-MiniLM-L6-v2 on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_overlap import make_inputs

from bsig_array.errors import BsigError
from bsig_array.io.questions import read_questions
from bsig_array.stages.overlap import compute_overlaps
from bsig_array.stages.semantic import (
    load_encoder,
    sample_indices,
    semantic_overlap,
    single_side,
)

WORDS = "apple river theorem protein court market galaxy poem enzyme verdict orbit melody ledger fossil".split()


def questions(rng: np.random.Generator, n: int, length: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=length)) + "?" for _ in range(n)]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(device="cpu")


def literal_overlap(encoder, single: list[str], other: list[str], other_name: str, k: int, seed: int) -> float:
    """Algorithms 2–3 as written: concatenate everything, let the encoder truncate, mean cosine."""
    e_single = encoder.encode([" ".join(single)], normalize_embeddings=True)[0]
    rows = sample_indices(other_name, len(other), len(single), k, seed)
    sims = [float(encoder.encode([" ".join(other[i] for i in row)], normalize_embeddings=True)[0] @ e_single) for row in rows]
    return float(np.mean(sims))


def test_sample_indices_are_without_replacement_and_seeded():
    rows = sample_indices("mmlu", 20, 7, 50, seed=3)
    assert rows.shape == (50, 7)
    assert all(len(set(r)) == 7 and r.min() >= 0 and r.max() < 20 for r in rows)
    np.testing.assert_array_equal(rows, sample_indices("mmlu", 20, 7, 50, seed=3))
    assert not np.array_equal(rows, sample_indices("mmlu", 20, 7, 50, seed=4))
    assert not np.array_equal(rows, sample_indices("gsm8k", 20, 7, 50, seed=3))
    # a sample of any size is a prefix of the same permutation (shared across pairs)
    np.testing.assert_array_equal(sample_indices("mmlu", 20, 3, 50, seed=3), rows[:, :3])
    counts = np.bincount(sample_indices("x", 5, 1, 5000, seed=0).ravel(), minlength=5)
    assert counts.min() > 850  # roughly uniform (expected 1000 each)


def test_single_side_is_the_smaller_benchmark_ties_by_name():
    assert single_side("b", "a", {"a": 5, "b": 3}) == ("b", "a")
    assert single_side("a", "b", {"a": 5, "b": 3}) == ("b", "a")
    assert single_side("b", "a", {"a": 4, "b": 4}) == ("a", "b")


def test_matches_literal_algorithm_with_truncation(encoder):
    rng = np.random.default_rng(0)
    # long questions: a few of them exceed the 256-token limit, so truncation matters
    qs = {"small": questions(rng, 4, 60), "large": questions(rng, 9, 60), "tie": questions(rng, 4, 5)}
    names = ["large", "small", "tie"]
    mean, std = semantic_overlap(qs, names, encoder=encoder, bootstrap=6, seed=1)
    assert mean[0, 1] == pytest.approx(literal_overlap(encoder, qs["small"], qs["large"], "large", 6, 1), abs=2e-5)
    assert mean[0, 2] == pytest.approx(literal_overlap(encoder, qs["tie"], qs["large"], "large", 6, 1), abs=2e-5)
    # equal sizes: the lexicographically smaller name ("small") is the single side
    assert mean[1, 2] == pytest.approx(literal_overlap(encoder, qs["small"], qs["tie"], "tie", 6, 1), abs=2e-5)
    assert mean[1, 2] != pytest.approx(literal_overlap(encoder, qs["tie"], qs["small"], "small", 6, 1), abs=2e-5)
    np.testing.assert_allclose(mean, mean.T)
    np.testing.assert_allclose(np.diag(mean), 1.0)
    assert (std[~np.eye(3, dtype=bool)] >= 0).all()


def test_deterministic_under_a_seed_and_missing_benchmarks_are_nan(encoder):
    rng = np.random.default_rng(1)
    qs = {"a": questions(rng, 3, 8), "b": questions(rng, 12, 8), "c": questions(rng, 6, 8)}
    names = ["a", "b", "c", "d"]
    first, _ = semantic_overlap(qs, names, encoder=encoder, bootstrap=5, seed=7)
    again, _ = semantic_overlap(qs, names, encoder=encoder, bootstrap=5, seed=7)
    other, _ = semantic_overlap(qs, names, encoder=encoder, bootstrap=5, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[:3, :3], other[:3, :3])
    assert np.isnan(first[3]).all() and np.isnan(first[:, 3]).all()
    assert np.isfinite(first[:3, :3]).all()


def test_related_questions_overlap_more(encoder):
    maths = [f"What is {i} plus {i + 3}?" for i in range(8)] + [f"Solve for x: {i}x = {2 * i}." for i in range(1, 6)]
    maths2 = [f"Compute {i} times {i + 1}." for i in range(6)]
    law = [f"Under contract law, is clause {i} of the lease enforceable in court?" for i in range(7)]
    mean, _ = semantic_overlap({"maths": maths, "maths2": maths2, "law": law}, ["maths", "maths2", "law"], encoder=encoder, bootstrap=4)
    assert mean[0, 1] > mean[0, 2] and mean[0, 1] > mean[1, 2]


def test_read_questions_formats_and_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"question": "Q1"}) + "\n\n" + json.dumps({"text": "Q2"}) + "\n")
    (tmp_path / "b.txt").write_text("first\nsecond\n\nthird\n")
    got = read_questions(tmp_path, ["a", "b", "c"])
    assert got == {"a": ["Q1", "Q2"], "b": ["first", "second", "third"]}
    (tmp_path / "d.jsonl").write_text('{"answer": 1}\n')
    with pytest.raises(BsigError, match="d.jsonl:1"):
        read_questions(tmp_path, ["d"])
    (tmp_path / "e.jsonl").write_text("not json\n")
    with pytest.raises(BsigError, match="not valid JSON"):
        read_questions(tmp_path, ["e"])
    with pytest.raises(BsigError, match="does not exist"):
        read_questions(tmp_path / "nope", ["a"])
    with pytest.raises(BsigError, match="encoder"):
        load_encoder(str(tmp_path / "no-model"))


def test_compute_overlaps_fills_semantic_from_a_directory(tmp_path, encoder):
    nll, signatures, score = make_inputs(2)
    rng = np.random.default_rng(2)
    for b in ["b0", "b1", "b2"]:
        (tmp_path / f"{b}.txt").write_text("\n".join(questions(rng, 5, 6)))
    ds = compute_overlaps(signatures, nll, score, questions=tmp_path, encoder=encoder, bootstrap=3)
    sem = ds["semantic"].values
    assert np.isfinite(sem[:3, :3]).all() and np.isnan(sem[3]).all()
    assert ds["semantic"].attrs["missing_questions"] == "b3"
