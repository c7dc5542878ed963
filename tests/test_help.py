"""Every command's --help shows every positional argument's help text (click 8.5 under typer 0.20 dropped it)."""
from __future__ import annotations

import inspect
import re

import typer
from typer.models import ArgumentInfo
from typer.testing import CliRunner

from simulator.cli import app

runner = CliRunner()


def _commands(t: typer.Typer, path: tuple[str, ...] = ()):
    """(command path, callback) of every command, sub-apps (data, config) included."""
    for info in t.registered_commands:
        yield (*path, info.name or info.callback.__name__.replace("_", "-")), info.callback
    for group in t.registered_groups:
        yield from _commands(group.typer_instance, (*path, group.name or group.typer_instance.info.name))


def _flat(text: str) -> str:
    """rich's help boxes wrap text over lines between │ borders: one line of single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def test_every_argument_of_every_command_shows_its_help():
    checked = []
    for path, callback in _commands(app):
        arguments = {name: p.default for name, p in inspect.signature(callback).parameters.items()
                     if isinstance(p.default, ArgumentInfo)}
        if not arguments:
            continue
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert r.exit_code == 0, (path, r.output)
        shown = _flat(r.output)
        for name, info in arguments.items():
            assert info.help, f"{' '.join(path)}: argument {name} has no help text"
            assert _flat(info.help) in shown, f"`mupriv {' '.join(path)} --help` lost the help of {name}: {r.output}"
            checked.append(f"{' '.join(path)} {name}")
    assert {"report run_dir", "attack run_dir", "simulate config", "data inspect path", "run-scheme name"} <= set(checked)
