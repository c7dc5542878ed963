"""`mupriv config explain | show | check`: what the keys mean, the resolved config as TOML, and validation.

A typer sub-app mounted by simulator.cli. It handles its own user errors (one line on stderr, exit code 2)
because importing simulator.cli's wrapper from here would be a circular import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simulator.errors import MuprivError, user_errors

config_app = typer.Typer(name="config", add_completion=False, no_args_is_help=True,
                         help="Explain, show and check run configs (every key, its default and meaning).")


def _default_text(key) -> str:  # noqa: ANN001 - a config_docs.Key
    from simulator.config_toml import toml_value

    return "(none)" if key.type == "table" else toml_value(key.default)


def explain_text(sections) -> str:  # noqa: ANN001 - list[config_docs.Section]
    """Aligned plain text, one line per key (full dotted names, so `| grep lr` works); a lone key is just its line."""
    rows = [[(k.path, k.type, _default_text(k), k.help) for k in s.keys] for s in sections]
    flat = [r for section_rows in rows for r in section_rows]
    widths = [max(len(r[i]) for r in flat) for i in range(3)]
    widths[2] = min(widths[2], 24)  # a long default (schemes.run) overflows its own line instead of padding every line

    def line(row: tuple[str, str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()

    if len(flat) == 1:
        return line(flat[0]) + "\n"
    out: list[str] = []
    for s, section_rows in zip(sections, rows):
        if s.name:
            out += ["", f"[{s.name}]  {s.help}".rstrip()]
        out += [("  " if s.name else "") + line(r) for r in section_rows]
    return "\n".join(out).lstrip("\n") + "\n"


def explain_markdown(sections) -> str:  # noqa: ANN001 - list[config_docs.Section]
    """One Markdown table per section (docs/config.md embeds this output)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out: list[str] = []
    for s in sections:
        out += [f"### `[{s.name}]`" if s.name else "### Top-level keys", ""]
        if s.name:
            out += [cell(s.help), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{k.path}` | {k.type} | `{cell(_default_text(k))}` | {cell(k.help)} |" for k in s.keys]
        out.append("")
    return "\n".join(out)


@config_app.command("explain")
@user_errors
def explain_cmd(
    name: Optional[str] = typer.Argument(None, help="A section (train), a key (train.lr), or a scheme table (schemes.fedprox). Default: all."),
    markdown: bool = typer.Option(False, "--markdown", help="Markdown tables (the source of docs/config.md)."),
) -> None:
    """Every config key with its section, type, default and meaning; each scheme's parameter table too."""
    from simulator.config_docs import lookup

    sections = lookup(name or "")
    typer.echo(explain_markdown(sections) if markdown else explain_text(sections), nl=False)


@config_app.command("show")
@user_errors
def show_cmd(
    config: Optional[Path] = typer.Argument(None, help="TOML config. Default: the built-in defaults."),
    data: Optional[str] = typer.Option(None, "--data", help="Override data.path, as `mupriv simulate --data` does."),
    comments: bool = typer.Option(True, "--comments/--no-comments", help="Follow each key with its meaning as a comment."),
) -> None:
    """Print the fully resolved config as TOML (every key, defaults filled in); it loads back to the same hash."""
    from simulator.config import load_config, with_overrides
    from simulator.config_toml import config_toml

    cfg = with_overrides(load_config(config), data=dict(path=data))
    typer.echo(config_toml(cfg, comments=comments, source=str(config) if config else "the built-in defaults"), nl=False)


@config_app.command("check")
def check_cmd(
    configs: list[Path] = typer.Argument(..., help="One or more TOML configs."),
) -> None:
    """Validate configs without running anything: `ok: PATH (hash H)` each, or a one-line error (exit code 2)."""
    from simulator.config import load_config

    failed = False
    for path in configs:
        try:
            typer.echo(f"ok: {path} (hash {load_config(path).hash()})")
        except MuprivError as e:
            typer.echo(f"error: {e}", err=True)
            failed = True
    if failed:
        raise typer.Exit(2)
