"""Report stage: figures (PNG, matplotlib Agg) and one self-contained HTML page for a bsig run.

Figures, each written only when its input is given:

- ``heatmap_<level>.png`` (paper Figure 4), one per level the overlap file holds: benchmarks ordered
  by category then name, category blocks separated and named along the top and right, a −1..1
  colour scale, stars for Spearman p-values (``*`` < 0.05, ``**`` < 0.01, ``***`` < 0.001; none for
  the semantic level).  Fonts and cells are fixed in points, so the figure grows with the number of
  benchmarks and stays readable at 90 and more (docs/DESIGN.md §4, "Report");
- ``coefficients.png`` (Figure 3): the exact Thrush (else Pre-select) coefficient distributions of up to
  four benchmarks from the screen histograms, with the tail thresholds (the 1 % / 99 % lines);
- ``within_cross.png`` (Figure 5 / Table 5): within- vs cross-category mean overlap per category;
- ``function_matrix.png`` (Figure 1 left): mean overlap between functions.

The HTML page embeds the figures as base64 PNGs (heatmaps at their natural size, shrunk at most to
9.5 px labels), the statistics tables, and the signature table: per benchmark its tokens with their
screen tail, coefficient and, when the signatures carry them, contexts and targets; LOO-CV R², the
screen's null FDR, and plain-language warnings (:func:`signature_summary`).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

from bsig_array.errors import BsigError, InputError, OptionError  # noqa: E402
from bsig_array.io.atomic import atomic_entries, atomic_output  # noqa: E402
from bsig_array.io.location import Location, as_location  # noqa: E402
from bsig_array.io.overlap_file import load_overlap, present_levels  # noqa: E402
from bsig_array.io.provenance import check_consistent, read_record, read_record_file  # noqa: E402
from bsig_array.io.screen_output import histogram_name, load_screen_summary  # noqa: E402
from bsig_array.io.signatures import attach_contexts, load_signatures  # noqa: E402
from bsig_array.io.stats_tables import read_stats  # noqa: E402
from bsig_array.schema import COEFFICIENT, LEVELS, UNKNOWN  # noqa: E402
from bsig_array.stages.stats import compute_stats  # noqa: E402

PREFERRED = ("gsm8k", "mbpp", "mmlu", "truthfulqa")


#: Heatmap tick-label and category-name font, in points.  Fixed: a label has the same size at 6 or
#: 90 benchmarks; the figure grows with the number of benchmarks instead.
LABEL_PT = 9.0
#: Side of one heatmap cell, in points: one label line (LABEL_PT plus leading) per row and column.
CELL_PT = 11.5
#: Significance stars, in points (three asterisks fit in one cell).
STAR_PT = 8.0
#: Resolution of every figure.  The page shows a heatmap at its natural size, or shrunk at most to
#: MIN_LABEL_PX (so a 9 pt label is 12.5 image pixels and never drawn below 9.5 CSS pixels).
DPI = 100
MIN_LABEL_PX = 9.5
#: A signature is "no better than shuffled scores" when its screen's ``null_fdr`` is at least this:
#: the label-permuted null puts (nearly) as many tokens beyond the tail boundaries as the real scores.
#: Measured (16 models, 1500 tokens, 20 permutations): pure noise 0.96-1.0; a real signal in one
#: tail only 0.3-0.8 (the other tail is chance); in both tails 0.
NULL_FDR_WARN = 0.9


def overlap_levels(overlap: xr.Dataset) -> tuple[list[str], dict[str, str]]:
    """The levels to draw (:func:`~bsig_array.io.overlap_file.present_levels`, report order) and
    the level variables left out (all-NaN placeholders of older files), each with its reason."""
    present = present_levels(overlap)
    missing = {lv: str(overlap[lv].attrs.get("reason", "no data")) for lv in LEVELS if lv in overlap and lv not in present}
    return present, missing


def _category_order(overlap: xr.Dataset) -> tuple[list[int], list[str]]:
    names = [str(b) for b in overlap["benchmark_a"].values]
    cats = [str(c) for c in overlap["category_a"].values] if "category_a" in overlap.coords else [UNKNOWN] * len(names)
    order = sorted(range(len(names)), key=lambda i: (cats[i] == UNKNOWN, cats[i], names[i]))
    return order, [cats[i] for i in order]


def _blocks(cats: Sequence[str]) -> list[tuple[int, int, str]]:
    """Runs of equal category along the ordered axis: (start, stop, name)."""
    out: list[tuple[int, int, str]] = []
    for i, c in enumerate(cats):
        if out and out[-1][2] == c:
            out[-1] = (out[-1][0], i + 1, c)
        else:
            out.append((i, i + 1, c))
    return out


def _count(n: int, noun: str) -> str:
    """``one level``, ``three levels``: the caption counts what is shown."""
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return f"{words[n] if n < len(words) else n} {noun}{'' if n == 1 else 's'}"


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _text_inches(text: str, points: float) -> float:
    """Rough width of a line of text (DejaVu Sans averages about 0.62 em per character)."""
    return len(text) * points * 0.62 / 72


def heatmap_figure(overlap: xr.Dataset, level: str) -> plt.Figure:
    """Figure 4, one level: the overlap matrix ordered by category, with block labels and stars.

    The cell size and every font are fixed in points (:data:`CELL_PT`, :data:`LABEL_PT`), so the
    figure grows with the number of benchmarks and a label stays readable at 90 and more.
    Categories are drawn as blocks: lines between them in the matrix and their names along the top
    and right edges.  Stars mark Spearman p-values (``*`` < .05, ``**`` < .01, ``***`` < .001).
    """
    order, cats = _category_order(overlap)
    names = [str(overlap["benchmark_a"].values[i]) for i in order]
    B = len(names)
    blocks = _blocks(cats)
    side = max(B * CELL_PT / 72, 3.0)  # inches
    labels = max(_text_inches(n, LABEL_PT) for n in names) + 0.15
    cat_text = max(_text_inches(c, LABEL_PT) for c in cats) + 0.25
    left, bottom, top, right = labels + 0.1, labels + 0.1, cat_text + 0.45, cat_text + 1.1
    W, H = left + side + right, bottom + side + top
    fig = plt.figure(figsize=(W, H), dpi=DPI)
    ax = fig.add_axes((left / W, bottom / H, side / W, side / H))
    m = np.asarray(overlap[level].transpose("benchmark_a", "benchmark_b").values, dtype=float)[np.ix_(order, order)]
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_xticks(range(B), names, rotation=90, fontsize=LABEL_PT)
    ax.set_yticks(range(B), names, fontsize=LABEL_PT)
    ax.tick_params(length=2, pad=2)
    if f"{level}_p" in overlap:
        p = np.asarray(overlap[f"{level}_p"].transpose("benchmark_a", "benchmark_b").values, dtype=float)[np.ix_(order, order)]
        # asterisks sit high in the line: nudge them down by 2.5 pt
        nudge = ax.transData + ScaledTranslation(0, -2.5 / 72, fig.dpi_scale_trans)
        for i, j in zip(*np.nonzero(p < 0.05)):
            if i != j:
                colour = "white" if abs(m[i, j]) > 0.55 else "black"
                ax.text(j, i, _stars(p[i, j]), ha="center", va="center", fontsize=STAR_PT, fontweight="bold",
                        color=colour, transform=nudge)
    cell = side * 72 / B  # points per cell: the band and its gaps are fixed in points
    band, gap = 5.0 / cell, 2.0 / cell
    shades = ("#555555", "#aaaaaa")
    for k, (start, stop, cat) in enumerate(blocks):
        if start:
            ax.axhline(start - 0.5, color="black", lw=1.2)
            ax.axvline(start - 0.5, color="black", lw=1.2)
        mid = (start + stop - 1) / 2
        for rect in (
            plt.Rectangle((start - 0.5, -0.5 - band - gap), stop - start, band, clip_on=False),
            plt.Rectangle((B - 0.5 + gap, start - 0.5), band, stop - start, clip_on=False),
        ):
            rect.set_color(shades[k % 2])
            ax.add_patch(rect)
        ax.text(mid, -0.5 - band - 2 * gap, cat, rotation=90, ha="center", va="bottom", fontsize=LABEL_PT, clip_on=False)
        ax.text(B - 0.5 + band + 2 * gap, mid, cat, ha="left", va="center", fontsize=LABEL_PT, clip_on=False)
    title = f"{level} overlap ({B} benchmarks)"
    for key in ("mode", "control"):  # signed/paper signature, the controlled-for variable
        if key in overlap[level].attrs:
            title += f"; {key}: {overlap[level].attrs[key]}"
    fig.text((left + side / 2) / W, 1 - 0.08 / H, title, ha="center", va="top", fontsize=12)
    bar = min(side, 4.0)
    cax = fig.add_axes(((left + side + cat_text + 0.35) / W, (bottom + (side - bar) / 2) / H, 0.18 / W, bar / H))
    unit = "mean cosine" if level.startswith("semantic") else "partial Spearman ρ" if level.endswith("_controlled") else "Spearman ρ"
    fig.colorbar(image, cax=cax, label=unit)
    cax.tick_params(labelsize=LABEL_PT)
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


def _testable(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a stats table that carry a result (rows with a "not testable" note carry none)."""
    if "note" not in table.columns:
        return table
    return table[table["note"].isna() | (table["note"].astype(str).str.strip() == "")]


