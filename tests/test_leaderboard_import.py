"""Leaderboard import (tables in every layout, lm-eval 0.3/0.4 results), show's warnings, metadata labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bsig_array.cli.main import main
from bsig_array.errors import BsigError
from bsig_array.io.benchmark_metadata import canonical_benchmark, chance_levels, load_metadata, with_metadata
from bsig_array.io.leaderboard import import_leaderboard, performance_warnings, read_table
from bsig_array.io.lm_eval_results import default_metric, import_lm_eval
from bsig_array.io.scores import load_performance

#: The 57 MMLU subjects as lm-eval names them (lm_eval/tasks/mmlu/default/mmlu_<subject>.yaml).
MMLU_SUBJECTS = """abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology
college_chemistry college_computer_science college_mathematics college_medicine college_physics computer_security
conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts
high_school_biology high_school_chemistry high_school_computer_science high_school_european_history
high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics
high_school_microeconomics high_school_physics high_school_psychology high_school_statistics high_school_us_history
high_school_world_history human_aging human_sexuality international_law jurisprudence logical_fallacies
machine_learning management marketing medical_genetics miscellaneous moral_disputes moral_scenarios nutrition
philosophy prehistory professional_accounting professional_law professional_medicine professional_psychology
public_relations security_studies sociology us_foreign_policy virology world_religions""".split()

#: The 27 BBH tasks and their answer format (Suzgun et al. 2022; answer options in lm-eval's
#: leaderboard/bbh_mc task definitions).
BBH_FORMATS = {
    **dict.fromkeys(
        ["boolean_expressions", "causal_judgement", "formal_fallacies", "navigate", "sports_understanding", "web_of_lies"],
        "true_false",
    ),
    **dict.fromkeys(["dyck_languages", "word_sorting", "multistep_arithmetic_two", "object_counting"], "free_form"),
    **dict.fromkeys(
        [
            "date_understanding", "disambiguation_qa", "geometric_shapes", "hyperbaton", "logical_deduction_three_objects",
            "logical_deduction_five_objects", "logical_deduction_seven_objects", "movie_recommendation",
            "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection",
            "snarks", "temporal_sequences", "tracking_shuffled_objects_three_objects",
            "tracking_shuffled_objects_five_objects", "tracking_shuffled_objects_seven_objects",
        ],
        "multiple_choice",
    ),
}

# A small leaderboard in percent, Open-LLM-Leaderboard style: non-score columns, harness and title-case names.
BOARD = pd.DataFrame(
    {
        "Rank": [1, 2, 3, 4],
        "Model": ["org/a", "org/b", "org/c", "org/d"],
        "Average ⬆️": [61.0, 50.5, 40.0, 30.5],
        "#Params (B)": [7.0, 13.0, 1.5, 0.5],
        "Type": ["base", "chat", "base", "chat"],
        "harness|hendrycksTest-anatomy|5": [55.0, 45.5, 35.0, 30.0],
        "High School Biology": [70.0, 60.0, 50.5, 40.0],
        "leaderboard_bbh_boolean_expressions": [80.0, 70.0, 60.0, 55.0],
        "mmlu_virology": [40.0, 35.0, 30.0, 27.5],
    }
)
EXPECTED = pd.DataFrame(
    {
        "anatomy": [0.55, 0.455, 0.35, 0.30],
        "high_school_biology": [0.70, 0.60, 0.505, 0.40],
        "boolean_expressions": [0.80, 0.70, 0.60, 0.55],
        "virology": [0.40, 0.35, 0.30, 0.275],
    },
    index=["org/a", "org/b", "org/c", "org/d"],
)


def _check(score: xr.DataArray, expected: pd.DataFrame = EXPECTED) -> None:
    assert list(score["model"].values) == list(expected.index)
    assert list(score["benchmark"].values) == list(expected.columns)
    np.testing.assert_allclose(score.values, expected.to_numpy(), rtol=0, atol=1e-12)


def _records(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


WRITERS = {
    "csv": lambda t, p: t.to_csv(p, index=False),
    "tsv": lambda t, p: t.to_csv(p, sep="\t", index=False),
    "parquet": lambda t, p: t.to_parquet(p, index=False),
    "json-records": lambda t, p: p.write_text(json.dumps(_records(t))),
    "json-columns": lambda t, p: p.write_text(t.to_json(orient="columns")),  # {"col": {"0": v, ...}}
    "json-lists": lambda t, p: p.write_text(json.dumps({c: list(v) for c, v in t.to_dict(orient="list").items()})),
    "jsonl": lambda t, p: t.to_json(p, orient="records", lines=True),
}
SUFFIX = {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet", "jsonl": ".jsonl"}


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("layout", list(WRITERS))
def test_every_table_layout_gives_the_same_matrix(tmp_path, layout):
    path = tmp_path / f"board{SUFFIX.get(layout, '.json')}"
    WRITERS[layout](BOARD, path)
    result = import_leaderboard(path)
    _check(result.score)
    notes = "\n".join(result.notes)
    assert "model column: 'Model'" in notes
    assert "not scores: Rank, Average ⬆️, #Params (B)" in notes and "not numeric: Type" in notes
    assert "harness|hendrycksTest-anatomy|5 -> anatomy" in notes and "High School Biology -> high_school_biology" in notes
    assert "scale: 4 columns with values in (1, 100] read as percent and divided by 100" in notes
    # Harness and title-case names reach the metadata.
    assert list(result.score["family"].values) == ["mmlu", "mmlu", "bbh", "mmlu"]
    assert list(result.score["category"].values) == ["Medicine", "Science and Engineering", "Reasoning", "Medicine"]


def test_model_and_score_columns(tmp_path):
    path = tmp_path / "b.csv"
    BOARD.rename(columns={"Model": "checkpoint"}).to_csv(path, index=False)
    with pytest.raises(BsigError, match=r"no model column .*--model-column; columns: Rank, checkpoint, Average") as exc:
        import_leaderboard(path)
    assert "\n" not in str(exc.value)
    result = import_leaderboard(path, model_column="checkpoint", columns=["harness|*", "mmlu_virology"])
    _check(result.score, EXPECTED[["anatomy", "virology"]])
    assert any(n.startswith("ignored 6 columns not in --columns: Rank, Average ⬆️, #Params (B), Type, High School Biology, leaderboard_bbh") for n in result.notes)
    with pytest.raises(BsigError, match="--columns 'nothing\\*' matches no column"):
        import_leaderboard(path, model_column="checkpoint", columns=["nothing*"])
    with pytest.raises(BsigError, match=r"columns \['Type'\] are not numeric"):
        import_leaderboard(path, model_column="checkpoint", columns=["Type,mmlu_virology"])
    with pytest.raises(BsigError, match="--model-column 'nope' is not a column"):
        import_leaderboard(path, model_column="nope")
    # Average kept on request; raw names kept with --task-names raw.
    raw = import_leaderboard(path, model_column="checkpoint", columns=["Average*", "mmlu_virology"], task_names="raw")
    assert list(raw.score["benchmark"].values) == ["Average ⬆️", "mmlu_virology"]
    # Two columns on one benchmark are refused.
    BOARD.assign(anatomy=BOARD["mmlu_virology"]).to_csv(path, index=False)
    with pytest.raises(BsigError, match="'harness\\|hendrycksTest-anatomy\\|5' and 'anatomy' both map to benchmark 'anatomy'"):
        import_leaderboard(path)


def test_scale_rules(tmp_path):
    path = tmp_path / "b.csv"
    table = pd.DataFrame({"model": ["a", "b", "c"], "anatomy": [50.0, 40.0, 30.0], "virology": [0.5, 0.4, 0.3], "arena": [1200.0, 1100.0, 1000.0]})
    table.to_csv(path, index=False)
    auto = import_leaderboard(path)
    np.testing.assert_allclose(auto.score.values, [[0.5, 0.5, 1200], [0.4, 0.4, 1100], [0.3, 0.3, 1000]])
    notes = "\n".join(auto.notes)
    assert "scale: 1 column with values in (1, 100] read as percent" in notes
    assert "1 column within [0, 1] kept as fractions: virology (--scale percent if they are percent too)" in notes
    assert "1 column neither fractions nor percent (negative or above 100) kept as they are: arena" in notes
    fraction = import_leaderboard(path, scale="fraction")
    np.testing.assert_array_equal(fraction.score.values, table[["anatomy", "virology", "arena"]].to_numpy())
    with pytest.raises(BsigError, match=r"--scale percent, but columns \['arena'\] have values outside \[0, 100\]"):
        import_leaderboard(path, scale="percent")
    percent = import_leaderboard(path, scale="percent", columns=["anatomy", "virology"])
    np.testing.assert_allclose(percent.score.values, [[0.5, 0.005], [0.4, 0.004], [0.3, 0.003]])
    with pytest.raises(BsigError, match="unknown --scale 'permille'"):
        import_leaderboard(path, scale="permille")


# Model "a" ran three times: rows 0 (Jan 5), 2 (Mar 1, newest), 4 (Feb 1, last row); "b" twice.
RUNS = pd.DataFrame(
    {
        "model": ["a", "b", "a ", "c", "a", "b"],
        "Submission Date": ["2024-01-05", "2024-01-01", "2024-03-01T10:00:00", "2024-01-01", "2024-02-01", "2024-01-01"],
        "anatomy": [0.30, 0.50, 0.40, 0.60, 0.20, 0.70],
        "virology": [0.35, 0.55, np.nan, 0.65, 0.25, 0.45],
    }
)


@pytest.mark.parametrize(
    "rule, date_column, a, b, how",
    [
        ("newest", None, [0.40, np.nan], [0.70, 0.45], "the newest of each by 'Submission Date' (the later row on equal dates)"),
        ("first", None, [0.30, 0.35], [0.50, 0.55], "the first row of each"),
        ("mean", None, [0.30, 0.30], [0.60, 0.50], "per benchmark, the mean over each model's runs"),
        ("max", None, [0.40, 0.35], [0.70, 0.55], "per benchmark, the max over each model's runs"),
    ],
)
def test_duplicate_rules(tmp_path, rule, date_column, a, b, how):
    path = tmp_path / "runs.csv"
    RUNS.to_csv(path, index=False)
    result = import_leaderboard(path, duplicates=rule, missing="drop-benchmark" if rule == "newest" else "refuse")
    got = result.score.to_pandas()
    assert list(got.index) == ["a", "b", "c"]
    expect_a = [v for v in a if not np.isnan(v)]
    np.testing.assert_allclose(got.loc["a"].to_numpy(), expect_a)
    np.testing.assert_allclose(got.loc["b"].to_numpy(), b[: len(expect_a)])
    line = next(n for n in result.notes if n.startswith("duplicates:"))
    assert line == f"duplicates: 2 models with more than one row (5 rows: a, b); kept {how} (--duplicates {rule})"


def test_newest_without_a_date_keeps_the_last_row_and_refuse(tmp_path):
    path = tmp_path / "runs.csv"
    RUNS.drop(columns="Submission Date").to_csv(path, index=False)
    result = import_leaderboard(path)
    np.testing.assert_allclose(result.score.to_pandas().loc[["a", "b"]].to_numpy(), [[0.20, 0.25], [0.70, 0.45]])
    assert any("kept the last row of each: no date column (name one with --date-column)" in n for n in result.notes)
    with pytest.raises(BsigError, match=r"2 models with more than one row \(5 rows: a, b\); pick a rule with --duplicates"):
        import_leaderboard(path, duplicates="refuse")
    # An explicit date column; unreadable dates of duplicated models are refused.
    RUNS.rename(columns={"Submission Date": "when"}).to_csv(path, index=False)
    newest = import_leaderboard(path, date_column="when", missing="drop-benchmark")
    assert newest.score.sel(model="a", benchmark="anatomy").item() == 0.40
    RUNS.assign(**{"Submission Date": ["soon", *RUNS["Submission Date"][1:]]}).to_csv(path, index=False)
    with pytest.raises(BsigError, match="unreadable dates for duplicated models \\(e.g. 'soon'\\)"):
        import_leaderboard(path)


def test_missing_rules(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame(
        {"model": list("abcd"), "anatomy": [0.3, np.nan, 0.5, 0.6], "virology": [0.3, np.nan, 0.5, np.nan], "nutrition": [0.1, 0.2, 0.3, 0.4]}
    ).to_csv(path, index=False)
    with pytest.raises(BsigError) as exc:
        import_leaderboard(path)
    assert str(exc.value) == (
        f"{path}: 3 missing scores in 2 models and 2 benchmarks (e.g. b/anatomy); pass --missing drop-model "
        "(drops 2 of 4 models) or --missing drop-benchmark (drops 2 of 3 benchmarks)"
    )
    by_model = import_leaderboard(path, missing="drop-model")
    assert list(by_model.score["model"].values) == ["a", "c"] and by_model.score.sizes["benchmark"] == 3
    assert "dropped models b, d (--missing drop-model)" in by_model.notes[-1]
    by_bench = import_leaderboard(path, missing="drop-benchmark")
    assert list(by_bench.score["benchmark"].values) == ["nutrition"] and by_bench.score.sizes["model"] == 4
    np.testing.assert_array_equal(by_bench.score.values[:, 0], [0.1, 0.2, 0.3, 0.4])


def test_bad_tables(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"model": "a", "anatomy": 0.3}))
    with pytest.raises(BsigError, match="neither a list of records"):
        import_leaderboard(tmp_path / "x.json")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(BsigError, match="unknown table format '.xlsx'"):
        read_table(tmp_path / "x.xlsx")
    (tmp_path / "r.tsv").write_text("model\tanatomy\tanatomy\na\t0.1\t0.2\n")
    with pytest.raises(BsigError, match=r"repeats columns \['anatomy'\]"):
        import_leaderboard(tmp_path / "r.tsv")
    (tmp_path / "h.csv").write_text('Model,anatomy\n<a href="https://hf.co/o/a">o/a</a>,0.1\n<a href="x">o/b</a>,0.2\n')
    html = import_leaderboard(tmp_path / "h.csv")
    assert list(html.score["model"].values) == ["o/a", "o/b"] and "removed HTML markup from 'Model'" in html.notes[1]
    (tmp_path / "y.csv").write_text("model,anatomy\na,0.1\n,0.2\n")
    with pytest.raises(BsigError, match="1 row without a model name in 'model'"):
        import_leaderboard(tmp_path / "y.csv")


# --------------------------------------------------------------------------- lm-eval results


def _v03(model: str, anatomy: float, arc: float) -> dict:
    """lm-eval 0.3's results.json: metric keys without a filter, hendrycksTest task names."""
    return {
        "results": {
            "hendrycksTest-anatomy": {"acc": anatomy - 0.05, "acc_stderr": 0.04, "acc_norm": anatomy, "acc_norm_stderr": 0.04},
            "arc_challenge": {"acc": arc, "acc_stderr": 0.01},
        },
        "versions": {"hendrycksTest-anatomy": 0, "arc_challenge": 0},
        "config": {"model": "hf-causal", "model_args": f"pretrained={model}", "num_fewshot": 5, "batch_size": 1, "limit": None},
    }


