"""Report: PNG figures and one self-contained HTML page (rendered in headless Chromium when present)."""

from __future__ import annotations

import base64
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from test_overlap import make_inputs

from bsig_array.errors import BsigError
from bsig_array.io.overlap_file import write_overlap
from bsig_array.stages.overlap import compute_overlaps
from bsig_array.stages.report import write_report
from bsig_array.stages.screen.driver import screen
from bsig_array.stages.stats import compute_stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inputs():
    nll, signatures, score = make_inputs(21, m=7, n=200, B=6)
    score = score.assign_coords(
        category=("benchmark", ["x", "x", "x", "y", "y", "y"]),
        function=("benchmark", ["math", "math", "logic", "logic", "knowledge", "knowledge"]),
        family=("benchmark", ["mmlu"] * 3 + ["bbh"] * 3),
        format=("benchmark", ["multiple_choice"] * 6),
    )
    overlap = compute_overlaps(signatures, nll, score)
    stats = {"signature": compute_stats(overlap, resamples=99, threshold=0.0), "performance": compute_stats(overlap, level="performance", resamples=99)}
    scr = screen(nll, score, alpha=0.05, backend="numpy")
    sig = signatures.copy()
    steps = sig.sizes["step"]
    sig["coefficient"] = (("benchmark", "step"), np.where(sig.signature_token.values >= 0, 0.5, np.nan))
    sig["context"] = (("benchmark", "step"), np.full((6, steps), "if a < b and <script>x</script>", dtype=object))
    sig["target"] = (("benchmark", "step"), np.full((6, steps), "then", dtype=object))
    sig["r2_adj"] = ("benchmark", np.linspace(0.1, 0.9, 6))
    return overlap, scr, sig, stats


def test_report_has_figures_tables_and_escaped_contexts(tmp_path, inputs):
    overlap, scr, sig, stats = inputs
    page = write_report(tmp_path, overlap=overlap, screen=scr, signatures=sig, stats=stats, title="t & r")
    text = page.read_text()
    for name in ("heatmap_signature", "heatmap_performance", "coefficients", "within_cross", "function_matrix_signature", "function_matrix_performance"):
        data = (tmp_path / "figures" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert base64.b64encode(data).decode() in text  # embedded, self-contained
    assert "src='http" not in text and "<link" not in text
    assert "t &amp; r" in text
    assert "signature: within cross" in text and "performance: clique" in text
    assert "p_paper" in stats["signature"]["family_format"] and "the paper's Mann–Whitney U" in text
    wc = stats["signature"]["within_cross"]
    assert f"{wc.loc['overall', 'within']:.4g}" in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "<script>x" not in text
    first = int(sig.signature_token.values[0, 0])
    assert f"<td>{first}</td>" in text
    assert text.count("<details>") == 6


def test_heatmap_stars_follow_p_values(inputs):
    from bsig_array.stages.report import heatmap_figure

    overlap = inputs[0].copy()
    overlap["performance_p"][:] = 0.5
    overlap["performance_p"][0, 1] = overlap["performance_p"][1, 0] = 0.0005
    overlap["performance_p"][2, 3] = overlap["performance_p"][3, 2] = 0.02
    stars = [t.get_text() for ax in heatmap_figure(overlap, "performance").axes for t in ax.texts if "*" in t.get_text()]
    assert sorted(stars) == ["*", "*", "***", "***"]


def test_cli_report_computes_stats_when_absent(tmp_path, inputs):
    from bsig_array.cli.main import cli

    overlap, scr, sig, _ = inputs
    write_overlap(overlap, tmp_path / "o.nc")
    scr.to_zarr(tmp_path / "s.zarr", zarr_format=3)
    res = CliRunner().invoke(cli, ["report", "--out", str(tmp_path / "r"), "--overlap", str(tmp_path / "o.nc"), "--screen", str(tmp_path / "s.zarr")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r" / "report.html").read_text()
    assert "signature: within cross" in text and "coefficients" in text
    with pytest.raises(BsigError, match="nothing to report"):
        write_report(tmp_path / "empty")


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None, reason="headless Chromium not installed")
def test_page_renders_in_headless_chromium(tmp_path, inputs):
    overlap, scr, sig, stats = inputs
    page = write_report(tmp_path, overlap=overlap, screen=scr, signatures=sig, stats=stats)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000",
           f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    # a rendered page is not blank: the screenshot has many distinct colours (figures)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert len(np.unique(img.reshape(-1, img.shape[-1])[::7], axis=0)) > 50
