"""Checkpoints that remember the model shape and the config they came from."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from simulator.core.model import ModelConfig, TDSSM
from simulator.atomic import atomic_write
from simulator.errors import MuprivError

FORMAT = "mupriv-tdssm/1"


def save_checkpoint(path: Path, model: TDSSM, config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Atomic: the file at `path` is either the old one or the complete new one."""
    payload = {
        "format": FORMAT,
        "model_config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "config": config or {},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MuprivError(f"{path}: checkpoint not found; train one with `mupriv train` or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MuprivError(f"{path}: not a readable mupriv checkpoint ({type(e).__name__}); re-create it with `mupriv train`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MuprivError(f"{path}: not a mupriv checkpoint (format {FORMAT} expected); re-create it with `mupriv train`")
    return payload


def load_model(path: Path, expected: ModelConfig | None = None) -> tuple[TDSSM, dict[str, Any]]:
    """The model and the checkpoint payload. With `expected`, a checkpoint of another architecture is an error
    naming the fields that differ."""
    payload = read_checkpoint(path)
    try:
        cfg = ModelConfig(**payload["model_config"])
    except TypeError as e:
        raise MuprivError(f"{path}: checkpoint model config is not understood ({e}); re-create it with this mupriv version") from None
    if expected is not None and cfg != expected:
        diffs = [f"{k}={getattr(cfg, k)} (config: {getattr(expected, k)})" for k in cfg.to_dict() if getattr(cfg, k) != getattr(expected, k)]
        raise MuprivError(f"{path}: checkpoint is from another architecture: {', '.join(diffs)}; use a matching [model] config or another checkpoint")
    model = TDSSM(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise MuprivError(f"{path}: weights do not fit the TDSSM architecture ({first}); use a checkpoint written by `mupriv train`") from None
    model.eval()
    return model, payload
