"""The disk model: bytes on disk of a run's artifacts, and the stated disk bandwidth (``bsig plan``).

Sizes follow the artifacts' owners (docs/DESIGN.md §3): the screen output's entry and NLL bytes are
:mod:`bsig_array.io.screen_output`'s, the spill's members per tail and bytes per member the screen's
cost model's (:mod:`bsig_array.stages.screen.cost`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bsig_array import kernels as K
from bsig_array.io.screen_output import CANDIDATE_ENTRY_BYTES, CANDIDATE_NLL_BYTES
from bsig_array.stages.screen.cost import SPILLED_MEMBER_BYTES, spill_members_per_tail

#: Disk bandwidth, read and write, in bytes/s: stated, not measured (one NVMe SSD streaming large
#: sequential chunk files; page-cache speeds on this machine would say nothing about a 1 TB store).
DISK_BYTES_PER_S = 1.0e9


@dataclass(frozen=True)
class DiskSizes:
    """Bytes on disk of a run's artifacts (docs/DESIGN.md §3); all uncompressed but the store.

    Attributes
    ----------
    store_raw, store
        ``nll`` as m·d·itemsize, and that over the measured compression ratio.
    candidates
        ``candidate_token`` + ``candidate_score`` + ``candidate_column``: 24 B x coefficients x B x 2 tails x k.
    union
        Distinct candidates, at most ``min(d, coefficients·B·2k)``.
    candidate_nll
        4 B x m x union.
    histograms, thresholds
        8 B per bin of each coefficient's lattice per benchmark; 8 B per tail.
    screen_output
        Sum of the four above.
    spill_members
        One-pass screen: members admitted by the speculative boundaries per benchmark and tail,
        about ``1.2·k`` each (:func:`spill_members_per_tail`), over coefficients x B x 2 tails.
    spill_one_pass
        8 B per member plus itemsize x m per distinct member token (at most ``min(d, spill_members)``):
        the members' NLL columns are spilled in the store's dtype.
    spill_two_pass
        Two-pass screen: the members' NLL columns, itemsize x m x union.
    signatures
        ``signatures.zarr`` without contexts: three (B, m − 2) 8-byte arrays and seven per benchmark.
    """

    store_raw: int
    store: int
    candidates: int
    union: int
    candidate_nll: int
    histograms: int
    thresholds: int
    screen_output: int
    spill_members: int
    spill_one_pass: int
    spill_two_pass: int
    signatures: int



def disk_sizes(
    *, n_tokens: int, n_models: int, n_benchmarks: int, alpha: float, coefficients: Sequence[str],
    itemsize: int = 4, compression: float = 1.0,
) -> DiskSizes:
    """Bytes of the store, screen output, screen spills and signatures (see :class:`DiskSizes`)."""
    d, m, B, C = int(n_tokens), int(n_models), int(n_benchmarks), len(coefficients)
    k = K.tail_size(alpha, d)
    entries = C * B * 2 * k
    union = min(d, entries)
    candidates = CANDIDATE_ENTRY_BYTES * entries
    candidate_nll = CANDIDATE_NLL_BYTES * m * union
    histograms = 8 * B * sum(K.lattice(c, m)[1] for c in coefficients)
    thresholds = 8 * C * B * 2
    members = C * B * 2 * spill_members_per_tail(alpha, k, d)
    store_raw = m * d * int(itemsize)
    return DiskSizes(
        store_raw=store_raw,
        store=int(round(store_raw / compression)),
        candidates=candidates,
        union=union,
        candidate_nll=candidate_nll,
        histograms=histograms,
        thresholds=thresholds,
        screen_output=candidates + candidate_nll + histograms + thresholds,
        spill_members=members,
        spill_one_pass=SPILLED_MEMBER_BYTES * members + int(itemsize) * m * min(d, members),
        spill_two_pass=int(itemsize) * m * union,
        signatures=B * (m - 2) * 3 * 8 + B * 7 * 8,
    )