def _leaderboard_v1(model: str, anatomy: float, tqa: float) -> dict:
    """Open LLM Leaderboard v1 results: harness|task|shots keys, config_general, an 'all' average."""
    return {
        "config_general": {"model_name": model, "model_sha": "abc"},
        "results": {
            "harness|hendrycksTest-anatomy|5": {"acc": anatomy, "acc_stderr": 0.04, "acc_norm": anatomy + 0.01},
            "harness|truthfulqa:mc|0": {"mc1": tqa - 0.1, "mc1_stderr": 0.01, "mc2": tqa, "mc2_stderr": 0.01},
            "all": {"acc": 0.5, "acc_norm": 0.5, "mc1": 0.2, "mc2": 0.3},
        },
        "versions": {"all": 0},
    }


def _v04(model: str, anatomy: float) -> dict:
    return {
        "results": {"mmlu_anatomy": {"alias": "anatomy", "acc,none": anatomy, "acc_stderr,none": 0.04}},
        "config": {"model": "hf", "model_args": f"pretrained={model},dtype=float32"},
        "model_name": model,
    }


def test_lm_eval_03_layout(tmp_path):
    for i, name in enumerate(["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m"]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(_v03(name, 0.3 + 0.1 * i, 0.2 + 0.05 * i)))
    score = import_lm_eval([tmp_path])
    assert list(score["model"].values) == ["EleutherAI/pythia-160m", "EleutherAI/pythia-410m", "EleutherAI/pythia-70m"]
    got = score.to_pandas()
    np.testing.assert_allclose(got["anatomy"], [0.4, 0.5, 0.3])  # acc_norm preferred, as in 0.4
    np.testing.assert_allclose(got["arc_challenge"], [0.25, 0.3, 0.2])
    assert score.sel(benchmark="anatomy")["category"].item() == "Medicine"
    result = import_leaderboard(tmp_path)  # the import command takes results folders too
    xr.testing.assert_identical(result.score, score)
    assert default_metric({"acc": 0.1, "acc_norm": 0.2, "acc_norm_stderr": 0.0}) == "acc_norm"
    assert default_metric({"mc1": 0.1, "mc2": 0.2}) == "mc2"


