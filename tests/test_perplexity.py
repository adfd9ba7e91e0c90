"""bsig perplexity: stored NLLs vs direct computation, shared token axis, resume after kill -9, lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr
from transformers import AutoModelForCausalLM, AutoTokenizer

from bsig_array.cli.main import main
from bsig_array.errors import BsigError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.models.loading import build_tiny_gpt2
from bsig_array.stages.corpus import build_corpus, stdlib_documents
from bsig_array.stages.perplexity import extract_perplexity, store_lock


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ppl")
    tiny = build_tiny_gpt2(root / "tiny")
    tiny2 = build_tiny_gpt2(root / "tiny2", seed=1)
    docs = [d for _, d in zip(range(12), stdlib_documents())]
    build_corpus(docs, root / "c.zarr", sample_rate=0.01, seed=0, context_pieces=30)
    return root, docs, tiny, tiny2


def direct(model, tok, context, piece, target="last-token"):
    ctx = tok(context, add_special_tokens=False)["input_ids"] if context else []
    tgt = tok((" " + piece) if context else piece, add_special_tokens=False)["input_ids"]
    ids = ([tok.bos_token_id] + ctx + tgt)[-512:] if len(ctx) + len(tgt) < 512 else None
    assert ids is not None, "sample window longer than max_tokens; pick another"
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    pos = [len(ids) - 1] if target == "last-token" else range(len(ids) - len(tgt), len(ids))
    return float(-sum(logp[p - 1, ids[p]] for p in pos))


@pytest.mark.parametrize("target", ["last-token", "piece"])
def test_store_matches_direct_log_softmax(env, target, tmp_path):
    root, docs, tiny, _ = env
    store = tmp_path / "p.zarr"
    res = extract_perplexity(root / "c.zarr", store, str(tiny), target=target, chunk_tokens=40, batch_size=7)
    assert res.chunks_done == res.chunks_total and res.tokens > 0
    g = zarr.open_group(store, mode="r")
    nll = g["nll"][0, :]
    doc, piece = g["doc"][:], g["piece"][:]
    source = zarr.open_group(root / "c.zarr", mode="r")["doc_source"][:]
    model, tok = AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    for i in np.random.default_rng(1).choice(len(nll), size=12, replace=False):
        pieces = docs[source[doc[i]]].split()  # literal whitespace split of the source document
        p = int(piece[i])
        want = direct(model, tok, " ".join(pieces[max(0, p - 30) : p]), pieces[p], target)
        assert abs(float(nll[i]) - want) < 1e-4 * max(1.0, abs(want))
    assert g.attrs["target"] == target and g.attrs["model_info"]["tiny"]["source"] == str(tiny)
    np.testing.assert_array_equal(g["token"][:], np.arange(len(nll)))


def test_models_share_token_axis_and_checks(env, tmp_path):
    root, _, tiny, tiny2 = env
    store = tmp_path / "p.zarr"
    extract_perplexity(root / "c.zarr", store, str(tiny), chunk_tokens=50)
    first = zarr.open_group(store, mode="r")["nll"][0, :].copy()
    extract_perplexity(root / "c.zarr", store, str(tiny2), name="other", chunk_tokens=50)
    extract_perplexity(root / "c.zarr", store, str(tiny), name="again", batch_size=3)
    ds = open_store(store)
    assert list(ds["model"].values) == ["tiny", "other", "again"]
    nll = ds["nll"].values
    np.testing.assert_array_equal(nll[0], first)
    assert not np.allclose(nll[0], nll[1])
    np.testing.assert_allclose(nll[2], nll[0], atol=1e-5)  # different batch size, same values
    # Nothing left to do: a rerun loads no model and writes nothing.
    assert extract_perplexity(root / "c.zarr", store, str(tiny)).chunks_done == 0
    with pytest.raises(BsigError, match="already in"):
        extract_perplexity(root / "c.zarr", store, str(tiny2), name="tiny")
    with pytest.raises(BsigError, match="target"):
        extract_perplexity(root / "c.zarr", store, str(tiny), name="p", target="piece")
    other = tmp_path / "c2.zarr"
    build_corpus(["a b c d"], other, sample_rate=1.0)
    with pytest.raises(BsigError, match="features"):
        extract_perplexity(other, store, str(tiny), name="q")
    with store_lock(store), pytest.raises(BsigError, match="another bsig perplexity"):
        extract_perplexity(root / "c.zarr", store, str(tiny), name="r")


def _cli(root, store, tiny):
    return [sys.executable, "-m", "bsig_array.cli.main", "perplexity", "--corpus", str(root / "c.zarr"),
            "--store", str(store), "--model", str(tiny), "--chunk-tokens", "8", "--batch-size", "4", "--threads", "1"]


def test_kill_9_then_resume_is_byte_identical(env, tmp_path):
    root, _, tiny, _ = env
    full = tmp_path / "full.zarr"
    # Uninterrupted reference in-process, with the CLI run's settings (1 thread, batch 4, chunk 8).
    extract_perplexity(root / "c.zarr", full, str(tiny), chunk_tokens=8, batch_size=4)
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_cli(root, store, tiny), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = np.zeros(1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = zarr.open_group(store, mode="r")["_complete"][0, :]
        except Exception:  # store not created yet
            pass
        if 2 <= done.sum() < len(done) - 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < done.sum() < len(done), "the run was not killed mid-way; make the corpus larger"
    partial = zarr.open_group(store, mode="r")["_complete"][0, :]
    assert not partial.all()
    # Resume in-process (same settings as the CLI run): saves a second interpreter start-up.
    resumed = extract_perplexity(root / "c.zarr", store, str(tiny), chunk_tokens=8, batch_size=4)
    assert resumed.chunks_done == len(partial) - partial.sum()
    a, b = zarr.open_group(full, mode="r"), zarr.open_group(store, mode="r")
    assert a["nll"][:, :].tobytes() == b["nll"][:, :].tobytes()
    for name in ("token", "doc", "piece", "_complete"):
        assert a[name][:].tobytes() == b[name][:].tobytes()


def test_cli_errors_are_one_line(env, tmp_path, capsys):
    root, _, _, _ = env
    with pytest.raises(SystemExit) as exit_info:
        main(["perplexity", "--corpus", str(root / "c.zarr"), "--store", str(tmp_path / "p.zarr"), "--model",
              str(tmp_path / "no-such-model")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bsig: error: cannot load model") and "Traceback" not in "".join(err)
    assert not (tmp_path / "p.zarr").exists()  # a failed load leaves no store behind


# SmolLM2 (135M) runs by default so every CI run touches a real model; Gemma-3 (270M) is slow-only.
@pytest.mark.parametrize("alias", ["smollm2-135m", pytest.param("gemma3-270m", marks=pytest.mark.slow)])
def test_real_gguf_model_matches_direct(env, alias, tmp_path):
    """Loads the offline GGUF model (cached fp32 copy) and checks stored NLLs against a full forward."""
    from bsig_array.models.loading import load_causal_lm

    root, docs, _, _ = env
    store = tmp_path / "p.zarr"
    extract_perplexity(root / "c.zarr", store, alias, chunk_tokens=64, batch_size=8)
    g = zarr.open_group(store, mode="r")
    nll, doc, piece = g["nll"][0, :], g["doc"][:], g["piece"][:]
    source = zarr.open_group(root / "c.zarr", mode="r")["doc_source"][:]
    model, tok = load_causal_lm(alias)
    assert g.attrs["model_info"][alias]["source"] == alias
    for i in np.random.default_rng(2).choice(len(nll), size=5, replace=False):
        pieces = docs[source[doc[i]]].split()
        p = int(piece[i])
        ctx = tok(" ".join(pieces[max(0, p - 30) : p]), add_special_tokens=False)["input_ids"] if p else []
        tgt = tok((" " + pieces[p]) if p else pieces[p], add_special_tokens=False)["input_ids"]
        ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id] + ctx + tgt
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -2].double(), dim=-1)
        assert abs(float(nll[i]) + float(logp[ids[-1]])) < 1e-3
