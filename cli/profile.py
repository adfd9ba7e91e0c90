"""``bsig profile``: time each screening kernel on a synthetic chunk against this machine's limits."""

from __future__ import annotations

import click

from bsig_array.cli.run import build_run, run_options
from bsig_array.cli.storage import Where
from bsig_array.runtime.defaults import DEFAULTS
from bsig_array.schema import TIES


@click.command()
@run_options("device", help={"device": "gpu: the fused CUDA kernels on CuPy arrays, timed with CUDA events (needs a "
                                        "GPU); auto: gpu when available."})
@click.option("--tokens", type=int, default=1 << 16, show_default=True, help="Tokens of the synthetic chunk.")
@click.option("--models", type=int, default=32, show_default=True, help="Models (rows of the chunk).")
@click.option("--benchmarks", type=int, default=88, show_default=True, help="Benchmarks (rows of the score table).")
@click.option("--ties", type=click.Choice(TIES), default=DEFAULTS.ties, show_default=True)
@click.option("--json", "json_path", type=Where(dir_okay=False), help="Also write the profile as JSON.")
def profile(device: str | None, tokens: int, models: int, benchmarks: int, ties: str, json_path: str | None) -> None:
    """Time read + decode, ranks, Thrush, Pre-select, histograms, the tail test and a selection step.

    \b
    Each kernel's fastest call gives tokens/s, bytes/s and operations/s (a stated cost model per
    token), and its share of this machine's limit: memory bandwidth (a measured copy) or compare
    throughput (a measured vectorized loop), whichever the kernel is closer to.  CPU: wall and CPU
    time on all numba threads; GPU: CUDA events.
    """
    from bsig_array.diagnostics.profile import profile_kernels
    from bsig_array.diagnostics.reports import check_report_paths, write_report_text
    from bsig_array.io.location import as_location

    check_report_paths([json_path], [])  # before the work: a missing bucket or directory is one line
    run = build_run(device=device, bars=False)
    result = profile_kernels(tokens=tokens, models=models, benchmarks=benchmarks, ties=ties, run=run)
    _print(result)
    if json_path:
        import json

        write_report_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {as_location(json_path)}")  # a URL without credentials


def _print(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    r = result.to_dict()  # type: ignore[attr-defined]
    console = Console(width=116)
    lim = r["limits"]
    console.print(
        f"{r['device']} ({r['machine']}, {r['threads']} threads): m={r['models']} models, B={r['benchmarks']} "
        f"benchmarks, {r['tokens']:,} tokens; limits: memory {lim['memory_bytes_per_s'] / 1e9:.3g} GB/s, "
        f"ops {lim['ops_per_s'] / 1e9:.3g} G/s"
    )
    for how in lim["how"]:
        console.print(f"  {how}")
    table = Table(show_edge=False)
    for col in ("kernel", "wall", "CPU", "tokens/s", "bytes/s", "ops/s", "limit", "share"):
        table.add_column(col, justify="left" if col in ("kernel", "limit") else "right", no_wrap=True)
    for k in r["kernels"]:
        table.add_row(
            k["kernel"], f"{k['wall_s'] * 1e3:.2f} ms", "-" if k["cpu_s"] is None else f"{k['cpu_s'] * 1e3:.2f} ms",
            f"{k['tokens_per_s']:.3g}", f"{k['bytes_per_s'] / 1e9:.3g} GB/s", f"{k['ops_per_s'] / 1e9:.3g} G",
            k["limit"], f"{k['share_of_limit']:.1%}",
        )
    console.print(table)
