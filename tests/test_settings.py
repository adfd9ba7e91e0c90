"""Settings are parsed once: every default lives in the defaults table, and nothing below the boundary
parses a run's settings again (bsig_array/runtime/defaults.py, bsig_array/runtime/run.py).

The checks read the source with :mod:`ast`, over every module of the installed package except the kernels,
which cannot see the table (they take every value from their caller, see tests/test_layout.py).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from bsig_array.runtime.defaults import Defaults

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {f.name for f in dataclasses.fields(Defaults)}
#: Files below the boundary: the package and its CLI, the kernels excepted.
SOURCES = sorted([*(ROOT / "bsig_array").rglob("*.py"), *(ROOT / "cli").glob("*.py")])


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _literal_defaults(path: Path) -> list[str]:
    """``file:line function(name=literal)`` for every parameter named after a setting with a literal default."""
    found = []
    for fn in _functions(ast.parse(path.read_text())):
        args = fn.args
        positional = [*args.posonlyargs, *args.args]
        pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        for arg, default in pairs:
            literal = isinstance(default, ast.Constant) and default.value is not None
            literal |= isinstance(default, ast.BinOp | ast.UnaryOp) and all(
                isinstance(n, ast.Constant) for n in ast.walk(default) if isinstance(n, ast.expr) and n is not default
                and not isinstance(n, ast.operator))
            if arg.arg in SETTINGS and literal:
                found.append(f"{path.relative_to(ROOT)}:{default.lineno} {fn.name}({arg.arg}={ast.unparse(default)})")
    return found


def test_no_function_writes_its_own_default_for_a_setting_the_table_owns():
    found = [hit for path in SOURCES for hit in _literal_defaults(path)]
    assert found == [], "defaults written outside bsig_array/runtime/defaults.py (use DEFAULTS.<name>):\n" + "\n".join(found)


def test_the_check_sees_a_literal_default(tmp_path):
    """The check itself can fail: a function with seed=0 or alpha=0.01 is found."""
    source = tmp_path / "m.py"
    source.write_text("def f(x, *, seed=0, alpha=1 / 100, name='x'):\n    pass\n")
    assert [h.split(" ", 1)[1] for h in _literal_defaults_at(source)] == ["f(seed=0)", "f(alpha=1 / 100)"]


def _literal_defaults_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return _literal_defaults(path)
    finally:
        ROOT = saved


def _uses(name: str) -> list[str]:
    """Files that use ``name`` (a call or a reference), imports and the definition aside."""
    hits = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            used = (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)
            if used:
                hits.append(str(path.relative_to(ROOT)))
    return sorted(set(hits))


@pytest.mark.parametrize(("function", "allowed"), [
    # the memory limit is parsed where a setting enters: the table's validator (options, CLI and BSIG_*)
    ("parse_memory", ["bsig_array/runtime/defaults.py"]),
    # the progress setting is read once, by the CLI's progress sink
    ("progress_enabled", ["bsig_array/stages/evaluate.py", "cli/progress.py"]),
])
def test_a_setting_is_parsed_in_one_place(function, allowed):
    assert _uses(function) == allowed


def test_stages_take_the_run_not_its_parts():
    """The screen, selection, demo, plan and profile take one RunSpec, not loose run settings."""
    import inspect

    from bsig_array.diagnostics.profile import profile_kernels
    from bsig_array.diagnostics.projection import project
    from bsig_array.pipelines.demo import run_demo
    from bsig_array.stages.screen import screen
    from bsig_array.stages.select import select_signatures

    loose = {"memory_limit", "workers", "scheduler", "device", "spill_dir", "seed", "progress", "cores"}
    for function in (screen, select_signatures, run_demo, project, profile_kernels):
        params = set(inspect.signature(function).parameters)
        assert "run" in params and not params & loose, (function.__qualname__, sorted(params & loose))


# ----------------------------------------------------------------------------- one name per concept


def _dummy_command(old: str):
    import click

    from bsig_array.cli.run import coefficients_option

    @click.command()
    @coefficients_option(old, ("thrush", "preselect", "both"), "both", "coefficients")
    def command(coefficients):
        click.echo(f"coefficients={coefficients}")

    return command


@pytest.mark.parametrize("old", ["--method", "--methods", "--screen-method"])
def test_coefficients_is_the_one_name_and_the_old_ones_still_work_with_a_deprecation_line(old):
    from click.testing import CliRunner

    command = _dummy_command(old)
    runner = CliRunner()
    assert runner.invoke(command, []).output == "coefficients=both\n"
    assert runner.invoke(command, ["--coefficients", "thrush"]).output == "coefficients=thrush\n"
    aliased = runner.invoke(command, [old, "preselect"])
    assert aliased.exit_code == 0 and aliased.stdout == "coefficients=preselect\n"
    assert aliased.stderr == f"bsig: warning: {old} is deprecated and will be removed in the next release; use --coefficients\n"
    both = runner.invoke(command, ["--coefficients", "thrush", old, "preselect"])
    assert both.exit_code != 0 and f"give --coefficients or {old}, not both" in both.output
    assert old not in runner.invoke(command, ["--help"]).output  # hidden


@pytest.mark.parametrize(("command", "old"), [("screen", "--method"), ("plan", "--methods"), ("select", "--screen-method")])
def test_every_command_names_its_coefficients_option_alike(command, old):
    import click

    from bsig_array.cli.main import cli

    ctx = click.Context(cli)
    params = {p.name: p for p in cli.get_command(ctx, command).params}
    assert "coefficients" in params and not params["coefficients"].hidden
    assert any(old in p.opts and p.hidden for p in params.values())