def within_cross_figure(tables: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Figure 5 / Table 5: within vs cross mean overlap per category, one panel per level."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 3.8), squeeze=False, constrained_layout=True)
    for ax, (level, table) in zip(axes[0], tables.items()):
        table = _testable(table)
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
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, classes="tbl")


_TABLE_NOTES = {
    "family_format": "<p><code>p_value</code>: benchmark-label permutation test (valid: pairs share benchmarks). "
                     "<code>U_paper</code>, <code>p_paper</code>: the paper's Mann–Whitney U, which treats the pairs as "
                     "independent and so overstates significance.</p>",
}


def _cell(v: float, fmt: str = ".3g") -> str:
    return format(v, fmt) if np.isfinite(v) else "–"


def signature_summary(signatures: xr.Dataset, screen: xr.Dataset | None = None) -> pd.DataFrame:
    """One row per benchmark: size and fit of its signature, the screen's null FDR, and warnings.

    ``null_fdr`` comes from the screen (``bsig screen --null-permutations``) for the coefficient
    the signatures were selected from (their ``screen_method``); NaN without it.  ``warning`` names
    each failed check, ``;``-separated: ``chance`` when ``null_fdr`` ≥ :data:`NULL_FDR_WARN`
    (with the scores shuffled across models the screen finds nearly as many extreme tokens as with
    the real ones: its candidates are expected to be noise), ``no held-out fit`` when ``loocv_r2``
    ≤ 0 or is missing (the selection predicts a left-out model's score no better than the mean).
    """
    names = [str(b) for b in signatures["benchmark"].values]
    tok = np.asarray(signatures["signature_token"].transpose("benchmark", ...).values)

    def column(key: str) -> np.ndarray:
        return np.asarray(signatures[key].values, dtype=float) if key in signatures else np.full(len(names), np.nan)

    frame = pd.DataFrame(
        {
            "category": [str(c) for c in signatures["category"].values] if "category" in signatures.coords else UNKNOWN,
            "tokens": (tok >= 0).sum(axis=1),
            "r2": column("r2"),
            "r2_adj": column("r2_adj"),
            "loocv_r2": column("loocv_r2"),
            "null_fdr": np.nan,
        },
        index=pd.Index(names, name="benchmark"),
    )
    method = str(signatures.attrs.get("screen_method", "thrush"))
    if screen is not None and "null_fdr" in screen and method in screen[COEFFICIENT].values:
        fdr = screen["null_fdr"].sel({COEFFICIENT: method}).to_series()
        frame["null_fdr"] = [float(fdr.get(b, np.nan)) for b in names]
    frame["warning"] = [
        "; ".join(w for w, bad in (("chance", fdr >= NULL_FDR_WARN), ("no held-out fit", not loo > 0)) if bad)
        for fdr, loo in zip(frame["null_fdr"], frame["loocv_r2"])
    ]
    return frame


