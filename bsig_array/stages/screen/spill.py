"""Screen spill: tail members and NLL columns parked on disk between the scan and the output write.

Layout of the spill directory (``<start>``: a store chunk's first position; ``<seg>``: a segment's
index in token-id order; ``<c>``: a coefficient)::

    <start>.<c>.tok / .code   raw int32 members (local ids) and codes, appended part by part
    <start>.<c>.ptr.npy       (parts, 2B+1) offsets: part p, key q is tok[ptr[p, q]:ptr[p, q+1]]
    <start>.local.npy         sorted local ids of the chunk's members (any coefficient)
    <start>.ids.npy           their token ids
    <start>.cols.npy          their NLL columns (model, n) in the store's dtype
    <start>.used.npz          the tightest boundaries its members were collected with (one pass)
    seg<i>.<c>.ktok / .kcode / .kptr.npy  segment i's kept members, sorted by (key, segment-local id)
    <i>.union/src/pos/upos.npy  segment i's kept union: token ids, chunk (within the segment) and
                              column holding each, and each segment-local id's position in the union

A key is ``2·benchmark + tail``; members are grouped by key within every part (the kept files are
sorted within each key too).  A local id is the rank of a token's id within its chunk (or segment).  Scan tasks write the chunk files, finalize tasks the segment files; everything is
read back by key ranges through memory maps, so no reader holds more than the block it asked for
and the driver never holds members or columns at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsig_array.io.atomic import scratch_dir
from bsig_array.io.location import Location, as_location
from bsig_array.stages.screen.merge import Members


class ChunkSpill:
    """Temporary spill directory, removed when this object is closed or garbage collected.

    Created in ``BSIG_SPILL_DIR`` when that is set, else next to the screen output when that is a
    local path (a pool-sized spill belongs on the disk the user chose for the output, not in
    ``/tmp``), else under ``TMPDIR``: an output on object storage (``s3://…``) has no directory to
    put it in, so it goes in :func:`spill_parent` (``TMPDIR/bsig-spill-<uid>``), where the next
    screen finds and removes a killed one's.  Tasks write the spill themselves, so dask.distributed workers must see it: the
    workers of a LocalCluster share this machine's ``TMPDIR``; on a multi-host cluster set
    ``BSIG_SPILL_DIR`` to a shared mount.  Copies shipped to tasks in other processes are plain
    paths and never delete anything.
    """

    def __init__(self, near: str | os.PathLike | Location | None = None, spill_dir: str | None = None) -> None:
        where = None if near is None else as_location(near)
        if spill_dir:  # the run's spill_dir (RunSpec), from BSIG_SPILL_DIR
            parent: Path | None = Path(spill_dir).expanduser().absolute()
        else:
            parent = spill_parent() if where is None or where.is_remote else where.path.absolute().parent
        # pid in the name: the next screen removes the spill of a killed one (scratch_dir).
        self.path = str(scratch_dir(parent, ".bsig-screen-spill-"))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def __fspath__(self) -> str:
        return self.path

    def __reduce__(self) -> tuple:
        return (str, (self.path,))

    def remove(self) -> None:
        """Delete the directory now."""
        self._remove()


def spill_parent() -> Path:
    """``TMPDIR/bsig-spill-<uid>``: the parent of spills with no output folder to sit next to.

    A known folder, so the next screen removes the spill of a killed one (:func:`scratch_dir`
    removes ``.bsig-screen-spill-PID-…`` folders of dead pids there); one per user, so users sharing
    ``/tmp`` never need each other's permissions.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0  # no uid on Windows: one folder per TMPDIR
    return Path(tempfile.gettempdir()) / f"bsig-spill-{uid}"


def _file(spill: str | os.PathLike, name: Any, kind: str) -> str:
    return os.path.join(os.fspath(spill), f"{name}.{kind}")


class MemberWriter:
    """Appends one chunk's (or segment's) members, part by part, per coefficient."""

    def __init__(self, spill: str | os.PathLike, name: Any, coefficients: Sequence[str], n_keys: int, kept: bool = False):
        self.spill, self.name, self.n_keys = spill, name, n_keys
        self._prefix = "k" if kept else ""
        self._files = {
            c: (open(_file(spill, name, f"{c}.{self._prefix}tok"), "wb"), open(_file(spill, name, f"{c}.{self._prefix}code"), "wb"))
            for c in coefficients
        }
        self._ptr: dict[str, list[np.ndarray]] = {c: [] for c in coefficients}
        self._size = dict.fromkeys(coefficients, 0)
        self.nbytes = 0

    def add(self, coefficient: str, mb: Members) -> None:
        """Append a part sorted by (key, token)."""
        if not mb.size and self._ptr[coefficient]:
            return
        tok, code = self._files[coefficient]
        mb.token.astype(np.int32, copy=False).tofile(tok)
        mb.code.astype(np.int32, copy=False).tofile(code)
        ptr = np.zeros(self.n_keys + 1, dtype=np.int64)
        np.cumsum(np.bincount(mb.key, minlength=self.n_keys), out=ptr[1:])
        self._ptr[coefficient].append(ptr + self._size[coefficient])
        self._size[coefficient] += mb.size
        self.nbytes += 8 * mb.size

    def close(self) -> None:
        """Flush the data files and write the offsets."""
        for c, (tok, code) in self._files.items():
            tok.close()
            code.close()
            ptr = np.stack(self._ptr[c]) if self._ptr[c] else np.zeros((1, self.n_keys + 1), dtype=np.int64)
            np.save(_file(self.spill, self.name, f"{c}.{self._prefix}ptr.npy"), ptr, allow_pickle=False)

    def abort(self) -> None:
        for tok, code in self._files.values():
            tok.close()
            code.close()


def member_ptr(spill: str | os.PathLike, name: Any, coefficient: str, kept: bool = False) -> np.ndarray:
    """(parts, 2B+1) offsets of a chunk's (or, ``kept``, a segment's) members."""
    return np.load(_file(spill, name, f"{coefficient}.{'k' if kept else ''}ptr.npy"))


def read_members(
    spill: str | os.PathLike, name: Any, coefficient: str, q0: int, q1: int, ptr: np.ndarray | None = None,
) -> Members:
    """A chunk's members of keys ``q0 <= key < q1`` over all parts (parts concatenated, not re-sorted)."""
    ptr = member_ptr(spill, name, coefficient) if ptr is None else ptr
    size = int(ptr[-1, -1]) if ptr.size else 0
    keys, toks, codes = [], [], []
    if size:
        tok = np.memmap(_file(spill, name, f"{coefficient}.tok"), dtype=np.int32, mode="r", shape=(size,))
        code = np.memmap(_file(spill, name, f"{coefficient}.code"), dtype=np.int32, mode="r", shape=(size,))
        for p in ptr:
            a, b = int(p[q0]), int(p[q1])
            if b > a:
                keys.append(np.repeat(np.arange(q0, q1, dtype=np.int32), np.diff(p[q0 : q1 + 1])))
                toks.append(np.array(tok[a:b]))
                codes.append(np.array(code[a:b]))
        del tok, code
    if not keys:
        return Members(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))
    return Members(np.concatenate(keys), np.concatenate(toks), np.concatenate(codes))


