"""Output safety for every artifact: one check before the work, one atomic write around it, debris.

This module does three things: the output check (:func:`check_new_output`,
:func:`check_output_files`), the atomic swap or publish (:func:`atomic_output`,
:func:`atomic_entries`, :func:`publish`) and the debris of interrupted writers (:func:`remove_stale`,
:func:`scratch_dir`).  What kind an existing artifact is comes from the registry in
:mod:`bsig_array.io.kinds` (each owning io module registers its kind); the kind constants live with
their owners (``SCREEN_OUTPUT`` in :mod:`bsig_array.io.screen_output`, …).

Every command that writes goes through :func:`check_new_output` before any work:

- an output that is, contains or lies inside one of the command's inputs is refused (paths are
  compared after resolving symlinks), whatever the flags;
- an existing artifact of another kind (a perplexity store where a screen output goes, a file where
  a directory store goes, a foreign non-empty directory) is refused, whatever the flags;
- an existing artifact of the same kind is refused unless ``overwrite``;
- an unwritable destination (a parent that is a file, a read-only directory) is refused.

:func:`atomic_output` then writes to a hidden sibling ``.NAME.tmp-PID-…`` and swaps it in only
when it is complete (for directories an atomic exchange where the kernel offers one), so a failed or
killed run leaves the old output intact and a reader never sees half an artifact.  Scratch
directories (:func:`scratch_dir`) and temporaries carry the writer's pid; the next writer in that
directory removes those of dead processes and says so (:class:`~bsig_array.errors.BsigWarning`).

Outputs on object storage (``s3://…``; see :mod:`bsig_array.io.location`) have no rename: they are
written to a local staging directory and then published (:func:`publish`): every object but the
``zarr.json`` metadata first, then the metadata deepest first and the root ``zarr.json`` last.  The
root metadata is the commit: until it exists readers refuse the store as incomplete, and the next
writer replaces such leftovers without ``--overwrite``.

The swaps and publishes pass :func:`~bsig_array.io.faults.fault_point`, where tests kill a run
(a test hook, inert unless ``BSIG_FAULT_KILL_AT`` or ``BSIG_FAULT_COUNT`` is set).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import sys
import tempfile
import uuid
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bsig_array.errors import BsigWarning, InputError
from bsig_array.io.faults import fault_point
from bsig_array.io.kinds import (
    DIRECTORY,
    EMPTY_DIRECTORY,
    FILE,
    TEMPORARY,
    artifact_kind,
    is_directory_kind,
    is_zarr_kind,
    with_article,
)
from bsig_array.io.location import BUCKET_PROTOCOLS, Location, as_location, remove_path

#: This machine, in debris names: a pid is only known dead on the machine that ran it (shared disks).
HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def owner() -> str:
    """``PID-HOST`` of this process, as temporaries and scratch directories carry it."""
    return f"{os.getpid()}-{HOST}"


def is_directory_output(path: str | os.PathLike | Location, kind: str) -> bool:
    """Whether an output of ``kind`` at ``path`` is a directory."""
    return is_directory_kind(kind) or as_location(path).suffix.lower() == ".zarr"


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path))).resolve()


def check_not_input(
    path: str | os.PathLike | Location, inputs: Iterable[str | os.PathLike | Location | None], what: str = "output"
) -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (symlinks resolved; URLs
    compared without credentials)."""
    out = as_location(path).key().rstrip("/")
    for item in inputs:
        if item is None:
            continue
        inp = as_location(item).key().rstrip("/")
        if out == inp:
            relation = "is"
        elif out.startswith(inp + "/"):
            relation = "lies inside"
        elif inp.startswith(out + "/"):
            relation = "contains"
        else:
            continue
        raise InputError(f"{what} {as_location(path)} {relation} the input {as_location(item)}; bsig never writes over "
                         "its inputs, pick another path")


def _bucket_exists(loc: Location, bucket: str) -> bool:
    # ls, not exists: fsspec's exists() answers False for an unreachable endpoint too.
    try:
        loc._remote(loc.fs.ls, bucket, detail=False)
    except FileNotFoundError:
        return False
    return True


