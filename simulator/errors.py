"""The one error type a user can cause: the CLI prints its message as a single line, no traceback."""
from __future__ import annotations

import errno
import functools
from typing import Callable

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class MuprivError(Exception):
    """A problem with the user's input (config, file, record) whose message names the thing and the fix."""


def write_error(e: OSError) -> MuprivError | None:
    """A MuprivError for the OS errors a user causes by where they write (a read-only or full disk, a folder they
    may not write to), naming the file and the fix; None for any other OSError (a bug: it keeps its traceback)."""
    where = e.filename if e.filename is not None else "output"
    if e.errno == errno.EROFS:
        return MuprivError(f"{where}: read-only file system; write somewhere else (choose another --out / -o folder)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return MuprivError(f"{where}: permission denied ({e.strerror}); choose a folder you may write to (--out / -o) "
                           f"or fix its permissions")
    if e.errno in DISK_FULL:
        return MuprivError(f"{where}: no space left on device; free some space and run the command again "
                           f"(files written before are kept: every write replaces a file whole or not at all)")
    return None


def user_errors(fn: Callable) -> Callable:
    """Wrap a CLI command: a MuprivError, or an OSError of where it writes (see `write_error`), becomes one line on
    stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN202
        import typer  # pylint: disable=import-outside-toplevel  (the core imports this module, not the CLI)

        try:
            return fn(*args, **kwargs)
        except MuprivError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except OSError as e:
            err = write_error(e)
            if err is None:
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2)

    return wrapper
