"""scheme.json, the run-folder contract's description of one scheme run: one typed owner for both sides.

The schemes declare what leaves the device with one of `OBSERVABLES` (baselines.registry), the runner writes a
`SchemeRecord` as scheme.json (simulator.layout names the file), and the attacker reads the same record back and
keys its threat models on it (attacks.observe, attacks.threat). Reading is strict: a key the record does not know,
or one it needs and the file lacks, is a one-line `MuprivError` naming the file and the key, never a silently
guessed default. The few keys that runs written by earlier versions lack are optional and documented where they are
declared (`Threat.kernel_lr`, `Threat.schedule`, `DPParams.noise`, `SchemeRecord.data`), so those runs still read.

This module imports only the error type, so attacks/ may depend on it (README, Layout).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.errors import MuprivError

NOTHING = "nothing"
RAW = "raw records"
UPDATES = "per-client updates"
CLIPPED = "clipped per-client updates"
NOISED = "noised per-client updates"
AGGREGATE = "aggregate only"
DISTILLED = "distilled records"  # synthetic records condensed from a device's data, with soft labels (distill-share)
OBSERVABLES: tuple[str, ...] = (NOTHING, RAW, UPDATES, CLIPPED, NOISED, AGGREGATE, DISTILLED)

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")


class _BadKey(ValueError):
    """A key of a scheme.json block that is missing, unknown or of the wrong type; `SchemeRecord.read` adds the file."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CHECKS = {"str": (lambda v: isinstance(v, str), "a string"), "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
           "float": (_number, "a number"), "dict": (lambda v: isinstance(v, dict), "a table"),
           "list": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")}


def _take(block: Any, where: str, required: dict[str, str], optional: dict[str, str] = {}) -> dict[str, Any]:  # noqa: B006
    """``block``'s keys, checked: every ``required`` one present, none unknown, each of its declared kind ("str",
    "int", "float", "dict", "list"; "float?" also allows null). Absent optional keys are left out."""
    if not isinstance(block, dict):
        raise _BadKey(where or "(top level)", "is not a JSON object")
    prefix = f"{where}." if where else ""
    unknown = sorted(set(block) - set(required) - set(optional))
    if unknown:
        raise _BadKey(prefix + unknown[0], f"unknown key (known: {', '.join(sorted({**required, **optional}))})")
    missing = [k for k in required if k not in block]
    if missing:
        raise _BadKey(prefix + missing[0], "missing")
    for key, kind in {**required, **optional}.items():
        if key not in block:
            continue
        value = block[key]
        if kind.endswith("?") and value is None:
            continue
        check, wanted = _CHECKS[kind.rstrip("?")]
        if not check(value):
            raise _BadKey(prefix + key, f"{value!r} is not {wanted}")
    return dict(block)


@dataclass(frozen=True)
class Threat:
    """How each device trains locally, as the server configured it: what the honest-but-curious threat models grant
    the attacker (every value is in each round's train config or the public config)."""

    optimizer: str  # OPTIMIZERS
    lr: float
    local_epochs: int
    batch_size: int
    pos_weight: float | None
    weight_decay: float
    kernel_lr: float | None = None  # the S4D kernel parameters' lr; None: runs written before 2026-11-21 (= lr)
    schedule: str | None = None  # SCHEDULES; None: runs written before 2026-11-21 (cosine for adamw, else constant)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise _BadKey("threat.optimizer", f"{self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise _BadKey("threat.schedule", f"{self.schedule!r} is not one of {', '.join(SCHEDULES)}")

    @classmethod
    def from_dict(cls, block: Any) -> "Threat":
        d = _take(block, "threat", {"optimizer": "str", "lr": "float", "local_epochs": "int", "batch_size": "int",
                                    "pos_weight": "float?", "weight_decay": "float"},
                  {"kernel_lr": "float?", "schedule": "str?"})
        return cls(**d)


@dataclass(frozen=True)
class DPParams:
    """The DP parameters the devices used (after preflight: a target epsilon resolved into a noise multiplier)."""

    mode: str  # "dp-sgd" (on the device) or "client-level"
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    noise: str | None = None  # "secret" or "seeded"; None: runs written before it was recorded, which seeded it

    @classmethod
    def from_dict(cls, block: Any) -> "DPParams":
        d = _take(block, "dp", {"mode": "str", "noise_multiplier": "float", "max_grad_norm": "float", "delta": "float"},
                  {"noise": "str"})
        return cls(**d)

    @property
    def noise_source(self) -> str:
        return self.noise or "seeded"


