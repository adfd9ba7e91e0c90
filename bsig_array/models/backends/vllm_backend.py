"""NLLs from vLLM (optional extra ``vllm``; GPU machines).

vLLM returns, for ``SamplingParams(prompt_logprobs=0, max_tokens=1)``, one entry per prompt
position: ``None`` for the first token, then a dict ``{token_id: Logprob(logprob, rank,
decoded_token)}`` that always holds the prompt token itself (plus the top-``k`` alternatives for
``prompt_logprobs=k``).  :func:`nll_from_prompt_logprobs` turns that structure into our NLL; it is a
pure function, tested here on inputs built to that documented structure.

**Unverified**: vLLM cannot be installed beside torch 2.13 in this project's environment, so the
path through a real ``vllm.LLM`` has not been run; run ``tests/test_backends.py`` on a GPU machine
with vLLM before relying on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bsig_array.errors import OptionError, PlanError
from bsig_array.models.backends.base import Backend, Encoded, target_positions


def _logprob(entry: Any) -> float:
    # vLLM's Logprob dataclass has .logprob; accept a bare float as well.
    return float(getattr(entry, "logprob", entry))


def nll_from_prompt_logprobs(
    prompt_logprobs: Sequence[Mapping[int, Any] | None],
    prompt_token_ids: Sequence[int],
    positions: Sequence[int] | range,
) -> float:
    """NLL summed over ``positions`` from vLLM's ``RequestOutput.prompt_logprobs``.

    Parameters
    ----------
    prompt_logprobs
        One entry per prompt token; entry 0 is None (nothing predicts the first token), entry ``p`` maps
        token ids to ``Logprob`` objects and contains ``prompt_token_ids[p]``.
    prompt_token_ids
        The prompt's token ids.
    positions
        Positions whose token NLLs are summed (all ≥ 1).
    """
    if len(prompt_logprobs) != len(prompt_token_ids):
        raise ValueError(f"{len(prompt_logprobs)} prompt logprobs for {len(prompt_token_ids)} prompt tokens")
    total = 0.0
    for p in positions:
        entry = prompt_logprobs[p]
        if p < 1 or entry is None:
            raise ValueError(f"no logprob at prompt position {p} (the first token has none)")
        token = prompt_token_ids[p]
        if token not in entry:
            raise ValueError(f"vLLM gave no logprob for prompt token {token} at position {p}")
        total -= _logprob(entry[token])
    return total


class VllmBackend(Backend):
    """Backend ``vllm``: ``vllm.LLM`` scoring token-id prompts with ``prompt_logprobs=0``.

    Parameters follow :class:`~bsig_array.models.backends.transformers_backend.TransformersBackend`;
    ``batch_size`` is left to vLLM's scheduler (all windows of a chunk go in one ``generate`` call).
    """

    name = "vllm"

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        gguf_file: str | None = None,
        device: str | None = None,  # vLLM places the model on its GPU itself; kept for the common signature
        dtype: str = "float32",
        batch_size: int = 32,
        max_tokens: int = 512,
        trust_remote_code: bool = False,
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise PlanError(
                "the vllm backend needs vLLM (pip install 'bsig-array[vllm]' on a GPU machine); use --backend transformers"
            ) from None
        if not isinstance(model, str):
            raise OptionError("the vllm backend loads models by name or path; pass --model as a string")
        from bsig_array.models.gguf import resolve_model

        path, extra = resolve_model(model, gguf_file)
        if "gguf_file" in extra:
            path = f"{path}/{extra['gguf_file']}"  # vLLM loads a GGUF file by its path
        self.source, self.dtype, self.max_tokens = model, dtype, int(max_tokens)
        self.llm = vllm.LLM(model=path, dtype=dtype, max_model_len=max(int(max_tokens), 16),
                            trust_remote_code=bool(trust_remote_code))
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        self.params = vllm.SamplingParams(prompt_logprobs=0, max_tokens=1, temperature=0.0)

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "source": str(self.source), "dtype": self.dtype, "device": "cuda",
                "max_tokens": self.max_tokens}

    def score_encoded(self, encoded: Sequence[Encoded], target: str) -> np.ndarray:
        positions = target_positions(encoded, target)
        prompts = [{"prompt_token_ids": list(ids)} for ids, _ in encoded]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return np.array(
            [nll_from_prompt_logprobs(o.prompt_logprobs, o.prompt_token_ids, pos) for o, pos in zip(outputs, positions)],
            dtype=np.float64,
        )
