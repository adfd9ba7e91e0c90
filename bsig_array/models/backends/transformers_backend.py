"""NLLs from a Hugging Face transformers causal LM (CPU or CUDA; GGUF files via ``gguf_file``).

Windows are sorted by length and cut into batches of ``batch_size``; each batch is right-padded with
an attention mask, so every real token keeps positions ``0..len-1`` and (causal attention) never
sees a pad.  The decoder runs once per batch; only the hidden states at the positions that predict
target tokens go through the LM head, which skips the (tokens x vocabulary) logits the plain
``model(...)`` call would build (Gemma-3's vocabulary has 262k entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bsig_array.errors import OptionError, PlanError
from bsig_array.models.backends.base import Backend, Encoded, target_positions
from bsig_array.runtime.defaults import DEFAULTS


class TransformersBackend(Backend):
    """Backend ``transformers``.

    Parameters
    ----------
    model
        Model name or path (see :func:`bsig_array.models.loading.load_causal_lm`), or an already loaded
        ``PreTrainedModel`` (then ``tokenizer`` is required).
    tokenizer
        Tokenizer to use with a loaded model.
    gguf_file
        GGUF file inside ``model`` (a folder) to load and dequantize.
    device
        ``cpu`` or ``cuda`` (``cuda:N``).
    dtype
        Torch dtype name of the weights (``float32`` default; ``bfloat16`` on GPU).
    batch_size
        Windows per forward pass.
    max_tokens
        Longest window in tokens (longer ones keep their last tokens).
    trust_remote_code
        Run Python code shipped in the model folder (off unless the user passes ``--trust-remote-code``).
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        gguf_file: str | None = None,
        device: str = DEFAULTS.model_device,
        dtype: str = "float32",
        batch_size: int = 32,
        max_tokens: int = 512,
        trust_remote_code: bool = False,
    ) -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise PlanError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
        if batch_size < 1:
            raise OptionError(f"batch size must be positive, got {batch_size}")
        if isinstance(model, str):
            from bsig_array.models.loading import load_causal_lm

            self.source = model
            model, tokenizer = load_causal_lm(
                model, gguf_file=gguf_file, device=device, dtype=dtype, trust_remote_code=trust_remote_code
            )
        else:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer")
            self.source = getattr(model.config, "_name_or_path", "") or type(model).__name__
            model = model.to(device).eval()
        self.model, self.tokenizer = model, tokenizer
        self.device, self.dtype, self.gguf_file = device, dtype, gguf_file
        self.batch_size, self.max_tokens = int(batch_size), int(max_tokens)
        self.decoder = model.base_model
        self.head = model.get_output_embeddings()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0  # any id works: pads are masked out

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "source": str(self.source),
            "gguf_file": self.gguf_file or "",
            "dtype": self.dtype,
            "device": self.device,
            "max_tokens": self.max_tokens,
        }

    def batches(self, encoded: Sequence[Encoded]) -> list[np.ndarray]:
        """Window indices of each batch: longest first, so padding stays small."""
        order = np.argsort([-len(ids) for ids, _ in encoded], kind="stable")
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def pad(self, encoded: Sequence[Encoded], idx: np.ndarray) -> tuple[Any, Any]:
        """Right-padded ``(input_ids, attention_mask)`` tensors of windows ``idx``."""
        import torch

        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            seq = encoded[i][0]
            ids[r, : len(seq)] = torch.as_tensor(seq)
            mask[r, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def score_encoded(self, encoded: Sequence[Encoded], target: str) -> np.ndarray:
        import torch

        positions = target_positions(encoded, target)
        out = np.empty(len(encoded), dtype=np.float64)
        with torch.inference_mode():
            for idx in self.batches(encoded):
                ids, mask = self.pad(encoded, idx)
                hidden = self.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                # Token at position p is predicted by the hidden state at p - 1.
                rows = [r for r, i in enumerate(idx) for _ in positions[i]]
                cols = [p for i in idx for p in positions[i]]
                rows_t = torch.as_tensor(rows, device=ids.device)
                cols_t = torch.as_tensor(cols, device=ids.device)
                logits = self.head(hidden[rows_t, cols_t - 1]).float()
                if self.softcap:
                    logits = torch.tanh(logits / self.softcap) * self.softcap
                logp = torch.log_softmax(logits, dim=-1)
                picked = logp.gather(1, ids[rows_t, cols_t].unsqueeze(1)).squeeze(1).double()
                nll = torch.zeros(len(idx), dtype=torch.float64, device=ids.device)
                nll.index_add_(0, rows_t, -picked)
                out[idx] = nll.cpu().numpy()
        return out