def test_lm_eval_leaderboard_v1_and_04_layouts(tmp_path):
    for i, name in enumerate(["org/x", "org/y", "org/z"]):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "results_2023-08-21T12-34-56.123456.json").write_text(json.dumps(_leaderboard_v1(name, 0.3 + 0.1 * i, 0.4 - 0.1 * i)))
    score = import_lm_eval([tmp_path])
    assert list(score["benchmark"].values) == ["anatomy", "truthfulqa"]  # 'all' is not a task
    np.testing.assert_allclose(score.values, [[0.31, 0.4], [0.41, 0.3], [0.51, 0.2]])
    one = tmp_path / "single.json"
    one.write_text(json.dumps(_v04("m/one", 0.6)))
    single = import_leaderboard(one)
    assert list(single.score["model"].values) == ["m/one"] and single.score.values.tolist() == [[0.6]]
    with pytest.raises(BsigError, match="apply to tables, not to lm-eval results"):
        import_leaderboard(one, model_column="model")


# --------------------------------------------------------------------------- show's warnings


def _score(values, benchmarks, models=("m1", "m2", "m3")) -> xr.DataArray:
    return with_metadata(xr.DataArray(np.asarray(values, float), dims=("model", "benchmark"),
                                      coords={"model": list(models), "benchmark": list(benchmarks)}, name="score"))


