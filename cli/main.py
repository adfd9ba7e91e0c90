"""Entry point of the ``bsig`` command.

Subcommands are imported lazily (only the one being run), so ``bsig --help`` stays fast and a stage's
heavy imports (torch, lm-eval) never slow down the others.  Register a command by adding it to
``COMMANDS``: ``name -> "module:attribute"`` inside :mod:`bsig_array.cli`.
"""

from __future__ import annotations

import importlib
import signal
import sys
import warnings

import click

from bsig_array.errors import BsigError, BsigWarning

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module under bsig_array.cli, attribute)
    "synth": ("synth", "synth"),
    "ingest": ("ingest", "ingest"),
    "validate": ("ingest", "validate"),
    "performance": ("performance", "performance"),
    "screen": ("screen", "screen"),
    "select": ("select", "select"),
    "corpus": ("corpus", "corpus"),
    "perplexity": ("perplexity", "perplexity"),
    "evaluate": ("evaluate", "evaluate"),
    "overlap": ("overlap", "overlap"),
    "stats": ("stats", "stats"),
    "report": ("report", "report"),
    "demo": ("demo", "demo"),
    "defaults": ("defaults", "defaults"),
    "plan": ("plan", "plan"),
    "profile": ("profile", "profile"),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is invoked or listed in help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        try:
            mod = importlib.import_module(f"bsig_array.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("bsig_array.cli"):
                return None
            raise
        from bsig_array.cli.storage import with_storage_options

        return with_storage_options(getattr(mod, attr))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bsig-array")
def cli() -> None:
    """bsig: map overlaps between LLM benchmarks through perplexity in the wild.

    \b
    Typical chain:
      bsig synth OUT                      # or: bsig corpus / perplexity / evaluate / ingest
      bsig screen --perplexity P.zarr --performance Y.csv --out S.zarr
      bsig select --screen S.zarr --performance Y.csv --out G.zarr
      bsig overlap --signatures G.zarr --perplexity P.zarr --performance Y.csv --out O.nc
      bsig stats --overlap O.nc --out DIR; bsig report --out DIR
    """


_show_warning = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A :class:`BsigWarning` is one line ``bsig: warning: …`` on stderr; other warnings as usual."""
    if issubclass(category, BsigWarning):
        click.echo(f"bsig: warning: {' '.join(str(message).split())}", err=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C: temporaries, spills and locks are removed on the way out


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`BsigError` becomes one line on stderr and a non-zero exit.

    SIGTERM is handled like Ctrl-C, so a terminated run cleans up after itself (a killed one leaves
    its debris to the next run, see :mod:`bsig_array.io.atomic`).
    """
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> None:
    warnings.showwarning = _one_line_warning
    try:
        cli.main(args=argv, standalone_mode=False)
    except BsigError as exc:
        click.echo(f"bsig: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("bsig: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other user error: the message plus where to look.
        command = exc.ctx.command_path if exc.ctx is not None else "bsig"
        click.echo(f"bsig: error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"bsig: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("bsig: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
