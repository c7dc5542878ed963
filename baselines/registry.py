"""The scheme registry: every scheme is one module that calls `register(Scheme(...))` at import.

A scheme names what leaves the device (its threat surface), which model parts it shares with the
server, its documented parameters (a frozen dataclass whose field comments are the docs), and a
`build(setup) -> (ServerApp, ClientApp)` that makes its Flower Message-API pair.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, get_type_hints

from simulator.errors import MuprivError
from simulator.scheme_record import OBSERVABLES  # what an honest-but-curious server observes


@dataclass(frozen=True)
class Scheme:
    name: str
    summary: str
    observable: str
    shared_parts: tuple[str, ...]  # model parts whose weights go up to the server (empty: none)
    device_parts: tuple[str, ...]  # model parts that train on the device (empty: none)
    params: type  # frozen dataclass of the scheme's parameters, with defaults
    build: Callable[..., Any]  # build(setup: SchemeSetup) -> (ServerApp, ClientApp)
    federated: bool = True  # runs rounds of a federated strategy
    preflight: Callable[..., Any] | None = None  # (setup, client_sizes) -> setup; may refuse before training

    def __post_init__(self) -> None:
        if self.observable not in OBSERVABLES:
            raise ValueError(f"scheme {self.name}: observable must be one of {OBSERVABLES}")

    def apps(self, setup: Any) -> tuple[Any, Any]:
        """``build(setup)``, with the devices ``setup.faults`` names failing where it says (baselines.faults)."""
        from baselines.faults import with_faults  # pylint: disable=import-outside-toplevel

        return with_faults(self.build(setup), getattr(setup, "faults", {}) or {})

    def make_params(self, values: dict[str, Any] | None = None, where: str = "") -> Any:
        """The scheme's parameters from a plain dict; unknown names and wrong types are clear errors."""
        return parse_params(self.params, values or {}, where or f"schemes.{self.name}")

    def describe_params(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) for every parameter; help comes from the field metadata."""
        hints = get_type_hints(self.params)
        return [(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), f.default, f.metadata.get("help", ""))
                for f in dataclasses.fields(self.params)]


def param(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A documented scheme parameter."""
    return dataclasses.field(default=default, metadata={"help": help})


def parse_params(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(names) or '(none)'}"
            raise MuprivError(f"unknown parameter {where}.{key}: {hint}")
        typ = hints[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if typ in (int, float, str, bool) and type(value) is not typ:
            raise MuprivError(f"{where}.{key} must be {typ.__name__}, got {value!r}")
        kwargs[key] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise MuprivError(f"{where}: {problem}")
    return obj


_REGISTRY: dict[str, Scheme] = {}


def register(scheme: Scheme) -> Scheme:
    if scheme.name in _REGISTRY:
        raise ValueError(f"scheme {scheme.name!r} registered twice")
    _REGISTRY[scheme.name] = scheme
    return scheme


def _load_all() -> None:
    # Importing the package registers the built-in schemes (one module each).
    import baselines  # noqa: F401  pylint: disable=import-outside-toplevel


def scheme_names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def get_scheme(name: str) -> Scheme:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise MuprivError(f"unknown scheme {name!r}: {hint}valid schemes: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
