"""Artifact kinds: what each on-disk artifact is called, what marks it, and how its output is checked.

Every artifact that bsig writes as a directory (or may find where it is about to write) is a
registered :class:`ArtifactKind`.  The io module that owns the artifact registers it next to its
schema (:func:`register_kind`); :func:`artifact_kind` recognizes what exists at a path from the
entries it holds, and the output check (:func:`bsig_array.io.atomic.check_new_output`) asks the kind
whether it is a directory and a Zarr store.

==================  =====  =================  ============================================  =================================
kind (``name``)     prec.  layout             marked by (any one set of entries)            registered by
==================  =====  =================  ============================================  =================================
screen output       10     Zarr               ``candidate_token``                           ``io/screen_output.py``
signatures store    20     Zarr               ``signature_token``                           ``io/signatures.py``
corpus store        30     Zarr               ``doc_offset``                                ``io/corpus_store.py``
perplexity store    40     Zarr               ``nll``                                       ``io/perplexity_store/schema.py``
overlap file        50     file or ``.zarr``  ``benchmark_a``                               ``io/overlap_file.py``
performance matrix  60     file or ``.zarr``  ``score``                                     ``io/scores.py``
demo output         70     directory          ``summary.json``; ``pool`` + ``screen.zarr``  here, for ``pipelines/demo.py``
synthetic pool      80     directory          ``perplexity.zarr``                           here, for ``pipelines/synth.py``
question set        90     directory          (check: every entry a ``.jsonl``)             ``io/questions.py``
==================  =====  =================  ============================================  =================================

Recognition tries the kinds in ``precedence`` order (lowest first) and the first that matches wins,
so a directory holding the markers of several kinds is named the same way whatever was imported
first.  Registration is complete before any recognition: the io owners are listed in :data:`OWNERS`
and imported (by name) on the first lookup, so ``artifact_kind`` sees every kind even when only
:mod:`bsig_array.io.atomic` was imported.  The synthetic pool and the demo output are directories of
other artifacts whose layout is defined by ``bsig_array/pipelines/synth.py`` and
``bsig_array/pipelines/demo.py``; io may not import pipelines (docs/DESIGN.md §1), so those two
composite kinds are registered here on their owners' behalf.

A kind name is the string messages print (``"... is a perplexity store, not a screen output"``),
and the module constants (``SCREEN_OUTPUT`` in :mod:`bsig_array.io.screen_output`, …) are those
strings.  Besides the kinds, :func:`artifact_kind` answers ``None`` (nothing there), :data:`FILE`,
:data:`EMPTY_DIRECTORY`, :data:`ZARR_STORE` (an unrecognized Zarr store) or :data:`DIRECTORY`.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bsig_array.io.location import Location, as_location

FILE = "file"
EMPTY_DIRECTORY = "empty directory"
ZARR_STORE = "zarr store"
DIRECTORY = "directory"
#: What :func:`artifact_kind` answers for something that is no registered kind; no kind takes these names.
RESERVED = (FILE, EMPTY_DIRECTORY, ZARR_STORE, DIRECTORY)

#: The io modules that register kinds at import, imported by name before the first lookup.
OWNERS = (
    "bsig_array.io.screen_output",
    "bsig_array.io.signatures",
    "bsig_array.io.corpus_store",
    "bsig_array.io.perplexity_store.schema",
    "bsig_array.io.overlap_file",
    "bsig_array.io.scores",
    "bsig_array.io.questions",
)

#: Entries of a directory that are never content: the temporaries of
#: :func:`bsig_array.io.atomic.atomic_output` (``.NAME.tmp-PID-HOST-RAND``, ``.NAME.old-…``) ...
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}$")
#: ... and the scratch directories of :func:`bsig_array.io.atomic.scratch_dir` (``.bsig-…``).
SCRATCH_PREFIX = ".bsig-"


def with_article(kind: str) -> str:
    """``a screen output``, ``an overlap file``: a kind name as messages say it."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def is_debris(name: str) -> bool:
    """Whether a directory entry is a bsig writer's temporary or scratch (removed by the next writer)."""
    return TEMPORARY.match(name) is not None or name.startswith(SCRATCH_PREFIX)