def read_kept(spill: str | os.PathLike, segment: int, coefficient: str) -> tuple[Any, Any]:
    """A segment's kept local ids and codes, memory-mapped (in key order, sorted within each key)."""
    out = []
    for kind, dtype in (("ktok", np.int32), ("kcode", np.int32)):
        path = _file(spill, f"seg{segment}", f"{coefficient}.{kind}")
        size = os.path.getsize(path) // 4
        out.append(np.memmap(path, dtype=dtype, mode="r", shape=(size,)) if size else np.empty(0, dtype))
    return out[0], out[1]


def key_blocks(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive key ranges holding at most ``budget`` members each (a single key may exceed it)."""
    out = []
    q0, held = 0, 0
    for q, n in enumerate(counts.tolist()):
        if q > q0 and held + n > budget:
            out.append((q0, q))
            q0, held = q, 0
        held += n
    out.append((q0, len(counts)))
    return out


def write_columns(spill: str | os.PathLike, start: int, local: np.ndarray, ids: np.ndarray, columns: np.ndarray) -> int:
    """Write a chunk's members' sorted local ids, their token ids and NLL columns; bytes written."""
    np.save(_file(spill, start, "local.npy"), local, allow_pickle=False)
    np.save(_file(spill, start, "ids.npy"), ids, allow_pickle=False)
    np.save(_file(spill, start, "cols.npy"), columns, allow_pickle=False)
    return local.nbytes + ids.nbytes + columns.nbytes


def read_local(spill: str | os.PathLike, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted local ids of the chunk's spilled columns and their token ids."""
    return np.load(_file(spill, start, "local.npy")), np.load(_file(spill, start, "ids.npy"))


def read_columns(spill: str | os.PathLike, start: int) -> Any:
    """The chunk's spilled columns (memory-mapped: only the pages read are resident)."""
    return np.load(_file(spill, start, "cols.npy"), mmap_mode="r")


def write_used(spill: str | os.PathLike, start: int, used: dict[str, Any]) -> None:
    """The tightest tail boundaries (``TailBounds``) a chunk's members were collected with, per coefficient."""
    arrays = {}
    for coef, b in used.items():
        arrays[coef] = np.stack([b.low_code, b.low_take, b.high_code, b.high_take]).astype(np.int64)
        arrays[f"{coef}.k"] = np.array(b.k)
    np.savez(_file(spill, start, "used.npz"), **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds


def read_used(spill: str | os.PathLike, start: int) -> dict[str, Any]:
    """The boundaries written by :func:`write_used`."""
    from bsig_array.kernels.types import TailBounds

    with np.load(_file(spill, start, "used.npz")) as z:
        return {
            name: TailBounds(z[name][0], z[name][1], z[name][2], z[name][3], int(z[f"{name}.k"]))
            for name in z.files
            if not name.endswith(".k")
        }


UNION_PARTS = ("union", "src", "pos", "upos")


def write_union(spill: str | os.PathLike, segment: int, **arrays: np.ndarray) -> None:
    """A segment's kept union: ``union`` (sorted token ids), ``src`` (chunk within the segment),
    ``pos`` (column in that chunk's spill), ``upos`` (union position of every segment-local id)."""
    for name in UNION_PARTS:
        np.save(_file(spill, segment, f"{name}.npy"), arrays[name], allow_pickle=False)


def read_union(spill: str | os.PathLike, segment: int) -> dict[str, Any]:
    """The arrays written by :func:`write_union`, memory-mapped (readers slice what they need)."""
    return {name: np.load(_file(spill, segment, f"{name}.npy"), mmap_mode="r") for name in UNION_PARTS}


def drop(spill: str | os.PathLike, names: Sequence[Any], kinds: Sequence[str]) -> None:
    """Delete spill files once read for the last time (the spill shrinks as the output grows)."""
    for name in names:
        for kind in kinds:
            try:
                os.remove(_file(spill, name, kind))
            except FileNotFoundError:
                pass
