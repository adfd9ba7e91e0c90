"""The report at leaderboard scale and its signature table.

- 90 benchmarks: the heatmap's tick labels are measured in the figure (matplotlib text extents at the
  saved resolution) and the page is rendered in headless Chromium, which reports each image's
  displayed width; label size × displayed / natural width must be at least 8 CSS pixels.
- Only the overlap levels present in the file are drawn, and the caption counts them.
- The signature table of a real screen → select run on a planted pool with a real corpus: tokens,
  tails, coefficients, contexts, targets, LOO-CV R², null FDR, and the warning on chance signatures.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from bsig_array.io.corpus_store import feature_context
from bsig_array.io.overlap_file import load_overlap, write_overlap
from bsig_array.io.screen_output import open_screen, write_screen
from bsig_array.io.signatures import write_signatures
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.corpus import build_corpus
from bsig_array.stages.overlap import compute_overlaps
from bsig_array.stages.report import DPI, LABEL_PT, NULL_FDR_WARN, heatmap_figure, signature_summary, write_report
from bsig_array.stages.screen.driver import screen
from bsig_array.stages.select import select_signatures

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
CATEGORIES = ("STEM", "humanities", "social_sciences", "other")
DIMS = ("benchmark_a", "benchmark_b")


def overlap_dataset(B: int, levels: dict[str, bool], seed: int = 0) -> xr.Dataset:
    """Random symmetric matrices for ``levels`` (name -> has p-values), MMLU-like names and categories."""
    rng = np.random.default_rng(seed)
    names = [f"high_school_government_and_politics_{i:02d}" if i % 7 == 0 else f"subject_{i:02d}" for i in range(B)]
    cats = [CATEGORIES[i % 4] for i in range(B)]
    data = {}
    for level, with_p in levels.items():
        m = rng.uniform(-1, 1, (B, B))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        data[level] = (DIMS, m)
        if with_p:
            p = rng.uniform(0, 0.2, (B, B))
            data[f"{level}_p"] = (DIMS, (p + p.T) / 2)
    coords = {"benchmark_a": names, "benchmark_b": names, "category_a": ("benchmark_a", cats), "category_b": ("benchmark_b", cats)}
    return xr.Dataset(data, coords=coords)


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, check=True, timeout=120, capture_output=True, text=True)


def displayed_widths(tmp_path, page, window: int) -> dict[str, tuple[int, int]]:
    """Each image's (displayed CSS width, natural width) as laid out by Chromium at ``window`` px."""
    probe = tmp_path / f"probe_{window}.html"
    script = ("<script>addEventListener('load', () => document.body.setAttribute('data-widths', JSON.stringify("
              "Object.fromEntries([...document.images].map(i => [i.alt, [i.clientWidth, i.naturalWidth]])))));</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = chromium(tmp_path, f"--window-size={window},1200", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r"data-widths=\"([^\"]*)\"", dom)
    assert found, dom[:500]
    return {k: tuple(v) for k, v in json.loads(found.group(1).replace("&quot;", '"')).items()}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 90-benchmark overlap file written and read by the package, and its report."""
    root = tmp_path_factory.mktemp("big")
    write_overlap(overlap_dataset(90, {"signature": True, "performance": True}), root / "o.nc")
    overlap = load_overlap(root / "o.nc")
    page = write_report(root / "report", overlap=overlap)
    return overlap, page


@pytest.fixture(scope="module")
def drawn(big):
    """The performance heatmap of ``big``, drawn at the resolution it is saved at."""
    fig = heatmap_figure(big[0], "performance")
    fig.canvas.draw()
    return fig, fig.canvas.get_renderer()


def test_heatmap_labels_are_fixed_size_and_do_not_collide(big, drawn):
    overlap, _ = big
    fig, renderer = drawn
    ax = fig.axes[0]
    ys = sorted((t.get_window_extent(renderer) for t in ax.get_yticklabels()), key=lambda b: b.y0)
    xs = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels()), key=lambda b: b.x0)
    assert len(ys) == len(xs) == 90
    assert {t.get_fontsize() for t in ax.get_yticklabels() + ax.get_xticklabels()} == {LABEL_PT}
    assert fig.dpi == DPI
    # neighbouring labels do not overlap (0.5 px of antialiasing slack)
    assert all(b.y0 >= a.y1 - 0.5 for a, b in zip(ys, ys[1:]))
    assert all(b.x0 >= a.x1 - 0.5 for a, b in zip(xs, xs[1:]))
    # every category is named once along the top and once along the right
    texts = [t.get_text() for t in ax.texts]
    assert all(texts.count(c) == 2 for c in CATEGORIES)
    stars = [t for t in ax.texts if set(t.get_text()) == {"*"}]
    p = overlap["performance_p"].values
    assert len(stars) == int(((p < 0.05) & ~np.eye(90, dtype=bool)).sum())
    assert {t.get_fontsize() for t in stars} == {8.0}


@needs_chromium
def test_labels_are_legible_when_chromium_lays_out_the_page(tmp_path, big, drawn):
    _, page = big
    fig, renderer = drawn
    heights = [t.get_window_extent(renderer).height for t in fig.axes[0].get_yticklabels()]
    em = LABEL_PT * DPI / 72  # font size in image pixels
    # the saved PNG is the figure's tight bounding box at DPI (pad 0.1 in): image px = figure px
    natural_expected = fig.get_tightbbox(renderer).width * DPI + 0.2 * DPI
    for window in (1400, 900):
        widths = displayed_widths(tmp_path, page, window)
        assert set(widths) == {"heatmap_signature", "heatmap_performance"}
        shown, natural = widths["heatmap_performance"]
        assert abs(natural - natural_expected) <= 2
        scale = shown / natural
        assert em * scale >= 8.0 and min(heights) * scale >= 8.0, (window, shown, natural, em, min(heights))
        assert scale >= 0.75  # shrunk at most to 9.5 px labels, then the figure scrolls


@needs_chromium
def test_big_report_renders_in_chromium(tmp_path, big):
    _, page = big
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri())
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1400)
    strong = (np.abs(img[..., 0] - img[..., 2]) > 0.3).sum()  # saturated red or blue heatmap cells
    assert strong > 200_000


def test_only_present_levels_are_drawn_and_counted(tmp_path):
    path = write_overlap(overlap_dataset(8, {"performance": True}), tmp_path / "scores_only.nc")
    page = write_report(tmp_path / "r", overlap=load_overlap(path))
    text = page.read_text()
    assert "Overlap at one level (performance)" in text
    assert "three levels" not in text and "heatmap_signature" not in text
    assert sorted(p.name for p in (tmp_path / "r" / "figures").iterdir()) == ["heatmap_performance.png"]

    ds = overlap_dataset(8, {"performance": True, "performance_controlled": True, "semantic": False})
    ds["semantic"][:] = np.nan
    ds["semantic"].attrs["reason"] = "no questions"
    ds["performance_controlled"].attrs["control"] = "mean score"
    text = write_report(tmp_path / "r2", overlap=ds).read_text()
    assert "Overlap at two levels (performance, performance_controlled)" in text
    assert "Not computed: semantic (no questions)" in text
    assert text.index("alt='heatmap_performance'") < text.index("alt='heatmap_performance_controlled'")
    fig = heatmap_figure(ds, "performance_controlled")
    assert "control: mean score" in fig.texts[0].get_text()
    assert fig.axes[1].get_ylabel() == "partial Spearman ρ"


@pytest.mark.parametrize("control", ["none", "general"])
def test_cli_report_of_a_scores_only_overlap_shows_its_levels(tmp_path, control):
    from bsig_array.cli.main import cli

    rng = np.random.default_rng(3)
    models, names = [f"m{i}" for i in range(12)], [f"b{j}" for j in range(8)]
    score = xr.DataArray(rng.normal(size=(12, 8)), dims=("model", "benchmark"), name="score",
                         coords={"model": models, "benchmark": names, "category": ("benchmark", ["x", "y"] * 4)})
    path = write_overlap(compute_overlaps(score=score, control=control), tmp_path / "o.nc")
    res = CliRunner().invoke(cli, ["report", "--out", str(tmp_path / "r"), "--overlap", str(path)])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r" / "report.html").read_text()
    figures = sorted(p.name for p in (tmp_path / "r" / "figures").glob("heatmap_*"))
    if control == "none":
        assert "Overlap at one level (performance)" in text and figures == ["heatmap_performance.png"]
    else:
        assert "Overlap at two levels (performance, performance_controlled)" in text
        assert figures == ["heatmap_performance.png", "heatmap_performance_controlled.png"]
    assert "performance: within cross" in text and "signature" not in text


# ----------------------------------------------------------------------------- signature table


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Real corpus, screen (with null permutations) and selection; benchmark ``planted`` has 30 tokens
    whose NLL falls with its score, ``noise_*`` have none."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(300)]
    docs = [" ".join(rng.choice(words, 40)) for _ in range(50)]
    build_corpus(docs, root / "corpus.zarr", sample_rate=1.0)
    m, d = 16, 1500
    models = [f"m{i}" for i in range(m)]
    benchmarks = ["planted", "noise_a", "noise_b"]
    score = rng.normal(size=(m, 3))
    nll = rng.gamma(2.0, 1.0, size=(m, d))
    planted_ids = rng.choice(d, 30, replace=False)
    nll[:, planted_ids] = 3.0 - score[:, [0]] + 0.05 * rng.normal(size=(m, 30))
    nll_da = xr.DataArray(nll.astype(np.float32), dims=("model", "token"), coords={"model": models, "token": np.arange(d)})
    score_da = xr.DataArray(score, dims=("model", "benchmark"), coords={"model": models, "benchmark": benchmarks}, name="score")
    write_screen(screen(nll_da, score_da, alpha=0.01, null_permutations=20, backend="numpy"), root / "screen.zarr")
    sig = select_signatures(open_screen(root / "screen.zarr"), score_da, covariate="nll", run=RunSpec.build(workers=1)).load()
    write_signatures(sig, root / "sig.zarr")
    return root, sig, planted_ids


def test_signature_table_shows_tokens_contexts_fit_and_null(tmp_path, planted):
    from bsig_array.cli.main import cli

    root, sig, planted_ids = planted
    args = ["report", "--out", str(tmp_path / "r"), "--screen", str(root / "screen.zarr"),
            "--signatures", str(root / "sig.zarr"), "--corpus", str(root / "corpus.zarr")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r" / "report.html").read_text()
    scr = open_screen(root / "screen.zarr")
    summary = signature_summary(sig, scr)
    # the planted signature starts with a planted token from the low tail (its NLL falls as the score rises)
    tokens = sig["signature_token"].sel(benchmark="planted").values
    tokens = tokens[tokens >= 0]
    assert len(tokens) >= 3 and tokens[0] in planted_ids
    contexts, targets = feature_context(root / "corpus.zarr", tokens)
    cand = scr["candidate_token"].sel(coefficient="thrush", benchmark="planted")
    tail = {int(t): str(name) for name in ("low", "high") for t in cand.sel(tail=name).values}
    assert tail[int(tokens[0])] == "low"
    coef = sig["coefficient"].sel(benchmark="planted").values
    for s, (t, ctx, tgt) in enumerate(zip(tokens, contexts, targets)):
        assert tgt
        row = (f"<tr><td>{s + 1}</td><td>{t}</td><td>{tail[int(t)]}</td><td>{coef[s]:.4g}</td>"
               f"<td><span class=ctx>{ctx}</span></td><td><b>{tgt}</b></td></tr>")
        assert row in text
    fdr = scr["null_fdr"].sel(coefficient="thrush").to_series()
    assert summary["null_fdr"].to_dict() == pytest.approx(fdr.to_dict())
    loo = float(sig["loocv_r2"].sel(benchmark="planted"))
    assert f"<b>planted</b> — {len(tokens)} tokens, LOO-CV R² = {loo:.3g}, null FDR = {fdr['planted']:.3g}</summary>" in text
    # chance: the noise benchmarks' screens are no better than shuffled scores; the planted one is
    # (its low tail is real, its high tail chance: FDR about 0.5)
    assert fdr["planted"] < NULL_FDR_WARN and min(fdr["noise_a"], fdr["noise_b"]) > NULL_FDR_WARN
    assert summary.loc["planted", "warning"] == ""
    assert all("chance" in summary.loc[b, "warning"] for b in ("noise_a", "noise_b"))
    assert "Warning: 2 of 3 signatures</b> (noise_a, noise_b) do no better than shuffled scores" in text


def test_signature_warnings_follow_their_definitions(planted):
    _, sig, _ = planted
    sig = sig.copy()
    scr = xr.Dataset(
        {"null_fdr": (("coefficient", "benchmark"), [[0.89, 0.9, 0.0], [1.0, 1.0, 1.0]])},
        coords={"coefficient": ["thrush", "preselect"], "benchmark": ["planted", "noise_a", "noise_b"]},
    )
    sig["loocv_r2"] = ("benchmark", [0.2, 0.2, 0.0])
    summary = signature_summary(sig, scr)
    assert summary["warning"].tolist() == ["", "chance", "no held-out fit"]
    # without null permutations only the held-out fit is checked, and the page says why
    summary = signature_summary(sig, scr.drop_vars("null_fdr"))
    assert summary["null_fdr"].isna().all() and summary["warning"].tolist() == ["", "", "no held-out fit"]
    sig["loocv_r2"][:] = np.nan
    assert signature_summary(sig)["warning"].tolist() == ["no held-out fit"] * 3
