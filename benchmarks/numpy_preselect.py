"""Peer (b): Pre-select (Eq. 2) with plain numpy broadcasting, block by block.

For each benchmark, the models are put in ascending score order (stable) and every token's
pairwise comparisons ``p_(k) > p_(l)`` for ``k < l`` are counted with one broadcast
``(m, m, n)`` boolean array per token block: the straightforward vectorised numpy version.
"""

from __future__ import annotations

import numpy as np


def numpy_preselect(nll: np.ndarray, scores: np.ndarray, *, block: int = 4096) -> np.ndarray:
    """Pre-select codes ``η·Z`` (B, d) as int32.

    Parameters
    ----------
    nll
        (m, d) NLLs.
    scores
        (B, m) benchmark scores.
    block
        Tokens per broadcast (bounds the (m, m, block) temporary).
    """
    m, d = nll.shape
    upper = np.triu(np.ones((m, m), dtype=bool), k=1)[:, :, None]
    out = np.empty((scores.shape[0], d), dtype=np.int32)
    for b, y in enumerate(scores):
        sorted_nll = nll[np.argsort(y, kind="stable")]
        for s in range(0, d, block):
            p = sorted_nll[:, s : s + block]
            out[b, s : s + block] = ((p[:, None, :] > p[None, :, :]) & upper).sum(axis=(0, 1))
    return out
