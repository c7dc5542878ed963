"""Public prior knowledge: a population of ECGs the attacker may use, and 1-D signal priors.

The population prior is the attacker's public statistics. In order of preference:
1. the server's own source data, RUN_DIR/truth/source.npz (the server owns it; no client's data);
2. else a synthetic population from the project's public generator (`simulator.data.synthetic`),
   with a seed no client uses, preprocessed with the run's public data format.
RUN_DIR/truth/population_mean.npz (array `mean`, (length, leads)), when present, replaces the mean.
The prior gives the mean ECG (the baseline an attack must beat), samples for label-count
calibration, the signals' value range and the centre of the feature space.

Signal priors replace image total variation in Inverting Gradients: smoothness (mean squared first
difference), periodicity (1 - the best autocorrelation at a heart-rate lag) and limb-lead
consistency (Einthoven: III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2, each up to a
constant because a record's min-max scaling shifts every lead by the same offset).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attacks.observe import DataSpec

PUBLIC_SEED = 0x9E1C  # no client derives its data from this seed
HEART_RATE_BPM = (40.0, 180.0)


@dataclass
class PopulationPrior:
    mean: np.ndarray  # (length, leads)
    samples: np.ndarray  # (n, length, leads) public records
    lo: float  # value range of a record
    hi: float
    fs: float
    source: str
    labels: np.ndarray | None = None  # (n, classes) 0/1 diagnoses of `samples`, when the public data has them

    def prevalence(self) -> np.ndarray | None:
        """(classes,) share of public records with each diagnosis: the no-attack guess of a class."""
        return None if self.labels is None or len(self.labels) == 0 else self.labels.astype(np.float64).mean(0)

    def to_dict(self) -> dict:
        return {"source": self.source, "samples": int(self.samples.shape[0]), "range": [self.lo, self.hi], "fs": self.fs}


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or zero-pad (n, L, leads) to `length` samples, as the project's preprocessing does."""
    L = x.shape[1]
    if L == length:
        return x
    if L > length:
        s = (L - length) // 2
        return x[:, s : s + length]
    out = np.zeros((x.shape[0], length, x.shape[2]), dtype=x.dtype)
    s = (length - L) // 2
    out[:, s : s + L] = x
    return out


def population_prior(run_dir: Path | None, spec: DataSpec, n_leads: int, n_samples: int = 48) -> PopulationPrior:
    """The public prior for a run (see the module doc for the order of sources)."""
    truth = Path(run_dir) / "truth" if run_dir is not None else None
    samples: np.ndarray | None = None
    labels: np.ndarray | None = None
    source = ""
    if truth is not None and (truth / "source.npz").is_file():
        with np.load(truth / "source.npz") as f:
            x = np.asarray(f["x"], np.float32)
            y = np.asarray(f["y"]) if "y" in f.files else None
        rng = np.random.default_rng(PUBLIC_SEED)
        pick = np.sort(rng.choice(x.shape[0], size=min(n_samples, x.shape[0]), replace=False))
        samples, source = _fit_length(x[pick], spec.length), "server source data (truth/source.npz)"
        labels = None if y is None else (y[pick] > 0).astype(np.int64)
        mean = _fit_length(x, spec.length).mean(0)
    else:
        from simulator.data.preprocess import PreprocessConfig, preprocess_records
        from simulator.data.synthetic import synthesize

        recs = synthesize(max(n_samples, 8), seed=PUBLIC_SEED, id_prefix="PUB", patient_prefix="Q")
        scale = spec.scale if spec.scale in ("record", "lead", "none") else "record"
        pre = preprocess_records(recs, PreprocessConfig(fs=spec.fs, length=spec.length, scale=scale))
        samples = pre.signals[:, :, :n_leads].astype(np.float32)
        labels = (np.asarray(pre.labels) > 0).astype(np.int64)
        mean = samples.mean(0)
        source = f"synthetic public population (seed {PUBLIC_SEED}, {samples.shape[0]} records)"
    if truth is not None and (truth / "population_mean.npz").is_file():
        with np.load(truth / "population_mean.npz") as f:
            key = "mean" if "mean" in f.files else f.files[0]
            m = np.asarray(f[key], np.float32)
        mean = _fit_length(m[None], spec.length)[0]
        source += " + truth/population_mean.npz"
    lo, hi = float(np.quantile(samples, 0.0)), float(np.quantile(samples, 1.0))
    if spec.scale in ("record", "lead"):
        lo, hi = 0.0, 1.0  # min-max scaling: every record lies in [0, 1]
    return PopulationPrior(mean.astype(np.float32), samples.astype(np.float32), lo, hi, spec.fs, source, labels)


# ------------------------------------------------------------------------------------------ signal priors
def smoothness(x: torch.Tensor) -> torch.Tensor:
    """Mean squared first difference along time, relative to the signal's variance. x: (n, L, leads)."""
    d = x[:, 1:] - x[:, :-1]
    return (d**2).mean() / x.var().clamp_min(1e-8)


def lag_range(fs: float, length: int) -> tuple[int, int] | None:
    """Lags (samples) of a heart beat in HEART_RATE_BPM that fit twice into the record, or None."""
    lo = int(np.floor(fs * 60.0 / HEART_RATE_BPM[1]))
    hi = min(int(np.ceil(fs * 60.0 / HEART_RATE_BPM[0])), length // 2)
    return (max(lo, 1), hi) if hi > lo else None


def periodicity(x: torch.Tensor, lags: tuple[int, int], sharpness: float = 20.0) -> torch.Tensor:
    """1 - (soft) best normalised autocorrelation over heart-rate lags, averaged over records and leads."""
    L = x.shape[1]
    xc = x - x.mean(dim=1, keepdim=True)
    spec = torch.fft.rfft(xc, n=2 * L, dim=1)
    ac = torch.fft.irfft(spec * spec.conj(), n=2 * L, dim=1)[:, :L]  # (n, L, leads)
    ac = ac / ac[:, :1].clamp_min(1e-8)
    window = ac[:, lags[0] : lags[1] + 1]
    best = torch.logsumexp(sharpness * window, dim=1) / sharpness
    return (1.0 - best).mean()


def einthoven(x: torch.Tensor) -> torch.Tensor:
    """Mean squared limb-lead inconsistency (leads in the canonical order I, II, III, aVR, aVL, aVF, ...)."""
    if x.shape[2] < 6:
        return x.new_zeros(())
    I, II, III, aVR, aVL, aVF = (x[:, :, k] for k in range(6))
    res = torch.stack([III - (II - I), aVR + (I + II) / 2, aVL - (I - II / 2), aVF - (II - I / 2)], dim=2)
    res = res - res.mean(dim=1, keepdim=True)  # a common offset per lead is allowed
    return (res**2).mean() / x.var().clamp_min(1e-8)