def check_writable(path: str | os.PathLike | Location, what: str = "output") -> None:
    """Refuse ``path`` when its nearest existing ancestor is not a writable directory (on an
    object store: when its bucket does not exist or cannot be reached)."""
    loc = as_location(path)
    if loc.is_remote:
        bucket = loc.fs_path.strip("/").split("/", 1)[0]
        if loc.protocol in BUCKET_PROTOCOLS and not _bucket_exists(loc, bucket):
            raise InputError(f"cannot write {what} {loc}: bucket {bucket!r} does not exist or is not visible with these "
                             "credentials; create it or fix the URL or --storage-options")
        return
    parent = Path(os.path.abspath(loc.path)).parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            raise InputError(f"cannot write {what} {path}: {parent} is a broken symbolic link; pick another path")
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {path}: {parent} is a file, not a directory; pick another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path}: directory {parent} is not writable; pick another path")


#: Keys below a Zarr store's root that only its arrays have: array metadata and chunks (``nll/c/0/3``).
_ZARR_KEY = re.compile(r"^[^/]+/(zarr\.json|c(/\d+)+)$")


def uncommitted_zarr(loc: Location) -> bool:
    """Whether the object-store prefix ``loc`` holds only what a killed :func:`publish` of a Zarr
    store leaves: array objects (metadata, chunks) and no root ``zarr.json`` (the commit)."""
    if loc.is_local or loc.child("zarr.json").exists():
        return False
    keys = list(loc.walk_files())
    return bool(keys) and all(_ZARR_KEY.match(k) for k in keys)


def check_new_output(
    path: str | os.PathLike | Location,
    *,
    overwrite: bool,
    what: str = "output",
    kind: str | None = None,
    inputs: Iterable[str | os.PathLike | Location | None] = (),
) -> Path:
    """Refuse an output that would lose data; call it before doing the work (see the module docstring).

    Parameters
    ----------
    path
        The output to write.
    overwrite
        Whether an existing output of the same kind may be replaced (``--overwrite``).
    what
        How messages name the output.
    kind
        What will be written (a kind registered in :mod:`bsig_array.io.kinds`, or ``"file"``);
        ``None`` checks only existence, inputs and writability.
    inputs
        Paths the command reads; ``None`` entries are skipped.

    Raises
    ------
    InputError
        One line naming the path and the fix.

    Returns
    -------
    Path
        The output as a path; for a URL, the :class:`~bsig_array.io.location.Location` (typed as a
        path: every consumer passes it on to :func:`atomic_output` or the writers, which take both).
    """
    loc = as_location(path)
    check_not_input(loc, inputs, what)
    check_writable(loc, what)
    found = artifact_kind(loc)
    # A URL is handed on as its Location (see Returns), a local output as its Path.
    out: Any = loc if loc.is_remote else loc.path
    if loc.is_remote and found is not None and kind is not None and (is_zarr_kind(kind) or loc.suffix.lower() == ".zarr"):
        if (found == kind and not loc.child("zarr.json").exists()) or uncommitted_zarr(loc):
            # Never committed, never opened: replaced without --overwrite (publish removes it first).
            # The CLI, the stage and the writer each check the output: warned from this one line
            # (stacklevel 1, not the caller's), Python's default filter prints it once, not per caller.
            warnings.warn(f"replacing {loc}: an incomplete {kind} without its root zarr.json, left by an "
                          "interrupted bsig run", BsigWarning, stacklevel=1)
            return out
    if found is None and (loc.is_remote or not loc.path.is_symlink()):
        return out
    if found is None:
        raise InputError(f"{what} {out} is a broken symbolic link; remove it or pick another path")
    if kind is not None:
        directory = is_directory_output(out, kind)
        if directory and found == FILE:
            raise InputError(f"{what} {out} is a file, but {with_article(kind)} is a directory; pick another path")
        if not directory and found != FILE:
            raise InputError(f"{what} {out} is a directory, but {with_article(kind)} is a file; pick another path")
        if directory and found == EMPTY_DIRECTORY:
            return out  # nothing to lose
        if found not in (kind, FILE):
            raise InputError(
                f"{what} {out} is {with_article(found)}, not {with_article(kind)}; bsig does not replace another kind of "
                "data even with --overwrite; pick another path"
            )
    if not overwrite:
        raise InputError(f"{what} {out} already exists; pass --overwrite to replace it or pick another path")
    return out


# ------------------------------------------------------------------------------------- debris


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine) and has not exited (a zombie has)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X")


#: A scratch directory of :func:`scratch_dir`, whatever its prefix: ``.bsig-KIND-PID-HOST-…``.
_SCRATCH = re.compile(r"^\.bsig-[A-Za-z_-]*?-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-.+$")
#: Seconds by which a running process must have started after an entry last changed to count as a
#: stranger reusing a dead writer's pid: generous, since the entry's ctime comes from the file
#: system's clock (a network disk's server may lag this machine's).
_START_SLACK = 3600.0


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None without procfs."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return None


