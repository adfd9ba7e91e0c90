"""Performance matrix: readers, metadata, lm-eval import, alignment to a store and its errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from strategies import score_vectors

from bsig_array.cli.main import main
from bsig_array.errors import BsigError
from bsig_array.io.benchmark_metadata import (
    benchmark_metadata,
    canonical_benchmark,
    load_metadata,
    with_metadata,
)
from bsig_array.io.lm_eval_results import default_metric, import_lm_eval
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store
from bsig_array.io.scores import align_performance, load_performance, write_performance
from bsig_array.schema import METADATA_COLUMNS

CATEGORIES = {
    "Humanities", "Reasoning", "Language", "Medicine", "Science and Engineering",
    "Social Science", "World Knowledge", "Business",
}
FUNCTIONS = {"math", "logic", "knowledge", "language", "coding", "instruction-following"}


def _score(models, benchmarks, values=None) -> xr.DataArray:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 50, (len(models), len(benchmarks))) / 50 if values is None else np.asarray(values, float)
    return xr.DataArray(values, dims=("model", "benchmark"), coords={"model": list(models), "benchmark": list(benchmarks)}, name="score")


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bsig: error: ") and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- metadata


def test_default_metadata_table():
    meta = load_metadata()
    assert len(meta) == 94 and meta.index.is_unique
    assert list(meta.columns) == list(METADATA_COLUMNS)
    assert set(meta["category"]) == CATEGORIES
    assert set(meta["function"]) <= FUNCTIONS
    assert (meta.iloc[:88]["family"].isin(["mmlu", "bbh"])).all()
    # Official MMLU subcategories (law, philosophy -> Humanities; health -> Medicine; ...).
    expected = {
        "professional_law": "Humanities", "formal_logic": "Humanities", "anatomy": "Medicine",
        "virology": "Medicine", "abstract_algebra": "Science and Engineering", "econometrics": "Social Science",
        "professional_accounting": "Business", "global_facts": "World Knowledge", "hyperbaton": "Language",
        "boolean_expressions": "Reasoning", "gsm8k": "Reasoning", "mbpp": "Science and Engineering",
        "ifeval": "Language",
    }
    assert {b: meta.loc[b, "category"] for b in expected} == expected
    assert meta.loc["gsm8k", "function"] == "math" and meta.loc["web_of_lies", "function"] == "logic"
    assert meta.loc["mbpp", "function"] == "coding" and meta.loc["ifeval", "function"] == "instruction-following"
    # Blank formats read as "unknown"; stated ones survive (BBH formats: tests/test_leaderboard_import.py).
    assert meta.loc["gsm8k", "format"] == "unknown" and meta.loc["navigate", "format"] == "true_false"


@pytest.mark.parametrize(
    "task, name",
    [
        ("mmlu_anatomy", "anatomy"),
        ("mmlu_high_school_macroeconomics", "high_school_macro_economics"),
        ("mmlu_social_sciences", "social_sciences"),
        ("bbh_cot_fewshot_boolean_expressions", "boolean_expressions"),
        ("bbh_zeroshot_navigate", "navigate"),
        ("leaderboard_bbh_snarks", "snarks"),
        ("truthfulqa_mc2", "truthfulqa"),
        ("gsm8k", "gsm8k"),
        ("mmlu_pro", "mmlu_pro"),
        ("arc_easy", "arc_easy"),
    ],
)
def test_canonical_benchmark(task, name):
    assert canonical_benchmark(task) == name


def test_metadata_csv_overrides_and_unknowns(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("benchmark,category,function\nfoo,Medicine,knowledge\nanatomy,Business,\n")
    score = _score(["a", "b", "c"], ["foo", "anatomy", "bar"])
    path = write_performance(score, tmp_path / "y.csv")
    got = load_performance(path, metadata=meta)
    assert list(got["category"].values) == ["Medicine", "Business", "unknown"]
    assert list(got["function"].values) == ["knowledge", "unknown", "unknown"]
    assert list(got["family"].values) == ["unknown"] * 3
    default = load_performance(path)  # shipped table: anatomy is known, the rest unknown
    assert list(default["category"].values) == ["unknown", "Medicine", "unknown"]


def test_metadata_from_a_dataframe():
    table = pd.DataFrame({"category": ["Medicine", ""]}, index=["x", "anatomy"])
    got = benchmark_metadata(["anatomy", "x", "mmlu_anatomy", "y"], table)
    assert list(got["category"]) == ["unknown", "Medicine", "unknown", "unknown"]
    assert list(got["family"]) == ["unknown"] * 4
    assert list(benchmark_metadata(["mmlu_anatomy"])["category"]) == ["Medicine"]


def test_bad_metadata_csv(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("name,category\nx,y\n")
    with pytest.raises(BsigError, match="no 'benchmark' column"):
        load_metadata(bad)
    bad.write_text("benchmark,category\nx,y\nx,z\n")
    with pytest.raises(BsigError, match="more than once"):
        load_metadata(bad)


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("suffix", [".csv", ".nc", ".zarr"])
def test_write_load_roundtrip(tmp_path, suffix):
    score = with_metadata(_score([f"m{i}" for i in range(5)], ["anatomy", "gsm8k", "custom"]))
    path = write_performance(score, tmp_path / f"y{suffix}")
    got = load_performance(path)
    assert got.name == "score" and got.dims == ("model", "benchmark") and got.dtype == np.float64
    np.testing.assert_array_equal(got.values, score.values)
    assert list(got["model"].values) == list(score["model"].values)
    for col in METADATA_COLUMNS:
        assert list(got[col].values) == list(score[col].values)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp files


def test_parquet_and_long_tables(tmp_path):
    wide = pd.DataFrame({"model": ["a", "b", "c"], "anatomy": [0.1, 0.5, 0.5], "gsm8k": [0.3, 0.2, 0.9]})
    wide.to_parquet(tmp_path / "y.parquet")
    got = load_performance(tmp_path / "y.parquet")
    np.testing.assert_array_equal(got.values, wide[["anatomy", "gsm8k"]].to_numpy())
    assert list(got["category"].values) == ["Medicine", "Reasoning"]
    long = wide.melt(id_vars="model", var_name="benchmark", value_name="score").sample(frac=1, random_state=0)
    long.to_csv(tmp_path / "long.csv", index=False)
    got_long = load_performance(tmp_path / "long.csv").sel(model=["a", "b", "c"], benchmark=["anatomy", "gsm8k"])
    np.testing.assert_array_equal(got_long.values, got.values)


def test_reader_errors(tmp_path):
    with pytest.raises(BsigError, match="does not exist"):
        load_performance(tmp_path / "nope.csv")
    (tmp_path / "a.csv").write_text("name,x\na,1\n")
    with pytest.raises(BsigError, match="no 'model' column"):
        load_performance(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("model,x,x\na,1,2\nb,2,3\n")
    with pytest.raises(BsigError, match="repeats columns"):
        load_performance(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("model,x\na,1\na,2\nb,3\n")
    with pytest.raises(BsigError, match=r"duplicate model rows \['a'\]"):
        load_performance(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("model,x\na,high\nb,3\n")
    with pytest.raises(BsigError, match="not numeric"):
        load_performance(tmp_path / "d.csv")
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(BsigError, match="unknown performance format"):
        load_performance(tmp_path / "e.json")


def test_blank_cells_are_nan_until_aligned(tmp_path):
    (tmp_path / "y.csv").write_text("model,x,y\na,1,0.5\nb,,0.2\nc,3,0.1\n")
    score = load_performance(tmp_path / "y.csv")
    assert np.isnan(score.sel(model="b", benchmark="x"))
    with pytest.raises(BsigError, match=r"1 missing \(NaN/inf\) scores \(b/x\)"):
        align_performance(score, ["a", "b", "c"])


# --------------------------------------------------------------------------- alignment


@given(st.data())
def test_align_reorders_by_name(data):
    m = data.draw(st.integers(3, 9))
    models = [f"model-{i}" for i in range(m)]
    cols = [data.draw(score_vectors(m)) for _ in range(3)]
    score = _score(models, ["p", "q", "r"], np.stack(cols, axis=1))
    perm = data.draw(st.permutations(range(m)))
    shuffled = score.isel(model=list(perm))
    aligned = align_performance(shuffled, models)
    assert list(aligned["model"].values) == models
    np.testing.assert_array_equal(aligned.values, score.values)


def test_align_accepts_a_store(tmp_path):
    writer = create_store(tmp_path / "p.zarr", ["z", "a", "m"], 10)
    for j in writer.pending():
        writer.write_chunk(j, np.ones((3, 10)))
    score = _score(["a", "m", "z"], ["x"], [[0.1], [0.2], [0.3]])
    aligned = align_performance(score, open_store(tmp_path / "p.zarr"))
    assert list(aligned["model"].values) == ["z", "a", "m"]
    np.testing.assert_array_equal(aligned.values[:, 0], [0.3, 0.1, 0.2])


@pytest.mark.parametrize(
    "models, values, store_models, message",
    [
        (["a", "b", "c"], [[1, 2], [2, 3], [3, 4]], ["a", "b", "d"], r"in the store but not in the performance: \['d'\].*in the performance but not in the store: \['c'\]"),
        (["a", "b", "c", "d"], [[1, 2], [2, 3], [3, 4], [5, 6]], ["a", "b", "c"], r"not in the store: \['d'\]"),
        (["a", "b"], [[1, 2], [2, 3]], ["a", "b"], "only 2 models, need at least 3"),
        (["a", "b", "c"], [[1, 2], [np.nan, 3], [3, np.inf]], ["a", "b", "c"], r"2 missing \(NaN/inf\) scores \(b/x, c/y\)"),
        (["a", "b", "c"], [[1, 0.5], [2, 0.5], [3, 0.5]], ["a", "b", "c"], r"benchmarks \['y'\] have the same score for every model"),
        (["a", "a", "c"], [[1, 2], [2, 3], [3, 4]], ["a", "c"], r"lists models \['a'\] more than once"),
    ],
    ids=["missing-and-extra", "extra", "too-few", "nan", "constant", "duplicate"],
)
def test_align_errors(models, values, store_models, message):
    score = _score(models, ["x", "y"], values)
    with pytest.raises(BsigError, match=message) as exc:
        align_performance(score, store_models)
    assert "\n" not in str(exc.value)


def test_cli_show_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "y.csv").write_text("model,x,y\na,1,0.5\nb,2,0.5\nc,3,0.5\n")
    err = _one_line_error(capsys, ["performance", "show", str(tmp_path / "y.csv")])
    assert "same score for every model" in err
    writer = create_store(tmp_path / "p.zarr", ["a", "b", "q"], 4)
    writer.write_chunk(0, np.ones((3, 4)))
    (tmp_path / "z.csv").write_text("model,x\na,1\nb,2\nc,3\n")
    err = _one_line_error(capsys, ["performance", "show", str(tmp_path / "z.csv"), "--store", str(tmp_path / "p.zarr")])
    assert "['q']" in err and "['c']" in err


# --------------------------------------------------------------------------- lm-eval


def _lm_eval_results(model_args: str, tasks: dict[str, dict[str, float]]) -> dict:
    """A results dict shaped like lm_eval.evaluator.simple_evaluate's return value."""
    results = {}
    for task, metrics in tasks.items():
        entry = {"alias": task}
        for key, value in metrics.items():
            entry[key] = value
            name, _, filt = key.partition(",")
            entry[f"{name}_stderr,{filt}"] = 0.01
        results[task] = entry
    return {
        "results": results,
        "group_subtasks": {t: [] for t in tasks},
        "configs": {t: {"task": t, "output_type": "multiple_choice"} for t in tasks},
        "versions": {t: 1.0 for t in tasks},
        "n-shot": {t: 0 for t in tasks},
        "higher_is_better": {t: {k.split(",")[0]: True for k in m} for t, m in tasks.items()},
        "n-samples": {t: {"original": 100, "effective": 100} for t in tasks},
        "config": {"model": "hf", "model_args": model_args, "batch_size": 1, "device": "cpu"},
        "git_hash": None,
        "date": time.time(),
    }


