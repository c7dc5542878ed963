"""The in-memory training set the core consumes: signals, multi-hot labels and which labels are known."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simulator.core.labels import CLASSES
from simulator.atomic import atomic_write
from simulator.errors import MuprivError


@dataclass(frozen=True)
class ECGTensors:
    """x: (n, length, leads) float32; y: (n, classes) float32 in {0, 1};
    known: (n, classes) bool, False where the source does not label that class (masked out of the loss)."""

    x: torch.Tensor
    y: torch.Tensor
    known: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise MuprivError(f"signals must have shape (n, length, leads), got {tuple(self.x.shape)}")
        if self.y.shape != (self.x.shape[0], self.y.shape[-1]) or self.y.ndim != 2:
            raise MuprivError(f"labels must have shape (n, classes) with n={self.x.shape[0]}, got {tuple(self.y.shape)}")
        if self.known.shape != self.y.shape:
            raise MuprivError(f"label mask shape {tuple(self.known.shape)} differs from labels {tuple(self.y.shape)}")

    @classmethod
    def from_arrays(cls, x, y, known=None) -> "ECGTensors":
        x_t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        y_t = torch.as_tensor(np.asarray(y), dtype=torch.float32)
        k_t = torch.ones_like(y_t, dtype=torch.bool) if known is None else torch.as_tensor(np.asarray(known), dtype=torch.bool)
        return cls(x_t, y_t, k_t)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def length(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_leads(self) -> int:
        return int(self.x.shape[2])

    def subset(self, index) -> "ECGTensors":
        index = torch.as_tensor(index, dtype=torch.long)
        return ECGTensors(self.x[index], self.y[index], self.known[index])

    def check_for_model(self, n_leads: int, length: int | None, n_classes: int, name: str = "dataset") -> None:
        """One clear error if this data cannot go into a model of that shape."""
        if self.n_leads != n_leads:
            raise MuprivError(f"{name}: {self.n_leads} leads but the model expects {n_leads}; give {n_leads}-lead signals shaped (n, length, {n_leads})")
        if length is not None and self.length != length:
            raise MuprivError(f"{name}: signals are {self.length} samples long but the config says {length}; resample/crop the data or set model length to {self.length}")
        if self.y.shape[1] != n_classes:
            raise MuprivError(f"{name}: {self.y.shape[1]} label columns but the model has {n_classes} classes {list(CLASSES)[:n_classes]}")
        if len(self) == 0:
            raise MuprivError(f"{name}: no records")
        bad = ~torch.isfinite(self.x).flatten(1).all(dim=1)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0])
            raise MuprivError(f"{name}: {int(bad.sum())} record(s) contain NaN or infinite samples (first at index {first}); drop or repair them")


def save_npz(data: ECGTensors, path: Path) -> None:
    """Write atomically: a crash never leaves a half-written file at `path`."""
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, x=data.x.numpy(), y=data.y.numpy(), known=data.known.numpy()))


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a tensor dataset file as they are: ``x``, ``y``, ``known`` (all True when absent) and ``fs``
    (a scalar, only when the file states its rate). Unreadable files and missing arrays are errors; values are not
    checked here (`label_problems`, `load_npz`)."""
    path = Path(path)
    if not path.is_file():
        raise MuprivError(f"{path}: no such dataset file; give an .npz with arrays x, y (and optional known)")
    try:
        with np.load(path) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise MuprivError(f"{path}: missing array(s) {missing}; an .npz dataset needs x (n, length, leads) and y (n, classes)")
            out = {"x": np.asarray(f["x"]), "y": np.asarray(f["y"], dtype=np.float32)}
            out["known"] = np.asarray(f["known"], dtype=bool) if "known" in f.files else np.ones(out["y"].shape, dtype=bool)
            if "fs" in f.files:
                out["fs"] = np.asarray(f["fs"], dtype=np.float64)
    except MuprivError:
        raise
    except Exception as e:  # corrupt zip, not an npz, pickled objects
        raise MuprivError(f"{path}: cannot read as an .npz dataset ({type(e).__name__}: {e})") from None
    if out["known"].shape != out["y"].shape:
        raise MuprivError(f"{path}: known has shape {out['known'].shape} but y has {out['y'].shape}; they must match")
    return out


def label_problems(y: np.ndarray, known: np.ndarray) -> dict[int, str]:
    """Per record index, why its labels are invalid: a known label that is not 0 or 1 (NaN included). Unknown
    entries (known False) may hold anything; they are set to 0 on loading, since the loss masks them by multiplying."""
    bad = known & ~np.isin(y, (0.0, 1.0))
    out: dict[int, str] = {}
    for i, j in zip(*np.nonzero(bad)):
        name = CLASSES[j] if j < len(CLASSES) else f"column {int(j)}"
        out.setdefault(int(i), f"label {float(y[i, j])!r} for {name} is not 0 or 1")
    return out


def load_npz(path: Path) -> ECGTensors:
    """A tensor dataset file: .npz with `x` (n, length, leads), `y` (n, classes) in {0, 1} and optional `known`."""
    arrays = read_npz_arrays(path)
    problems = label_problems(arrays["y"], arrays["known"])
    if problems:
        first = min(problems)
        raise MuprivError(f"{path}: {len(problems)} record(s) have labels other than 0 or 1 (record {first}: "
                          f"{problems[first]}); y must be multi-hot 0/1 (mark a label the source does not give with "
                          f"known = False)")
    y = np.where(arrays["known"], arrays["y"], 0.0)
    return ECGTensors.from_arrays(arrays["x"], y, arrays["known"])
