"""Screen stage: every token scored against every benchmark, exact tails kept (docs/DESIGN.md §4, §5).

- :mod:`.driver`: the stage entry point :func:`screen` (checks, plan, one pass or two, the
  out-of-core merge, the streamed output);
- :mod:`.tasks`: what runs on one store chunk (scan) or one segment of chunks (count, finalize);
- :mod:`.merge`: running and speculative tail boundaries, segments, ties, null estimates;
- :mod:`.spill`: tail members and NLL columns parked on disk until the output is written;
- :mod:`.cost`: the screen's cost model: bytes of a task and of the driver, the spill, operations per
  token, and its plan (:func:`~bsig_array.stages.screen.cost.plan_screen`);
- :mod:`.accumulate`: a pass's histograms summed in this process where they are formed (on the GPU:
  on the device), for tasks on the threaded or synchronous scheduler.
"""

from bsig_array.stages.screen.driver import permuted_scores, screen

__all__ = ["permuted_scores", "screen"]