def _tails(screen: xr.Dataset | None, method: str, benchmark: str, tokens: np.ndarray) -> list[str]:
    """The screen tail (``low``/``high``, else ``–``) of each of one benchmark's signature tokens."""
    out = ["–"] * len(tokens)
    if screen is None or "candidate_token" not in screen or method not in screen[COEFFICIENT].values:
        return out
    if benchmark not in screen["benchmark"].values:
        return out
    cand = screen["candidate_token"].sel({COEFFICIENT: method, "benchmark": benchmark}).transpose("tail", ...)
    for tail, row in zip(cand["tail"].values, cand.values):  # k per tail can be large: no per-token dict
        for i in np.flatnonzero(np.isin(tokens, row)):
            out[i] = str(tail)
    return out


_WARNINGS = {
    "chance": (
        "do no better than shuffled scores: null FDR ≥ {fdr}. When a benchmark's scores are shuffled across "
        "models (the label-permuted null of <code>bsig screen --null-permutations</code>), the screen still puts "
        "at least {pct} as many tokens beyond its tail boundaries as it kept with the real scores, so the tokens "
        "the signature was chosen from are expected by chance, whatever its in-sample R². (A real signal in one "
        "tail gives about 0.5, in both tails near 0.)"
    ),
    "no held-out fit": (
        "do not predict held-out models: LOO-CV R² ≤ 0, i.e. redoing the selection without a model predicts "
        "that model's score no better than the mean score does."
    ),
}