def test_performance_warnings():
    clean = _score([[0.5, 0.6, 0.7], [0.4, 0.55, 0.9], [0.3, 0.7, 0.1]], ["anatomy", "navigate", "word_sorting"])
    assert performance_warnings(clean) == []
    bad = _score(
        [[0.0, 0.45, 30.0, 0.2, 0.5], [0.3, 0.55, 40.0, 0.3, 0.5], [0.22, 0.40, 50.0, 0.1, 0.6]],
        ["anatomy", "navigate", "my_bench", "mmlu_virology", "virology"],
    )
    lines = performance_warnings(bad)
    assert lines == [
        "1 benchmark without metadata (family/format/category/function unknown): my_bench; pass --metadata with rows for them",
        "1 zero score (failed runs?) in 1 benchmark: anatomy (m1)",
        "5 scores below chance in 3 benchmarks (a failed run, a wrong metric or a percent/fraction mix?): "
        "anatomy < 0.25 (m3 0.22), navigate < 0.5 (m1 0.45, m3 0.4), mmlu_virology < 0.25 (m1 0.2, m3 0.1)",
        "duplicate benchmarks: mmlu_virology and virology are all 'virology'; keep one column each",
        "1 benchmark with scores in (1, 100], which look like percent: my_bench; bsig performance import --scale auto divides them by 100",
    ]
    twins = _score([[0.5, 0.6, 0.7], [0.5, 0.6, 0.7], [0.3, 0.7, 0.3]], ["anatomy", "nutrition", "virology"], ["A/x", "a/X ", "b"])
    assert performance_warnings(twins) == [
        "model names that differ only in case or spaces (duplicate runs?): A/x / a/X ",
        "models with identical scores on all 3 benchmarks (duplicate runs?): A/x = a/X ",
    ]
    # Chance from metadata: 1/choices, else 0.5 for true/false, else unknown (0: only zeros warned).
    levels = chance_levels(_score(np.ones((3, 5)) / 2, ["anatomy", "geometric_shapes", "hyperbaton", "word_sorting", "x"]))
    assert levels == {"anatomy": 0.25, "geometric_shapes": 1 / 11, "hyperbaton": 0.5, "word_sorting": 0.0, "x": 0.0}
    own = pd.DataFrame({"format": ["true_false", "multiple_choice"]}, index=pd.Index(["p", "q"], name="benchmark"))
    assert chance_levels(with_metadata(_score(np.ones((3, 2)), ["p", "q"]), own), own) == {"p": 0.5, "q": 0.0}


