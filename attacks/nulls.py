"""Null controls: what a *non-attack* scores through the same scoring pipeline.

A leakage score means something only next to what an attacker who learned nothing would score the
same way. Matching a reconstruction to the closest of a client's records rewards any ECG-shaped
signal, so a stranger's ECG "leaks" by the raw numbers. The nulls here are passed through exactly the
scoring an attack gets (the same Hungarian matching against the same records, the same metrics), and
the attack is credited only with its gain over the best of them.

Waveform nulls, each with as many records as the attack reconstructed:
- ``prior-mean``: the population-mean ECG, repeated;
- ``public-record``: records drawn from the attacker's public data (the prior's samples), which are in
  no client's data;
- ``spectral-noise``: Gaussian noise with the prior's mean power spectrum per lead (random phases) at
  the prior's mean level per lead;
- ``other-patient``: records of the cohort's *other* patients. The attacker does not have them, but the
  evaluation does, and they carry everything the patients share (their device, its placement spread,
  their population) and nothing of this patient. Public source records can look less like the patients
  than a stranger wearing the same device does; this null keeps such a stranger from counting as a leak.

Label nulls (no attack at all): every class present; presence predicted from the public prevalence;
the public data's most common label vector for each record; counts as records x prevalence.
All draws come from a seeded generator, so the same run gives the same nulls.
"""
from __future__ import annotations

import numpy as np

from attacks.priors import PopulationPrior

WAVEFORM_NULLS: tuple[str, ...] = ("prior-mean", "public-record", "spectral-noise", "other-patient")
NULL_DRAWS = 32  # draws of each random null per observation: enough that the null's level is precise


def null_records(kind: str, prior: PopulationPrior, n: int, rng: np.random.Generator,
                 others: np.ndarray | None = None) -> np.ndarray | None:
    """(n, length, leads) records of one null kind; None for "other-patient" without other patients."""
    if kind == "prior-mean":
        return np.repeat(prior.mean[None].astype(np.float64), n, axis=0)
    if kind in ("public-record", "other-patient"):
        pool = prior.samples if kind == "public-record" else others
        if pool is None or len(pool) == 0:
            return None
        return pool[rng.choice(len(pool), size=n, replace=len(pool) < n)].astype(np.float64)
    if kind == "spectral-noise":
        return spectral_noise(prior.samples, n, rng)
    raise ValueError(f"unknown null kind {kind!r}; kinds are {WAVEFORM_NULLS}")


def spectral_noise(samples: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-like noise whose per-lead power spectrum is the public records' mean power spectrum:
    the mean amplitude per frequency with uniformly random phases, plus the records' mean level."""
    x = np.asarray(samples, np.float64)
    level = x.mean(axis=(0, 1))  # (leads,)
    amp = np.sqrt(np.mean(np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2, axis=0))  # (F, leads)
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, *amp.shape))
    spec = amp[None] * np.exp(1j * phase)
    spec[:, 0] = 0.0  # the level is added separately
    return np.fft.irfft(spec, n=x.shape[1], axis=1) + level[None, None, :]


# ------------------------------------------------------------------------------------------ labels
def presence_baselines(prior: PopulationPrior, n_records: int, n_classes: int) -> dict[str, np.ndarray]:
    """(classes,) 0/1 presence guesses that use no observation: every class present, and a class present
    when the public prevalence p makes it more likely than not among n records (1 - (1 - p)^n >= 0.5)."""
    out = {"all-present": np.ones(n_classes, np.int64)}
    p = prior.prevalence()
    if p is not None:
        out["prevalence"] = (1.0 - (1.0 - p) ** max(1, n_records) >= 0.5).astype(np.int64)
    return out


def majority_labels(prior: PopulationPrior, n_classes: int) -> np.ndarray:
    """(classes,) the most common label vector among the public records (all zeros without labels)."""
    if prior.labels is None or len(prior.labels) == 0:
        return np.zeros(n_classes, np.int64)
    vectors, counts = np.unique(np.asarray(prior.labels, np.int64), axis=0, return_counts=True)
    return vectors[int(np.argmax(counts))]


def count_baseline(prior: PopulationPrior, n_records: int, n_classes: int) -> np.ndarray:
    """(classes,) expected positives among n records at the public prevalence (zeros without labels)."""
    p = prior.prevalence()
    return np.zeros(n_classes) if p is None else p * n_records
