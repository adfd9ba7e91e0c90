"""Benchmark question files ``DIR/<benchmark>.jsonl`` (or ``.txt``): reader and writer.

JSONL lines hold ``{"question": ...}`` (or ``{"text": ...}``); TXT files hold one question per
non-empty line.  Read by the semantic overlap, written by the synthetic pool.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from bsig_array.errors import InputError, OptionError
from bsig_array.io.atomic import atomic_output
from bsig_array.io.kinds import ArtifactKind, register_kind
from bsig_array.io.location import Location, as_location
from bsig_array.options import check_path_name

QUESTION_SUFFIXES = (".jsonl", ".txt")


def _all_jsonl(names: frozenset[str]) -> bool:
    return all(n.endswith(".jsonl") for n in names)


#: The artifact kind: a directory whose entries are all ``.jsonl`` files (no fixed marker; tried last).
QUESTIONS = register_kind(ArtifactKind("question set", owner=__name__, precedence=90, directory=True, check=_all_jsonl))


def read_questions(directory: str | os.PathLike | Location, benchmarks: Sequence[str]) -> dict[str, list[str]]:
    """Read one question file per benchmark: ``<benchmark>.jsonl`` or ``<benchmark>.txt``.

    JSONL lines hold ``{"question": ...}`` (or ``{"text": ...}``); TXT files hold one question per
    non-empty line.  Benchmarks without a file are left out of the result (the caller reports them).

    Raises
    ------
    InputError
        When the directory is missing, a file is malformed or holds no question.
    """
    loc = as_location(directory)
    if not loc.is_dir():
        raise InputError(f"questions directory {loc} does not exist; pass --questions DIR with <benchmark>.jsonl files")
    present = loc.names()  # one listing (on an object store: one request, not one per benchmark)
    out: dict[str, list[str]] = {}
    for name in benchmarks:
        if not _is_file_name(name):
            continue  # a name like '../x' or '/etc/x' never reads outside DIR: it has no question file
        file = next((f"{name}{s}" for s in QUESTION_SUFFIXES if f"{name}{s}" in present and _is_file(loc.child(f"{name}{s}"))),
                    None)
        if file is None:
            continue
        path = loc.child(file)
        questions = _read_question_file(path)
        if not questions:
            raise InputError(f"{path} holds no question; write one question per line or remove the file")
        out[name] = questions
    return out


def _is_file(loc: Location) -> bool:
    return loc.path.is_file() if loc.is_local else not loc.is_dir()


def _read_question_file(path: Location) -> list[str]:
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (offset {exc.start}); save the questions as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc}); check the file") from None
    lines = [line for line in content.splitlines() if line.strip()]
    if path.suffix == ".txt":
        return [line.strip() for line in lines]
    questions = []
    for i, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{i} is not valid JSON ({exc.msg}); write one JSON object per line") from None
        text = record.get("question", record.get("text")) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise InputError(f"{path}:{i} has no string 'question' or 'text' field; add one to every line")
        questions.append(text.strip())
    return questions


def _is_file_name(name: str) -> bool:
    try:
        check_path_name(name, "benchmark name")
    except OptionError:
        return False
    return True


def question_path(directory: str | os.PathLike, benchmark: str) -> Path:
    """``DIR/<benchmark>.jsonl``, refusing a benchmark name that would leave ``DIR`` (OptionError)."""
    return Path(directory) / f"{check_path_name(benchmark, 'benchmark name')}.jsonl"


def write_question_file(path: str | os.PathLike | Location, questions: Sequence[str]) -> Path:
    """Write ``questions`` as JSONL (one ``{"question": ...}`` per line), atomically (on an object
    store: one PUT of the whole file).  Returns the local path (for a URL, its Location)."""
    loc = as_location(path)
    lines = [json.dumps({"question": q}) for q in questions]
    with atomic_output(loc) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return loc.path if loc.is_local else loc  # type: ignore[return-value]  # a Location: every reader takes both
