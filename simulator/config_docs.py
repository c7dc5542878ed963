"""What every config key means, read from the config dataclasses themselves.

Sections are the dataclass-typed fields of RunConfig (so a new section shows up by itself), a section's
description is its class docstring, and a key's help is its field's metadata["help"]. Scheme parameter
tables ([schemes.<name>]) come from each registered scheme's params dataclass (baselines.registry.param).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints

from simulator.config import RunConfig
from simulator.config_checks import allowed
from simulator.errors import MuprivError

# RunConfig.scheme_params fills these scheme parameters from [federation] when a scheme has them.
FROM_FEDERATION = ("rounds", "local_epochs")


@dataclass(frozen=True)
class Key:
    section: str  # "" for top-level keys like `seed`; "schemes.fedprox" for a scheme parameter
    name: str  # as written in TOML
    type: str
    default: Any
    help: str

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name


@dataclass(frozen=True)
class Section:
    name: str  # "train", or "schemes.fedprox" for a scheme's parameter table
    help: str
    keys: tuple[Key, ...]


def type_name(typ: Any) -> str:
    """The TOML-facing name of a field type: tuple[str, ...] is a list, tuples of pairs are tables."""
    if get_origin(typ) is tuple:
        (item,) = {a for a in get_args(typ) if a is not Ellipsis} or {Any}
        return "table" if get_origin(item) is tuple else f"list[{type_name(item)}]"
    return getattr(typ, "__name__", str(typ))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _keys(cls: type, section: str) -> tuple[Key, ...]:
    hints = get_type_hints(cls)
    return tuple(Key(section, f.metadata.get("toml_key", f.name), type_name(hints[f.name]), _default(f), _help(f))
                 for f in dataclasses.fields(cls))


def _help(f: dataclasses.Field) -> str:
    """A key's meaning, with the range its value must lie in (simulator.config_checks) when it declares one."""
    text = f.metadata.get("help", "")
    return f"{text} (allowed: {allowed(f)})" if allowed(f) else text


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).splitlines()[0] if doc else ""


def config_sections() -> list[Section]:
    """The run config: top-level keys first (section ""), then one Section per dataclass-typed RunConfig field."""
    hints = get_type_hints(RunConfig)
    top, sections = [], []
    for f in dataclasses.fields(RunConfig):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            # A dataclass without its own docstring gets an auto-generated signature as __doc__: not help.
            own_doc = typ.__doc__ if typ.__doc__ and not typ.__doc__.startswith(typ.__name__ + "(") else None
            sections.append(Section(f.name, _first_line(own_doc) or f.metadata.get("help", ""), _keys(typ, f.name)))
        else:
            top.append(Key("", f.name, type_name(typ), _default(f), _help(f)))
    return [Section("", "top-level keys", tuple(top)), *sections]


def scheme_sections() -> list[Section]:
    """One [schemes.<name>] table per registered scheme, with its parameters' defaults and help."""
    from baselines.registry import get_scheme, scheme_names  # pylint: disable=import-outside-toplevel

    out = []
    for name in scheme_names():
        scheme = get_scheme(name)
        keys = []
        for pname, ptype, default, help_ in scheme.describe_params():
            if pname in FROM_FEDERATION:
                help_ = f"{help_} (default: federation.{pname})"
            keys.append(Key(f"schemes.{name}", pname, ptype, default, help_))
        out.append(Section(f"schemes.{name}", scheme.summary, tuple(keys)))
    return out


def all_sections() -> list[Section]:
    return [*config_sections(), *scheme_sections()]


def lookup(query: str) -> list[Section]:
    """The sections to print for `mupriv config explain QUERY`: everything, one section, one scheme table, or one key
    (a Section holding just that key). `schemes` includes every scheme table. Unknown names suggest the closest one."""
    sections = all_sections()
    query = query.strip().strip("[]").strip(".")
    if not query:
        return sections
    if query == "schemes":
        return [s for s in sections if s.name == "schemes" or s.name.startswith("schemes.")]
    for s in sections:
        if s.name == query and s.name:
            return [s]
        for k in s.keys:
            if k.path == query:
                return [Section(s.name, s.help, (k,))]
    raise MuprivError(f"unknown config section or key {query!r}: {_suggest(query, sections)} (mupriv config explain lists them all)")


def _closest(word: str, names: list[str]) -> list[str]:
    """A name the word begins (a typed prefix, e.g. `noise`), else difflib's closest."""
    return [n for n in names if n.startswith(word)][:1] or difflib.get_close_matches(word, names, n=1)


def _suggest(query: str, sections: list[Section]) -> str:
    """Within a known section match the last part alone, as simulator.config does for keys."""
    head, _, tail = query.rpartition(".")
    inside = {s.name: s for s in sections if s.name}
    close: list[str] = []
    if head in inside:
        names = [k.name for k in inside[head].keys]
        names += [n.split(".", 1)[1] for n in inside if head == "schemes" and n.startswith("schemes.")]
        close = [f"{head}.{n}" for n in _closest(tail, names)] if tail else []
    if not close:
        close = _closest(query, [n for s in sections for n in ([s.name] if s.name else []) + [k.path for k in s.keys]])
    return f"did you mean {close[0]!r}?" if close else f"sections are {', '.join(s.name for s in config_sections() if s.name)}"
