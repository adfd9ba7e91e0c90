"""``bsig plan``: the projection's arithmetic by hand, its monotonicity, the calibration, and the CLI.

Most tests project from a hand-made :class:`Calibration` (made-up rates), so they check arithmetic,
never this machine's speed; one calibrates for real at toy sizes and checks only that every rate is
a positive finite number.
"""

from __future__ import annotations

import json
import math

import pytest
from test_cli_errors import run_cli

from bsig_array.diagnostics.calibration import KERNELS, Calibration, calibrate
from bsig_array.diagnostics.devices import H200
from bsig_array.diagnostics.disk import disk_sizes
from bsig_array.diagnostics.formatting import format_duration, format_rate, format_size
from bsig_array.diagnostics.projection import project
from bsig_array.errors import OptionError
from bsig_array.options import parse_memory
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.screen.cost import gpu_token_cost, spill_members_per_tail

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

BOTH = ("thrush", "preselect")


def fake_calibration(models: int = 4, benchmarks: int = 3, **rates: float) -> Calibration:
    """Round made-up rates: projections from it can be checked by hand."""
    base = dict.fromkeys(KERNELS, 1e6)
    base.update(rates)
    return Calibration(
        models=models, benchmarks=benchmarks, block_tokens=1024, rates=base,
        forward_setup_s=1e-6, forward_step_s=2e-6, compression=2.0,
    )


# ----------------------------------------------------------------------------- arithmetic by hand


@pytest.mark.parametrize(("alpha", "d", "k"), [(0.01, 1000, 10), (0.01, 50, 1), (0.29, 100, 29), (0.2, 100, 20)])
def test_k_is_floor_alpha_d_at_least_one(alpha, d, k):
    out = project(fake_calibration(), n_tokens=d, n_models=4, n_benchmarks=3, alpha=alpha, run=RunSpec.build(memory_limit="64GiB"))
    assert out.k == k


def test_disk_sizes_by_hand():
    # d = 1000, m = 4, B = 3, both coefficients, alpha = 0.01: k = 10
    disk = disk_sizes(n_tokens=1000, n_models=4, n_benchmarks=3, alpha=0.01, coefficients=BOTH, compression=2.0)
    entries = 2 * 3 * 2 * 10  # coefficients x benchmarks x tails x k
    assert disk.store_raw == 4 * 1000 * 4
    assert disk.store == 8000  # over the compression ratio
    assert disk.candidates == 24 * entries
    assert disk.union == entries  # fewer than the tokens
    assert disk.candidate_nll == 4 * 4 * entries
    # Thrush lattice: 2L + 1 bins, L = m(m^2 - 1)/3 = 20; Pre-select: Z + 1 = 7 bins
    assert disk.histograms == 8 * 3 * (41 + 7)
    assert disk.thresholds == 8 * 2 * 3 * 2
    assert disk.screen_output == 24 * entries + 4 * 4 * entries + 8 * 3 * 48 + 96
    # the first 64/alpha = 6400 tokens (more than the 1000 here) all enter: every token, per tail
    assert spill_members_per_tail(0.01, 10, 1000) == 1000
    # at scale: 1.2k + 4 sqrt(k) + 16 speculative, plus the first 6400 tokens
    assert spill_members_per_tail(0.01, 10**6, 10**8) == 1_200_000 + 4_000 + 16 + 6_400
    assert disk.spill_members == 2 * 3 * 2 * 1000
    assert disk.spill_one_pass == 8 * 12000 + 4 * 4 * 1000
    assert disk.spill_two_pass == 4 * 4 * entries
    assert disk.signatures == 3 * 2 * 3 * 8 + 3 * 7 * 8  # (B, m - 2) ids, AIC, coefficients; 7 per benchmark


