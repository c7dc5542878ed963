"""Run configuration: TOML in, validated frozen dataclasses out, with a stable hash.

Unknown keys are errors that suggest the closest valid name; wrong types name the key and the type wanted.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from simulator.core.model import ModelConfig
from simulator.core.phases import POSITIONS, Phase, mu_finetuning, pretraining_plan
from simulator.errors import MuprivError


@dataclass(frozen=True)
class DataConfig:
    """Where records come from and how they are shaped for the model (see simulator.data.preprocess)."""

    path: str = ""  # "" = synthetic records; else a WFDB folder, a CODE-15 .hdf5, or an .npz
    synthetic_records: int = 512  # how many synthetic records when path is ""
    fs: float = 400.0  # resample every record to this rate (Hz)
    length: int = 1024  # samples per record fed to the model (crop/zero-pad)
    scale: str = "record"  # min-max per "record" (the paper), per "lead", or "none" (mV)
    skip_bad: bool = False  # skip unreadable records (counted in the summary) instead of stopping
    val_fraction: float = 0.2  # records held out to pick the best epoch and report metrics


@dataclass(frozen=True)
class TrainConfig:
    """Server pretraining: full training, then µ-Training (placed at the start, end or both ends)."""

    full_epochs: int = 4
    mu_epochs: int = 4
    position: str = "end"
    self_distill: bool = True
    alpha: float = 0.8
    lr: float = 3e-3
    kernel_lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    pos_weight: float = 6.0

    def plan(self) -> list[Phase]:
        return pretraining_plan(self.full_epochs, self.mu_epochs, self.position, self.self_distill, **self._opt())

    def _opt(self) -> dict:
        return dict(lr=self.lr, kernel_lr=self.kernel_lr, weight_decay=self.weight_decay, batch_size=self.batch_size, pos_weight=self.pos_weight)


@dataclass(frozen=True)
class FinetuneConfig:
    """On-device personalisation: µ-Fine-Tuning trains encoder + decoder; `parts` can name others."""

    epochs: int = 4
    parts: tuple[str, ...] = ("encoder", "decoder")
    lr: float = 3e-3
    kernel_lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    pos_weight: float = 6.0

    def phase(self) -> Phase:
        base = mu_finetuning(self.epochs, lr=self.lr, kernel_lr=self.kernel_lr, weight_decay=self.weight_decay,
                             batch_size=self.batch_size, pos_weight=self.pos_weight)
        name = "mu-ft" if set(self.parts) == {"encoder", "decoder"} else "finetune"
        return dataclasses.replace(base, name=name, parts=tuple(self.parts))


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable over key order and formatting: sha256 of the canonical JSON of the resolved config."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def validate(self) -> "RunConfig":
        if self.train.position not in POSITIONS:
            raise MuprivError(f"train.position = {self.train.position!r} is not one of {list(POSITIONS)}")
        if not 0.0 < self.data.val_fraction < 1.0:
            raise MuprivError(f"data.val_fraction must be between 0 and 1 (exclusive), got {self.data.val_fraction}")
        if self.data.length < 1:
            raise MuprivError(f"data.length must be a positive number of samples, got {self.data.length}")
        if self.model.d_state % 2:
            raise MuprivError(f"model.d_state must be even (complex-conjugate pairs), got {self.model.d_state}")
        for name in ("train", "finetune"):
            sec = getattr(self, name)
            if sec.batch_size < 1 or sec.lr <= 0:
                raise MuprivError(f"{name}.batch_size must be >= 1 and {name}.lr > 0")
        self.finetune.phase()  # validates parts
        self.train.plan()  # validates epochs / alpha
        return self


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise MuprivError(f"[{key}] must be a table, got {type(value).__name__}")
        return _build(typ, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise MuprivError(f"{key} must be a list, got {value!r}")
        (item,) = {a for a in get_args(typ) if a is not Ellipsis}
        return tuple(_coerce(v, item, key) for v in value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool) and (type(value) is not typ):
        raise MuprivError(f"{key} must be {typ.__name__}, got {value!r}")
    return value


def _build(cls: type, table: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise MuprivError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def parse_config(table: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return _build(RunConfig, table).validate()
    except MuprivError as e:
        raise MuprivError(f"{source}: {e}") from None


def load_config(path: Path | None) -> RunConfig:
    """The defaults when `path` is None, else the TOML file at `path` over the defaults."""
    if path is None:
        return RunConfig().validate()
    path = Path(path)
    if not path.is_file():
        raise MuprivError(f"{path}: config file not found; pass an existing .toml (see configs/)")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise MuprivError(f"{path}: not valid TOML ({e})") from None
    return parse_config(table, str(path))


def with_overrides(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Apply CLI overrides like with_overrides(cfg, train={"full_epochs": 2}); None values are ignored."""
    table = cfg.to_dict()
    for section, values in sections.items():
        for k, v in values.items():
            if v is not None:
                if section == "":
                    table[k] = v
                else:
                    table[section][k] = v
    return parse_config(table, "command line")
