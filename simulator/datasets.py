"""Turn the [data] config into train/validation tensors for the core (the glue between simulator.data and core)."""
from __future__ import annotations

import numpy as np

from simulator.config import DataConfig
from simulator.core.tensors import ECGTensors
from simulator.data.load import load_records
from simulator.data.preprocess import PreprocessConfig, preprocess_records
from simulator.data.records import ECGRecords
from simulator.data.synthetic import synthesize
from simulator.errors import MuprivError


def preprocess_config(cfg: DataConfig) -> PreprocessConfig:
    return PreprocessConfig(fs=cfg.fs, length=cfg.length, scale=cfg.scale)


def load_configured_records(cfg: DataConfig, seed: int, path: str | None = None) -> ECGRecords:
    """The records named by `path` (or cfg.path), preprocessed; synthetic ones when both are empty."""
    path = path if path is not None else cfg.path
    if not path:
        return preprocess_records(synthesize(cfg.synthetic_records, seed=seed), preprocess_config(cfg))
    records = load_records(path, preprocess=preprocess_config(cfg), skip_bad=cfg.skip_bad)
    if str(path).lower().endswith(".npz"):
        _check_npz_shape(path, records, cfg)
    return records


def _check_npz_shape(path: str, records: ECGRecords, cfg: DataConfig) -> None:
    """An .npz is used as it is (never resampled or cropped), so its rate and length must be the config's: before,
    a mismatch was silently trained on, and the config's fs and length described data the model never saw."""
    if records.length != cfg.length:
        raise MuprivError(f"{path}: records are {records.length} samples long but data.length = {cfg.length}; an .npz "
                          f"is used as it is (not cropped or resampled): set data.length = {records.length} or write "
                          f"the file at {cfg.length} samples")
    if records.fs != cfg.fs:
        raise MuprivError(f"{path}: the file's records are at {records.fs:g} Hz but data.fs = {cfg.fs:g}; an .npz is "
                          f"used as it is (not resampled): set data.fs = {records.fs:g} or write the file at {cfg.fs:g} Hz")


def split_train_val(records: ECGRecords, val_fraction: float, seed: int) -> tuple[ECGTensors, ECGTensors]:
    """A seeded random split by record; both sides must be non-empty."""
    split = split_tensors(records.tensors(), val_fraction, seed)
    if split is None:
        raise MuprivError(f"data: {len(records)} records cannot be split with val_fraction={val_fraction}; give more records or change data.val_fraction")
    return split


def split_tensors(data: ECGTensors, val_fraction: float, seed: int, stream: int = 0xDA7A) -> tuple[ECGTensors, ECGTensors] | None:
    """(rest, held out): a seeded random split by record, or None when one side would be empty. ``stream``
    separates splits drawn with the same seed (the server's holdout, then its validation records)."""
    n = len(data)
    n_val = int(round(n * val_fraction))
    if n < 2 or n_val < 1 or n_val >= n:
        return None
    order = np.random.default_rng([seed, stream]).permutation(n)
    return data.subset(order[n_val:]), data.subset(order[:n_val])