def _signatures_html(signatures: xr.Dataset, screen: xr.Dataset | None = None) -> str:
    """The signature section: a summary table with warnings, then each benchmark's tokens."""
    summary = signature_summary(signatures, screen)
    method = str(signatures.attrs.get("screen_method", "thrush"))
    tok = signatures["signature_token"].transpose("benchmark", "step").values

    def per_step(key: str) -> np.ndarray | None:
        return signatures[key].transpose("benchmark", "step").values if key in signatures else None

    coef, ctx, tgt = per_step("coefficient"), per_step("context"), per_step("target")
    parts = [f"<p>Signatures selected from the {html.escape(method)} tails; coefficients on the "
             f"{html.escape(str(signatures.attrs.get('covariate', 'perplexity')))} scale of the final fit.</p>"]
    if screen is None:
        parts.append("<p>Pass <code>--screen</code> to show each token's tail and the null FDR.</p>")
    elif "null_fdr" not in screen:
        parts.append("<p>The screen ran without <code>--null-permutations</code>, so no signature was checked against "
                     "shuffled scores; rerun <code>bsig screen --null-permutations 20</code> to get each null FDR.</p>")
    if ctx is None:
        parts.append("<p>No contexts: run <code>bsig select --corpus</code> or pass <code>--corpus</code> to show them.</p>")
    fdr_text, pct = f"{NULL_FDR_WARN:g}", f"{NULL_FDR_WARN:.0%}"
    for key, text in _WARNINGS.items():
        flagged = [b for b, w in summary["warning"].items() if key in w.split("; ")]
        if flagged:
            parts.append(
                f"<p class=warn><b>Warning: {len(flagged)} of {len(summary)} signatures</b> "
                f"({html.escape(', '.join(flagged[:12]))}{', …' if len(flagged) > 12 else ''}) {text.format(fdr=fdr_text, pct=pct)}</p>"
            )
    shown = summary.rename(columns={"r2": "R²", "r2_adj": "R² adj", "loocv_r2": "LOO-CV R²", "null_fdr": "null FDR"})
    parts.append(_table_html(shown))
    for i, b in enumerate(summary.index):
        steps = np.flatnonzero(tok[i] >= 0)
        tails = _tails(screen, method, b, tok[i, steps])
        rows = []
        for s, tail in zip(steps, tails):
            t = int(tok[i, s])
            cells = [str(int(s) + 1), str(t), tail, _cell(float(coef[i, s]), ".4g") if coef is not None else "–"]
            if ctx is not None:
                cells.append(f"<span class=ctx>{html.escape(str(ctx[i, s]))}</span>")
                cells.append(f"<b>{html.escape(str(tgt[i, s])) if tgt is not None else ''}</b>")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("step", "token", "tail", "coefficient") + (("context", "target") if ctx is not None else ()))
        row = summary.loc[b]
        fit = f"LOO-CV R² = {_cell(row['loocv_r2'])}, null FDR = {_cell(row['null_fdr'])}"
        warn = f" <span class=warn>⚠ {html.escape(row['warning'])}</span>" if row["warning"] else ""
        parts.append(
            f"<details><summary><b>{html.escape(b)}</b> — {int(row['tokens'])} tokens, {fit}{warn}</summary>"
            f"<table class='tbl tok'><tr>{head}</tr>{''.join(rows)}</table></details>"
        )
    return "\n".join(parts)