def test_cli_import_and_show(tmp_path, capsys):
    src = tmp_path / "board.csv"
    BOARD.to_csv(src, index=False)
    before = src.read_bytes()
    out = tmp_path / "perf.csv"
    main(["performance", "import", str(src), "--out", str(out)])
    captured = capsys.readouterr()
    assert "ignored 4 columns (not scores: Rank, Average ⬆️, #Params (B); not numeric: Type)" in captured.out
    assert f"wrote {out}: 4 models x 4 benchmarks" in captured.out and captured.err == ""
    _check(load_performance(out))
    main(["performance", "show", str(out)])
    shown = capsys.readouterr()
    assert shown.out.rstrip().endswith("ok: scores are complete and every benchmark varies") and shown.err == ""
    # Existing output: refused without --overwrite (one line), replaced with it; the input is never touched.
    with pytest.raises(SystemExit) as exc:
        main(["performance", "import", str(src), "--out", str(out), "--scale", "fraction"])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and err.count("\n") == 1 and "already exists; pass --overwrite" in err
    main(["performance", "import", str(src), "--out", str(out), "--scale", "fraction", "--overwrite"])
    warned = capsys.readouterr().err.splitlines()
    assert warned == ["bsig: warning: 4 benchmarks with scores in (1, 100], which look like percent: anatomy, high_school_biology, "
                      "boolean_expressions, virology; bsig performance import --scale auto divides them by 100"]
    main(["performance", "show", str(out)])
    shown = capsys.readouterr()
    assert "ok" not in shown.out.splitlines()[-1] and shown.out.splitlines()[-1].startswith("1 warning (see above); scores are complete")
    assert shown.err.count("warning: ") == 1
    with pytest.raises(SystemExit):
        main(["performance", "import", str(src), "--out", str(src), "--overwrite"])
    assert "bsig never writes over its inputs" in capsys.readouterr().err
    assert src.read_bytes() == before


