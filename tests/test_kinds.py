"""Artifact kinds (bsig_array/io/kinds.py) and the fault hook (bsig_array/io/faults.py).

Every registered kind is recognized from a real artifact written by the package; recognition gives
what the marker table that lived in ``bsig_array/io/atomic.py`` gave (written out below as the
reference), also for directories holding the markers of several kinds; the registry refuses a second
kind with a taken name, marker set or precedence; and it is complete whatever was imported first.
The fault hook kills only when its variable is set.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bsig_array.io import faults, kinds
from bsig_array.io.kinds import (
    DEMO_OUTPUT,
    FILE,
    SYNTH_POOL,
    ArtifactKind,
    artifact_kind,
    recognize,
    register_kind,
)

pytestmark = pytest.mark.filterwarnings("ignore:The data type", "ignore:Consolidated metadata")

# ----------------------------------------------------------------------------- the old recognition

#: ``_MARKERS`` of bsig_array/io/atomic.py before the registry, literally (kind, entries), in order.
OLD_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("screen output", ("candidate_token",)),
    ("signatures store", ("signature_token",)),
    ("corpus store", ("doc_offset",)),
    ("perplexity store", ("nll",)),
    ("overlap file", ("benchmark_a",)),
    ("performance matrix", ("score",)),
    ("demo output", ("summary.json",)),
    ("demo output", ("pool", "screen.zarr")),
    ("synthetic pool", ("perplexity.zarr",)),
)
#: The old ``ZARR_KINDS`` and ``DIRECTORY_KINDS``.
OLD_ZARR = {"perplexity store", "corpus store", "screen output", "signatures store"}
OLD_DIRECTORY = OLD_ZARR | {"synthetic pool", "demo output", "question set"}


def old_kind_of(names: set[str]) -> str:
    """``_kind_of`` of the old bsig_array/io/atomic.py, literally."""
    if not names:
        return "empty directory"
    for kind, marker in OLD_MARKERS:
        if all(m in names for m in marker):
            return kind
    if all(n.endswith(".jsonl") for n in names):
        return "question set"
    return "zarr store" if "zarr.json" in names or ".zgroup" in names else "directory"


MARKER_ENTRIES = sorted({m for _, marker in OLD_MARKERS for m in marker})
EXTRAS = ["zarr.json", ".zgroup", "a.jsonl", "b.jsonl", "notes.txt"]


def test_registry_order_is_the_old_marker_table():
    assert [(k.name, m) for k in kinds.kinds() for m in k.markers] == list(OLD_MARKERS)
    assert [k.name for k in kinds.kinds()][-1] == "question set"  # the .jsonl rule came after every marker
    assert {k.name for k in kinds.kinds() if k.zarr} == OLD_ZARR
    assert {k.name for k in kinds.kinds() if k.directory} == OLD_DIRECTORY


def test_recognition_equals_the_old_code_for_every_set_of_entries():
    """Every subset of the marker entries, alone and with each extra entry (markers of several kinds
    together included): the registry names it as the old table did."""
    checked = 0
    for r in range(len(MARKER_ENTRIES) + 1):
        for subset in itertools.combinations(MARKER_ENTRIES, r):
            for extra in ([], *([e] for e in EXTRAS), EXTRAS[2:4]):
                names = {*subset, *extra}
                assert recognize(names) == old_kind_of(names), sorted(names)
                checked += 1
    assert checked > 5000


def _directory(path: Path, entries: set[str]) -> Path:
    path.mkdir()
    for name in entries:
        if "." in name and not name.endswith(".zarr"):
            (path / name).write_text("{}")
        else:
            (path / name).mkdir()
    return path


def test_recognition_on_directories_holding_one_or_several_marker_sets(tmp_path):
    sets = [marker for _, marker in OLD_MARKERS]
    cases = [set(m) for m in sets]
    cases += [set(a) | set(b) for a, b in itertools.combinations(sets, 2)]  # every pair: order decides
    cases += [set(a) | set(b) | set(c) for a, b, c in itertools.combinations(sets, 3)][::7]
    cases += [set(), {"a.jsonl"}, {"a.jsonl", "b.jsonl"}, {"a.jsonl", "score"}, {"zarr.json"}, {".zgroup"},
              {"notes.txt"}, {"pool"}, {"screen.zarr"}]
    for i, entries in enumerate(cases):
        d = _directory(tmp_path / f"d{i}", entries)
        (d / f".x.tmp-{2**22 + 1}-0000beef-0123abcd").mkdir()  # debris is never content
        (d / ".bsig-out-1-0000beef-x").mkdir()
        assert artifact_kind(d) == old_kind_of(entries), sorted(entries)
    assert artifact_kind(tmp_path / "missing") is None
    (tmp_path / "f").write_text("x")
    assert artifact_kind(tmp_path / "f") == FILE


# ------------------------------------------------------------------ real artifacts of every kind


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """kind name -> an artifact of that kind written by the package's own writers."""
    from bsig_array.io.overlap_file import write_overlap
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import align_performance, load_performance, write_performance
    from bsig_array.io.screen_output import open_screen
    from bsig_array.io.signatures import write_signatures
    from bsig_array.pipelines.synth import synthesize
    from bsig_array.stages.corpus import build_corpus
    from bsig_array.stages.overlap import compute_overlaps
    from bsig_array.stages.screen.driver import screen
    from bsig_array.stages.select import select_signatures

    root = tmp_path_factory.mktemp("kinds")
    demo = root / "demo"  # the demo's layout: its pool and screen output (summary.json comes last)
    paths = synthesize(demo / "pool", models=6, benchmarks=3, tokens=3000, chunk_tokens=1000, seed=1)
    nll = open_store(paths.perplexity)["nll"]
    score = align_performance(load_performance(paths.performance, metadata=paths.metadata), nll["model"].values)
    screen(nll, score, store=paths.perplexity, out=demo / "screen.zarr")
    signatures = select_signatures(open_screen(demo / "screen.zarr"), score, loocv=False)
    write_signatures(signatures, root / "signatures.zarr")
    write_overlap(compute_overlaps(signatures.load(), nll, score), root / "overlap.zarr")
    write_performance(score, root / "performance.zarr")
    build_corpus(["a b c d e f g h", "i j k l"], root / "corpus.zarr", sample_rate=1.0)
    return {
        "screen output": demo / "screen.zarr",
        "signatures store": root / "signatures.zarr",
        "corpus store": root / "corpus.zarr",
        "perplexity store": Path(paths.perplexity),
        "overlap file": root / "overlap.zarr",
        "performance matrix": root / "performance.zarr",
        "demo output": demo,
        "synthetic pool": Path(paths.perplexity).parent,
        "question set": Path(paths.questions),
        FILE: Path(paths.performance),
    }


