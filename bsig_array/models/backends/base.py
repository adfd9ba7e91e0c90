"""The small interface every NLL backend implements, the shared window encoding, and the registry.

A backend turns feature windows (context text, target piece) into natural-log NLLs.  All backends
encode windows the same way (:func:`encode_windows`) so that their numbers are comparable:

- token ids = ``[prefix] + tok(context) + tok(" " + piece)``, both parts tokenized separately with
  ``add_special_tokens=False``.  Tokenizing the two parts separately pins the target's subword tokens
  to the piece itself (a merge across the context/target boundary can never hide the target), and the
  leading space gives the piece the same word-initial form it has in running text.  A piece with no
  context (the first of its document) is tokenized without the leading space.
- ``prefix`` is the tokenizer's BOS token (else its EOS token), so even the first piece of a document
  has something to be predicted from.
- Windows longer than ``max_tokens`` keep the prefix and their last ``max_tokens - 1`` tokens.
- ``target="last-token"`` (the paper): NLL of the piece's last subword token given everything before
  it; ``target="piece"``: sum of the NLLs of all of the piece's subword tokens (the same unit for
  every tokenizer).

Backends are registered by name as ``"module:attribute"`` and imported only when chosen, so a stage
never imports torch or vLLM itself, and adding a backend never touches a stage.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from bsig_array.errors import InputError, OptionError
from bsig_array.schema import TARGETS

#: name -> "module:attribute" of a :class:`Backend` subclass (imported lazily).
BACKENDS: dict[str, str] = {
    "transformers": "bsig_array.models.backends.transformers_backend:TransformersBackend",
    "vllm": "bsig_array.models.backends.vllm_backend:VllmBackend",
}

Encoded = tuple[list[int], int]  # (token ids of the whole window, number of target tokens at the end)


def check_target(target: str) -> str:
    """Validate a target mode name."""
    if target not in TARGETS:
        raise OptionError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    return target


def prefix_id(tokenizer: Any) -> int | None:
    """The token every window starts with: BOS, else EOS, else None."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return None


def encode_windows(
    tokenizer: Any, contexts: Sequence[str], targets: Sequence[str], *, max_tokens: int = 512
) -> list[Encoded]:
    """Token ids of each window and the number of target tokens at its end (see module docs)."""
    if max_tokens < 2:
        raise OptionError(f"max tokens must be at least 2, got {max_tokens}")
    pre = prefix_id(tokenizer)
    head = [] if pre is None else [pre]
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"] if contexts else []
    pieces = [(" " + t) if c else t for c, t in zip(contexts, targets)]
    tgt_ids = tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else []
    out: list[Encoded] = []
    keep = max_tokens - len(head)
    for c, t, piece in zip(ctx_ids, tgt_ids, targets):
        if not t:
            raise InputError(f"the tokenizer maps piece {piece!r} to no tokens; use a tokenizer with byte fallback")
        ids = list(c) + list(t)
        if len(ids) > keep:
            ids = ids[-keep:]
        n_target = min(len(t), len(ids))
        if len(head) + len(ids) - n_target < 1:
            # Nothing precedes the first target token (no BOS/EOS and no context): score only
            # the tokens that have a predecessor.
            n_target -= 1
            if n_target < 1:
                raise InputError(
                    f"piece {piece!r} has no context and the tokenizer has no BOS/EOS token to predict it from"
                )
        out.append((head + ids, n_target))
    return out


def target_positions(encoded: Sequence[Encoded], target: str) -> list[range]:
    """Positions (in each window) of the tokens whose NLL makes up the window's value."""
    check_target(target)
    if target == "last-token":
        return [range(len(ids) - 1, len(ids)) for ids, _ in encoded]
    return [range(len(ids) - n, len(ids)) for ids, n in encoded]


class Backend(ABC):
    """Scores feature windows with one model.

    Subclasses set :attr:`name`, load a model and its ``tokenizer`` in ``__init__`` and implement
    :meth:`score_encoded`.
    """

    name: ClassVar[str]
    tokenizer: Any
    max_tokens: int = 512

    @abstractmethod
    def score_encoded(self, encoded: Sequence[Encoded], target: str) -> np.ndarray:
        """NLL (float64, natural log) of each encoded window under ``target``."""

    def info(self) -> dict[str, Any]:
        """Provenance recorded in the store attributes (backend, source, dtype, device)."""
        return {"backend": self.name}

    def score(self, contexts: Sequence[str], targets: Sequence[str], target: str = "last-token") -> np.ndarray:
        """NLL of each window ``(context, target piece)``."""
        check_target(target)
        encoded = encode_windows(self.tokenizer, contexts, targets, max_tokens=self.max_tokens)
        return self.score_encoded(encoded, target)


def register_backend(name: str, where: str) -> None:
    """Register a backend class by ``"module:attribute"``."""
    BACKENDS[name] = where


def get_backend(name: str, /, **kwargs: Any) -> Backend:
    """Instantiate the backend registered as ``name`` with ``kwargs``."""
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}; use one of {', '.join(sorted(BACKENDS))}")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)
