"""Report stage: figures (PNG, matplotlib Agg) and one self-contained HTML page for a bsig run.

Figures, each written only when its input is given:

- ``heatmaps.png`` (paper Figure 4): the signature, performance and semantic overlap matrices side by
  side, benchmarks ordered by category then name, one shared −1..1 colour scale, stars for Spearman
  p-values (``*`` < 0.05, ``**`` < 0.01, ``***`` < 0.001; none for the semantic level);
- ``coefficients.png`` (Figure 3): the exact Thrush (else Pre-select) coefficient distributions of up to
  four benchmarks from the screen histograms, with the tail thresholds (the 1 % / 99 % lines);
- ``within_cross.png`` (Figure 5 / Table 5): within- vs cross-category mean overlap per category;
- ``function_matrix.png`` (Figure 1 left): mean overlap between functions.

The HTML page embeds the figures as base64 PNGs, the statistics tables, and each benchmark's
signature tokens with their coefficients and, when the signatures carry them, contexts and targets.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from bsig_array.errors import BsigError, InputError, OptionError  # noqa: E402
from bsig_array.io.atomic import atomic_output  # noqa: E402
from bsig_array.io.overlap_file import load_overlap  # noqa: E402
from bsig_array.io.screen_output import histogram_name, load_screen_summary  # noqa: E402
from bsig_array.io.signatures import attach_contexts, load_signatures  # noqa: E402
from bsig_array.io.stats_tables import read_stats  # noqa: E402
from bsig_array.schema import COEFFICIENT, LEVELS  # noqa: E402
from bsig_array.stages.stats import compute_stats  # noqa: E402

PREFERRED = ("gsm8k", "mbpp", "mmlu", "truthfulqa")


def _category_order(overlap: xr.Dataset) -> tuple[list[int], list[str]]:
    names = [str(b) for b in overlap["benchmark_a"].values]
    cats = [str(c) for c in overlap["category_a"].values] if "category_a" in overlap.coords else ["unknown"] * len(names)
    order = sorted(range(len(names)), key=lambda i: (cats[i], names[i]))
    return order, [cats[i] for i in order]


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def heatmaps_figure(overlap: xr.Dataset) -> plt.Figure:
    """Figure 4: the overlap matrices ordered by category with a shared −1..1 scale and stars."""
    levels = [lv for lv in LEVELS if lv in overlap]
    order, cats = _category_order(overlap)
    names = [str(overlap["benchmark_a"].values[i]) for i in order]
    B = len(names)
    size = min(max(4.0, 0.22 * B + 2), 14.0)
    fig, axes = plt.subplots(1, len(levels), figsize=(size * len(levels), size), squeeze=False, constrained_layout=True)
    image = None
    for ax, level in zip(axes[0], levels):
        m = np.asarray(overlap[level].transpose("benchmark_a", "benchmark_b").values, dtype=float)[np.ix_(order, order)]
        image = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        title = level
        if not np.isfinite(m).any():
            title += f" (n/a: {overlap[level].attrs.get('reason', 'no data')})"
        ax.set_title(title)
        fontsize = max(3.0, min(8.0, 200.0 / max(B, 1)))
        ax.set_xticks(range(B), names, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(B), names, fontsize=fontsize)
        if f"{level}_p" in overlap:
            p = np.asarray(overlap[f"{level}_p"].transpose("benchmark_a", "benchmark_b").values, dtype=float)[np.ix_(order, order)]
            for i in range(B):
                for j in range(B):
                    if i != j and (s := _stars(p[i, j])):
                        ax.text(j, i, s, ha="center", va="center", fontsize=fontsize * 0.8, color="black")
        for k in range(1, B):  # category boundaries
            if cats[k] != cats[k - 1]:
                ax.axhline(k - 0.5, color="black", lw=0.8)
                ax.axvline(k - 0.5, color="black", lw=0.8)
    assert image is not None  # levels is not empty (subplots needs at least one column)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.6, label="Spearman ρ / cosine")
    return fig


def coefficients_figure(screen: xr.Dataset, benchmarks: Sequence[str] | None = None) -> plt.Figure:
    """Figure 3: exact coefficient distributions with the low/high tail thresholds."""
    method = "thrush" if histogram_name("thrush") in screen else "preselect"
    if histogram_name(method) not in screen:
        raise InputError("the screen output has no histogram_thrush/histogram_preselect; pass the output of bsig screen")
    hist = screen[histogram_name(method)]
    names = [str(b) for b in screen["benchmark"].values]
    if benchmarks is None:
        benchmarks = [b for b in PREFERRED if b in names] or names[:4]
    x = np.asarray(screen[f"{method}_bin"].values, dtype=float)
    if method == "preselect":
        x = x / max(x.max(), 1.0)  # codes η·Z -> η
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4 * len(benchmarks), 3.2), squeeze=False, constrained_layout=True)
    for ax, b in zip(axes[0], benchmarks):
        counts = np.asarray(hist.sel(benchmark=b).values, dtype=float)
        nz = np.flatnonzero(counts)
        lo, hi = (nz[0], nz[-1]) if len(nz) else (0, len(x) - 1)
        ax.fill_between(x[lo : hi + 1], counts[lo : hi + 1], step="mid", alpha=0.6)
        if "threshold" in screen:
            th = screen["threshold"].sel({COEFFICIENT: method, "benchmark": b})
            for tail, colour in (("low", "tab:blue"), ("high", "tab:red")):
                ax.axvline(float(th.sel(tail=tail)), color=colour, ls="--", lw=1, label=f"{tail} tail")
        ax.set_title(b)
        ax.set_xlabel("γ (Thrush)" if method == "thrush" else "η (Pre-select)")
        ax.set_ylabel("tokens")
    axes[0][0].legend(fontsize=7)
    return fig


def within_cross_figure(tables: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Figure 5 / Table 5: within vs cross mean overlap per category, one panel per level."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 3.8), squeeze=False, constrained_layout=True)
    for ax, (level, table) in zip(axes[0], tables.items()):
        idx = np.arange(len(table))
        ax.bar(idx - 0.2, table["within"], 0.4, label="within")
        ax.bar(idx + 0.2, table["cross"], 0.4, label="cross")
        for i, p in enumerate(table["p_value"]):
            if s := _stars(float(p)):
                ax.text(i, max(table["within"].iloc[i], table["cross"].iloc[i]), s, ha="center", va="bottom")
        ax.set_xticks(idx, [str(c) for c in table.index], rotation=45, ha="right", fontsize=8)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(f"{level}: within vs cross category")
        ax.legend(fontsize=8)
    return fig


def matrix_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    """A labelled −1..1 heatmap of a small square table (the function matrix)."""
    n = len(table)
    fig, ax = plt.subplots(figsize=(1.0 * n + 3, 0.9 * n + 2), constrained_layout=True)
    image = ax.imshow(table.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), table.index)
    for i in range(n):
        for j in range(n):
            v = float(table.iat[i, j])
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _png(fig: plt.Figure, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, classes="tbl")


def _signatures_html(signatures: xr.Dataset) -> str:
    parts = []
    tok = signatures["signature_token"].transpose("benchmark", "step").values
    coef = signatures["coefficient"].transpose("benchmark", "step").values if "coefficient" in signatures else None
    ctx = signatures["context"].transpose("benchmark", "step").values if "context" in signatures else None
    tgt = signatures["target"].transpose("benchmark", "step").values if "target" in signatures else None
    summary_keys = [k for k in ("n_selected", "r2", "r2_adj", "loocv_r2") if k in signatures]
    for i, b in enumerate(signatures["benchmark"].values):
        keep = np.flatnonzero(tok[i] >= 0)
        summary = ", ".join(f"{k} = {float(signatures[k].values[i]):.3g}" for k in summary_keys)
        rows = []
        for s in keep:
            cells = [str(int(s) + 1), str(int(tok[i, s]))]
            cells.append(f"{coef[i, s]:.4g}" if coef is not None and np.isfinite(coef[i, s]) else "–")
            if ctx is not None:
                cells.append(f"<span class=ctx>{html.escape(str(ctx[i, s]))}</span> <b>{html.escape(str(tgt[i, s]) if tgt is not None else '')}</b>")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = "<tr><th>step</th><th>token</th><th>coefficient</th>" + ("<th>context → target</th>" if ctx is not None else "") + "</tr>"
        parts.append(
            f"<details><summary><b>{html.escape(str(b))}</b> — {len(keep)} tokens {html.escape(summary)}</summary>"
            f"<table class=tbl>{head}{''.join(rows)}</table></details>"
        )
    note = "" if ctx is not None else "<p>No contexts: run <code>bsig select --corpus</code> or pass <code>--corpus</code> to show them.</p>"
    return note + "\n".join(parts)


def write_report(
    out: str | os.PathLike,
    *,
    overlap: xr.Dataset | None = None,
    screen: xr.Dataset | None = None,
    signatures: xr.Dataset | None = None,
    stats: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    title: str = "bsig report",
    extra_html: str = "",
) -> Path:
    """Write the figures to ``OUT/figures/`` and the page to ``OUT/report.html``; return the page.

    Parameters
    ----------
    out
        Output directory.
    overlap
        Output of :func:`bsig_array.stages.overlap.compute_overlaps`.
    screen
        Output of ``bsig screen`` (for the coefficient distributions).
    signatures
        Output of ``bsig select`` (optionally with ``context``/``target``).
    stats
        Tables per level, as from :func:`bsig_array.io.stats_tables.read_stats`.
    title
        Page title.
    extra_html
        HTML inserted after the title (e.g. a run summary).
    """
    if overlap is None and screen is None and signatures is None and not stats:
        raise OptionError("nothing to report; pass at least one of --overlap, --screen, --signatures, --stats")
    out = Path(out)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []

    def figure(fig: plt.Figure, name: str, caption: str) -> None:
        data = _png(fig, figdir / f"{name}.png")
        sections.append(
            f"<figure><img alt='{name}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    if overlap is not None:
        sections.append("<h2>Overlap matrices</h2>")
        figure(heatmaps_figure(overlap), "heatmaps", "Overlap at three levels, ordered by category; stars: Spearman p < .05/.01/.001.")
    if screen is not None:
        sections.append("<h2>Coefficient distributions</h2>")
        figure(coefficients_figure(screen), "coefficients", "Exact token-level coefficient distributions with the tail thresholds.")
    if stats:
        sections.append("<h2>Statistics</h2>")
        wc = {lv: t["within_cross"] for lv, t in stats.items() if "within_cross" in t and len(t["within_cross"])}
        if wc:
            figure(within_cross_figure(wc), "within_cross", "Within- vs cross-category mean overlap (stars: relabeling p-value).")
        for level, tables in stats.items():
            if "function_matrix" in tables and len(tables["function_matrix"]):
                figure(matrix_figure(tables["function_matrix"], f"{level}: mean overlap between functions"), f"function_matrix_{level}", "Function-level overlap.")
            for key, frame in tables.items():
                sections.append(f"<h3>{html.escape(level)}: {html.escape(key.replace('_', ' '))}</h3>{_table_html(frame)}")
    if signatures is not None:
        sections.append("<h2>Signatures</h2>" + _signatures_html(signatures))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} figcaption {{ color: #555; font-size: 90%; }}
.tbl {{ border-collapse: collapse; font-size: 85%; margin: .5em 0; }}
.tbl td, .tbl th {{ border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: right; }}
.ctx {{ color: #666; }} details {{ margin: .3em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{extra_html}
{''.join(sections)}
</body></html>
"""
    path = out / "report.html"
    with atomic_output(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def load_inputs(
    *,
    overlap: str | os.PathLike | None = None,
    screen: str | os.PathLike | None = None,
    signatures: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
    corpus: str | os.PathLike | None = None,
    metadata: str | os.PathLike | None = None,
) -> dict:
    """Open the report's inputs from paths (keyword arguments of :func:`write_report`).

    Without ``stats``, statistics are computed from ``overlap`` for every level that has data.
    With ``corpus``, contexts are attached to signatures that lack them.
    """
    out: dict = {"overlap": None, "screen": None, "signatures": None, "stats": None}
    if overlap is not None:
        out["overlap"] = load_overlap(overlap)
    if screen is not None:
        out["screen"] = load_screen_summary(screen)
    if signatures is not None:
        out["signatures"] = load_signatures(signatures)
        if corpus is not None and "context" not in out["signatures"]:
            out["signatures"] = attach_contexts(out["signatures"], corpus)
    if stats is not None:
        if not Path(stats).is_dir():
            raise InputError(f"stats directory {stats} does not exist; create it with bsig stats")
        out["stats"] = read_stats(stats)
    elif out["overlap"] is not None:
        ov = out["overlap"]
        levels = [lv for lv in LEVELS if lv in ov and np.isfinite(ov[lv].values).any()]
        out["stats"] = {}
        for lv in levels:
            try:
                out["stats"][lv] = compute_stats(ov, metadata, level=lv)
            except BsigError:  # e.g. a single category: the report simply shows no statistics
                continue
    return out