def test_every_registered_kind_has_a_real_artifact(artifacts):
    assert sorted(k.name for k in kinds.kinds()) == sorted(set(artifacts) - {FILE})


@pytest.mark.parametrize("name", [kind for kind, _ in OLD_MARKERS if kind != "demo output"] + [DEMO_OUTPUT, "question set"])
def test_real_artifact_is_recognized(artifacts, name):
    assert artifact_kind(artifacts[name]) == name
    kind = kinds.lookup(name)
    assert kind is not None and kind.name == name


def test_file_artifact(artifacts):
    assert artifact_kind(artifacts[FILE]) == FILE and kinds.lookup(FILE) is None


def test_owners_register_their_kinds():
    """Each kind comes from the io module that owns the artifact (the composite ones from kinds.py,
    on behalf of their pipeline owners); every module in OWNERS registers one."""
    owners = {k.name: k.owner for k in kinds.kinds()}
    assert owners == {
        "screen output": "bsig_array.io.screen_output",
        "signatures store": "bsig_array.io.signatures",
        "corpus store": "bsig_array.io.corpus_store",
        "perplexity store": "bsig_array.io.perplexity_store.schema",
        "overlap file": "bsig_array.io.overlap_file",
        "performance matrix": "bsig_array.io.scores",
        "demo output": "bsig_array.pipelines.demo",
        "synthetic pool": "bsig_array.pipelines.synth",
        "question set": "bsig_array.io.questions",
    }
    assert set(kinds.OWNERS) == set(owners.values()) - {"bsig_array.pipelines.demo", "bsig_array.pipelines.synth"}
    from bsig_array.io.corpus_store import CORPUS_STORE
    from bsig_array.io.overlap_file import OVERLAP_FILE
    from bsig_array.io.perplexity_store.schema import PERPLEXITY_STORE
    from bsig_array.io.questions import QUESTIONS
    from bsig_array.io.scores import PERFORMANCE
    from bsig_array.io.screen_output import SCREEN_OUTPUT
    from bsig_array.io.signatures import SIGNATURES

    constants = [SCREEN_OUTPUT, SIGNATURES, CORPUS_STORE, PERPLEXITY_STORE, OVERLAP_FILE, PERFORMANCE, DEMO_OUTPUT,
                 SYNTH_POOL, QUESTIONS]
    assert constants == [k.name for k in kinds.kinds()]


