"""Reports of a run: report paths checked before the work, written atomically (also to URLs), Dask's
performance report, and a screen output's time breakdown (``bsig screen --profile``).

:func:`screen_breakdown` turns a screen output's ``timings`` attribute into read / decode check /
compute / spill per pass, then merge and write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bsig_array.errors import OptionError


def screen_breakdown(attrs: dict[str, Any]) -> dict[str, Any]:
    """Per pass read + decode, check, compute (codes, histograms, tails) and spill, then merge and write.

    ``attrs`` are a screen output's attributes (the driver's ``timings``).  Task times are summed
    over the tasks, so with several workers they exceed a pass's wall time; ``tails_s`` includes
    writing the members to the spill, which ``spill_s`` counts again with the NLL columns.
    """
    t = dict(attrs.get("timings", {}))
    passes = {}
    for name in ("pass", "pass1", "pass2"):
        if f"{name}_s" not in t:
            continue
        task = {key: float(t.get(f"{name}_{key}_s", 0.0)) for key in ("read", "check", "codes", "count", "collect", "spill")}
        passes[name] = {
            "wall_s": float(t[f"{name}_s"]), "read_decode_s": task["read"], "check_s": task["check"],
            "codes_s": task["codes"], "histograms_s": task["count"], "tails_s": task["collect"],
            "compute_s": task["codes"] + task["count"] + task["collect"], "spill_s": task["spill"],
        }
    return {
        "device": attrs.get("device"), "passes": passes, "driver_fold_s": float(t.get("driver_fold_s", 0.0)),
        "repair_s": float(t.get("repair_s", 0.0)), "merge_s": float(t.get("merge_finalize_s", 0.0)),
        "write_s": float(t.get("merge_write_s", 0.0)), "total_merge_write_s": float(t.get("merge_s", 0.0)),
        "timings": t,
    }


def check_report_paths(reports: Sequence[str | os.PathLike | None], run: Sequence[str | os.PathLike | None]) -> None:
    """Refuse a report path that is an input or output of the run, given twice (it would be
    overwritten), or not writable (a missing bucket, a read-only directory): before any work.

    Paths may be URLs (``s3://…``): reports are then staged locally and uploaded whole
    (:func:`write_report_text`, :func:`dask_performance_report`).
    """
    from bsig_array.io.atomic import check_writable
    from bsig_array.io.location import as_location

    taken = {as_location(p).key().rstrip("/") for p in run if p}
    for p in reports:
        if not p:
            continue
        key = as_location(p).key().rstrip("/")
        if key in taken:
            raise OptionError(f"{as_location(p)} is an input or output of this run (or another report); "
                              "write the report elsewhere")
        check_writable(p, "report")
        taken.add(key)


def write_report_text(path: str | os.PathLike, text: str) -> None:
    """Write a report (JSON, HTML) to ``path``, a local path or a URL, atomically."""
    from bsig_array.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


@contextlib.contextmanager
def dask_performance_report(scheduler: Any, path: str | os.PathLike | None) -> Iterator[Any]:
    """The scheduler to run with, inside Dask's performance report to ``path`` (a dask.distributed run only).

    ``path`` may be a URL: Dask writes the report to a local staging file, uploaded when the run
    succeeds (:func:`~bsig_array.io.atomic.atomic_output`).
    """
    if path is None:
        yield scheduler
        return
    if not (isinstance(scheduler, str) and "://" in scheduler):
        raise OptionError("--performance-report needs a dask.distributed scheduler (--scheduler tcp://host:port)")
    try:
        import bokeh  # noqa: F401  (Dask renders the report with it)
    except ImportError:
        raise OptionError("--performance-report needs bokeh (pip install bokeh)") from None
    from distributed import performance_report

    from bsig_array.io.atomic import atomic_output
    from bsig_array.runtime.tasks import connect

    # as_current: performance_report finds the client through distributed.get_client()
    with atomic_output(path) as tmp, connect(scheduler) as client, client.as_current(), \
            performance_report(filename=str(tmp)):
        yield client
