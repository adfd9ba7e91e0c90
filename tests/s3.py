"""A real S3 server for tests: moto's server mode on 127.0.0.1, started per test session.

``s3`` (the fixture in ``conftest.py``) starts ``moto_server`` in a subprocess on a free port of
127.0.0.1 (a real HTTP S3 API: botocore signs requests, s3fs and zarr's FsspecStore talk to it as
to any S3 endpoint) and stops it after the session.  :class:`S3` hands out fresh buckets and the
storage options that reach them; :meth:`S3.env` is the environment for a ``bsig`` subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Credentials of the test server (moto accepts any); tests check they never leak into outputs.
KEY, SECRET = "bsig-test-key-AKIA", "bsig-test-secret-do-not-leak"


@dataclass
class S3:
    endpoint: str
    process: subprocess.Popen

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET}

    @property
    def options_json(self) -> str:
        return json.dumps(self.options)

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.options, skip_instance_cache=True)

    def bucket(self, prefix: str = "bsig") -> str:
        """Create a fresh bucket; return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.fs().mkdir(name)
        return name

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a ``bsig`` subprocess that reaches this server (options in the environment)."""
        return {**os.environ, "BSIG_STORAGE_OPTIONS": self.options_json, **extra}

    def upload(self, local: Path, url: str) -> None:
        """Copy a local file or directory to ``s3://…`` (test setup, not bsig's writer)."""
        self.fs().put(str(local), url.removeprefix("s3://"), recursive=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> S3:
    """Start ``moto_server`` on 127.0.0.1 and wait until it answers."""
    import urllib.request

    port = free_port()
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    process = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.2)
    return S3(endpoint, process)


def stop_server(server: S3) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
