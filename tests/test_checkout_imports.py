"""A checkout's root on ``sys.path`` never shadows an installed package (docs/DESIGN.md §2).

``kernels/`` and ``cli/`` install as ``bsig_array.kernels`` and ``bsig_array.cli``.  ``python -m pytest``
and ``python`` started in the root put the root first on ``sys.path``, where the folders would be found
as top-level ``kernels`` and ``cli`` ahead of Hugging Face's ``kernels``, which transformers imports
when it builds a model.  Each check runs in a fresh interpreter started in the root, exactly as a user
from a checkout does.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folders of the repository that are regular packages (an ``__init__.py``), installed under bsig_array.
FOLDERS = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "bsig_array")


def _run_in_root(code: str) -> dict:
    """Run *code* with ``python -c`` in the repository root (root first on sys.path); its JSON line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_folders_are_the_ones_the_layout_installs():
    assert FOLDERS == ["cli", "kernels"]


def test_import_kernels_from_the_root_is_hugging_face_and_transformers_builds_a_model():
    dist = importlib.metadata.distribution("kernels")  # Hugging Face's: a dependency of transformers and of [test]
    installed = str(Path(dist.locate_file("kernels/__init__.py")).resolve())
    out = _run_in_root(
        """
import json, sys, os
assert os.path.realpath(sys.path[0] or ".") == os.getcwd()  # the root is on sys.path, first
import kernels
import transformers
config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2)
model = transformers.AutoModelForCausalLM.from_config(config)
import torch
logits = model(torch.tensor([[1, 2, 3]])).logits
import bsig_array.kernels as K  # the project's kernels, installed under bsig_array, still work beside it
print(json.dumps({"file": os.path.realpath(kernels.__file__), "model": type(model).__name__,
                  "shape": list(logits.shape), "thrush": K.thrush_codes.__module__}))
"""
    )
    assert out["file"] == installed
    assert out["model"] == "LlamaForCausalLM" and out["shape"] == [1, 3, 64]
    assert out["thrush"] == "bsig_array.kernels.thrush"


@pytest.mark.parametrize("name", FOLDERS)
def test_no_folder_of_the_checkout_imports_under_its_bare_name(name):
    out = _run_in_root(
        f"""
import json, os, sys
try:
    import {name} as module
except ModuleNotFoundError as error:
    found = {{"missing": error.name}}
else:
    found = {{"file": os.path.realpath(getattr(module, "__file__", None) or "")}}
import bsig_array.{name}, bsig_array.cli.main  # the installed packages are unaffected
stray = sorted(m for m, v in sys.modules.items()
               if (m == "{name}" or m.startswith("{name}.")) and os.path.realpath(getattr(v, "__file__", None) or "").startswith(os.path.join(os.getcwd(), "{name}", "")))
print(json.dumps({{**found, "stray": stray, "installed": bsig_array.{name}.__name__}}))
"""
    )
    assert out["stray"] == []
    assert out["installed"] == f"bsig_array.{name}"
    if "missing" in out:
        assert out["missing"] == name
    else:  # another installed package of that name took the folder's place
        assert not out["file"].startswith(str(ROOT / name))
