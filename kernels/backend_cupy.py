"""CuPy backend: the fused numba.cuda kernels of :mod:`~bsig_array.kernels.cuda_fused` on CuPy arrays.

Ranks, Thrush and Pre-select codes, histograms and tail counts run as numba.cuda kernels on CuPy
arrays (through ``__cuda_array_interface__``, on CuPy's current stream); :func:`screen_chunk` forms
both coefficients and adds the observed rows into device-resident histograms in one launch (the
screen task uses it, and adds each chunk's histograms into the pass's sums on the device:
:mod:`bsig_array.stages.screen.accumulate`).  The kernels read float16 blocks as int16 keys, never
widened.  Tail members use the portable array-API code on the device arrays.
:func:`to_device` stages host blocks through pinned buffers on a per-thread stream, so one worker
thread's read and decode overlap the others' transfers and kernels.

The module imports without CuPy (CuPy is imported on first use).  No GPU was available to this
project: the kernels' source is checked bit for bit against the CPU kernels under numba's CUDA
simulator (tests/test_cuda_kernels.py); this module's CuPy glue has not run on a device.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from bsig_array.kernels import cuda_fused as _fused
from bsig_array.kernels.types import TailBounds, TailMembers

name = "cupy"
_staging = threading.local()  # per worker thread: its stream, two pinned buffers and their copy events


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("the cupy kernel backend needs CuPy (pip install 'bsig-array[gpu]')") from exc
    return cupy


def _dev(x: Any) -> Any:
    return _cupy().asarray(x)


def to_device(block: np.ndarray) -> Any:  # pragma: no cover - needs a GPU
    """``block`` on the device, copied asynchronously from a pinned buffer on this thread's stream.

    Two pinned buffers alternate: filling one waits only for the copy out of it issued two calls
    ago, and kernels queued after the copy on the same stream see the data.
    """
    cp = _cupy()
    import cupyx

    st = _staging
    if not hasattr(st, "stream"):
        st.stream = cp.cuda.Stream(non_blocking=True)
        st.stream.use()  # this worker thread's kernels run on its own stream, concurrent with others'
        st.buffers, st.events, st.turn = [None, None], [None, None], 0
    block = np.ascontiguousarray(block)
    i = st.turn = 1 - st.turn
    if st.events[i] is not None:
        st.events[i].synchronize()
    if st.buffers[i] is None or st.buffers[i].nbytes < block.nbytes:
        st.buffers[i] = cupyx.empty_pinned(max(block.nbytes, 1), dtype=np.uint8)
    host = st.buffers[i][: block.nbytes].view(block.dtype).reshape(block.shape)
    np.copyto(host, block)
    out = cp.empty(block.shape, dtype=block.dtype)
    out.set(host, stream=st.stream)
    st.events[i] = st.stream.record()
    return out


def doubled_ranks(P: Any, ties: str = "average") -> Any:
    """See :func:`bsig_array.kernels.cuda_fused.doubled_ranks`."""
    return _fused.doubled_ranks(_dev(P), ties)


def thrush_codes(P: Any, C: Any, ties: str = "average") -> Any:
    """See :func:`bsig_array.kernels.cuda_fused.thrush_codes`."""
    return _fused.thrush_codes(_dev(P), C, ties)


def preselect_codes(P: Any, pos: Any) -> Any:
    """See :func:`bsig_array.kernels.cuda_fused.preselect_codes`."""
    return _fused.preselect_codes(_dev(P), pos)


def screen_codes(P: Any, C: Any, pos: Any, ties: str = "average") -> tuple[Any, Any]:
    """See :func:`bsig_array.kernels.cuda_fused.screen_codes`."""
    return _fused.screen_codes(_dev(P), C, pos, ties)


def screen_chunk(P: Any, C: Any = None, pos: Any = None, ties: str = "average", **kwargs: Any) -> dict[str, Any]:
    """See :func:`bsig_array.kernels.cuda_fused.screen_chunk` (histogram accumulators must be CuPy arrays)."""
    return _fused.screen_chunk(_dev(P), C, pos, ties, **kwargs)


def histogram_codes(codes: Any, offset: int, n_bins: int, out: Any = None) -> Any:
    """See :func:`bsig_array.kernels.cuda_fused.histogram_codes` (a CuPy ``out`` stays on the device)."""
    cp = _cupy()
    if out is None or isinstance(out, cp.ndarray):
        return _fused.histogram_codes(_dev(codes), offset, n_bins, out)
    out += _fused.histogram_codes(_dev(codes), offset, n_bins).get()  # a host accumulator stays on the host
    return out


def tail_members(codes: Any, token_ids: Any, bounds: TailBounds) -> TailMembers:
    """See :func:`bsig_array.kernels.backend_portable.tail_members`."""
    return _fused.tail_members(_dev(codes), _dev(token_ids), bounds)


def tail_counts(codes: Any, low_code: Any, high_code: Any) -> Any:
    """See :func:`bsig_array.kernels.cuda_fused.tail_counts`."""
    return _fused.tail_counts(_dev(codes), low_code, high_code)