def test_disk_sizes_cap_at_the_tokens():
    # alpha = 0.2 of 100 tokens: k = 20, 2 x 3 x 2 x 20 = 240 entries but only 100 distinct tokens
    disk = disk_sizes(n_tokens=100, n_models=4, n_benchmarks=3, alpha=0.2, coefficients=BOTH)
    assert disk.union == 100
    assert disk.candidate_nll == 4 * 4 * 100
    assert spill_members_per_tail(0.2, 20, 100) == 100  # the first 64/alpha = 320 tokens all enter
    assert disk.spill_one_pass == 8 * (2 * 3 * 2 * 100) + 4 * 4 * 100  # columns of at most every token
    assert spill_members_per_tail(0.4, 40, 50) == 50  # never more members than tokens
    one = disk_sizes(n_tokens=100, n_models=4, n_benchmarks=3, alpha=0.2, coefficients=("thrush",))
    assert one.candidates == 24 * 3 * 2 * 20 and one.histograms == 8 * 3 * 41


def test_screen_and_select_rows_by_hand():
    d, m, B, cores = 1_000_000, 4, 3, 4
    rates = dict(read=1e6, both=5e5, histogram_thrush=2e6, histogram_preselect=4e6, tails_thrush=1e6,
                 tails_preselect=2e6, sort=1e7)
    cal = fake_calibration(m, B, **rates)
    out = project(cal, n_tokens=d, n_models=m, n_benchmarks=B, alpha=0.01, disk_bytes_per_s=1e15, run=RunSpec.build(memory_limit="64GiB", workers=cores))  # disk never binds
    rows = {(s.mode, s.stage, s.step): s for s in out.stages}
    one = rows["one pass", "screen", "pass 1/1"]
    per_token = 1 / 1e6 + 1 / 5e5 + (1 / 2e6 + 1 / 4e6) + (1 / 1e6 + 1 / 2e6)
    assert one.cpu_s == pytest.approx(d * per_token)
    assert one.wall_s == pytest.approx(d * per_token / cores) and one.bound == "cpu"
    assert one.read_bytes == out.disk.store and one.write_bytes == out.disk.spill_one_pass
    p1 = rows["two passes", "screen", "pass 1/2"]
    p2 = rows["two passes", "screen", "pass 2/2"]
    assert p1.cpu_s == pytest.approx(d * (1 / 1e6 + 1 / 5e5 + 1 / 2e6 + 1 / 4e6))
    assert p2.cpu_s == pytest.approx(d * (1 / 1e6 + 1 / 5e5 + 1 / 1e6 + 1 / 2e6))
    assert p2.write_bytes == out.disk.spill_two_pass
    merge = rows["two passes", "merge + write", ""]
    assert merge.cpu_s == pytest.approx((2 * B * 2 * out.k + out.disk.union) / 1e7)
    assert merge.write_bytes == out.disk.screen_output

    # selection: 2k candidates, m + 1 fits in one batch held in memory, m - 2 steps, B tasks on min(N, B) cores
    select = rows["both", "select", ""]
    n = 2 * out.k
    per_bench = n * (1e-6 + (m - 2) * 2e-6)
    assert select.cpu_s == pytest.approx(B * per_bench)
    assert select.wall_s == pytest.approx(math.ceil(B / min(cores, B)) * per_bench)
    assert select.read_bytes == B * n * 4 * m
    assert out.total_wall_s("one pass") == pytest.approx(sum(s.wall_s for s in out.rows("one pass")))

    # a slow disk binds: the pass takes its bytes over the bandwidth
    slow = project(cal, n_tokens=d, n_models=m, n_benchmarks=B, alpha=0.01, disk_bytes_per_s=1e3, run=RunSpec.build(memory_limit="64GiB", workers=cores))
    first = next(s for s in slow.stages if s.step == "pass 1/2")
    assert first.bound == "disk" and first.wall_s == pytest.approx(slow.disk.store / 1e3)


