"""Object storage that stops answering, killed remote screens, replaced incomplete outputs (issue 27).

A store that stops answering mid-read is a TCP proxy in front of the real moto server (``tests/s3.py``):
it forwards until the first request for an NLL chunk, then holds every connection open without a
byte more.  With ``BSIG_STORAGE_TIMEOUT=2`` and ``BSIG_STORAGE_RETRIES=1`` a screen must end in one
``bsig: error:`` line naming the store, the timeout and the settings, after one warning, within a
bounded time, without a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from s3 import SECRET

from bsig_array.errors import BsigWarning, InputError, OptionError
from bsig_array.io.location import as_location, client_options, set_storage_options

BSIG = str(Path(sys.executable).parent / "bsig")


class StallingProxy:
    """Forwards 127.0.0.1:port to ``target`` until a request line contains ``trigger``; from then on
    every connection, old or new, is accepted and never answered (a store that stops for good)."""

    def __init__(self, target: str, trigger: bytes | None) -> None:
        self.target = target.removeprefix("http://").split(":")
        self.trigger = trigger
        self.stalled = threading.Event()
        if trigger is None:
            self.stalled.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.stalled.is_set():
                continue  # accepted, never answered
            server = socket.create_connection((self.target[0], int(self.target[1])))
            self.sockets.append(server)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while data := src.recv(65536):
                if request and self.trigger is not None and self.trigger in data:
                    self.stalled.set()
                if self.stalled.is_set():
                    continue  # swallow: the store has stopped answering
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def quick_settings(monkeypatch):
    """2-second timeout, one retry, in this process (the table is read at import)."""
    import dataclasses

    import bsig_array.runtime.defaults as d

    monkeypatch.setattr(d, "DEFAULTS", dataclasses.replace(d.DEFAULTS, storage_timeout=2.0, storage_retries=1))
    set_storage_options(None)
    yield
    set_storage_options(None)


def test_settings_are_validated():
    from bsig_array.runtime.defaults import Defaults

    table = Defaults.from_env({"BSIG_STORAGE_TIMEOUT": "2.5", "BSIG_STORAGE_RETRIES": "0"})
    assert (table.storage_timeout, table.storage_retries) == (2.5, 0)
    for var, value in (("BSIG_STORAGE_TIMEOUT", "0"), ("BSIG_STORAGE_TIMEOUT", "soon"), ("BSIG_STORAGE_RETRIES", "-1")):
        with pytest.raises(OptionError, match=var):
            Defaults.from_env({var: value})


def test_settings_reach_the_client_and_explicit_config_wins(quick_settings, monkeypatch):
    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", json.dumps({"anon": True}))
    set_storage_options(None)
    config = as_location("s3://b/x.zarr").options["config_kwargs"]
    assert config == {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": {"total_max_attempts": 1}}
    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", json.dumps({"anon": True, "config_kwargs": {"read_timeout": 9}}))
    set_storage_options(None)
    loc = as_location("s3://b/x.zarr")
    assert loc.options["config_kwargs"]["read_timeout"] == 9 and loc.options["config_kwargs"]["connect_timeout"] == 2.0
    assert loc.fs.retries == 2  # attempts: the first and one retry
    assert client_options("memory", {}) == {}  # the settings are botocore's: s3:// only


def test_silent_endpoint_is_one_error_after_a_warning(quick_settings, monkeypatch):
    """A listener that accepts and never answers: InputError naming the store and the settings, in bounded time."""
    proxy = StallingProxy("http://127.0.0.1:1", trigger=None)
    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", json.dumps({"endpoint_url": proxy.endpoint, "key": "k", "secret": SECRET}))
    set_storage_options(None)
    t0 = time.monotonic()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(InputError) as err:
                as_location("s3://bucket/pool.zarr/zarr.json").read_bytes()
    finally:
        proxy.close()
    elapsed = time.monotonic() - t0
    message = str(err.value)
    assert "s3://bucket/pool.zarr/zarr.json" in message and "BSIG_STORAGE_TIMEOUT=2s" in message
    assert "BSIG_STORAGE_RETRIES" in message and "2 attempts" in message and SECRET not in message
    retried = [str(w.message) for w in caught if issubclass(w.category, BsigWarning)]
    assert retried and all("retrying" in w and proxy.endpoint in w for w in retried)
    assert elapsed < 30, elapsed


def test_boundary_turns_a_client_timeout_into_one_line():
    from botocore.exceptions import ReadTimeoutError

    from bsig_array.runtime.boundary import kernel_errors

    with pytest.raises(InputError, match=r"object store http://h:1/b/k: no answer .* BSIG_STORAGE_TIMEOUT"):
        with kernel_errors("screening"):
            raise ReadTimeoutError(endpoint_url="http://h:1/b/k")
    with pytest.raises(ZeroDivisionError):
        with kernel_errors("screening"):
            raise ZeroDivisionError


@pytest.fixture(scope="module")
def pool_url(s3, tmp_path_factory):
    bucket = s3.bucket()
    url = f"s3://{bucket}/pool"
    run = subprocess.run([BSIG, "synth", url, "--models", "4", "--benchmarks", "3", "--tokens", "8000",
                          "--chunk-tokens", "2000", "--no-questions"], env=s3.env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return url


def test_store_stopping_mid_screen_is_one_line(s3, pool_url, tmp_path):
    """The proxy stops answering at the first NLL chunk: one warning, one error, no traceback, bounded time."""
    proxy = StallingProxy(s3.endpoint, trigger=b"/perplexity.zarr/nll/c/")
    options = json.dumps({**s3.options, "endpoint_url": proxy.endpoint})
    env = {**s3.env(), "BSIG_STORAGE_OPTIONS": options, "BSIG_STORAGE_TIMEOUT": "2", "BSIG_STORAGE_RETRIES": "1"}
    t0 = time.monotonic()
    try:
        run = subprocess.run([BSIG, "screen", "--perplexity", f"{pool_url}/perplexity.zarr",
                              "--performance", f"{pool_url}/performance.csv", "--out", str(tmp_path / "s.zarr")],
                             env=env, capture_output=True, text=True, timeout=120)
    finally:
        proxy.close()
    elapsed = time.monotonic() - t0
    assert proxy.stalled.is_set()
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("bsig: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], run.stderr
    assert "perplexity.zarr" in errors[0] and "BSIG_STORAGE_TIMEOUT=2s" in errors[0], errors[0]
    assert "BSIG_STORAGE_RETRIES" in errors[0] and SECRET not in run.stderr
    assert any(line.startswith("bsig: warning:") and "retrying" in line for line in lines), run.stderr
    assert not (tmp_path / "s.zarr").exists()
    assert elapsed < 90, elapsed


# ------------------------------------------------------------------------------------ spill debris


def test_remote_spill_lives_in_a_known_parent_and_dead_debris_is_removed(tmp_path, monkeypatch):
    import tempfile

    from bsig_array.io.atomic import HOST
    from bsig_array.stages.screen.spill import ChunkSpill, spill_parent

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    parent = spill_parent()
    assert parent.parent == tmp_path
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    debris = parent / f".bsig-screen-spill-{dead.pid}-{HOST}-abc"
    debris.mkdir(parents=True)
    (debris / "0.local.npy").write_bytes(b"x")
    alive = parent / f".bsig-screen-spill-{os.getpid()}-{HOST}-live"
    alive.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spill = ChunkSpill(near="s3://bucket/screen.zarr")
    assert Path(spill.path).parent == parent and not debris.exists() and alive.exists()
    assert any("left by an interrupted bsig run" in str(w.message) for w in caught)
    spill.remove()
    assert not Path(spill.path).exists()


def test_incomplete_remote_output_is_announced_once(s3, s3_options):
    from bsig_array.io.atomic import check_new_output
    from bsig_array.io.screen_output import SCREEN_OUTPUT

    bucket = s3.bucket()
    fs = s3.fs()
    fs.pipe(f"{bucket}/screen.zarr/tail_token/zarr.json", b"{}")  # a killed publish: no root zarr.json
    def check() -> None:
        check_new_output(f"s3://{bucket}/screen.zarr", overwrite=False, kind=SCREEN_OUTPUT)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own filter, as the CLI runs with
        check()  # the CLI, the stage and the writer each check, from their own lines
        check()
        check_new_output(f"s3://{bucket}/screen.zarr", overwrite=False, kind=SCREEN_OUTPUT)
    notes = [str(w.message) for w in caught if "incomplete" in str(w.message)]
    assert len(notes) == 1, notes
