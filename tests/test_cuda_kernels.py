"""The fused GPU kernels (kernels/cuda_fused.py) under numba's CUDA simulator, bit for bit against the CPU.

No GPU is available to CI, so the numba.cuda kernel source runs in numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), which executes the same Python kernel bodies thread by thread.  The
variable must be set before numba is first imported, so in an ordinary test process this file runs
itself again in a fresh interpreter with the simulator on (:func:`test_kernels_under_the_cuda_simulator`)
and collects the simulator tests only there.  Tests that need CuPy on a real GPU skip without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bsig_array.runtime.run import RunSpec

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ROOT = Path(__file__).resolve().parents[1]
N_SIMULATOR_TESTS = 12  # tests collected in the simulator run (checked, so none silently vanishes)


def _gpu() -> bool:
    from bsig_array.runtime.device import cupy_available

    return cupy_available()


if not SIMULATOR:

    def test_kernels_under_the_cuda_simulator() -> None:
        env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTEST_ADDOPTS": ""}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(Path(__file__))],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        tail = proc.stdout[-6000:] + proc.stderr[-3000:]
        assert proc.returncode == 0, tail
        passed = re.search(r"(\d+) passed", proc.stdout)
        assert passed and int(passed.group(1)) == N_SIMULATOR_TESTS, tail
        assert "skipped" not in proc.stdout, tail

    @pytest.mark.skipif(not _gpu(), reason="needs CuPy and a CUDA GPU")
    def test_cupy_backend_matches_cpu_on_a_gpu() -> None:  # pragma: no cover - needs a GPU
        """On a real GPU: pinned staging, the fused launch and its device histograms equal the CPU."""
        import cupy

        from bsig_array import kernels as K
        from bsig_array.kernels import backend_cupy

        rng = np.random.default_rng(3)
        m, B = 32, 88
        P = rng.integers(0, 6, size=(m, 5000)).astype(np.float16)
        Y = rng.integers(0, 4, size=(B, m)).astype(float)
        C, pos = K.thrush_weights(Y), K.preselect_positions(Y)
        (ot, nt), (op, npre) = K.lattice("thrush", m), K.lattice("preselect", m)
        for ties in ("average", "first"):
            cpu = K.screen_codes(P, Y, ties, backend="numba")
            hist = (cupy.zeros((B, nt), cupy.int64), cupy.zeros((B, npre), cupy.int64))
            got = backend_cupy.screen_chunk(backend_cupy.to_device(P), C, pos, ties, hist=hist, offsets=(ot, op), n_hist=B)
            for i, meth in enumerate(("thrush", "preselect")):
                np.testing.assert_array_equal(cupy.asnumpy(got[meth]), cpu[meth])
                np.testing.assert_array_equal(cupy.asnumpy(hist[i]), K.histogram_codes(cpu[meth], meth, m, backend="numba"))

    @pytest.mark.skipif(not _gpu(), reason="needs CuPy and a CUDA GPU")
    def test_screen_on_a_gpu_equals_cpu(tmp_path: Path) -> None:  # pragma: no cover - needs a GPU
        """On a real GPU: the screen stage on threads (pinned staging, per-thread streams, fused
        launches, the pass's histograms summed on the device) writes the CPU output, bit for bit."""
        import xarray as xr

        from bsig_array.io.perplexity_store.reader import open_store
        from bsig_array.io.perplexity_store.writer import create_store
        from bsig_array.stages.screen.driver import screen

        rng = np.random.default_rng(5)
        m, d, B = 32, 40_000, 8
        P = np.round(rng.gamma(2.0, 1.0, size=(m, d)), 1).astype("float16")  # ties
        models = [f"m{i}" for i in range(m)]
        w = create_store(tmp_path / "p.zarr", models, d, chunk_tokens=4096)
        for j in range(w.n_chunks):
            sl = w.chunk_slice(j)
            w.write_chunk(j, P[:, sl])
        score = xr.DataArray(rng.integers(0, 9, size=(m, B)).astype(float), dims=("model", "benchmark"),
                             coords={"model": models, "benchmark": [f"b{i}" for i in range(B)]})
        ds = open_store(tmp_path / "p.zarr")
        runs = {dev: screen(ds["nll"], score, alpha=0.01, store=tmp_path / "p.zarr", run=RunSpec.build(scheduler="threads", workers=4, device=dev)).drop_attrs() for dev in ("cpu", "gpu")}
        xr.testing.assert_identical(runs["cpu"], runs["gpu"])

else:
    import numba
    import xarray as xr
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from numba import cuda
    from strategies import nll_matrices, screening_inputs

    from bsig_array import kernels as K
    from bsig_array.kernels import backend_numba, backend_portable, cuda_forward, cuda_fused, forward
    from bsig_array.kernels.backends import register_backend

    def test_simulator_is_on() -> None:
        assert numba.config.ENABLE_CUDASIM and cuda.is_available()
        assert type(cuda_fused._screen_kernel).__module__.startswith("numba.cuda.simulator")

    @settings(max_examples=40, deadline=None)
    @given(screening_inputs(min_models=2, max_models=9, max_tokens=40, max_benchmarks=4),
           st.sampled_from(["average", "first"]))
    def test_codes_and_ranks_equal_cpu(inputs: tuple[np.ndarray, np.ndarray], ties: str) -> None:
        P, Y = inputs
        C, pos = K.thrush_weights(Y), K.preselect_positions(Y)
        thrush, preselect = cuda_fused.screen_codes(P, C, pos, ties)
        np.testing.assert_array_equal(thrush, backend_numba.thrush_codes(P, C, ties))
        np.testing.assert_array_equal(thrush, backend_portable.thrush_codes(P, C, ties))
        np.testing.assert_array_equal(preselect, backend_numba.preselect_codes(P, pos))
        np.testing.assert_array_equal(cuda_fused.thrush_codes(P, C, ties), thrush)
        np.testing.assert_array_equal(cuda_fused.preselect_codes(P, pos), preselect)
        np.testing.assert_array_equal(cuda_fused.doubled_ranks(P, ties), backend_portable.doubled_ranks(P, ties))

    @settings(max_examples=20, deadline=None)
    @given(st.data())
    def test_fused_histograms_and_tail_counts_across_chunks(data: st.DataObject) -> None:
        """Device accumulators fed chunk by chunk equal the CPU histograms; tail counts equal tail_counts."""
        m = data.draw(st.integers(2, 8))
        chunks = [data.draw(nll_matrices(m, max_tokens=30, levels=data.draw(st.integers(1, 6)))) for _ in range(2)]
        Y = data.draw(st.lists(st.lists(st.integers(0, 3), min_size=m, max_size=m), min_size=1, max_size=4))
        Y = np.asarray(Y, dtype=float)
        n_obs = data.draw(st.integers(0, Y.shape[0]))  # the rest play label-permuted rows (not histogrammed)
        ties = data.draw(st.sampled_from(["average", "first"]))
        C, pos = K.thrush_weights(Y), K.preselect_positions(Y)
        (ot, nt), (op, npre) = K.lattice("thrush", m), K.lattice("preselect", m)
        hist = (np.zeros((n_obs, nt), np.int64), np.zeros((n_obs, npre), np.int64))
        want = [np.zeros_like(h) for h in hist]
        for P in chunks:
            t_cpu, p_cpu = backend_numba.screen_codes(P, C, pos, ties)
            bounds = [np.asarray(data.draw(st.lists(st.integers(-5, 5), min_size=Y.shape[0], max_size=Y.shape[0])))
                      for _ in range(2)]
            low_t, high_t = bounds[0] - 3, bounds[0] + 3
            low_p, high_p = np.abs(bounds[1]), np.abs(bounds[1]) + 2
            out = cuda_fused.screen_chunk(P, C, pos, ties, hist=hist, offsets=(ot, op), n_hist=n_obs,
                                          bounds=(low_t, high_t, low_p, high_p))
            np.testing.assert_array_equal(out["thrush"], t_cpu)
            np.testing.assert_array_equal(out["preselect"], p_cpu)
            np.testing.assert_array_equal(out["thrush_counts"], backend_numba.tail_counts(t_cpu, low_t, high_t))
            np.testing.assert_array_equal(out["preselect_counts"], backend_numba.tail_counts(p_cpu, low_p, high_p))
            np.testing.assert_array_equal(cuda_fused.tail_counts(t_cpu, low_t, high_t), out["thrush_counts"])
            want[0] = backend_numba.histogram_codes(t_cpu[:n_obs], ot, nt, want[0])
            want[1] = backend_numba.histogram_codes(p_cpu[:n_obs], op, npre, want[1])
            np.testing.assert_array_equal(cuda_fused.histogram_codes(t_cpu, ot, nt), K.histogram_codes(t_cpu, "thrush", m))
        np.testing.assert_array_equal(hist[0], want[0])
        np.testing.assert_array_equal(hist[1], want[1])

    def test_many_models_and_signed_zeros() -> None:
        """Two 32-bit words of model bitmasks (m = 37), float16 with -0.0 tied to +0.0."""
        rng = np.random.default_rng(7)
        m = 37
        P = rng.integers(-2, 3, size=(m, 9)).astype(np.float16) * np.float16(0.5)
        P[rng.random(P.shape) < 0.3] = np.float16(-0.0)
        Y = rng.integers(0, 3, size=(3, m)).astype(float)
        C, pos = K.thrush_weights(Y), K.preselect_positions(Y)
        for ties in ("average", "first"):
            got = cuda_fused.screen_codes(P, C, pos, ties)
            want = backend_numba.screen_codes(P, C, pos, ties)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])

    @settings(max_examples=30, deadline=None)
    @given(st.sampled_from([np.float16, np.float32, np.float64]), st.data())
    def test_values_are_read_narrow_as_ordered_integers(dtype: type, data: st.DataObject) -> None:
        """The kernels read a same-width integer view of the values (float16 is not widened on the
        device) whose order is the float order over the whole range: signs, -0.0, subnormals, inf."""
        info = np.finfo(dtype)
        special = [0.0, -0.0, float(info.tiny), -float(info.tiny), float(info.smallest_subnormal), float(info.max),
                   -float(info.max), np.inf, -np.inf, 1.0, -1.0]
        m, n = data.draw(st.integers(2, 7)), data.draw(st.integers(1, 12))
        vals = data.draw(st.lists(st.one_of(st.sampled_from(special), st.floats(-4, 4, width=16)),
                                  min_size=m * n, max_size=m * n))
        P = np.asarray(vals, dtype=dtype).reshape(m, n)
        view, _, _ = cuda_fused._keys(P)
        assert view.dtype.itemsize == P.dtype.itemsize and np.shares_memory(view, P)  # no widened copy
        for ties in ("average", "first"):
            np.testing.assert_array_equal(cuda_fused.doubled_ranks(P, ties), backend_portable.doubled_ranks(P, ties))

    def test_off_lattice_weights_are_refused() -> None:
        P = np.arange(12, dtype=np.float32).reshape(3, 4)
        C = np.full((1, 3), 50, dtype=np.int32)  # not the weights of any score row: codes leave the lattice
        off, n_bins = K.lattice("thrush", 3)
        with pytest.raises(K.KernelInputError, match="outside the lattice"):
            cuda_fused.screen_chunk(P, C, None, hist=(np.zeros((1, n_bins), np.int64), None), offsets=(off, 0), n_hist=1)
        with pytest.raises(K.KernelInputError, match="outside the lattice"):
            cuda_fused.histogram_codes(np.array([[n_bins]], np.int32), off, n_bins)

    @pytest.mark.parametrize("nulls", [0, 2])
    def test_screen_stage_equals_cpu(tmp_path: Path, nulls: int) -> None:
        """The real screen stage (Zarr store, one pass or two with nulls) with the fused kernels as its
        backend writes the same output as the CPU run, bit for bit."""
        from bsig_array.io.perplexity_store.reader import open_store
        from bsig_array.io.perplexity_store.writer import create_store
        from bsig_array.stages.screen.driver import screen

        register_backend("cuda", "bsig_array.kernels.cuda_fused")
        rng = np.random.default_rng(5)
        m, d, B = 5, 240, 3
        P = np.round(rng.gamma(2.0, 1.0, size=(m, d)), 0).astype("float32")  # many ties
        models = [f"m{i}" for i in range(m)]
        w = create_store(tmp_path / "p.zarr", models, d, chunk_tokens=80)
        for j in range(w.n_chunks):
            sl = w.chunk_slice(j)
            w.write_chunk(j, P[:, sl], token=np.arange(sl.start, sl.stop)[::-1] * 3)  # ids decrease: a tie-break test
        score = xr.DataArray(rng.integers(0, 4, size=(m, B)).astype(float), dims=("model", "benchmark"),
                             coords={"model": models, "benchmark": [f"b{i}" for i in range(B)]})
        ds = open_store(tmp_path / "p.zarr")
        runs = {
            backend: screen(ds["nll"], score, alpha=0.05, ties="first", backend=backend,
                            store=tmp_path / "p.zarr", null_permutations=nulls, run=RunSpec.build(scheduler="synchronous", device="cpu")).drop_attrs()
            for backend in ("numba", "cuda")
        }
        xr.testing.assert_identical(runs["numba"], runs["cuda"])
        assert runs["cuda"].sizes["candidate"] > 0

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def test_selection_step_equals_cpu(data: st.DataObject) -> None:
        """The GPU selection step (norm update, gains, tie-ruled arg-max) equals the fused numba loop,
        bit for bit, on small-integer inputs full of exact and near ties."""
        P, nb = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 12))
        ints = st.lists(st.integers(-3, 3), min_size=nb, max_size=nb)
        C = np.asarray([data.draw(ints) for _ in range(2 * P)], dtype=float)
        base = np.asarray([data.draw(ints) for _ in range(P)], dtype=float)
        update = data.draw(st.booleans())
        norm2 = np.abs(base) + (C[:P] ** 2 if update else 0.0)  # after the update: 0..3, dead at 0
        norm2[0, 0] *= 1.0 + 1e-12  # a near tie within TIE_RTOL
        floor = np.full((P, nb), data.draw(st.sampled_from([0.0, 0.5])))
        prio = np.asarray(data.draw(st.permutations(range(nb))), dtype=np.int64)
        want_n2, got_n2 = norm2.copy(), norm2.copy()
        want = forward._block_best_numba(C, want_n2, floor, prio, update)
        got = cuda_forward.block_best(C, got_n2, floor, prio, update, forward.TIE_RTOL)
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(got_n2, want_n2)

    @settings(max_examples=10, deadline=None)
    @given(st.data())
    def test_forward_selection_with_the_gpu_step_picks_the_cpu_tokens(data: st.DataObject) -> None:
        """Whole selections (full fit and leave-one-out folds, several blocks, tied columns, in memory
        and spilled) driven by the GPU step pick the same columns, in order, as the CPU ones."""
        m, n = data.draw(st.integers(4, 8)), data.draw(st.integers(1, 24))
        X = np.asarray(data.draw(st.lists(st.lists(st.integers(0, 2), min_size=n, max_size=n), min_size=m, max_size=m)),
                       dtype=float)
        if n > 2:
            X[:, n - 1] = X[:, 0]  # a duplicate column: an exact tie, decided by priority
        y = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)), dtype=float)
        masks = np.vstack([np.ones(m, dtype=bool), ~np.eye(m, dtype=bool)])
        prio = np.asarray(data.draw(st.permutations(range(n))), dtype=np.int64)
        kw = dict(row_masks=masks, priority=prio, block_columns=data.draw(st.sampled_from([5, 32])),
                  delta=data.draw(st.sampled_from([0.0, 1.0])), exponentiate=data.draw(st.booleans()))
        cpu = forward.forward_select(X, y, backend="numba", **kw)
        for spill in (False, True):
            gpu = forward.forward_select(X, y, backend="cuda", spill=spill, cache=not spill, **kw)
            np.testing.assert_array_equal(gpu.selected, cpu.selected)
            np.testing.assert_allclose(gpu.aic, cpu.aic, rtol=1e-12)
            np.testing.assert_array_equal(gpu.aic0, cpu.aic0)

    def test_profiled_forward_step_on_the_device_equals_the_host_step() -> None:
        """``bsig profile --device gpu`` times the selection step as CUDA kernels (numpy arrays stand
        in for CuPy under the simulator); it selects what the host step selects."""
        from bsig_array.diagnostics import profile

        n, on_device = profile._forward_step(6, 40, 1, np)
        _, on_host = profile._forward_step(6, 40, 1)
        got, want = on_device(), on_host()
        assert n == 40 and got.selected.shape == (7, 1)
        np.testing.assert_array_equal(got.selected, want.selected)
        np.testing.assert_allclose(got.aic, want.aic, rtol=1e-12)

    def test_select_stage_gpu_path_equals_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
        """select_benchmark on device "gpu" takes the GPU branch (here numpy arrays under the simulator
        stand in for CuPy) and returns the CPU signature."""
        from bsig_array.stages import select as S

        rng = np.random.default_rng(2)
        m, n = 7, 30
        X = rng.integers(0, 3, size=(m, n)).astype(np.float32)
        X[:, 5] = X[:, 11]
        y = rng.integers(0, 4, size=m).astype(float)
        taken = []

        def simulated(device: str, plan: object, m_: int, n_: int) -> object:
            taken.append(device)
            return np if device == "gpu" else None  # the device copy is a plain copy in the simulator

        steps = []

        def counted(*args: object) -> object:
            steps.append(1)
            return step(*args)

        step = cuda_forward.block_best
        monkeypatch.setattr(S, "_gpu", simulated)
        monkeypatch.setattr(cuda_forward, "block_best", counted)
        cpu = S.select_benchmark(X, y, covariate="nll", seed=3)
        assert not steps
        gpu = S.select_benchmark(X, y, covariate="nll", seed=3, device="gpu")
        assert taken == [None, "gpu"] and steps  # the selection ran its steps through the CUDA kernels (None: CPU)
        np.testing.assert_array_equal(gpu.columns, cpu.columns)
        assert gpu.loocv_r2 == pytest.approx(cpu.loocv_r2, rel=1e-12)
