"""Shared pytest setup: offline hubs, no progress bars, small hypothesis budgets."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("BSIG_PROGRESS", "0")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def s3():
    """A real S3 server (moto's server mode) on 127.0.0.1 for this session; see ``tests/s3.py``."""
    from s3 import start_server, stop_server

    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture
def s3_options(s3, monkeypatch):
    """Storage options for ``s3`` in this process (as ``--storage-options`` would set them)."""
    from bsig_array.io.location import set_storage_options

    monkeypatch.setenv("BSIG_STORAGE_OPTIONS", s3.options_json)
    set_storage_options(None)
    yield s3.options
    set_storage_options(None)
