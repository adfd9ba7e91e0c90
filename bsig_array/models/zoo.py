"""A zoo of real models derived from the two offline GGUF models (for the real end-to-end run).

Every variant starts from the fp32 dequantized copy of one base (:func:`bsig_array.models.gguf.dequantized_dir`)
and changes its weights deterministically, in memory (nothing extra is written to disk):

- ``noise``: every floating-point weight tensor ``W`` (embeddings, attention, MLP, norms) becomes
  ``W + level * std(W) * N(0, 1)``, with the noise drawn from ``torch.Generator`` seeded by the
  variant's seed and the tensor's position in ``named_parameters()`` order.  Tied weights
  (embedding = lm_head) are perturbed once.
- ``quant``: every 2-D weight matrix is round-tripped through a symmetric per-row integer grid of
  ``bits`` bits (``round(W / s) * s`` with ``s = max|W_row| / (2**(bits-1) - 1)``), a weight-only
  quantization ladder; 1-D tensors (norms, biases) stay fp32.

:data:`VARIANTS` lists the zoo: per base, the unchanged model, two noise levels and a 4-bit and a 3-bit
re-quantization (10 models); :data:`DEFAULT_ZOO` is the 8 of them (no int3) that
:func:`bsig_array.pipelines.zoo_pool.build_zoo_pool` uses by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bsig_array.errors import InputError
from bsig_array.models.gguf import dequantized_dir


@dataclass(frozen=True)
class Variant:
    """How one zoo model is made from its base."""

    base: str
    kind: str = "orig"  # "orig" | "noise" | "quant"
    level: float = 0.0  # noise: relative std; quant: number of bits
    seed: int = 0

    def describe(self) -> str:
        if self.kind == "noise":
            return f"{self.base} + Gaussian noise {self.level:g}*std(W) per tensor (seed {self.seed})"
        if self.kind == "quant":
            return f"{self.base} with 2-D weights round-tripped through symmetric per-row int{int(self.level)}"
        return f"{self.base} dequantized to fp32, unchanged"


VARIANTS: dict[str, Variant] = {}


for _base, _short in (("smollm2-135m", "smol"), ("gemma3-270m", "gemma")):
    VARIANTS[f"{_short}-orig"] = Variant(_base)
    VARIANTS[f"{_short}-noise02"] = Variant(_base, "noise", 0.02, seed=1)
    VARIANTS[f"{_short}-noise05"] = Variant(_base, "noise", 0.05, seed=2)
    VARIANTS[f"{_short}-int4"] = Variant(_base, "quant", 4)
    VARIANTS[f"{_short}-int3"] = Variant(_base, "quant", 3)


DEFAULT_ZOO: tuple[str, ...] = tuple(
    f"{b}-{k}" for b in ("smol", "gemma") for k in ("orig", "noise02", "noise05", "int4")
)


def perturb_(model: Any, variant: Variant) -> Any:
    """Apply ``variant``'s weight change to ``model`` in place and return it."""
    import torch

    if variant.kind == "orig":
        return model
    seen: set[int] = set()
    with torch.no_grad():
        for i, (_, param) in enumerate(model.named_parameters()):
            if id(param) in seen or not param.is_floating_point():
                continue
            seen.add(id(param))
            w = param.data
            if variant.kind == "noise":
                gen = torch.Generator().manual_seed(variant.seed * 1_000_003 + i)
                noise = torch.randn(w.shape, generator=gen, dtype=torch.float32)
                w.add_((variant.level * w.float().std() * noise).to(w.dtype))
            elif variant.kind == "quant" and w.ndim == 2:
                qmax = 2 ** (int(variant.level) - 1) - 1
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
                w.copy_(torch.round(w / scale).clamp(-qmax, qmax) * scale)
            elif variant.kind not in ("noise", "quant"):
                raise ValueError(f"unknown variant kind {variant.kind!r}")
    return model


def load_variant(name: str, *, dtype: str = "float32") -> tuple[Any, Any]:
    """Build zoo model ``name`` in memory: ``(model in eval mode, tokenizer)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in VARIANTS:
        raise InputError(f"unknown zoo model {name!r}; use one of {sorted(VARIANTS)}")
    variant = VARIANTS[name]
    path = dequantized_dir(variant.base)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return perturb_(model, variant).eval(), tok
