"""``bsig ingest`` on what cannot be NLLs or ids, and after repeated kills (issue 27).

Every refusal goes through the real entry point: exactly one ``bsig: error:`` line naming the first
offending rows and how many in all, nothing written (no output, no temporary, no staging folder) and
the inputs byte-identical.  The kills are real ``kill -9`` (``BSIG_FAULT_KILL_AT``) of the installed
console script; the next run removes every earlier run's debris, whatever its pid, and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bsig_array.io.atomic import HOST
from bsig_array.io.perplexity_store.reader import open_store
from tests.test_cli_errors import assert_one_line_error
from tests.test_damage import snapshot

BSIG = str(Path(sys.executable).parent / "bsig")


def paper_files(directory: Path, n_docs: int = 40, pieces: int = 10, models: int = 3, seed: int = 0,
                mutate=None) -> list[Path]:
    """Paper-repo files (rows shuffled); ``mutate(i, frame)`` may spoil model ``i``'s rows."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(models):
        n = n_docs * pieces
        order = rng.permutation(n)
        frame = pd.DataFrame({"text_id": order // pieces, "chunk_id": order % pieces,
                              "last": -rng.random(n) * 5})
        if mutate is not None:
            mutate(i, frame)
        lists = [[-1.0, float(x)] for x in frame["last"]]
        table = pa.table({"text_id": pa.array(frame["text_id"], pa.int64()), "chunk_id": pa.array(frame["chunk_id"], pa.int64()),
                          "logprobs": pa.array(lists, pa.list_(pa.float32()))})
        pq.write_table(table, directory / f"m{i}.parquet", row_group_size=100)
        files.append(directory / f"m{i}.parquet")
    return files


def refused(capsys, tmp_path: Path, args: list, *fragments: str) -> str:
    """The one-line refusal, with nothing written and the inputs unchanged."""
    before = snapshot(tmp_path)
    out = tmp_path / "out" / "p.zarr"
    line = assert_one_line_error(capsys, ["ingest", *map(str, args), "--out", str(out), "--batch-rows", "64",
                                          "--chunk-tokens", "50"], *fragments)
    assert not out.exists()
    assert snapshot(tmp_path) == before  # inputs byte-identical, no temporary or staging left
    return line


# --------------------------------------------------------------------------------- values and ids


def test_positive_logprobs_in_paper_files_are_refused_naming_rows(tmp_path, capsys):
    def spoil(i, frame):
        if i == 1:  # five rows of model m1 hold positive log-probabilities
            frame.loc[[7, 70, 170, 270, 370], "last"] = [0.5, 1.25, 2.0, 3.0, 4.0]

    paper_files(tmp_path / "nll", mutate=spoil)
    line = refused(capsys, tmp_path, [tmp_path / "nll"], "m1.parquet (model 'm1')", "5 last logprobs are positive",
                   ": 0.5", ": 1.25", ": 2", "and 2 more", "a log-probability is a finite number <= 0")
    assert line.count("text_id=") == 3  # the first three rows, by (text_id, chunk_id)


def test_nonfinite_logprobs_and_negative_chunk_ids_in_paper_files(tmp_path, capsys):
    def nan(i, frame):
        if i == 2:
            frame.loc[[3, 9], "last"] = [np.nan, np.inf]

    paper_files(tmp_path / "a", mutate=nan)
    refused(capsys, tmp_path, [tmp_path / "a"], "m2.parquet (model 'm2')", "2 last logprobs are NaN/inf", ": nan", ": inf")

    def negative(i, frame):
        frame["chunk_id"] -= 3  # chunk ids -3..6

    paper_files(tmp_path / "b", mutate=negative)
    refused(capsys, tmp_path, [tmp_path / "b" / "m0.parquet", tmp_path / "b" / "m1.parquet", tmp_path / "b" / "m2.parquet"],
            "m0.parquet: 120 chunk_ids are negative", "chunk_id=-", "and 117 more", "renumber them")


