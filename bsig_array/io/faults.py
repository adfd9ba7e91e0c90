"""Test hook: fault injection.  Nothing in the product depends on it; it only lets tests kill a run.

Writers call :func:`fault_point` where a kill must leave nothing that opens as complete (every
progress step, every store chunk between its data and its mark, around every atomic swap and
publish).  ``tests/test_faults.py``, ``tests/test_location.py`` and ``tests/test_remote_writers.py``
set, for the process under test:

``BSIG_FAULT_KILL_AT=n``
    the n-th call of the process sends it SIGKILL (or the signal named by ``BSIG_FAULT_SIGNAL``,
    e.g. ``TERM``);
``BSIG_FAULT_COUNT=FILE``
    each call appends the running count to FILE (to find how many points a run passes).

The variables are read once, at the first call of a process (a forked child reads them again at its
first call, so a test server may fork and then set them); with neither set every later call is one
test of a module global.
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_calls = 0
#: None: not read yet in this process; False: neither variable set; else (kill at, count file).
_armed: tuple[int | None, str | None] | bool | None = None


def _read() -> tuple[int | None, str | None] | bool:
    at = os.environ.get("BSIG_FAULT_KILL_AT")
    count = os.environ.get("BSIG_FAULT_COUNT") or None
    kill_at = int(at) if at is not None and at.isdigit() else None
    if kill_at is None and count is None:
        return False
    return kill_at, count


def _forget() -> None:
    global _armed
    _armed = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget)


def fault_point() -> None:
    """A point where a test may kill this process (see the module docstring); else nothing."""
    global _armed, _calls
    if _armed is False:
        return
    if _armed is None:
        _armed = _read()
        if _armed is False:
            return
    assert not isinstance(_armed, bool)
    kill_at, count = _armed
    with _lock:
        _calls += 1
        n = _calls
    if n == kill_at:
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("BSIG_FAULT_SIGNAL", "KILL")))
    if count:
        with open(count, "a") as fh:
            fh.write(f"{n}\n")
