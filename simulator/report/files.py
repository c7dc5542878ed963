"""Atomic writes: a reader never sees a half-written report (see simulator.atomic)."""
from __future__ import annotations

from pathlib import Path

from simulator.atomic import atomic_write


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` over ``path`` in one step (a unique temporary file, then a rename)."""
    return atomic_write(path, data)
