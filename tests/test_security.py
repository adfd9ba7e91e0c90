"""Security: no code from a model folder runs without --trust-remote-code, no user file is unpickled,
and names read from inputs never become paths outside the output (or input) folder.

The one hostile case that needs a real language model (lm-eval's own output on an error) lives
here too, to share the tiny model this module builds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numcodecs
import numpy as np
import pytest

from bsig_array.errors import OptionError
from bsig_array.io.questions import question_path, read_questions
from bsig_array.models.loading import build_tiny_gpt2, load_causal_lm
from bsig_array.options import check_path_name
from bsig_array.pipelines.synth_questions import write_questions
from tests.test_cli_errors import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("bsig_array", "kernels", "cli") for p in (ROOT / d).rglob("*.py")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "gpt2")


@pytest.fixture(scope="module")
def remote_code_model(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny GPT-2 whose config asks for code in the folder (auto_map); importing it touches a marker."""
    root = tmp_path_factory.mktemp("remote")
    folder = Path(shutil.copytree(tiny, root / "evil"))
    marker = root / "code-ran"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="bsig_evil", architectures=["EvilModel"],
                  auto_map={"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    model_type = 'bsig_evil'\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n"
    )
    return folder, marker


def test_model_code_does_not_run_without_the_flag(remote_code_model, tmp_path, capsys):
    folder, marker = remote_code_model
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": "alpha beta gamma " * 20}) + "\n" for _ in range(5)))
    assert run_cli(capsys, "corpus", docs, "--out", tmp_path / "c.zarr", "--sample-rate", 0.5)[0] == 0
    assert_one_line_error(capsys, ["perplexity", "--corpus", tmp_path / "c.zarr", "--store", tmp_path / "p.zarr",
                                   "--model", folder], "ships its own Python code", "--trust-remote-code")
    assert_one_line_error(capsys, ["evaluate", "--model", folder, "--tasks", "bsig_add", "--limit", 2,
                                   "--out", tmp_path / "y.csv"], "--trust-remote-code")
    assert not marker.exists()
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "y.csv").exists()


def test_the_flag_is_what_lets_model_code_run(remote_code_model):
    folder, marker = remote_code_model
    with pytest.raises(Exception, match="--trust-remote-code"):
        load_causal_lm(str(folder))
    assert not marker.exists()
    model, _ = load_causal_lm(str(folder), trust_remote_code=True)
    assert marker.exists() and type(model).__name__ == "EvilModel"


def test_no_unsafe_loading_in_the_source():
    """Nothing in the package may enable remote code or unpickle: every loader of a user file is safe."""
    unsafe = {
        r"trust_remote_code\s*=\s*True": "remote code on by default",
        r"\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|read_pickle\(": "pickle",
        r"\bjoblib\b": "joblib",
        r"allow_pickle\s*=\s*True": "np.load with pickles",
        r"torch\.load\((?![^)]*weights_only\s*=\s*True)": "torch.load without weights_only=True",
        r"Pickle\(\)": "a pickle codec",
    }
    found = [
        f"{p.relative_to(ROOT)}:{n}: {why}"
        for p in SOURCES
        for n, line in enumerate(p.read_text().splitlines(), 1)
        for pattern, why in unsafe.items()
        if re.search(pattern, line)
    ]
    assert found == []


def test_a_pickled_zarr_store_is_never_unpickled(tmp_path, capsys):
    """A Zarr v2 store whose model names are pickled objects: refused, and the pickle never runs."""
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    store = tmp_path / "evil.zarr"
    (store / "model").mkdir(parents=True)
    (store / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (store / ".zattrs").write_text("{}")
    (store / "model" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [3], "chunks": [3], "dtype": "|O", "compressor": None, "fill_value": None,
        "filters": [{"id": "pickle", "protocol": 5}], "order": "C", "dimension_separator": ".",
    }))
    (store / "model" / ".zattrs").write_text(json.dumps({"_ARRAY_DIMENSIONS": ["model"]}))
    names = np.empty(3, dtype=object)
    names[:] = [Payload(), "b", "c"]
    (store / "model" / "0").write_bytes(numcodecs.Pickle().encode(names))
    csv = tmp_path / "y.csv"
    csv.write_text("model,a\nb,1\nc,2\nd,3\n")
    for args in (["validate", store], ["screen", "--perplexity", store, "--performance", csv, "--out", tmp_path / "s"],
                 ["performance", "show", store]):
        code, out, err = run_cli(capsys, *args)
        assert code not in (0, None) and "Traceback" not in out + err, (args, err)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc/passwd", "..", ".", "", "a\\b", "a\0b", " padded"])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(OptionError, match="cannot be used as a file name"):
        check_path_name(name, "benchmark name")
    with pytest.raises(OptionError):
        question_path("/tmp/questions", name)


def test_benchmark_names_never_read_outside_the_questions_folder(tmp_path):
    questions = tmp_path / "questions"
    questions.mkdir()
    (questions / "ok.jsonl").write_text(json.dumps({"question": "fine?"}) + "\n")
    (tmp_path / "secret.txt").write_text("a secret line\n")
    got = read_questions(questions, ["ok", "../secret", str(tmp_path / "secret")])
    assert got == {"ok": ["fine?"]}


def test_synthetic_question_files_stay_in_their_folder(tmp_path):
    out = tmp_path / "pool" / "questions"
    with pytest.raises(OptionError, match="file name"):
        write_questions(out, ["fine", "../../escaped"], ["stem", "stem"])
    assert not out.exists() and not (tmp_path / "escaped.jsonl").exists()
    write_questions(out, ["fine"], ["stem"])
    assert [p.name for p in out.iterdir()] == ["fine.jsonl"]
    shutil.rmtree(out)


def test_lm_eval_failure_prints_only_the_error(tiny, tmp_path):
    """lm-eval runs, then the metric is missing: stdout and stderr hold the one error line and nothing
    of lm-eval's (warnings, progress bars, git's "fatal: not a git repository")."""
    env = {**os.environ, "BSIG_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bsig_array.cli.main", "evaluate", "--model", str(tiny), "--tasks", "bsig_add",
         "--limit", "2", "--metric", "no_such_metric", "--out", str(tmp_path / "y.csv")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("bsig: error: task bsig_add"), proc.stderr
    assert not (tmp_path / "y.csv").exists()