def test_recognition_does_not_depend_on_what_was_imported(artifacts):
    """With only the output check imported, every kind is known at the first lookup."""
    code = textwrap.dedent("""
        import sys
        from bsig_array.io.atomic import check_new_output
        from bsig_array.io.kinds import artifact_kind, kinds
        assert "bsig_array.io.screen_output" not in sys.modules, "the test needs a cold registry"
        print(artifact_kind(sys.argv[1]))
        print(len(kinds()))
        try:
            check_new_output(sys.argv[2], overwrite=True, kind="screen output")
        except Exception as exc:
            print(exc)
    """)
    run = subprocess.run([sys.executable, "-c", code, str(artifacts["screen output"]), str(artifacts["perplexity store"])],
                         capture_output=True, text=True, cwd=artifacts["demo output"])
    assert run.returncode == 0, run.stderr
    kind, count, refusal = run.stdout.splitlines()
    assert kind == "screen output" and int(count) == len(OLD_MARKERS) and "is a perplexity store, not a screen output" in refusal


# ------------------------------------------------------------------------------------- registering


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test."""
    kinds.kinds()
    monkeypatch.setattr(kinds, "_kinds", dict(kinds._kinds))
    monkeypatch.setattr(kinds, "_order", kinds._order)
    return kinds


@pytest.mark.parametrize(("kind", "match"), [
    (ArtifactKind("perplexity store", owner="tests", precedence=999, markers=(("x",),)), "already registered"),
    (ArtifactKind("new kind", owner="tests", precedence=999, markers=(("nll",),)), "already marks 'perplexity store'"),
    (ArtifactKind("new kind", owner="tests", precedence=999, markers=(("screen.zarr", "pool"),)), "already marks 'demo output'"),
    (ArtifactKind("new kind", owner="tests", precedence=999, markers=(("x",), ("x",))), "twice"),
    (ArtifactKind("new kind", owner="tests", precedence=40, markers=(("x",),)), "precedence 40"),
])
def test_duplicates_are_refused(registry, kind, match):
    before = registry.kinds()
    with pytest.raises(ValueError, match=match):
        register_kind(kind)
    assert registry.kinds() == before


@pytest.mark.parametrize(("fields", "match"), [
    ({"name": "file", "markers": (("x",),)}, "reserved"),
    ({"name": "k", "zarr": True, "markers": (("x",),)}, "always a directory"),
    ({"name": "k"}, "neither markers nor a check"),
    ({"name": "k", "markers": ((),)}, "empty marker set"),
])
def test_malformed_kinds_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        ArtifactKind(owner="tests", precedence=999, **fields)


def test_a_new_kind_takes_its_place_in_the_order(registry, tmp_path):
    register_kind(ArtifactKind("early kind", owner="tests", precedence=5, directory=True, markers=(("x", "nll"),)))
    register_kind(ArtifactKind("late kind", owner="tests", precedence=95, check=lambda names: "late" in names))
    assert recognize({"x", "nll"}) == "early kind" and recognize({"nll"}) == "perplexity store"
    assert recognize({"late", "a.jsonl"}) == "late kind" and recognize({"a.jsonl"}) == "question set"
    assert registry.is_directory_kind("early kind") and not registry.is_zarr_kind("early kind")
    # the owner may register again (a re-import); another owner may not
    register_kind(ArtifactKind("early kind", owner="tests", precedence=5, directory=True, markers=(("x", "nll"),)))
    with pytest.raises(ValueError, match="already registered by tests"):
        register_kind(ArtifactKind("early kind", owner="elsewhere", precedence=6, markers=(("y",),)))


# --------------------------------------------------------------------------------- the fault hook

HOOK = textwrap.dedent("""
    import os, sys
    from bsig_array.io.faults import fault_point
    for i in range(1, 6):
        if i == 3 and len(sys.argv) > 1:  # set after the first read: ignored (read once)
            os.environ["BSIG_FAULT_KILL_AT"] = "4"
        fault_point()
        print(i, flush=True)