def wide_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"token": np.arange(n, dtype=np.int64) * 2, "doc": np.arange(n) // 10,
                         **{f"m{i}": rng.random(n) * 4 for i in range(3)}})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_duplicate_and_negative_token_ids_in_a_wide_table_are_refused(tmp_path, capsys, suffix):
    frame = wide_frame()
    frame.loc[[5, 150], "token"] = frame.loc[[1, 2], "token"].to_numpy()  # ids 2 and 4 twice
    frame.loc[[9, 99, 199, 120], "token"] = [-1, -7, -3, -2]
    path = tmp_path / f"w{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    refused(capsys, tmp_path, [path], "token ids: 4 are negative (row 9: -1; row 99: -7; row 120: -2, and 1 more)",
            "token ids: 2 rows repeat an earlier id (id 2 at rows 1, 5; id 4 at rows 2, 150)",
            "must be non-negative integers and token ids unique")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_integer_ids_and_negative_nlls_in_a_wide_table_are_refused(tmp_path, capsys, suffix):
    frame = wide_frame()
    frame["doc"] = frame["doc"].astype(float)
    frame.loc[[4, 40], "doc"] = [0.5, 2.25]
    path = tmp_path / f"w{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    refused(capsys, tmp_path, [path], "doc ids: 2 are not integers (row 4: ", "row 40: ")
    frame = wide_frame()
    frame.loc[[3, 30, 60, 90], "m1"] = [-0.5, np.nan, np.inf, -2.0]
    path = tmp_path / f"v{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    line = refused(capsys, tmp_path, [path], "4 values cannot be NLLs (row 3 model 'm1': -0.5; row 30 model 'm1': ",
                   "; row 60 model 'm1': inf, and 1 more)", "an NLL is a finite number >= 0")
    assert "'m1': empty;" in line  # pandas writes NaN as an empty cell (CSV) or a null (Parquet)


def test_clean_wide_table_still_ingests(tmp_path, capsys):
    frame = wide_frame()
    frame["token"] = frame["token"].astype(float)  # integer-valued floats are integer ids
    frame.to_csv(tmp_path / "w.csv", index=False)
    from tests.test_cli_errors import run_cli

    code, out, err = run_cli(capsys, "ingest", tmp_path / "w.csv", "--out", tmp_path / "p.zarr", "--chunk-tokens", 64)
    assert code == 0 and err == "", err
    ds = open_store(tmp_path / "p.zarr")
    np.testing.assert_array_equal(ds["token"].values, np.arange(200) * 2)


# ------------------------------------------------------------------------------------ repeated kills


def bsig(*args, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([BSIG, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BSIG_PROGRESS": "0", "HF_HUB_OFFLINE": "1", **env})


def debris(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_repeated_kills_leave_nothing_after_the_next_run(tmp_path):
    paper_files(tmp_path / "nll", n_docs=60)
    work = tmp_path / "w"
    work.mkdir()
    out = work / "p.zarr"
    argv = ["ingest", tmp_path / "nll", "--out", out, "--chunk-tokens", 100, "--batch-rows", 100]
    assert bsig(*argv, BSIG_FAULT_COUNT=str(tmp_path / "points")).returncode == 0
    points = int((tmp_path / "points").read_text().split()[-1])
    ref = open_store(out)["nll"].values
    shutil.rmtree(out)
    held = tmp_path / "held"
    held.mkdir()
    left = []
    # Kill in the reading pass (a staging folder), in the writing pass (staging folder and temporary
    # store), then a third time; each kill's debris is kept aside so the last run meets all three.
    for at in (2, points - 4, points // 2):
        run = bsig(*argv, BSIG_FAULT_KILL_AT=str(at))
        assert run.returncode == -signal.SIGKILL, run.stderr
        names = debris(work)
        assert any(n.startswith(".bsig-ingest-") for n in names), (at, names)
        left += names
        for n in names:
            os.replace(work / n, held / n)
    assert any(n.startswith(".p.zarr.tmp-") for n in left)
    for n in left:
        os.replace(held / n, work / n)
    run = bsig(*argv)
    assert run.returncode == 0, run.stderr
    assert debris(work) == []
    warnings = run.stderr.splitlines()
    assert all(w.startswith("bsig: warning: removed ") for w in warnings) and len(warnings) == len(left)
    for n in left:
        assert any(f"{work / n}," in w for w in warnings), n
    np.testing.assert_array_equal(open_store(out)["nll"].values, ref)


def test_any_writer_removes_every_dead_writers_debris(tmp_path):
    """A paper ingest killed while writing leaves a staging folder and a temporary store; a wide
    ingest into another store of that directory removes both, and a zombie's debris too."""
    paper_files(tmp_path / "nll", n_docs=60)
    work = tmp_path / "w"
    work.mkdir()
    argv = ["ingest", tmp_path / "nll", "--out", work / "p.zarr", "--chunk-tokens", 100, "--batch-rows", 100]
    assert bsig(*argv, BSIG_FAULT_COUNT=str(tmp_path / "points")).returncode == 0
    shutil.rmtree(work / "p.zarr")
    run = bsig(*argv, BSIG_FAULT_KILL_AT=str(int((tmp_path / "points").read_text().split()[-1]) - 4))  # writing the store
    assert run.returncode == -signal.SIGKILL
    killed = debris(work)
    assert [n.split("-")[0] for n in killed] == [".bsig", ".p.zarr.tmp"], killed
    # A writer that has exited but is not reaped yet (a zombie) is dead too.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):
        with open(f"/proc/{zombie.pid}/stat") as fh:
            if fh.read().rpartition(")")[2].split()[0] == "Z":
                break
        time.sleep(0.05)
    (work / f".bsig-screen-spill-{zombie.pid}-{HOST}-abcd1234").mkdir()
    killed.append(f".bsig-screen-spill-{zombie.pid}-{HOST}-abcd1234")
    wide_frame().to_csv(tmp_path / "w.csv", index=False)
    run = bsig("ingest", tmp_path / "w.csv", "--out", work / "q.zarr")
    zombie.wait()
    assert run.returncode == 0, run.stderr
    assert debris(work) == [] and sorted(p.name for p in work.iterdir()) == ["q.zarr"]
    for n in killed:
        assert f"bsig: warning: removed {work / n}, left by an interrupted bsig run" in run.stderr, n