@dataclass(frozen=True)
class DataFormat:
    """The public input format the attacker shapes its dummy records and band limit with."""

    length: int
    fs: float
    scale: str

    @classmethod
    def from_dict(cls, block: Any) -> "DataFormat":
        return cls(**_take(block, "data", {"length": "int", "fs": "float", "scale": "str"}))


@dataclass(frozen=True)
class SchemeRecord:
    """scheme.json: what the scheme was, as the server knows it. `to_json` writes it, `read` reads it back."""

    scheme: str
    summary: str
    params: dict[str, Any]  # the scheme's parameters as configured (baselines.registry validates them)
    model: dict[str, Any]  # the public architecture: simulator.core.model.ModelConfig's fields
    seed: int
    observable: str  # OBSERVABLES
    shared_parts: tuple[str, ...]
    device_parts: tuple[str, ...]
    threat: Threat
    dp: DPParams | None
    clients: tuple[str, ...]
    partition_to_client: dict[int, str]
    engine: str
    data: DataFormat | None = None  # None: runs written by `run-scheme` before 2026-11-21 (the attacker falls back)

    def __post_init__(self) -> None:
        if self.observable not in OBSERVABLES:
            raise _BadKey("observable", f"{self.observable!r} is not one of {', '.join(OBSERVABLES)}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; optional values that are None are left out, so an old file reads and writes back as it was."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(shared_parts=list(self.shared_parts), device_parts=list(self.device_parts), clients=list(self.clients),
                   partition_to_client={str(k): v for k, v in self.partition_to_client.items()},
                   threat=_drop_none(dataclasses.asdict(self.threat), ("kernel_lr", "schedule")),
                   dp=None if self.dp is None else _drop_none(dataclasses.asdict(self.dp), ("noise",)))
        if self.data is None:
            del out["data"]
        else:
            out["data"] = dataclasses.asdict(self.data)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, info: Any) -> "SchemeRecord":
        """Raises _BadKey (`read` turns it into a MuprivError naming the file)."""
        d = _take(info, "", {"scheme": "str", "summary": "str", "params": "dict", "model": "dict", "seed": "int",
                             "observable": "str", "shared_parts": "list", "device_parts": "list", "threat": "dict",
                             "dp": "dict?", "clients": "list", "partition_to_client": "dict", "engine": "str"},
                  {"data": "dict"})
        p2c = d["partition_to_client"]
        bad = next((k for k, v in p2c.items() if not (str(k).isdigit() and isinstance(v, str))), None)
        if bad is not None:
            raise _BadKey(f"partition_to_client.{bad}", "must map a partition number to a client id")
        return cls(scheme=d["scheme"], summary=d["summary"], params=dict(d["params"]), model=dict(d["model"]),
                   seed=d["seed"], observable=d["observable"], shared_parts=tuple(d["shared_parts"]),
                   device_parts=tuple(d["device_parts"]), threat=Threat.from_dict(d["threat"]),
                   dp=None if d["dp"] is None else DPParams.from_dict(d["dp"]), clients=tuple(d["clients"]),
                   partition_to_client={int(k): v for k, v in p2c.items()}, engine=d["engine"],
                   data=DataFormat.from_dict(d["data"]) if "data" in d else None)

    @classmethod
    def from_json(cls, text: str, where: str = "scheme.json") -> "SchemeRecord":
        """Parse scheme.json's text; every problem is one MuprivError naming ``where`` and the key."""
        try:
            info = json.loads(text)
        except json.JSONDecodeError as e:
            raise MuprivError(f"{where} is not valid JSON ({e}); re-run the scheme to rewrite it") from None
        try:
            return cls.from_dict(info)
        except _BadKey as e:
            raise MuprivError(f"{where}: key {e.key}: {e.problem}; re-run the scheme to rewrite it") from None

    @classmethod
    def read(cls, path: Path) -> "SchemeRecord":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise MuprivError(f"{path} is unreadable ({e.strerror or e})") from None
        return cls.from_json(text, str(path))


def _drop_none(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in keys and v is None)}
