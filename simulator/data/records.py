"""The in-memory form of a set of ECG records: fixed-length 12-lead signals, labels, and metadata."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from simulator.core.labels import CLASSES, LEADS
from simulator.core.tensors import ECGTensors
from simulator.errors import MuprivError

# Per-record metadata every reader fills (missing values are NaN / None).
META_COLUMNS: tuple[str, ...] = (
    "record_id",     # unique within a set, e.g. "A0001", "code15-123456", "SYN000042"
    "patient_id",    # None where the source does not say (CinC); cohort splits then fall back to record_id
    "source",        # database or population name, e.g. "CPSC2018", "CODE-15", "synthetic:source"
    "fs_original",   # sampling rate of the file before resampling (Hz)
    "n_original",    # samples per lead in the file before fixing the length
    "age",           # years, float, NaN if unknown
    "sex",           # "M", "F" or None
    "snomed",        # every SNOMED-CT code of the record, ";"-joined ("" for CODE-15)
    "other_codes",   # the codes that map to none of CLASSES, ";"-joined
    "normal",        # True when the source calls the record normal (NSR code / CODE-15 normal_ecg)
    "path",          # file the record came from
)


def empty_meta(n: int = 0) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([None] * n, dtype=object) for c in META_COLUMNS})


@dataclass(frozen=True, eq=False)
class ECGRecords:
    """signals (n, length, 12) float32 in canonical LEADS order; labels (n, 6) float32 multi-hot over CLASSES;
    known (n, 6) bool (False = the source does not label that class); meta: one row per record (META_COLUMNS).

    `fs` is the sampling rate of `signals`; `units` is "mV" before scaling or the scaling name after it.
    `problems` lists the one-line messages of records skipped or flagged while reading (kept across subset/concat)."""

    signals: np.ndarray
    labels: np.ndarray
    known: np.ndarray
    meta: pd.DataFrame
    fs: float
    units: str = "mV"
    problems: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        s, y, k = self.signals, self.labels, self.known
        if s.ndim != 3 or s.shape[2] != len(LEADS):
            raise MuprivError(f"signals must have shape (n, length, {len(LEADS)}), got {s.shape}")
        n = s.shape[0]
        if y.shape != (n, len(CLASSES)) or k.shape != (n, len(CLASSES)):
            raise MuprivError(f"labels/known must have shape ({n}, {len(CLASSES)}), got {y.shape} and {k.shape}")
        if len(self.meta) != n:
            raise MuprivError(f"metadata has {len(self.meta)} rows for {n} records")
        object.__setattr__(self, "signals", np.ascontiguousarray(s, dtype=np.float32))
        object.__setattr__(self, "labels", np.asarray(y, dtype=np.float32))
        object.__setattr__(self, "known", np.asarray(k, dtype=bool))
        meta = self.meta.reset_index(drop=True)
        for c in META_COLUMNS:
            if c not in meta.columns:
                meta[c] = None
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "problems", tuple(self.problems))

    def __repr__(self) -> str:
        return (f"ECGRecords(n={len(self)}, length={self.length}, fs={self.fs:g}, units={self.units!r}, "
                f"classes={self.class_counts()}, problems={len(self.problems)})")

    # ----- size and views -------------------------------------------------
    def __len__(self) -> int:
        return int(self.signals.shape[0])

    @property
    def length(self) -> int:
        return int(self.signals.shape[1])

    @property
    def record_ids(self) -> list[str]:
        return [str(r) for r in self.meta["record_id"]]

    @property
    def patient_ids(self) -> np.ndarray:
        """Patient id per record, falling back to the record id where the source gives none."""
        pid = self.meta["patient_id"].astype(object)
        rid = self.meta["record_id"].astype(object)
        return np.asarray([str(p) if p is not None and not (isinstance(p, float) and np.isnan(p)) else str(r) for p, r in zip(pid, rid)], dtype=object)

    def tensors(self) -> ECGTensors:
        return ECGTensors.from_arrays(self.signals, self.labels, self.known)

    def class_counts(self) -> dict[str, int]:
        """Positive records per class (only where the class is known), plus "normal" = known-all-negative records."""
        pos = (self.labels > 0.5) & self.known
        out = {c: int(pos[:, i].sum()) for i, c in enumerate(CLASSES)}
        out["none"] = int(((~pos).all(axis=1) & self.known.all(axis=1)).sum())
        return out

    # ----- subset / concat ----------------------------------------------
    def subset(self, index: Sequence[int] | np.ndarray) -> "ECGRecords":
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        return replace(self, signals=self.signals[idx], labels=self.labels[idx], known=self.known[idx],
                       meta=self.meta.iloc[idx].reset_index(drop=True))

    def with_signals(self, signals: np.ndarray, fs: float | None = None, units: str | None = None) -> "ECGRecords":
        return replace(self, signals=signals, fs=self.fs if fs is None else fs, units=self.units if units is None else units)

    @staticmethod
    def concat(parts: Iterable["ECGRecords"]) -> "ECGRecords":
        parts = [p for p in parts]
        if not parts:
            raise MuprivError("nothing to concatenate: no record sets given")
        first = parts[0]
        for p in parts[1:]:
            if p.length != first.length or p.fs != first.fs or p.units != first.units:
                raise MuprivError(f"cannot concatenate record sets with different length/fs/units: "
                                  f"({first.length}, {first.fs} Hz, {first.units}) vs ({p.length}, {p.fs} Hz, {p.units}); preprocess them alike first")
        problems: list[str] = []
        for p in parts:
            problems.extend(p.problems)
        return ECGRecords(
            signals=np.concatenate([p.signals for p in parts], axis=0),
            labels=np.concatenate([p.labels for p in parts], axis=0),
            known=np.concatenate([p.known for p in parts], axis=0),
            meta=pd.concat([p.meta for p in parts], ignore_index=True),
            fs=first.fs, units=first.units, problems=tuple(problems),
        )

    @staticmethod
    def empty(length: int, fs: float, units: str = "mV", problems: Sequence[str] = ()) -> "ECGRecords":
        return ECGRecords(np.zeros((0, length, len(LEADS)), np.float32), np.zeros((0, len(CLASSES)), np.float32),
                          np.zeros((0, len(CLASSES)), bool), empty_meta(0), fs=fs, units=units, problems=tuple(problems))

    def equals(self, other: "ECGRecords") -> bool:
        return (self.fs == other.fs and self.units == other.units and np.array_equal(self.signals, other.signals)
                and np.array_equal(self.labels, other.labels) and np.array_equal(self.known, other.known)
                and self.record_ids == other.record_ids)