def write_report(
    out: str | os.PathLike | Location,
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
        Output directory (a local path, or a URL: the page and figures are then uploaded when complete
        and the page's :class:`~bsig_array.io.location.Location` is returned).
    overlap
        Output of :func:`bsig_array.stages.overlap.compute_overlaps`.
    screen
        Output of ``bsig screen``: the coefficient distributions, each signature token's tail and
        each signature's null FDR.
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
    target = as_location(out)
    if target.is_remote:  # made in a local scratch directory, uploaded when complete
        with atomic_entries(target, ["report.html", "figures"]) as scratch:
            write_report(scratch, overlap=overlap, screen=screen, signatures=signatures, stats=stats, title=title,
                         extra_html=extra_html)
        return target.child("report.html")  # type: ignore[return-value]  # a Location: callers print or pass it on
    out = target.path
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []

    def figure(fig: plt.Figure, name: str, caption: str, labelled: bool = False) -> None:
        data = _png(fig, figdir / f"{name}.png")
        style = ""
        if labelled:  # natural size when it fits, never shrunk below MIN_LABEL_PX labels: scroll instead
            width = int.from_bytes(data[16:20], "big")  # PNG IHDR
            style = f" style='width:100%;max-width:{width}px;min-width:{math.ceil(width * MIN_LABEL_PX * 72 / (LABEL_PT * DPI))}px'"
        sections.append(
            f"<figure class=scroll><a href='figures/{name}.png'><img alt='{name}'{style} "
            f"src='data:image/png;base64,{base64.b64encode(data).decode()}'></a>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    if overlap is not None:
        present, missing = overlap_levels(overlap)
        shown = f"{_count(len(present), 'level')}" + (f" ({', '.join(present)})" if present else "")
        intro = f"Overlap at {shown}, benchmarks ordered by category."
        if missing:
            intro += " Not computed: " + "; ".join(f"{lv} ({why})" for lv, why in missing.items()) + "."
        sections.append(f"<h2>Overlap matrices</h2><p>{html.escape(intro)}</p>")
        for level in present:
            stars = "stars: Spearman p < .05/.01/.001" if f"{level}_p" in overlap else "no p-values at this level"
            caption = f"{level} overlap of {overlap.sizes['benchmark_a']} benchmarks; category blocks named along the top and right; {stars}."
            figure(heatmap_figure(overlap, level), f"heatmap_{level}", caption, labelled=True)
    if screen is not None:
        sections.append("<h2>Coefficient distributions</h2>")
        figure(coefficients_figure(screen), "coefficients", "Exact token-level coefficient distributions with the tail thresholds.")
    if stats:
        sections.append("<h2>Statistics</h2>")
        # a table whose only rows say "not testable" (a note, no values) has nothing to draw
        wc = {lv: t["within_cross"] for lv, t in stats.items()
              if "within_cross" in t and len(_testable(t["within_cross"]))}
        if wc:
            figure(within_cross_figure(wc), "within_cross", "Within- vs cross-category mean overlap (stars: benchmark-label permutation p-value).")
        for level, tables in stats.items():
            if "function_matrix" in tables and len(tables["function_matrix"]):
                figure(matrix_figure(tables["function_matrix"], f"{level}: mean overlap between functions"), f"function_matrix_{level}", "Function-level overlap.")
            for key, frame in tables.items():
                note = _TABLE_NOTES[key] if key in _TABLE_NOTES and "p_paper" in frame else ""
                sections.append(f"<h3>{html.escape(level)}: {html.escape(key.replace('_', ' '))}</h3>{note}{_table_html(frame)}")
    if signatures is not None:
        sections.append("<h2>Signatures</h2>" + _signatures_html(signatures, screen))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} figcaption {{ color: #555; font-size: 90%; }}
figure.scroll {{ overflow-x: auto; }} .warn {{ background: #fff3cd; }}
.tok td:nth-child(n+5) {{ text-align: left; }}
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
    allow_mismatch: bool = False,
) -> dict:
    """Open the report's inputs from paths or URLs (keyword arguments of :func:`write_report`).

    Without ``stats``, statistics are computed from ``overlap`` for every level that has data.
    With ``corpus``, contexts are attached to signatures that lack them.  Inputs made from
    different performance matrices or stores are refused unless ``allow_mismatch``
    (:func:`bsig_array.io.provenance.check_consistent`).
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
    named = {kind: as_location(path) for kind, path in (("overlap", overlap), ("screen", screen), ("signatures", signatures))
             if path is not None}  # a Location prints as the URL without credentials
    records = {f"{kind} {where}": read_record(out[kind].attrs, f"{kind} {where}") for kind, where in named.items()}
    stats_dir = None if stats is None else as_location(stats)
    if stats_dir is not None and stats_dir.is_dir():
        records[f"stats {stats_dir}"] = read_record_file(stats_dir)
    check_consistent(records, allow_mismatch=allow_mismatch)
    if stats_dir is not None:
        if not stats_dir.is_dir():
            raise InputError(f"stats directory {stats_dir} does not exist; create it with bsig stats")
        out["stats"] = read_stats(stats_dir)
    elif out["overlap"] is not None:
        ov = out["overlap"]
        levels, _ = overlap_levels(ov)
        out["stats"] = {}
        for lv in levels:
            try:
                out["stats"][lv] = compute_stats(ov, metadata, level=lv)
            except BsigError:  # e.g. a single category: the report simply shows no statistics
                continue
    return out