@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact, as the output check and :func:`artifact_kind` see it.

    Attributes
    ----------
    name
        What messages call it (``"perplexity store"``); the kind constants are these strings.
    owner
        The module that defines the artifact's layout (``"bsig_array.io.screen_output"``).
    precedence
        Recognition order: lower is tried first (unique across kinds).
    zarr
        Always a Zarr store (its root ``zarr.json`` commits it on object storage).
    directory
        Always a directory (a Zarr store always is); otherwise it is one only when named ``*.zarr``.
    markers
        Sets of entries (child arrays or files) of which any one, all present, identifies the kind.
    check
        For a kind no fixed entries identify: ``check(names)`` says whether a directory holding the
        (non-empty) entries ``names`` is of this kind.
    """

    name: str
    owner: str
    precedence: int
    zarr: bool = False
    directory: bool = False
    markers: tuple[tuple[str, ...], ...] = ()
    check: Callable[[frozenset[str]], bool] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "markers", tuple(tuple(m) for m in self.markers))
        if not self.name or self.name in RESERVED:
            raise ValueError(f"artifact kind name {self.name!r} is empty or reserved")
        if self.zarr and not self.directory:
            raise ValueError(f"artifact kind {self.name!r}: a Zarr store is always a directory")
        if not self.markers and self.check is None:
            raise ValueError(f"artifact kind {self.name!r} has neither markers nor a check")
        if any(not m for m in self.markers):
            raise ValueError(f"artifact kind {self.name!r} has an empty marker set")

    def matches(self, names: frozenset[str]) -> bool:
        """Whether a directory holding the (non-empty) entries ``names`` is of this kind."""
        if any(all(m in names for m in marker) for marker in self.markers):
            return True
        return self.check is not None and self.check(names)


_lock = threading.RLock()
_kinds: dict[str, ArtifactKind] = {}
_order: tuple[ArtifactKind, ...] = ()
_complete = False


def register_kind(kind: ArtifactKind) -> str:
    """Register ``kind`` and return its name (the owner's kind constant).

    Raises
    ------
    ValueError
        When another kind already has the name, one of the marker sets (as a set of entries) or the
        precedence.  A second registration by the same owner replaces the first (a re-import).
    """
    global _order
    with _lock:
        old = _kinds.get(kind.name)
        if old is not None and old.owner != kind.owner:
            raise ValueError(f"artifact kind {kind.name!r} is already registered by {old.owner}")
        mine = {frozenset(m) for m in kind.markers}
        if len(mine) != len(kind.markers):
            raise ValueError(f"artifact kind {kind.name!r} lists a marker set twice")
        for other in _kinds.values():
            if other.name == kind.name:
                continue
            shared = mine & {frozenset(m) for m in other.markers}
            if shared:
                raise ValueError(f"artifact kind {kind.name!r}: marker set {sorted(next(iter(shared)))} already marks "
                                 f"{other.name!r} ({other.owner})")
            if other.precedence == kind.precedence:
                raise ValueError(f"artifact kind {kind.name!r}: precedence {kind.precedence} is already "
                                 f"{other.name!r}'s ({other.owner})")
        _kinds[kind.name] = kind
        _order = tuple(sorted(_kinds.values(), key=lambda k: k.precedence))
    return kind.name


def _completed() -> None:
    """Import every owner in :data:`OWNERS` once, so that every kind is registered."""
    global _complete
    if not _complete:
        # Not under _lock: an owner's import takes it to register (and another thread may be
        # importing an owner); import_module is itself thread-safe.
        for module in OWNERS:
            importlib.import_module(module)
        _complete = True


def kinds() -> tuple[ArtifactKind, ...]:
    """Every registered kind, in recognition order."""
    _completed()
    return _order


def lookup(name: str) -> ArtifactKind | None:
    """The registered kind called ``name``, or ``None`` (``"file"`` and any unregistered name)."""
    if name in RESERVED:
        return None
    kind = _kinds.get(name)
    if kind is None:
        _completed()
        kind = _kinds.get(name)
    return kind


def is_zarr_kind(name: str) -> bool:
    """Whether an artifact of kind ``name`` is always a Zarr store."""
    kind = lookup(name)
    return kind is not None and kind.zarr


def is_directory_kind(name: str) -> bool:
    """Whether an artifact of kind ``name`` is always a directory."""
    kind = lookup(name)
    return kind is not None and kind.directory


def recognize(names: Iterable[str]) -> str:
    """The kind of a directory holding the entries ``names`` (debris already left out): the first
    registered kind that matches, else :data:`EMPTY_DIRECTORY`, :data:`ZARR_STORE` or :data:`DIRECTORY`."""
    entries = frozenset(names)
    if not entries:
        return EMPTY_DIRECTORY
    for kind in kinds():
        if kind.matches(entries):
            return kind.name
    return ZARR_STORE if "zarr.json" in entries or ".zgroup" in entries else DIRECTORY


def artifact_kind(path: str | os.PathLike | Location) -> str | None:
    """What exists at ``path``: ``None`` (nothing), a registered kind's name, :data:`FILE`,
    :data:`EMPTY_DIRECTORY`, :data:`ZARR_STORE` (unrecognized) or :data:`DIRECTORY` (anything else)."""
    loc = as_location(path)
    if loc.is_remote:
        # An object store has no empty directories: a prefix with objects below it is a directory.
        if loc.is_dir():
            return recognize(loc.names())
        return FILE if loc.exists() else None
    local = loc.path
    if not local.exists():
        return None
    if not local.is_dir():
        return FILE
    try:
        # Temporaries and scratch of bsig writers are not content (the next writer removes them).
        names = [p.name for p in local.iterdir() if not is_debris(p.name)]
    except OSError:
        return DIRECTORY
    return recognize(names)


# The composite kinds, registered here on their pipeline owners' behalf (see the module docstring).
DEMO_OUTPUT = register_kind(ArtifactKind(
    "demo output", owner="bsig_array.pipelines.demo", precedence=70, directory=True,
    markers=(("summary.json",), ("pool", "screen.zarr")),
))
SYNTH_POOL = register_kind(ArtifactKind(
    "synthetic pool", owner="bsig_array.pipelines.synth", precedence=80, directory=True, markers=(("perplexity.zarr",),),
))
