"""The package layout: its import graph has no cycle, the layers import only downwards, and the
documents describe the tree as it is: docs/DESIGN.md §2 lists every module, the README and every
docs page name only modules and link only files that exist, the README stays short, and pyproject
installs every package.

The graph is built from the source with :mod:`ast` (every ``import`` and ``from ... import``, also
those inside functions and ``TYPE_CHECKING`` blocks: a lazy import still couples two modules), with
``kernels/`` and ``cli/`` mapped to ``bsig_array.kernels`` and ``bsig_array.cli`` as installed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> package name, as pyproject's ``package-dir`` installs them.
SOURCES = {"bsig_array": "bsig_array", "kernels": "bsig_array.kernels", "cli": "bsig_array.cli"}


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the installed package."""
    out: dict[str, Path] = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "bsig_array" and parts and parts[0] in ("kernels", "cli"):
                continue  # not present in the source tree; guard against a stray folder
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an imported name refers to (the longest known prefix), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports the submodule pkg.name when there is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def import_graph() -> nx.DiGraph:
    """Directed graph module -> module it imports, over the whole package."""
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    for module, path in MODULES.items():
        graph.add_edges_from((module, target) for target in _imports(module, path))
    return graph


GRAPH = import_graph()


def test_graph_sees_the_package():
    assert len(MODULES) > 60
    assert ("bsig_array.stages.screen.driver", "bsig_array.io.screen_output") in GRAPH.edges
    # a function-level import is an edge too
    assert ("bsig_array.cli.screen", "bsig_array.stages.screen") in GRAPH.edges


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(GRAPH))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:5])


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bsig_array"


# layer -> layers it may import (besides itself); the base modules import nothing of the package
# but each other.
BASE = {"schema", "errors", "options"}
ALLOWED = {
    "schema": set(),
    "errors": set(),
    "options": {"schema", "errors"},
    "kernels": {"schema"},
    "io": BASE | {"kernels", "runtime"},
    "runtime": BASE | {"kernels"},
    "models": BASE | {"runtime"},
    "stages": BASE | {"kernels", "io", "runtime", "models"},
    "pipelines": BASE | {"kernels", "io", "runtime", "models", "stages"},
    "diagnostics": BASE | {"kernels", "io", "runtime", "models", "stages", "pipelines"},
    "cli": BASE | {"kernels", "io", "runtime", "models", "stages", "pipelines", "diagnostics"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    bad = sorted(
        (a, b) for a, b in GRAPH.edges
        if _layer(a) == layer and _layer(b) != layer and _layer(b) not in ALLOWED[layer] | {"bsig_array"}
    )
    assert not bad, f"{layer} imports outside its layers: {bad}"


def test_only_the_cli_draws():
    """Stages report progress through the protocol; only the CLI imports rich or click."""
    for module, path in MODULES.items():
        if _layer(module) == "cli":
            continue
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(rich|click)\b", text, re.M), module


def _documented_paths(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w./])((?:bsig_array|kernels|cli)/[\w/]*\.py)\b", text))


def _module_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in MODULES.values() if p.name != "__init__.py"}


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^#+ {re.escape(heading)}\s*$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def test_design_lists_the_tree():
    """docs/DESIGN.md §2 is the one list of every module (the README links to it)."""
    listed = _documented_paths(_section((ROOT / "docs/DESIGN.md").read_text(), "2. Layout"))
    files = _module_files()
    assert sorted(files - listed) == [], "docs/DESIGN.md §2 misses modules"
    assert sorted(listed - files) == [], "docs/DESIGN.md §2 lists modules that do not exist"


#: The README and every page under docs/.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_documents_mention_exists(document):
    missing = sorted(p for p in _documented_paths(document.read_text()) if not (ROOT / p).exists())
    assert not missing, f"{document.relative_to(ROOT)} mentions {missing}"


def test_the_readme_stays_short():
    """The README is the entry point; the detail lives under docs/ (at most 260 lines)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move detail to a docs/ page"


def _relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images in ``text`` that are relative paths (code is skipped)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)  # fenced code blocks
    text = re.sub(r"(`+).+?\1", "", text, flags=re.S)  # inline code spans
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)", text)
    targets += re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, flags=re.M)
    return [t for t in targets if t and not re.match(r"[a-zA-Z][\w+.-]*:", t) and not t.startswith("#")]


def test_relative_links_are_found_outside_code_only():
    text = ("[a](docs/a.md) ![b](img/b.png \"title\") [c](https://x.org/c.md) [d](#anchor) [e](e.md#part)\n"
            "`[f](f.md)` and\n```\n[g](g.md)\n```\n[h]: h.md\n")
    assert _relative_links(text) == ["docs/a.md", "img/b.png", "e.md#part", "h.md"]


def test_relative_links_point_at_files():
    assert any(_relative_links(d.read_text()) for d in DOCUMENTS), "no relative links found"
    broken = []
    for document in DOCUMENTS:
        for target in _relative_links(document.read_text()):
            path = (document.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert not broken, f"links to files that do not exist: {broken}"


def test_design_references_point_to_sections():
    design = (ROOT / "docs/DESIGN.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", design, re.M))
    cited = set()
    sources = [*MODULES.values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    for path in (p for p in sources if p != Path(__file__).resolve()):
        text = path.read_text()
        assert not re.search(r"(?<!docs/)DESIGN §", text), f"{path}: cite docs/DESIGN.md §n"
        for group in re.findall(r"docs/DESIGN\.md (§[\d§,–\- ]+)", text):
            cited.update(re.findall(r"\d+", group))
    assert cited, "no references found"
    assert cited <= sections, f"cited sections {sorted(cited - sections)} are not in docs/DESIGN.md"


def test_pyproject_installs_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert packages == declared
