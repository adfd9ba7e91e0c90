"""Locations on the command line: paths or URLs, and ``--storage-options`` for every command.

Every command takes ``--storage-options JSON|@FILE`` (endpoint, credentials, … for fsspec; see
:mod:`bsig_array.io.location`), added by :func:`with_storage_options` when the command is loaded,
and every path option is a :class:`Where`: a local path checked as ``click.Path`` checks it, or a
URL (``s3://…``) passed through, checked when the command opens it.
"""

from __future__ import annotations

from typing import Any

import click

from bsig_array.io.location import STORAGE_OPTIONS_ENV, is_url

HELP = (
    "fsspec storage options for URL inputs and outputs (s3://, gs://, …): JSON, e.g. "
    "'{\"endpoint_url\": \"http://127.0.0.1:9000\", \"key\": \"…\", \"secret\": \"…\"}', or one object per "
    f"protocol, or @FILE holding it [default: ${STORAGE_OPTIONS_ENV}]. Never written to outputs or logs."
)


class Where(click.Path):
    """``click.Path`` that also accepts URLs (checked later, when the command opens them)."""

    name = "path or URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and is_url(value):
            return value
        return super().convert(value, param, ctx)


def _set(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    from bsig_array.io.location import set_storage_options

    # Always set (None: back to the environment), so one process running several commands
    # (tests, the demo) never carries the previous command's options into the next.
    set_storage_options(value)


def with_storage_options(command: click.Command) -> click.Command:
    """Add ``--storage-options`` to ``command`` (once)."""
    if not any(p.name == "storage_options" for p in command.params):
        command.params.append(
            click.Option(["--storage-options"], metavar="JSON|@FILE", expose_value=False, is_eager=True,
                         callback=_set, help=HELP)
        )
    return command


__all__ = ["HELP", "Where", "with_storage_options"]
