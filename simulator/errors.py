"""The one error type a user can cause: the CLI prints its message as a single line, no traceback."""
from __future__ import annotations

import functools
from typing import Callable


class MuprivError(Exception):
    """A problem with the user's input (config, file, record) whose message names the thing and the fix."""


def user_errors(fn: Callable) -> Callable:
    """Wrap a CLI command: a MuprivError becomes one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN202
        import typer  # pylint: disable=import-outside-toplevel  (the core imports this module, not the CLI)

        try:
            return fn(*args, **kwargs)
        except MuprivError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)

    return wrapper