def test_gpu_projection_from_stated_figures():
    cal = fake_calibration()
    out = project(cal, n_tokens=10**6, n_models=4, n_benchmarks=3, run=RunSpec.build(memory_limit="64GiB", workers=2, device="gpu"))
    assert out.gpu is H200
    for row in out.stages:
        if row.stage == "screen":
            assert row.gpu_wall_s is not None and row.gpu_wall_s > 0
            assert row.gpu_bound in ("read", "link", "HBM", "FP64", "FP32", "disk")
        else:
            assert row.gpu_wall_s is None  # merge and selection stay on the CPU
    assert any("STATED" in line for line in out.assumptions)
    # fused kernels: the Thrush product is 2 B m int32 ops per token; Pre-select 2 m² compares + 3 B m words
    assert gpu_token_cost("thrush", 4, 3)[2] == 2 * 3 * 4
    assert gpu_token_cost("preselect", 4, 3)[2] == 2 * 16 + 3 * 3 * 4
    assert any("GPU target" in line and "UNVERIFIED" in line for line in out.assumptions)
    cpu = project(cal, n_tokens=10**6, n_models=4, n_benchmarks=3, run=RunSpec.build(memory_limit="64GiB", workers=2))
    assert cpu.gpu is None and all(s.gpu_wall_s is None for s in cpu.stages)


# ----------------------------------------------------------------------------- monotonicity and memory


def test_more_tokens_more_time_and_disk_never_more_memory_than_the_limit():
    cal = fake_calibration(4, 3)
    limit = "1GiB"
    previous = None
    for d in (10**4, 10**5, 10**6, 10**7, 10**8):
        out = project(cal, n_tokens=d, n_models=4, n_benchmarks=3, run=RunSpec.build(memory_limit=limit, workers=4))
        for row in out.stages:
            if row.fits:
                assert row.peak_bytes <= parse_memory(limit)
            else:
                assert row.need_bytes > parse_memory(limit) and row.plan.startswith("does not fit")
        if previous is not None:
            for mode in ("one pass", "two passes"):
                assert out.total_wall_s(mode) > previous.total_wall_s(mode)
            for row, before in zip(out.stages, previous.stages):
                assert row.wall_s >= before.wall_s and row.cpu_s >= before.cpu_s
                assert row.read_bytes >= before.read_bytes and row.write_bytes >= before.write_bytes
            for name, size in vars(out.disk).items():
                assert size >= getattr(previous.disk, name), name
            assert out.disk.store > previous.disk.store
        previous = out


def test_a_small_limit_is_refused_with_the_need():
    out = project(fake_calibration(32, 88), n_tokens=1.69e7, n_models=32, n_benchmarks=88, run=RunSpec.build(memory_limit="600MiB", workers=2))
    screen = next(s for s in out.stages if s.stage == "screen")
    assert not screen.fits and screen.need_bytes > parse_memory("600MiB")
    assert "does not fit" in screen.plan and "--memory-limit" in screen.plan
    # need_bytes is the smallest limit that fits: one byte less is refused
    kwargs = dict(n_tokens=1.69e7, n_models=32, n_benchmarks=88)
    at_need = project(fake_calibration(32, 88), **kwargs, run=RunSpec.build(memory_limit=screen.need_bytes, workers=2))
    assert at_need.stages[0].fits and at_need.stages[0].peak_bytes <= screen.need_bytes
    below = project(fake_calibration(32, 88), **kwargs, run=RunSpec.build(memory_limit=screen.need_bytes - 1, workers=2))
    assert not below.stages[0].fits


def test_project_checks_its_inputs():
    cal = fake_calibration()
    with pytest.raises(OptionError, match="calibration ran at 4 models x 3 benchmarks"):
        project(cal, n_tokens=1000, n_models=5, n_benchmarks=3)
    with pytest.raises(OptionError, match="--tokens"):
        project(cal, n_tokens=-1, n_models=4, n_benchmarks=3)
    with pytest.raises(OptionError, match="alpha"):
        project(cal, n_tokens=1000, n_models=4, n_benchmarks=3, alpha=0.5)
    with pytest.raises(OptionError, match="device"):
        project(cal, n_tokens=1000, n_models=4, n_benchmarks=3, run=RunSpec.build(device="tpu"))