def _save(out: Path, model_args: str, tasks: dict[str, dict[str, float]]) -> None:
    """Write a results file with lm-eval's own EvaluationTracker (its real naming and layout)."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    tracker.general_config_tracker.log_experiment_args(
        model_source="hf", model_args=model_args, system_instruction=None, chat_template=None, fewshot_as_multiturn=False
    )
    tracker.save_results_aggregated(results=_lm_eval_results(model_args, tasks), samples=None)
    time.sleep(0.002)  # lm-eval's file names carry a microsecond timestamp; keep them ordered


@pytest.fixture(scope="module")
def lm_eval_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm_eval")
    base = {
        "arc_easy": {"acc,none": 0.5, "acc_norm,none": 0.55},
        "mmlu_anatomy": {"acc,none": 0.4},
        "gsm8k": {"exact_match,strict-match": 0.2, "exact_match,flexible-extract": 0.25},
        "ifeval": {"prompt_level_strict_acc,none": 0.3, "inst_level_strict_acc,none": 0.4},
    }
    for i, name in enumerate(["org/model-a", "org/model-b", "other/model-c"]):
        tasks = {t: {k: v + 0.1 * i for k, v in m.items()} for t, m in base.items()}
        _save(out, f"pretrained={name},dtype=float32", tasks)
    # A later run of model-a re-evaluates arc_easy only: it must win for that task alone.
    _save(out, "pretrained=org/model-a,dtype=float32", {"arc_easy": {"acc,none": 0.9, "acc_norm,none": 0.95}})
    return out


def test_import_lm_eval(lm_eval_dir):
    files = sorted(lm_eval_dir.rglob("results_*.json"))
    assert len(files) == 4 and {f.parent.name for f in files} == {"org__model-a", "org__model-b", "other__model-c"}
    score = import_lm_eval([lm_eval_dir])
    assert list(score["model"].values) == ["org/model-a", "org/model-b", "other/model-c"]
    assert set(score["benchmark"].values) == {"arc_easy", "anatomy", "gsm8k", "ifeval"}
    got = score.to_pandas()
    assert got.loc["org/model-a", "arc_easy"] == 0.95  # acc_norm preferred, newest file wins
    np.testing.assert_allclose(got["arc_easy"].iloc[1:], [0.65, 0.75])
    np.testing.assert_allclose(got["anatomy"], [0.4, 0.5, 0.6])
    np.testing.assert_allclose(got["gsm8k"], [0.2, 0.3, 0.4])  # strict-match
    np.testing.assert_allclose(got["ifeval"], [0.3, 0.4, 0.5])  # first numeric metric
    assert score.sel(benchmark="anatomy")["category"].item() == "Medicine"
    assert score.sel(benchmark="arc_easy")["category"].item() == "unknown"


def test_import_lm_eval_options(lm_eval_dir):
    score = import_lm_eval(
        [lm_eval_dir],
        metrics={"gsm8k": "exact_match,flexible-extract", "arc_easy": "acc,none"},
        model_name_from="dir",
        include=["gsm8k", "arc_*", "mmlu_*"],
        task_names="raw",
    )
    assert list(score["model"].values) == ["org__model-a", "org__model-b", "other__model-c"]
    assert list(score["benchmark"].values) == ["arc_easy", "mmlu_anatomy", "gsm8k"]
    np.testing.assert_allclose(score.sel(benchmark="gsm8k"), [0.25, 0.35, 0.45])
    np.testing.assert_allclose(score.sel(benchmark="arc_easy"), [0.9, 0.6, 0.7])
    with pytest.raises(BsigError, match="no numeric metric 'f1,none'"):
        import_lm_eval([lm_eval_dir], metrics={"gsm8k": "f1,none"})


def test_import_lm_eval_missing_task_is_nan(tmp_path):
    _save(tmp_path, "pretrained=a", {"gsm8k": {"exact_match,strict-match": 0.1}, "arc_easy": {"acc,none": 0.2}})
    _save(tmp_path, "pretrained=b", {"gsm8k": {"exact_match,strict-match": 0.3}})
    _save(tmp_path, "pretrained=c", {"gsm8k": {"exact_match,strict-match": 0.5}, "arc_easy": {"acc,none": 0.6}})
    score = import_lm_eval([tmp_path])
    assert np.isnan(score.sel(model="b", benchmark="arc_easy"))
    with pytest.raises(BsigError, match=r"1 missing \(NaN/inf\) scores \(b/arc_easy\)"):
        align_performance(score, ["a", "b", "c"])


def test_import_lm_eval_errors(tmp_path):
    with pytest.raises(BsigError, match="no results_"):
        import_lm_eval([tmp_path])
    (tmp_path / "results_x.json").write_text("{not json")
    with pytest.raises(BsigError, match="cannot read lm-eval results"):
        import_lm_eval([tmp_path])
    (tmp_path / "results_x.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(BsigError, match="no 'results' mapping"):
        import_lm_eval([tmp_path])
    (tmp_path / "results_x.json").write_text(
        json.dumps({"model_name": "m", "results": {"bbh_zeroshot_navigate": {"acc,none": 0.1}, "bbh_fewshot_navigate": {"acc,none": 0.2}}})
    )
    with pytest.raises(BsigError, match="both map to benchmark 'navigate'"):
        import_lm_eval([tmp_path])
    assert set(import_lm_eval([tmp_path], task_names="raw")["benchmark"].values) == {"bbh_zeroshot_navigate", "bbh_fewshot_navigate"}


def test_default_metric_preference():
    assert default_metric({"alias": "x", "acc,none": 0.1, "acc_norm,none": 0.2}) == "acc_norm,none"
    assert default_metric({"acc,none": 0.1, "acc_stderr,none": 0.01}) == "acc,none"
    assert default_metric({"exact_match,flexible-extract": 0.1, "exact_match,get-answer": 0.2}) == "exact_match,flexible-extract"
    assert default_metric({"exact_match,flexible-extract": 0.1, "exact_match,strict-match": 0.2}) == "exact_match,strict-match"
    assert default_metric({"alias": "x", "pass_at_1,none": 0.3, "bleu_max,none": "N/A"}) == "pass_at_1,none"
    assert default_metric({"alias": "x", "acc_stderr,none": "N/A"}) is None


def test_cli_import_lm_eval(lm_eval_dir, tmp_path, capsys):
    out = tmp_path / "y.csv"
    main(["performance", "import-lm-eval", str(lm_eval_dir), "--out", str(out), "--metric", "gsm8k=exact_match,flexible-extract"])
    assert "3 models x 4 benchmarks" in capsys.readouterr().out
    got = load_performance(out)
    np.testing.assert_allclose(got.sel(benchmark="gsm8k"), [0.25, 0.35, 0.45])
    err = _one_line_error(capsys, ["performance", "import-lm-eval", str(lm_eval_dir), "--out", str(out), "--metric", "gsm8k", "--overwrite"])
    assert "TASK=METRIC" in err
    nc = tmp_path / "y.nc"
    main(["performance", "convert", str(out), str(nc)])
    assert load_performance(nc).sel(benchmark="anatomy")["category"].item() == "Medicine"
