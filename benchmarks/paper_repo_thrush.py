"""Peer (a): the paper repository's Thrush screen, written faithfully for comparison.

The paper's code loads the whole token x model NLL matrix into a pandas DataFrame, ranks each
token's NLLs across the models with ``DataFrame.rank(axis=1, method="first")``, scores every
benchmark with one matrix product of those ranks against the sign weights
``c_a = sum_b sign(y_a - y_b)`` (Eq. 1 summed over model pairs), and keeps the top and bottom
``alpha`` of each benchmark by sorting its coefficients.  Everything is in memory at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def sign_weights(scores: np.ndarray) -> np.ndarray:
    """``C`` (B, m): ``c_a = sum_b sign(y_a - y_b)`` for each benchmark row of ``scores`` (B, m)."""
    return np.sign(scores[:, :, None] - scores[:, None, :]).sum(axis=2)


def paper_thrush(nll: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Thrush γ (B, d) of every token: pandas ``rank(method="first")`` over models, then ``C · R``.

    Parameters
    ----------
    nll
        (m, d) NLL matrix, fully in memory.
    scores
        (B, m) benchmark scores.
    """
    frame = pd.DataFrame(nll.T)  # token rows x model columns, as the paper's parquet join gives
    ranks = frame.rank(axis=1, method="first").to_numpy()  # (d, m) float64
    return sign_weights(scores).astype(np.float64) @ ranks.T  # (B, d)


def paper_tails(gamma: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the bottom and top ``k = max(floor(alpha*d), 1)`` tokens of each row, by sorting."""
    k = max(int(np.floor(alpha * gamma.shape[1])), 1)
    order = np.argsort(gamma, axis=1, kind="stable")
    return order[:, :k], order[:, -k:]