def test_formatting():
    assert format_size(1.5 * 2**30) == "1.50 GiB"
    assert format_size(954 * 2**30) == "954 GiB"
    assert format_size(1000 * 2**30) == "0.98 TiB"
    assert format_size(12) == "12 B"
    assert format_duration(5) == "5.0 s" and format_duration(90) == "90 s"
    assert format_duration(3 * 3600) == "3.0 h" and format_duration(600) == "10.0 min"
    assert format_rate(2.5e6) == "2.5 M tok/s"


# ----------------------------------------------------------------------------- real calibration and CLI


def test_calibration_measures_every_kernel():
    from bsig_array.diagnostics.calibration import read_probe

    cal = calibrate(4, 3, "both", read_probe=read_probe, block_tokens=256, read_tokens=2048, seconds=0.01)
    assert set(cal.rates) == set(KERNELS)
    assert all(math.isfinite(r) and r > 0 for r in cal.rates.values())
    assert cal.forward_step_s > 0 and cal.forward_setup_s >= 0
    assert cal.compression > 0 and (cal.models, cal.benchmarks) == (4, 3)
    out = project(cal, n_tokens=10**6, n_models=4, n_benchmarks=3, run=RunSpec.build(memory_limit="2GiB", workers=2))
    assert all(math.isfinite(s.wall_s) and s.wall_s > 0 for s in out.stages)


def test_cli_prints_tables_and_writes_json(tmp_path, capsys):
    path = tmp_path / "plan.json"
    code, out, err = run_cli(
        capsys, "plan", "--tokens", "1e5", "--models", "4", "--benchmarks", "3", "--workers", "3",
        "--memory-limit", "1GiB", "--device", "gpu", "--json", path,
    )
    assert code == 0, err
    assert "k = 1,000 per tail" in out and "per stage and pass" in out and "two passes (fallback)" in out
    assert "wall, GPU" in out and f"wrote {path}" in out
    data = json.loads(path.read_text())
    assert data["n_tokens"] == 100_000 and data["k"] == 1000 and data["cores"] == 3
    assert data["coefficients"] == list(BOTH) and data["memory_limit"] == 2**30
    assert {s["stage"] for s in data["stages"]} == {"screen", "merge + write", "select"}
    assert data["disk"]["store_raw"] == 4 * 100_000 * 4
    assert set(data["calibration"]["rates"]) == set(KERNELS)
    assert data["total_wall_s"]["one pass"] > 0 and data["total_wall_s_gpu"]["two passes"] > 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tokens", "-5"], "--tokens must be a whole number >= 2"),
        (["--tokens", "1.5"], "--tokens must be a whole number"),
        (["--tokens", "nan"], "--tokens must be a whole number"),
        (["--models", "0"], "--models must be an integer in [3, 200]"),
        (["--models", "201"], "--models must be an integer in [3, 200]"),
        (["--benchmarks", "0"], "--benchmarks must be an integer >= 1"),
        (["--alpha", "0.5"], "alpha must be in (0, 0.5)"),
        (["--alpha", "0"], "alpha must be in (0, 0.5)"),
        (["--coefficients", "spearman"], "'spearman' is not one of"),
        (["--memory-limit", "lots"], "cannot read memory size 'lots'"),
        (["--workers", "0"], "--workers must be an integer >= 1"),
        (["--device", "tpu"], "'tpu' is not one of"),
        (["--tokens", "many"], "'many' is not a valid float"),
    ],
)
def test_bad_options_give_one_line(capsys, args, fragment):
    base = {"--tokens": "1e5", "--models": "4", "--benchmarks": "3"}
    for name, value in zip(args[::2], args[1::2]):
        base[name] = value
    code, out, err = run_cli(capsys, "plan", *(x for kv in base.items() for x in kv))
    assert code not in (0, None)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error: "), err
    assert fragment in lines[0], lines[0]
