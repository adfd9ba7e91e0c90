"""Screen stage: every token scored against every benchmark, exact tails kept (docs/DESIGN.md §4, §5).

- :mod:`.driver`: the stage entry point :func:`screen` (checks, plan, the two passes, the output);
- :mod:`.tasks`: what runs on one store chunk (pass 1 histograms, pass 2 tail members);
- :mod:`.merge`: order-free folding of the chunks' results into exact tails and null estimates;
- :mod:`.spill`: the candidates' NLL columns parked on disk until the output is written.
"""

from bsig_array.stages.screen.driver import permuted_scores, screen

__all__ = ["permuted_scores", "screen"]
