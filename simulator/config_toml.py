"""A resolved RunConfig as TOML, each key followed by its help as a comment, that loads back to the same hash.

A small writer of our own rather than tomli_w: tomli_w cannot write comments and spreads lists over many lines.
Scheme parameters left at their defaults are written as commented-out lines: an uncommented [schemes.<name>]
table would change the config (and its hash) even when empty.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from simulator.config import RunConfig
from simulator.config_docs import config_sections, scheme_sections
from simulator.errors import MuprivError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """One value as a single-line TOML literal (JSON string escapes are valid TOML basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 0.003, 1e-05, inf, -inf, nan: all valid TOML floats
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _lines(items: list[tuple[str, str]], comments: bool) -> list[str]:
    """`key = value` lines with their help aligned as trailing comments."""
    if not comments:
        return [code for code, _ in items]
    width = min(max((len(code) for code, _ in items), default=0), 48)
    return [f"{code:<{width}}  # {help_}" if help_ else code for code, help_ in items]


def _table(path: str, table: dict[str, Any], helps: dict[str, str], comments: bool) -> list[str]:
    """A section: its scalar keys, then any nested tables as [path.key] (none today; a future section may have them)."""
    items = [(f"{toml_key(k)} = {toml_value(v)}", helps.get(f"{path}.{k}", "")) for k, v in table.items()
             if v is not None and not isinstance(v, dict)]
    out = [f"[{path}]", *_lines(items, comments)]
    for k, v in table.items():
        if isinstance(v, dict):
            out += ["", *_table(f"{path}.{toml_key(k)}", v, helps, comments)]
    return out


def _scheme_tables(cfg: RunConfig, comments: bool) -> list[str]:
    """[schemes.<name>] tables: the keys the config sets; with comments also every other parameter, resolved, commented out."""
    out = []
    described = {s.name: s for s in scheme_sections()}
    names = list(cfg.schemes.run) + [n for n, _ in cfg.schemes.options if n not in cfg.schemes.run]
    for name in names:
        explicit = cfg.schemes.params_for(name)
        if not explicit and not comments:
            continue
        try:
            resolved = dataclasses.asdict(cfg.scheme_params(name))
        except MuprivError:  # a scheme that is not run is not validated; show what the config says
            resolved = dict(explicit)
        section = described[f"schemes.{name}"]
        helps = {k.name: k.help for k in section.keys}
        items = []
        for key in [*resolved, *(k for k in explicit if k not in resolved)]:
            value = explicit.get(key, resolved.get(key))
            if value is None:
                continue
            code = f"{toml_key(key)} = {toml_value(value)}"
            items.append((code if key in explicit else f"# {code}", helps.get(key, "")))
        out.append("")
        if comments:
            out.append(f"# {section.help}")
        out.append(f"[schemes.{toml_key(name)}]" if explicit else f"# [schemes.{toml_key(name)}]  (every parameter at its default)")
        out += _lines(items, comments)
    return out


def config_toml(cfg: RunConfig, *, comments: bool = True, source: str = "") -> str:
    """The whole resolved config; tomllib.loads() of it parses to a config with the same hash."""
    table = cfg.to_toml_dict()
    sections = config_sections()
    helps = {k.path: k.help for s in sections for k in s.keys}
    out = []
    if comments:
        out += [f"# mupriv config{' resolved from ' + source if source else ''}; hash {cfg.hash()}",
                "# What every key means: mupriv config explain [SECTION or SECTION.KEY]", ""]
    out += _lines([(f"{toml_key(k)} = {toml_value(v)}", helps.get(k, "")) for k, v in table.items()
                   if v is not None and not isinstance(v, dict)], comments)
    section_help = {s.name: s.help for s in sections}
    for name, value in table.items():
        if not isinstance(value, dict):
            continue
        body = {k: v for k, v in value.items() if not (name == "schemes" and isinstance(v, dict))}
        out.append("")
        if comments and section_help.get(name):
            out.append(f"# {section_help[name]}")
        out += _table(toml_key(name), body, helps, comments)
        if name == "schemes":
            out += _scheme_tables(cfg, comments)
    return "\n".join(out) + "\n"
