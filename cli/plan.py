"""``bsig plan``: calibrate on this machine, then project a run's wall time, disk and peak memory."""

from __future__ import annotations

import textwrap
from typing import Any

import click

from bsig_array.cli.run import build_run, coefficients_option, run_options
from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS

#: Width of the printed tables and wrapped notes.
WIDTH = 116


@click.command()
@click.option("--tokens", type=float, required=True, help="Tokens in the store (d), e.g. 8.45e9.")
@click.option("--models", type=int, required=True, help="Models in the store (m).")
@click.option("--benchmarks", type=int, required=True, help="Benchmarks in the score table (B).")
@click.option("--alpha", type=float, default=DEFAULTS.alpha, show_default=True,
              help="Fraction kept per tail, in (0, 0.5): k = max(floor(alpha*d), 1).")
@coefficients_option("--methods", ("thrush", "preselect", "both"), "both", "Screening coefficients (bsig screen --coefficients).")
@run_options("memory_limit", "workers", "device", help={
    "memory_limit": "The run's --memory-limit for screen and select.",
    "workers": "N: cores of the run (default: this machine's CPU count).",
    "device": "gpu: also project each screen pass on one GPU from stated H200 figures (auto, cpu: the CPU)."})
@click.option("--json", "json_path", type=Where(dir_okay=False), help="Also write the projection as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
def plan(
    tokens: float, models: int, benchmarks: int, alpha: float, coefficients: str, memory_limit: str | None,
    workers: int | None, device: str | None, json_path: str | None, overwrite: bool,
) -> None:
    """Calibrate the kernels here (a few seconds), then project time, disk and memory of a full run.

    \b
    A short single-worker run times read + decode of a small store and every screening kernel
    (ranks, Thrush, Pre-select, histograms, tails, a forward-selection step) at the run's models
    and benchmarks; the projection scales it to N cores, adds disk traffic at a stated bandwidth,
    and takes peak memory from the stages' own memory plans.  The screen is projected in one pass
    and as the two-pass fallback.
    """
    from bsig_array.diagnostics.calibration import calibrate
    from bsig_array.diagnostics.projection import check_run, project
    from bsig_array.io.atomic import atomic_output, check_new_output
    from bsig_array.io.kinds import FILE
    from bsig_array.io.location import as_location

    # every check before the calibration spends its seconds
    check_run(tokens, models, benchmarks, alpha, coefficients)
    run = build_run(memory_limit=memory_limit, workers=workers, device=device, bars=False)
    if json_path:
        check_new_output(json_path, overwrite=overwrite, what="plan JSON", kind=FILE)
    calibration = calibrate(models, benchmarks, coefficients, alpha=alpha)
    result = project(
        calibration, n_tokens=tokens, n_models=models, n_benchmarks=benchmarks, alpha=alpha, coefficients=coefficients,
        run=run,
    )
    _print(result)
    if json_path:
        import json

        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {as_location(json_path)}")  # a URL without credentials


def _print(result: Any) -> None:
    """The projection as text and two rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    from bsig_array.diagnostics.formatting import format_duration, format_rate, format_size
    from bsig_array.stages.screen.cost import SPILLED_MEMBER_BYTES

    cal, disk, gpu = result.calibration, result.disk, result.device == "gpu"
    coefs = " + ".join(result.coefficients)
    click.echo(
        f"bsig plan: {result.n_tokens:,} tokens x {result.n_models} models x {result.n_benchmarks} benchmarks, "
        f"{coefs}, alpha = {result.alpha:g} (k = {result.k:,} per tail)"
    )
    click.echo(
        f"on N = {result.cores} cores, --memory-limit {format_size(result.memory_limit)}, "
        f"disk {result.disk_bytes_per_s / 1e9:.3g} GB/s (stated)" + (f", GPU: {result.gpu.name} (stated)" if gpu else "")
    )
    r = cal.rates
    click.echo(f"calibration ({cal.seconds:.1f} s, one worker, {cal.machine}), per core:")
    click.echo(f"  read+decode {format_rate(r['read'])} (store compression {cal.compression:.2f}x), ranks {format_rate(r['ranks'])}")
    click.echo(
        f"  codes: thrush {format_rate(r['thrush'])}, preselect {format_rate(r['preselect'])}, "
        f"both {format_rate(r['both'])}"
    )
    click.echo(
        f"  histograms: thrush {format_rate(r['histogram_thrush'])}, preselect {format_rate(r['histogram_preselect'])}; "
        f"tails: thrush {format_rate(r['tails_thrush'])}, preselect {format_rate(r['tails_preselect'])}"
    )
    click.echo(
        f"  merge sort {format_rate(r['sort'], 'ids/s')}; forward selection ({result.n_models + 1} fits): "
        f"{cal.forward_step_s * 1e6:.2f} us per candidate and step, {cal.forward_setup_s * 1e6:.2f} us to start"
    )

    console = Console(width=WIDTH, highlight=False)
    table = Table(title="per stage and pass", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("stage", no_wrap=True)
    table.add_column(f"wall, {result.cores} cores", justify="right", no_wrap=True)
    table.add_column("bound", no_wrap=True)
    if gpu:
        table.add_column("wall, GPU", justify="right", no_wrap=True)
        table.add_column("GPU bound", no_wrap=True)
    for name in ("disk read", "disk written", "peak memory"):
        table.add_column(name, justify="right", no_wrap=True)
    for mode, title in (("one pass", "one-pass screen"), ("two passes", "two passes (fallback)")):
        table.add_row(f"[b]{title}[/b]")
        for row in result.rows(mode):
            memory = format_size(row.peak_bytes) if row.fits else f"no: needs {format_size(row.need_bytes)}"
            gpu_cells = () if not gpu else (
                (format_duration(row.gpu_wall_s), str(row.gpu_bound)) if row.gpu_wall_s is not None else ("", "")
            )
            table.add_row(
                f"  {row.stage} {row.step}".rstrip(), format_duration(row.wall_s), row.bound, *gpu_cells,
                format_size(row.read_bytes), format_size(row.write_bytes), memory,
            )
        total_gpu = (f"[b]{format_duration(result.total_wall_s(mode, gpu=True))}[/b]", "") if gpu else ()
        table.add_row("  total", f"[b]{format_duration(result.total_wall_s(mode))}[/b]", "", *total_gpu,
                      end_section=True)
    _echo_table(console, table)

    sizes = Table(title="disk", title_justify="left", show_edge=False, pad_edge=False)
    sizes.add_column("artifact")
    sizes.add_column("size", justify="right")
    sizes.add_column("made of")
    sizes.add_row("perplexity store", format_size(disk.store),
                  f"m x d x {result.itemsize} B = {format_size(disk.store_raw)} / {cal.compression:.2f}x compression")
    sizes.add_row("screen output", format_size(disk.screen_output),
                  f"candidates {format_size(disk.candidates)}, candidate_nll {format_size(disk.candidate_nll)} "
                  f"({_count(disk.union)} columns), histograms {format_size(disk.histograms)}")
    sizes.add_row("spill, one pass", format_size(disk.spill_one_pass),
                  f"{_count(disk.spill_members)} members x {SPILLED_MEMBER_BYTES} B + their NLL columns (temporary)")
    sizes.add_row("spill, two passes", format_size(disk.spill_two_pass), "the candidates' NLL columns (temporary)")
    sizes.add_row("signatures", format_size(disk.signatures), "ids, AIC path, fits (without contexts)")
    _echo_table(console, sizes)

    click.echo("memory plans (docs/DESIGN.md §5):")
    plans: dict[str, str] = {}
    for row in result.stages:  # the merge runs inside the screen's plan
        name = row.stage if row.stage == "select" or not result.passes_planned else f"screen, {row.mode}"
        plans.setdefault(name.replace("merge + write", "screen"), row.plan)
    for name, text in plans.items():
        click.echo(textwrap.fill(f"{name}: {text}", WIDTH, initial_indent="  ", subsequent_indent="    "))
    click.echo("assumptions:")
    for line in result.assumptions:
        click.echo(textwrap.fill(line, WIDTH, initial_indent="  - ", subsequent_indent="    "))


def _echo_table(console: Any, table: Any) -> None:
    """Print a rich table without the trailing blanks rich pads its lines with."""
    with console.capture() as capture:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in capture.get().splitlines()))


def _count(n: int) -> str:
    """``16,900,000``; past ten million ``8.45e+09``."""
    return f"{n:,}" if n < 10**7 else f"{n:.3g}"