# --------------------------------------------------------------------------- metadata


def test_metadata_labels():
    meta = load_metadata()
    assert meta.loc["global_facts", "family"] == "mmlu"
    for subject in MMLU_SUBJECTS:
        name = canonical_benchmark(subject)
        assert meta.loc[name, "family"] == "mmlu" and meta.loc[name, "format"] == "multiple_choice", subject
    bbh = meta[meta["family"] == "bbh"]
    assert dict(bbh["format"]) == BBH_FORMATS
    assert len(meta[meta["family"] == "mmlu"]) == 57 + 4 + 1  # subjects, 4 aggregates, mmlu itself


@pytest.mark.parametrize(
    "name, benchmark",
    [
        ("harness|hendrycksTest-anatomy|5", "anatomy"),
        ("hendrycksTest-high_school_macroeconomics", "high_school_macro_economics"),
        ("leaderboard_bbh_boolean_expressions", "boolean_expressions"),
        ("Boolean Expressions", "boolean_expressions"),
        ("High School Biology", "high_school_biology"),
        ("Tracking Shuffled Objects Three Objects", "tracking_shuffled_objects_three_objects"),
        ("harness|truthfulqa:mc|0", "truthfulqa"),
        ("harness|arc:challenge|25", "arc_challenge"),
        ("IFEval Raw", "IFEval Raw"),
    ],
)
def test_harness_and_title_case_names(name, benchmark):
    assert canonical_benchmark(name) == benchmark
