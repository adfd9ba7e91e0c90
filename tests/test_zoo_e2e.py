"""Zoo variants and the real end-to-end chain: models -> corpus -> store -> lm-eval scores -> screen -> select."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bsig_array.models.loading import build_tiny_gpt2
from bsig_array.models.zoo import DEFAULT_ZOO, VARIANTS, Variant, perturb_
from bsig_array.pipelines.zoo_pool import build_zoo_pool
from bsig_array.runtime.run import RunSpec


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_gpt2(tmp_path_factory.mktemp("zoo") / "tiny")


def test_default_zoo_has_eight_real_variants():
    assert len(DEFAULT_ZOO) >= 8 and set(DEFAULT_ZOO) <= set(VARIANTS)
    assert {VARIANTS[n].base for n in DEFAULT_ZOO} == {"smollm2-135m", "gemma3-270m"}


def test_noise_variant(tiny_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    a = perturb_(AutoModelForCausalLM.from_pretrained(tiny_path), Variant("x", "noise", 0.1, seed=3))
    b = perturb_(AutoModelForCausalLM.from_pretrained(tiny_path), Variant("x", "noise", 0.1, seed=3))
    c = perturb_(AutoModelForCausalLM.from_pretrained(tiny_path), Variant("x", "noise", 0.1, seed=4))
    pb, pa, pB, pc = ({k: v.detach() for k, v in m.named_parameters()} for m in (base, a, b, c))
    for name, w in pb.items():
        assert torch.equal(pa[name], pB[name])  # deterministic
        if w.numel() > 1000 and w.std() > 0:
            rel = float((pa[name] - w).std() / w.std())
            assert 0.08 < rel < 0.12, (name, rel)  # noise of 0.1 * std(W)
            assert not torch.equal(pa[name], pc[name])
    # Tied embedding / LM head: perturbed once, still tied.
    assert a.get_output_embeddings().weight.data_ptr() == a.get_input_embeddings().weight.data_ptr()


def test_quant_variant(tiny_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    q = perturb_(AutoModelForCausalLM.from_pretrained(tiny_path), Variant("x", "quant", 3))
    for (_name, w), (_, wq) in zip(base.named_parameters(), q.named_parameters()):
        if w.ndim == 2:
            scale = w.abs().amax(dim=1, keepdim=True) / 3
            levels = torch.round(wq / scale)
            assert torch.allclose(levels * scale, wq, atol=1e-6) and levels.abs().max() <= 3
            assert (wq - w).abs().max() <= scale.max() / 2 + 1e-6
        else:
            assert torch.equal(w, wq)


def _chain(out, loader, variants, **kw):
    """Pool -> screen -> select, dropping benchmarks on which all models tie."""
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import align_performance, load_performance
    from bsig_array.stages.screen.driver import screen
    from bsig_array.stages.select import select_signatures

    pool = build_zoo_pool(out, variants=variants, loader=loader, **kw)
    ds = open_store(pool.perplexity)
    table = pd.read_csv(pool.performance).set_index("model")
    assert list(ds["model"].values) == list(variants) and list(table.index) == list(variants)
    varying = [c for c in table.columns if table[c].nunique() > 1]
    assert varying, "every benchmark tied across models"
    table[varying].reset_index().to_csv(out / "varying.csv", index=False)
    score = align_performance(load_performance(out / "varying.csv"), ds)
    screened = screen(ds["nll"], score, alpha=0.05, run=RunSpec.build(memory_limit="1GiB"))
    sig = select_signatures(screened, score)
    return pool, ds, score, sig


def test_chain_on_tiny_zoo(tiny_path, tmp_path):
    """Fast variant of the real end-to-end: 8 noise/quant variants of a tiny GPT-2."""
    kinds = [Variant("tiny", "orig")] + [Variant("tiny", "noise", lv, seed=i) for i, lv in enumerate((0.3, 0.6, 1.0, 1.5))]
    kinds += [Variant("tiny", "quant", b) for b in (2, 3, 4)]
    names = [f"tiny-{i}" for i in range(len(kinds))]
    spec = dict(zip(names, kinds))
    tok = AutoTokenizer.from_pretrained(tiny_path)

    def loader(name):
        model = perturb_(AutoModelForCausalLM.from_pretrained(tiny_path), spec[name]).eval()
        return model, tok, spec[name].describe()

    pool, ds, score, sig = _chain(tmp_path, loader, names, n_docs=6, sample_rate=0.01, limit=10,
                                  tasks=["bsig_add", "bsig_largest", "bsig_alphabetical", "bsig_count_words"])
    nll = ds["nll"].values
    assert np.isfinite(nll).all() and nll.shape[0] == 8
    assert not np.allclose(nll[0], nll[3])
    assert set(sig["benchmark"].values) == set(score["benchmark"].values)
    selected = sig["signature_token"].values
    assert ((selected >= -1) & (selected < ds.sizes["token"])).all() and (selected >= 0).any()
    # Rerun: everything is done, nothing is reloaded or rescored.
    again = build_zoo_pool(tmp_path, variants=names, loader=lambda n: pytest.fail("reloaded " + n))
    assert again.perplexity == pool.perplexity


@pytest.mark.slow
def test_real_zoo_end_to_end(tmp_path):
    """The real thing: the 8 default zoo models (from the two GGUF models), small sizes (~30+ min on 2 cores)."""
    pool, ds, score, sig = _chain(tmp_path, None, DEFAULT_ZOO, n_docs=20, sample_rate=0.004, limit=10)
    assert ds.sizes["model"] == 8 and np.isfinite(ds["nll"].values).all()
    assert (sig["n_selected"].values >= 1).any()