""")


def _hook(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BSIG_FAULT_")}
    return subprocess.run([sys.executable, "-c", HOOK, *argv], env={**clean, **env}, capture_output=True, text=True,
                          cwd=tmp_path)


def test_fault_hook_kills_only_when_the_variable_is_set(tmp_path):
    assert _hook(tmp_path).stdout.split() == ["1", "2", "3", "4", "5"]
    assert _hook(tmp_path, BSIG_FAULT_KILL_AT="").stdout.split() == ["1", "2", "3", "4", "5"]
    assert _hook(tmp_path, BSIG_FAULT_KILL_AT="x").stdout.split() == ["1", "2", "3", "4", "5"]
    killed = _hook(tmp_path, BSIG_FAULT_KILL_AT="3")
    assert killed.returncode == -signal.SIGKILL and killed.stdout.split() == ["1", "2"]
    termed = _hook(tmp_path, BSIG_FAULT_KILL_AT="2", BSIG_FAULT_SIGNAL="TERM")
    assert termed.returncode == -signal.SIGTERM and termed.stdout.split() == ["1"]
    late = _hook(tmp_path, "late")  # the variable appears mid-run: read once, so no kill
    assert late.returncode == 0 and late.stdout.split() == ["1", "2", "3", "4", "5"]


def test_fault_hook_rearms_in_a_forked_child(tmp_path):
    """tests/test_faults.py forks runs from a server that imported (and may have passed points)
    before each child sets the variables."""
    code = textwrap.dedent("""
        import os
        from bsig_array.io.faults import fault_point
        fault_point()
        pid = os.fork()
        if pid == 0:
            os.environ["BSIG_FAULT_KILL_AT"] = "1"
            fault_point()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else "exit")
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BSIG_FAULT_")}
    run = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, cwd=tmp_path)
    assert run.stdout.strip() == str(int(signal.SIGKILL)), run.stderr


def test_fault_hook_is_inert_without_variables(monkeypatch):
    for name in ("BSIG_FAULT_KILL_AT", "BSIG_FAULT_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(faults, "_armed", None)
    calls = faults._calls
    faults.fault_point()
    faults.fault_point()
    assert faults._armed is False and faults._calls == calls  # read once; nothing counted


def test_only_the_hook_reads_the_fault_variables():
    root = Path(__file__).resolve().parents[1]
    readers = sorted(str(p.relative_to(root)) for folder in ("bsig_array", "cli", "kernels")
                     for p in (root / folder).rglob("*.py") if "environ" in p.read_text() and "BSIG_FAULT" in p.read_text())
    assert readers == ["bsig_array/io/faults.py"]
    from bsig_array.io import atomic

    assert atomic.fault_point is faults.fault_point and not hasattr(atomic, "_fault_calls")
