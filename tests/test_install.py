"""The install is pinned: the README, CI and the refresh script install with ``constraints.txt``, and
every pin there satisfies pyproject's bounds (docs/install.md)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
#: The extras the README's two commands install.
EXTRAS = ("models", "eval", "semantic", "test")


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README has no bash block at its top"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[\w.+!-]+", version), f"not an exact pin: {line!r}"
        assert canonicalize_name(name) not in pins, f"pinned twice: {name}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_the_readme_installs_with_the_constraints_and_ci_runs_its_test_command():
    demo, tests = _readme_commands()
    assert demo.endswith("bsig demo --out demo-out") and "pytest" in tests
    for command in (demo, tests):
        installs = re.findall(r"pip install [^&]*", command)
        assert installs and all("-c constraints.txt" in i for i in installs), installs
    assert tests in (ROOT / ".ci/run").read_text()


def test_the_refresh_script_installs_what_the_readme_installs():
    script = (ROOT / ".ci/refresh-constraints").read_text()
    _, tests = _readme_commands()
    for install in re.findall(r"pip install [^&]*", tests):
        assert install.replace("-c constraints.txt ", "").strip() in script


def test_every_requirement_is_pinned_within_its_bounds():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in config["dependencies"]]
    requirements += [Requirement(r) for extra in EXTRAS for r in config["optional-dependencies"][extra]]
    pins = _pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject's {requirement}")
    assert "torch" in pins and pins["torch"].local is None  # a GPU machine may take its CUDA build
