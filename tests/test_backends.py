"""Backends: window encoding, transformers NLL vs a direct log_softmax, vLLM output conversion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bsig_array.errors import BsigError
from bsig_array.models.backends.base import (
    encode_windows,
    get_backend,
    target_positions,
)
from bsig_array.models.backends.transformers_backend import TransformersBackend
from bsig_array.models.backends.vllm_backend import nll_from_prompt_logprobs
from bsig_array.models.loading import build_tiny_gpt2

CONTEXTS = ["", "def f(x):", "import os import sys", "return " * 40, "a", "class A: pass"]
TARGETS = ["import", "return", "os.path.join(a,", "x", "éλ😀", "__init__"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    path = build_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "gpt2")
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def direct_nll(model, tok, context: str, piece: str, target: str) -> float:
    """Unbatched full forward + log_softmax, following the documented window rule literally."""
    ctx = tok(context, add_special_tokens=False)["input_ids"] if context else []
    tgt = tok((" " + piece) if context else piece, add_special_tokens=False)["input_ids"]
    ids = [tok.bos_token_id] + ctx + tgt
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    pos = [len(ids) - 1] if target == "last-token" else range(len(ids) - len(tgt), len(ids))
    return float(-sum(logp[p - 1, ids[p]] for p in pos))


def test_encoding_rule(tiny):
    _, tok = tiny
    enc = encode_windows(tok, CONTEXTS, TARGETS, max_tokens=512)
    for (ids, n), c, t in zip(enc, CONTEXTS, TARGETS):
        piece = tok((" " + t) if c else t, add_special_tokens=False)["input_ids"]
        assert ids[0] == tok.bos_token_id and n == len(piece) and ids[-n:] == piece
        assert tok.decode(ids[1:]) == ((c + " " + t) if c else t)
    short = encode_windows(tok, CONTEXTS, TARGETS, max_tokens=6)
    for (ids, n), (full, nf) in zip(short, enc):
        assert len(ids) == min(6, len(full)) and ids[0] == tok.bos_token_id
        assert ids[1:] == full[len(full) - len(ids) + 1 :] and n == min(nf, len(ids) - 1)


@pytest.mark.parametrize("target", ["last-token", "piece"])
def test_transformers_matches_direct_log_softmax(tiny, target):
    model, tok = tiny
    backend = TransformersBackend(model, tokenizer=tok, batch_size=4)
    got = backend.score(CONTEXTS, TARGETS, target)
    want = [direct_nll(model, tok, c, t, target) for c, t in zip(CONTEXTS, TARGETS)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    if target == "piece":
        last = backend.score(CONTEXTS, TARGETS, "last-token")
        multi = [len(tok((" " + t) if c else t, add_special_tokens=False)["input_ids"]) > 1 for c, t in zip(CONTEXTS, TARGETS)]
        assert all(g > lt for g, lt, m in zip(got, last, multi) if m)


def test_batching_and_padding_do_not_change_results(tiny):
    model, tok = tiny
    rng = np.random.default_rng(0)
    contexts = [" ".join(rng.choice(["def", "x", "=", "(a,", "b)", "return", "#", "self"], size=k)) for k in rng.integers(0, 30, 25)]
    targets = list(rng.choice(["foo", "x", "import", "None", "]]"], size=25))
    results = [TransformersBackend(model, tokenizer=tok, batch_size=b).score(contexts, targets) for b in (1, 3, 8, 64)]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=0, atol=1e-5)


@dataclass
class Logprob:
    """vLLM's documented ``Logprob`` structure (vllm.sequence.Logprob)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def vllm_style_prompt_logprobs(model, ids, top: int = 0):
    """Build RequestOutput.prompt_logprobs the way vLLM documents it, from real model logits."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    out = [None]
    for p in range(1, len(ids)):
        row = logp[p - 1]
        ranks = torch.argsort(row, descending=True)
        entry = {int(ids[p]): Logprob(float(row[ids[p]]), int((ranks == ids[p]).nonzero()[0, 0]) + 1, "?")}
        for r, t in enumerate(ranks[:top].tolist()):
            entry.setdefault(t, Logprob(float(row[t]), r + 1, "?"))
        out.append(entry)
    return out


@pytest.mark.parametrize("target", ["last-token", "piece"])
def test_vllm_conversion_equals_transformers(tiny, target):
    model, tok = tiny
    enc = encode_windows(tok, CONTEXTS, TARGETS)
    want = TransformersBackend(model, tokenizer=tok).score_encoded(enc, target)
    got = [
        nll_from_prompt_logprobs(vllm_style_prompt_logprobs(model, ids, top=2), ids, pos)
        for (ids, _), pos in zip(enc, target_positions(enc, target))
    ]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_vllm_conversion_rejects_malformed_output():
    lp = [None, {5: Logprob(-1.0)}, {7: Logprob(-2.0)}]
    assert nll_from_prompt_logprobs(lp, [1, 5, 7], range(1, 3)) == pytest.approx(3.0)
    assert nll_from_prompt_logprobs([None, {5: -0.5}], [1, 5], [1]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="first token"):
        nll_from_prompt_logprobs(lp, [1, 5, 7], [0])
    with pytest.raises(ValueError, match="no logprob for prompt token"):
        nll_from_prompt_logprobs(lp, [1, 5, 8], [2])
    with pytest.raises(ValueError, match="prompt tokens"):
        nll_from_prompt_logprobs(lp, [1, 5], [1])


def test_registry_and_missing_vllm():
    with pytest.raises(BsigError, match="unknown backend"):
        get_backend("nope", model="x")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(BsigError, match="needs vLLM"):
            get_backend("vllm", model="x")
