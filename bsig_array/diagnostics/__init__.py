"""Diagnostics: what a run would cost here and how fast its kernels run (``bsig plan``, ``bsig profile``).

A layer above the stages (docs/DESIGN.md §1): it calibrates and profiles the stages' kernels on this
machine, models disk and device figures, and projects a run from each stage's own cost model
(:mod:`bsig_array.stages.screen.cost`, :mod:`bsig_array.stages.select_cost`), so the CLI only parses
and prints.

- :mod:`.calibration`: single-worker kernel rates and the store read probe (``bsig plan``);
- :mod:`.disk`: bytes on disk of a run's artifacts and the stated disk bandwidth;
- :mod:`.devices`: stated accelerator figures (datasheets) and their roofline;
- :mod:`.projection`: a run's wall time, disk and peak memory per stage and pass;
- :mod:`.formatting`: sizes, durations and rates as ``bsig plan`` prints them;
- :mod:`.profile`: kernel rates against this machine's limits (``bsig profile``);
- :mod:`.reports`: report paths and writers, Dask's performance report, a screen's time breakdown.
"""
