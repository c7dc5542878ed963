"""Resampling, fixed length, lead order and scaling: the same steps for every source.

Order per record: reorder leads -> check (NaN / constant) -> resample -> scale -> fix length.
Scaling happens before padding so the zero padding never enters the min/max."""
from __future__ import annotations

from dataclasses import dataclass, asdict
from fractions import Fraction
from typing import Literal, Sequence

import numpy as np
from scipy.signal import resample_poly

from simulator.core.labels import LEADS
from simulator.errors import MuprivError

Scale = Literal["record", "lead", "none"]
Align = Literal["center", "start"]

# Lead-name spellings seen in the wild -> canonical name.
_ALIASES = {"i": "I", "di": "I", "ii": "II", "dii": "II", "iii": "III", "diii": "III",
            "avr": "aVR", "avl": "aVL", "avf": "aVF"}
_ALIASES.update({f"v{i}": f"V{i}" for i in range(1, 7)})


@dataclass(frozen=True)
class PreprocessConfig:
    """fs: target rate (Hz); length: samples per lead (4096 = 10.24 s at 400 Hz, the CODE/TNMG input);
    scale: "record" = min-max to [0, 1] over all leads of a record (the paper), "lead" = per lead, "none" = keep mV;
    align: where a record sits when padded or cropped. "center" (default) pads zeros / crops equally at both ends,
    as CODE-15 stores its 10-s tracings centred in 4096 samples; "start" keeps the beginning and pads at the end."""

    fs: float = 400.0
    length: int = 4096
    scale: Scale = "record"
    align: Align = "center"

    def __post_init__(self) -> None:
        if self.fs <= 0 or self.length <= 0:
            raise MuprivError(f"preprocess: fs and length must be positive, got fs={self.fs}, length={self.length}")
        if self.scale not in ("record", "lead", "none"):
            raise MuprivError(f"preprocess: scale must be record, lead or none, got {self.scale!r}")
        if self.align not in ("center", "start"):
            raise MuprivError(f"preprocess: align must be center or start, got {self.align!r}")

    @property
    def units(self) -> str:
        return "mV" if self.scale == "none" else f"minmax-{self.scale}"

    def as_dict(self) -> dict:
        return asdict(self)


# The model input a run gets unless its config says otherwise: one owner for simulator.config.DataConfig's defaults
# and for what the attacker assumes when a scheme.json has no "data" block (attacks/observe.py).
DEFAULT_INPUT = PreprocessConfig(fs=400.0, length=1024, scale="record")


def canonical_lead(name: str) -> str | None:
    return _ALIASES.get(str(name).strip().lower())


def lead_order(names: Sequence[str]) -> np.ndarray:
    """Column index of each canonical lead in `names`; MuprivError (without a file name) if one is missing or doubled."""
    canon = [canonical_lead(n) for n in names]
    idx = []
    for lead in LEADS:
        hits = [i for i, c in enumerate(canon) if c == lead]
        if len(hits) != 1:
            why = "missing" if not hits else "given twice"
            raise MuprivError(f"lead {lead} {why} (leads found: {', '.join(map(str, names))}); a record needs the 12 standard leads")
        idx.append(hits[0])
    return np.asarray(idx)


def check_signal(sig: np.ndarray) -> str | None:
    """Why a (length, 12) signal is unusable, or None."""
    if sig.size == 0:
        return "no samples"
    if not np.isfinite(sig).all():
        bad = np.flatnonzero(~np.isfinite(sig).all(axis=0))
        return f"NaN/infinite samples in lead(s) {', '.join(LEADS[i] for i in bad if i < len(LEADS))}"
    if float(np.ptp(sig)) == 0.0:
        return "constant signal (all leads flat)"
    return None


def resample(sig: np.ndarray, fs_in: float, fs_out: float, axis: int = 0) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along `axis` by the exact rational ratio fs_out/fs_in."""
    if fs_in == fs_out:
        return sig
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(sig, ratio.numerator, ratio.denominator, axis=axis).astype(np.float32, copy=False)


def scale(sig: np.ndarray, how: Scale) -> np.ndarray:
    """Min-max to [0, 1] along the time axis (-2), per record (all leads) or per lead; works on (..., length, leads)."""
    if how == "none":
        return sig.astype(np.float32, copy=False)
    lo, span = _min_span(sig, how)
    return ((sig - lo) / span).astype(np.float32, copy=False)


def _min_span(sig: np.ndarray, how: Scale) -> tuple[np.ndarray, np.ndarray]:
    """The minimum and the span (1 where flat) that scale() maps to 0 and 1, over the whole signal."""
    axes = (-2, -1) if how == "record" else (-2,)
    lo = sig.min(axis=axes, keepdims=True)
    hi = sig.max(axis=axes, keepdims=True)
    return lo, np.where(hi - lo > 0, hi - lo, 1.0)


def scale_to_length(sig: np.ndarray, how: Scale, length: int, align: Align = "center") -> np.ndarray:
    """Bitwise fix_length(scale(sig, how), length, align), but the scaling arithmetic runs only on the samples
    that are kept: the minimum and span still come from the whole signal, and the map is per sample, so cropping
    first changes no bit (the run's input keeps 1024 of 4096 samples: a quarter of the work)."""
    if how == "none" or sig.dtype != np.float32:
        return fix_length(scale(sig, how), length, align)
    lo, span = _min_span(sig, how)
    kept = sig[..., _crop_slice(sig.shape[-2], length, align), :]
    out = np.subtract(kept, lo, dtype=np.float32)
    out /= span
    return fix_length(out, length, align)


def _crop_slice(n: int, length: int, align: Align) -> slice:
    """The samples fix_length keeps of n (all of them when it pads)."""
    if n <= length:
        return slice(0, n)
    start = (n - length) // 2 if align == "center" else 0
    return slice(start, start + length)


def fix_length(sig: np.ndarray, length: int, align: Align = "center") -> np.ndarray:
    """Crop or zero-pad the time axis (-2) to `length` samples."""
    n = sig.shape[-2]
    if n == length:
        return sig
    if n > length:
        return sig[..., _crop_slice(n, length, align), :]
    before = (length - n) // 2 if align == "center" else 0
    pad = [(0, 0)] * sig.ndim
    pad[-2] = (before, length - n - before)
    return np.pad(sig, pad)


def preprocess_signal(sig: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """(n_samples, 12) in canonical order at `fs` -> (cfg.length, 12) float32 at cfg.fs."""
    out = resample(np.asarray(sig, dtype=np.float32), fs, cfg.fs, axis=0)
    return fix_length(scale(out, cfg.scale), cfg.length, cfg.align).astype(np.float32, copy=False)


def preprocess_batch(x: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """(n, n_samples, 12) at `fs` -> (n, cfg.length, 12), vectorised over records."""
    out = resample(np.asarray(x, dtype=np.float32), fs, cfg.fs, axis=1)
    return np.ascontiguousarray(scale_to_length(out, cfg.scale, cfg.length, cfg.align), dtype=np.float32)


def preprocess_records(records, cfg: PreprocessConfig):
    """An ECGRecords in mV at any rate/length -> the same records under `cfg`."""
    from simulator.data.records import ECGRecords  # noqa: F401  (type only)
    if records.units != "mV":
        raise MuprivError(f"records are already scaled ({records.units}); preprocess raw (mV) records only once")
    return records.with_signals(preprocess_batch(records.signals, records.fs, cfg), fs=cfg.fs, units=cfg.units)
