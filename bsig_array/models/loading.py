"""Load a causal language model by name: an offline GGUF alias, a zoo variant, a local folder or file.

Any other ``NAME_OR_PATH`` is passed to transformers unchanged (a local folder, or a hub name when
the hub is reachable).  :func:`build_tiny_gpt2` builds the tiny offline model of the fast tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bsig_array.errors import InputError, OptionError
from bsig_array.models import zoo
from bsig_array.models.gguf import GGUF_MODELS, resolve_model
from bsig_array.runtime.defaults import DEFAULTS

_REMOTE_CODE = (
    "model {name} ships its own Python code (auto_map); bsig does not run it unless you pass "
    "--trust-remote-code (only for models whose code you trust)"
)


def _needs_remote_code(folder: Path) -> bool:
    """Whether a local model folder can only load by running its own code: its config maps the auto
    classes to files in the folder (``auto_map``) and transformers has no class of its ``model_type``.
    Checked before transformers is called, so a refusal prints nothing of transformers'."""
    import json

    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no readable local config: transformers decides (and trust_remote_code is False)
    return isinstance(config, dict) and "auto_map" in config and config.get("model_type") not in CONFIG_MAPPING


def load_causal_lm(
    name_or_path: str,
    *,
    gguf_file: str | None = None,
    device: str = DEFAULTS.model_device,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode on ``device``.

    ``name_or_path`` may also be a zoo variant name (see :mod:`bsig_array.models.zoo`), built in memory.
    Python code shipped inside a model folder (``auto_map``) runs only with ``trust_remote_code``
    (the user's ``--trust-remote-code``); without it such a model is refused with one line.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    if name_or_path in zoo.VARIANTS:
        model, tok = zoo.load_variant(name_or_path, dtype=dtype)
        return model.to(device), tok
    path, extra = resolve_model(name_or_path, gguf_file)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise OptionError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    looks_like_path = os.sep in str(name_or_path) or str(name_or_path).startswith((".", "~"))
    if looks_like_path and not Path(path).expanduser().exists():
        raise InputError(
            f"cannot load model {name_or_path!r}: no such file or folder; pass a local folder, a .gguf file or "
            f"one of {sorted(GGUF_MODELS)}"
        )
    if not trust_remote_code and _needs_remote_code(Path(path)):
        raise InputError(_REMOTE_CODE.format(name=repr(name_or_path)))
    extra["trust_remote_code"] = bool(trust_remote_code)  # explicit: never transformers' interactive prompt
    try:
        tok = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **extra)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise InputError(_REMOTE_CODE.format(name=repr(name_or_path))) from None
    except OSError as exc:
        raise InputError(
            f"cannot load model {name_or_path!r} ({str(exc).splitlines()[0]}); pass a local folder, a .gguf file "
            f"or one of {sorted(GGUF_MODELS)}"
        ) from None
    return model.to(device).eval(), tok  # type: ignore[arg-type]  # transformers' @wraps(Module.to) hides self


def build_tiny_gpt2(out: str | os.PathLike, *, seed: int = DEFAULTS.seed, vocab_size: int = 512, n_layer: int = 2,
                    n_embd: int = 64, n_positions: int = 512) -> Path:
    """Save a tiny random GPT-2 and a byte-level BPE tokenizer trained on stdlib files (for tests).

    Everything is built offline and deterministically: the tokenizer is trained on a fixed list of
    standard-library modules, the weights come from ``torch.manual_seed(seed)``.
    """
    import sysconfig

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [str(stdlib / f) for f in ("textwrap.py", "string.py", "bisect.py", "glob.py", "shlex.py")]
    bpe = ByteLevelBPETokenizer()
    bpe.train(files, vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