def _started_after(pid: int, when: float) -> bool:
    """Whether the running process ``pid`` started after time ``when`` (so it reuses the pid of a dead
    writer whose entry was last changed at ``when``); False when that cannot be told."""
    stat = _proc_stat(pid)
    try:
        with open("/proc/stat") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        start = btime + int(stat[19]) / os.sysconf("SC_CLK_TCK")  # type: ignore[index]
    except (OSError, StopIteration, TypeError, IndexError, ValueError):
        return False
    return start > when + _START_SLACK


def _writer_dead(pid: str, host: str, entry: Path, tag: str | None) -> bool:
    """Whether the writer ``pid`` on ``host`` that left ``entry`` is gone: not running, a zombie, or its
    pid now belongs to a process started after the entry was last changed (every writer creates its
    entries after it starts; ``.old`` entries are renamed old outputs, so only the pid counts there)."""
    if not pid.isdigit() or host != HOST:
        return False
    if not pid_alive(int(pid)):
        return True
    if tag == "old" or int(pid) == os.getpid():
        return False
    try:
        changed = entry.lstat().st_ctime
    except OSError:
        return False
    return _started_after(int(pid), changed)


def _note(message: str) -> None:
    warnings.warn(message, BsigWarning, stacklevel=3)


def remove_stale(directory: str | os.PathLike, prefix: str | None = None) -> list[Path]:
    """Remove debris of dead writers in ``directory`` and say so; return what was removed.

    Debris is a temporary ``.NAME.tmp-PID-…`` of :func:`atomic_output` (and ``.NAME.old-PID-…``,
    an old output moved aside, which is put back when ``NAME`` is missing) and a scratch directory
    ``.bsig-KIND-PID-HOST-…`` of :func:`scratch_dir` (every kind, whatever ``prefix``: a writer
    removes the spill of another command too) whose writer on this host is gone (:func:`_writer_dead`:
    every dead pid, not only the latest, and a pid reused since by a newer process).  ``prefix``
    additionally names scratch of another form ``PREFIXPID-HOST-…``.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        scratch = _SCRATCH.match(entry.name)
        if match is not None:
            pid, host = match["pid"], match["host"]
        elif scratch is not None:
            pid, host = scratch["pid"], scratch["host"]
        elif prefix is not None and entry.name.startswith(prefix):
            pid, host, *_ = entry.name[len(prefix):].split("-") + ["", ""]
        else:
            continue
        if not _writer_dead(pid, host, entry, None if match is None else match["tag"]):
            continue
        if match is not None and match["tag"] == "old" and not (directory / match["name"]).exists():
            os.replace(entry, directory / match["name"])
            _note(f"restored {directory / match['name']} from {entry.name}, left by an interrupted bsig run (pid {pid})")
            continue
        try:
            remove_path(entry)
        except OSError:
            continue
        removed.append(entry)
        _note(f"removed {entry}, left by an interrupted bsig run (pid {pid})")
    return removed


def scratch_dir(near: str | os.PathLike | None, prefix: str) -> Path:
    """Create the scratch directory ``PREFIX<pid>-<host>-<random>`` in ``near`` (else ``TMPDIR``).

    Stale scratch directories and temporaries of dead writers there are removed first
    (:func:`remove_stale`).  The caller removes the directory when done.
    """
    parent = None if near is None else Path(near)
    try:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
            remove_stale(parent, prefix)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner()}-", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot create a scratch directory in {parent or tempfile.gettempdir()} ({exc.strerror}); "
                         "pick an output on a writable disk") from None


# --------------------------------------------------------------------------------- atomic write


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), ctypes.c_uint(rename_exchange)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the complete ``tmp`` at ``path``; the old ``path`` ends up at ``tmp`` (or is gone)."""
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(tmp, path)  # atomic for files (and for a directory onto nothing)
        return
    if _exchange(tmp, path):
        fault_point()
        return
    # No atomic exchange: move the old directory aside under a name remove_stale can put back.
    aside = path.with_name(f".{path.name}.old-{owner()}-{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    fault_point()
    os.replace(tmp, path)
    os.replace(aside, tmp)


def publish(staged: Path, loc: Location) -> None:
    """Upload the complete local file or directory ``staged`` to ``loc`` on an object store.

    A file is one PUT (atomic on object stores).  A directory replaces whatever is at ``loc``: the
    old root ``zarr.json`` is deleted first (the old store stops being complete), then the rest of
    it; the new objects are uploaded with every ``zarr.json`` last, deepest first, the root's very
    last, so a reader never opens a store whose root metadata exists before all of its data does.
    """
    fs = loc.fs
    if not staged.is_dir():
        loc._remote(fs.put_file, str(staged), loc.fs_path)
        return
    if loc.exists():
        loc.child("zarr.json").remove()  # uncommit the old store first
        fault_point()
        loc.remove()
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    data = [p for p in files if p.name != "zarr.json"]
    metadata = sorted((p for p in files if p.name == "zarr.json"), key=lambda p: -len(p.relative_to(staged).parts))

    def remote(p: Path) -> str:
        return loc.child(*p.relative_to(staged).parts).fs_path

    if data:
        loc._remote(fs.put, [str(p) for p in data], [remote(p) for p in data])  # concurrent uploads
    fault_point()
    for p in metadata:  # deepest first; the root zarr.json commits the store
        loc._remote(fs.put_file, str(p), remote(p))


@contextmanager
def _staged(loc: Location) -> Iterator[Path]:
    """A local staging path for ``loc`` (in ``TMPDIR``), published there on success."""
    scratch = scratch_dir(tempfile.gettempdir(), ".bsig-stage-")
    try:
        yield scratch / (loc.name or "output")
        fault_point()
        publish(scratch / (loc.name or "output"), loc)
        fault_point()
    finally:
        remove_path(scratch)


@contextmanager
def atomic_output(path: str | os.PathLike | Location) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``.

    Works for files and for directory stores (Zarr).  On an exception (or a kill) ``path`` is left as
    it was; the temporary is removed now (or by the next writer in that directory).  Call
    :func:`check_new_output` first: this replaces whatever is at ``path``.  On an object store the
    temporary is a local staging path, published when complete (:func:`publish`).
    """
    loc = as_location(path)
    if loc.is_remote:
        with _staged(loc) as tmp:
            yield tmp
        return
    path = loc.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {path.parent} for {path} ({exc.strerror}); pick another path") from None
    remove_stale(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{owner()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        fault_point()
        _swap_in(tmp, path)
        fault_point()
    finally:
        remove_path(tmp)


def check_output_files(
    directory: str | os.PathLike | Location,
    names: Iterable[str],
    *,
    overwrite: bool,
    what: str = "output",
    inputs: Iterable[str | os.PathLike | Location | None] = (),
) -> list[Path]:
    """:func:`check_new_output` for outputs that are entries ``names`` of a shared ``directory``
    (``bsig stats`` tables, ``bsig report``'s page and figures): the directory may hold other files,
    but must not be a file, a store or one of the inputs."""
    loc = as_location(directory)
    inputs = list(inputs)
    where = loc.key().rstrip("/")
    for item in inputs:
        if item is None:
            continue
        inp = as_location(item).key().rstrip("/")
        if where == inp or where.startswith(inp + "/"):
            raise InputError(f"{what} directory {loc} is or lies inside the input {as_location(item)}; pick another directory")
    check_writable(loc, what)
    found = artifact_kind(loc)
    if found == FILE:
        raise InputError(f"{what} directory {directory} is a file; pick a directory")
    if found not in (None, EMPTY_DIRECTORY, DIRECTORY):
        raise InputError(f"{what} directory {directory} is {with_article(found)}; pick another directory")
    return [check_new_output(loc.child(name), overwrite=overwrite, what=what, inputs=inputs) for name in names]


@contextmanager
def atomic_entries(directory: str | os.PathLike | Location, names: Iterable[str]) -> Iterator[Path]:
    """Yield a scratch directory in ``directory``; on success its entries ``names`` replace those of
    ``directory`` (each swapped in whole, as :func:`atomic_output` does), on failure nothing changes.

    For outputs that are several entries of a shared directory (``bsig report``'s page and figures).
    """
    loc = as_location(directory)
    scratch = scratch_dir(loc.path if loc.is_local else tempfile.gettempdir(), ".bsig-out-")
    try:
        yield scratch
        fault_point()
        for name in names:
            if (scratch / name).exists():
                if loc.is_remote:
                    publish(scratch / name, loc.child(name))
                else:
                    _swap_in(scratch / name, loc.path / name)
    finally:
        remove_path(scratch)
