"""bsig evaluate: shipped tasks are generated and correct; lm-eval scores match a direct computation."""

from __future__ import annotations

import filecmp
import json
import re
import string

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bsig_array.cli.main import main
from bsig_array.errors import BsigError
from bsig_array.models.loading import build_tiny_gpt2
from bsig_array.stages.evaluate import (
    GENERATORS,
    TASKS_DIR,
    _absolute_data_files,
    evaluate_model,
    generate_tasks,
    update_performance,
)


def load_items(task):
    return [json.loads(line) for line in (TASKS_DIR / task / f"{task}.jsonl").read_text().splitlines()]


def test_shipped_tasks_are_the_generated_ones(tmp_path):
    names = generate_tasks(tmp_path)
    assert names == list(GENERATORS) and len(names) >= 5
    for task in names:
        for suffix in (".yaml", ".jsonl"):
            assert filecmp.cmp(tmp_path / task / f"{task}{suffix}", TASKS_DIR / task / f"{task}{suffix}", shallow=False)


def truth(task, q):
    """Answer of a shipped question, recomputed from its text."""
    nums = [int(n) for n in re.findall(r"\d+", q)]
    if task == "bsig_add":
        return str(nums[0] + nums[1])
    if task == "bsig_sub":
        return str(nums[0] - nums[1])
    if task == "bsig_largest":
        return str(max(nums))
    if task == "bsig_alphabetical":
        return min(q.split(": ")[1].rstrip("?").split(", "))
    if task == "bsig_next_letter":
        step = 1 if "right after" in q else nums[0]
        return string.ascii_uppercase[string.ascii_uppercase.index(q.split("after ")[1][0]) + step]
    if task == "bsig_count_words":
        return str(len(q.split('"')[1].split()))
    raise AssertionError(task)


@pytest.mark.parametrize("task", list(GENERATORS))
def test_items_are_correct(task):
    items = load_items(task)
    assert 50 <= len(items) <= 200 and len({i["question"] for i in items}) == len(items)
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        assert item["choices"][item["answer"]] == truth(task, item["question"])
    # answers are not always in the same slot
    assert len({i["answer"] for i in items}) == 4


def test_relative_data_files_are_resolved(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    text = "dataset_kwargs:\n  data_files:\n    test: d.jsonl\n    train: missing.jsonl\n    dev: /abs/x.jsonl\n"
    fixed = _absolute_data_files(text, tmp_path)
    assert f"test: {(tmp_path / 'd.jsonl').resolve()}" in fixed
    assert "train: missing.jsonl" in fixed and "dev: /abs/x.jsonl" in fixed


def test_update_performance(tmp_path):
    path = tmp_path / "y.csv"
    update_performance(path, "a", {"t1": 0.5, "t2": 0.25})
    update_performance(path, "b", {"t1": 0.75})
    update_performance(path, "a", {"t1": 1.0, "t3": 0.0})
    table = pd.read_csv(path).set_index("model")
    assert list(table.index) == ["a", "b"] and list(table.columns) == ["t1", "t2", "t3"]
    assert table.loc["a"].tolist() == [1.0, 0.25, 0.0]
    assert table.loc["b", "t1"] == 0.75 and np.isnan(table.loc["b", "t2"])
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(BsigError, match="model"):
        update_performance(tmp_path / "bad.csv", "a", {"t1": 1.0})


def direct_accuracy(model, tok, items):
    """acc as lm-eval defines it: argmax over choices of sum log p(" choice" | prompt)."""
    correct = []
    for item in items:
        ctx = f"Question: {item['question']}\nAnswer:"
        lls = []
        for choice in item["choices"]:
            c = tok(ctx, add_special_tokens=False)["input_ids"]
            whole = tok(ctx + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
            lls.append(float(sum(logp[p - 1, whole[p]] for p in range(len(c), len(whole)))))
        correct.append(int(np.argmax(lls)) == item["answer"])
    return float(np.mean(correct))


def test_lm_eval_scores_match_direct_computation(tmp_path):
    torch.set_num_threads(1)
    path = build_tiny_gpt2(tmp_path / "tiny")
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    scores = evaluate_model(str(path), ["bsig_add", "bsig_next_letter"], limit=12, batch_size=8)
    for task in ("bsig_add", "bsig_next_letter"):
        assert scores[task] == pytest.approx(direct_accuracy(model, tok, load_items(task)[:12]))


def test_cli_unknown_task_is_one_line_error(tmp_path, capsys):
    path = build_tiny_gpt2(tmp_path / "tiny")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(path), "--tasks", "no_such_task", "--out", str(tmp_path / "y.csv")])
    assert exit_info.value.code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("bsig: error: unknown lm-eval tasks")
    assert not (tmp_path / "y.csv").exists()
