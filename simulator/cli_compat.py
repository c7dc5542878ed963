"""Keep positional arguments' help text with click 8.5 under typer 0.20.

click 8.5 gave `click.Argument` a ``help`` parameter, which `Parameter.__init__` stores; typer 0.20's
`TyperArgument` sets ``self.help`` *before* calling that ``__init__`` and does not pass the text on, so
with click 8.5 every positional argument showed an empty description (`mupriv report --help` listed
``run_dir PATH [required]`` and nothing else). constraints.txt pins click 8.4.2, with which typer 0.20
works as released; this keeps the text for an environment that has click 8.5 anyway.
"""
from __future__ import annotations

import functools


def keep_argument_help() -> None:
    """Patch `typer.core.TyperArgument.__init__` (once) to set ``help`` again after click's ``__init__``."""
    from typer.core import TyperArgument  # pylint: disable=import-outside-toplevel

    init = TyperArgument.__init__
    if getattr(init, "_mupriv_keeps_help", False):
        return

    @functools.wraps(init)
    def __init__(self, *args, help=None, **kwargs):  # noqa: A002, ANN001, ANN202 - typer's own keyword
        init(self, *args, help=help, **kwargs)
        self.help = help

    __init__._mupriv_keeps_help = True  # type: ignore[attr-defined]
    TyperArgument.__init__ = __init__
