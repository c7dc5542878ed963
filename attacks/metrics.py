"""How much leaked: scores of reconstructed records, labels and features against the truth.

Signals are (n, length, leads). The similarity of two records is the mean over leads of the per-lead
Pearson r; reconstructions are paired with true records by the Hungarian algorithm on it. What a score
is worth is decided elsewhere: attacks/score.py passes null controls (attacks/nulls.py) through the
same matching and these same metrics, and attacks/calibrate.py reports the gain over them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata


# ------------------------------------------------------------------------------------------ similarity
def _standardise(x: np.ndarray) -> np.ndarray:
    """Per record and lead: zero mean, unit norm over time (constant leads become all zero)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(axis=-2, keepdims=True)
    norm = np.linalg.norm(xc, axis=-2, keepdims=True)
    return np.where(norm > 1e-12, xc / np.where(norm > 1e-12, norm, 1.0), 0.0)


def standardised_rows(x: np.ndarray) -> np.ndarray:
    """(n, L * leads) rows whose dot products divided by the lead count are similarity_matrix's entries:
    standardise a large set once (e.g. a re-identification cohort) and compare many records against it."""
    z = _standardise(x)
    return z.reshape(z.shape[0], -1)


def row_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T in float64 through torch, which runs on the caller's torch threads (the attack pipeline pins
    one): numpy's BLAS starts its own threads, and on a busy 2-core machine a (100 x 3,072) @ (3,072 x 256)
    product then took 0.26 s instead of 0.01 s."""
    return (torch.from_numpy(np.ascontiguousarray(a, np.float64)) @ torch.from_numpy(np.ascontiguousarray(b, np.float64)).T).numpy()


def similarity_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m): mean over leads of the Pearson r between record i of a and record j of b."""
    return row_products(standardised_rows(a), standardised_rows(b)) / a.shape[-1]


def match_records(rec: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian pairing maximising similarity: (rec indices, true indices, similarity matrix)."""
    sim = similarity_matrix(rec, true)
    rows, cols = linear_sum_assignment(-sim)
    return rows, cols, sim


# ------------------------------------------------------------------------------------------ waveforms
def pearson_per_lead(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(leads,) Pearson r of one record pair (L, leads); nan for a constant lead."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    den = np.linalg.norm(ac, axis=0) * np.linalg.norm(bc, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (ac * bc).sum(0) / np.where(den > 1e-12, den, 1.0), np.nan)


def lagged_pearson_per_lead(a: np.ndarray, b: np.ndarray, max_lag: int) -> np.ndarray:
    """(leads,) the best Pearson r over shifts of b by -max_lag..max_lag samples (overlap only)."""
    L = a.shape[0]
    best = np.full(a.shape[1], -np.inf)
    for lag in range(-max_lag, max_lag + 1):
        if L - abs(lag) < 8:
            continue
        aa, bb = (a[lag:], b[: L - lag]) if lag >= 0 else (a[: L + lag], b[-lag:])
        r = pearson_per_lead(aa, bb)
        best = np.fmax(best, r)
    return np.where(np.isfinite(best), best, np.nan)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def prd(rec: np.ndarray, true: np.ndarray) -> float:
    """Percentage root-mean-square difference (normalised: the true signal's mean is removed per lead)."""
    t = np.asarray(true, np.float64)
    err = np.sum((np.asarray(rec, np.float64) - t) ** 2)
    ref = np.sum((t - t.mean(0)) ** 2)
    return float(100.0 * math.sqrt(err / ref)) if ref > 0 else math.nan


def snr_db(rec: np.ndarray, true: np.ndarray) -> float:
    t = np.asarray(true, np.float64)
    err = np.sum((np.asarray(rec, np.float64) - t) ** 2)
    ref = np.sum((t - t.mean(0)) ** 2)
    return float(10.0 * math.log10(ref / err)) if err > 0 and ref > 0 else (math.inf if ref > 0 else math.nan)


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def _lead_mean(v: np.ndarray) -> np.ndarray:
    """(P, leads) -> (P,): mean over the finite entries of each row (nan when none is finite)."""
    ok = np.isfinite(v)
    return np.where(ok.any(1), np.where(ok, v, 0.0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)


def lagged_r(rec: np.ndarray, true: np.ndarray, max_lag: int, min_overlap: int = 8) -> np.ndarray:
    """(P, leads): for P record pairs, the best per-lead Pearson r over shifts of -max_lag..max_lag samples
    (overlapping part only), as lagged_pearson_per_lead computes it for one pair. All lags at once: the
    cross products come from one FFT cross-correlation, the window sums from cumulative sums."""
    a, b = np.asarray(rec, np.float64), np.asarray(true, np.float64)
    P, L, K = a.shape
    n_fft = 2 * L
    # xc[s] = sum_t b[t + s] a[t] for s >= 0, and (index n_fft + s) for s < 0
    xc = np.fft.irfft(np.fft.rfft(b, n_fft, axis=1) * np.conj(np.fft.rfft(a, n_fft, axis=1)), n_fft, axis=1)
    zero = np.zeros((P, 1, K))
    ca, cb = np.concatenate([zero, np.cumsum(a, 1)], 1), np.concatenate([zero, np.cumsum(b, 1)], 1)
    ca2, cb2 = np.concatenate([zero, np.cumsum(a * a, 1)], 1), np.concatenate([zero, np.cumsum(b * b, 1)], 1)
    best = np.full((P, K), -np.inf)
    for s in range(-max_lag, max_lag + 1):
        m = L - abs(s)
        if m < min_overlap:
            continue
        # overlap: b[t + s] with a[t]; a runs over [max(0, -s), max(0, -s) + m), b over [max(0, s), ...)
        a0, b0 = max(0, -s), max(0, s)
        sa, sb = ca[:, a0 + m] - ca[:, a0], cb[:, b0 + m] - cb[:, b0]
        saa, sbb = ca2[:, a0 + m] - ca2[:, a0], cb2[:, b0 + m] - cb2[:, b0]
        sab = xc[:, s % n_fft]
        cov = sab - sa * sb / m
        # centred sums of squares; below 1e-10 of the raw sum they are rounding error of a constant window
        va, vb = saa - sa * sa / m, sbb - sb * sb / m
        va, vb = np.where(va > 1e-10 * saa, va, 0.0), np.where(vb > 1e-10 * sbb, vb, 0.0)
        den = np.sqrt(va * vb)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 1e-12, cov / np.where(den > 1e-12, den, 1.0), np.nan)
        best = np.fmax(best, r)
    return np.where(np.isfinite(best), best, np.nan)


def pair_scores(rec: np.ndarray, true: np.ndarray, max_lag: int) -> dict[str, np.ndarray]:
    """Scores of P record pairs at once, rec and true (P, L, leads): (P,) arrays of r (mean over leads of
    the per-lead Pearson r), lag_r (the best r over shifts of up to max_lag samples, per lead), mse, prd
    and snr_db. Constant leads are left out of the lead means (nan when every lead is constant)."""
    a, b = np.asarray(rec, np.float64), np.asarray(true, np.float64)
    ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.linalg.norm(ac, axis=1) * np.linalg.norm(bc, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 1e-12, (ac * bc).sum(1) / np.where(den > 1e-12, den, 1.0), np.nan)
    err = ((a - b) ** 2).sum(axis=(1, 2))
    ref = (bc**2).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        prd_v = np.where(ref > 0, 100.0 * np.sqrt(err / np.where(ref > 0, ref, 1.0)), np.nan)
        snr = np.where((err > 0) & (ref > 0), 10.0 * np.log10(np.where(ref > 0, ref, 1.0) / np.where(err > 0, err, 1.0)),
                       np.where(ref > 0, np.inf, np.nan))
    return {"r": _lead_mean(r), "lag_r": _lead_mean(lagged_r(a, b, max_lag)), "mse": err / (a.shape[1] * a.shape[2]),
            "prd": prd_v, "snr_db": snr}


# ------------------------------------------------------------------------------------------ re-identification
def reid_rank(rec: np.ndarray, cohort: np.ndarray, true_index: int) -> int:
    """1-based rank of the true record among the cohort's records by similarity to the reconstruction."""
    sims = similarity_matrix(rec[None], cohort)[0]
    return int(1 + np.sum(sims > sims[true_index]))


# ------------------------------------------------------------------------------------------ labels
def f1_per_class(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(classes,) F1 over records; nan where a class has no true and no predicted positive."""
    p, t = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp = (p & t).sum(0).astype(np.float64)
    fp = (p & ~t).sum(0)
    fn = (~p & t).sum(0)
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def label_scores(pred: np.ndarray, true: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Record-level: exact-match rate, per-class F1 and their nan-mean (macro F1)."""
    pred, true = np.asarray(pred).astype(int), np.asarray(true).astype(int)
    f1 = f1_per_class(pred, true)
    out = {"label_exact": float(np.mean(np.all(pred == true, axis=1))), "label_acc": float(np.mean(pred == true)),
           "label_macro_f1": _nanmean(f1)}
    out.update({f"f1_{c}": float(v) for c, v in zip(classes, f1)})
    return out


def presence_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Which classes occur among a client's records: accuracy, all-correct, and F1 over the classes."""
    p, t = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return {"presence_acc": float(np.mean(p == t)), "presence_exact": float(np.all(p == t)),
            "presence_f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan}


# ------------------------------------------------------------------------------------------ membership
def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (ties count one half): the Mann-Whitney statistic."""
    labels = np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The largest share of members above a threshold that lets at most floor(fpr * n) non-members through
    (strictly above: ties at the threshold count against the attacker)."""
    labels = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    neg = np.sort(s[~labels])[::-1]
    if labels.sum() == 0 or len(neg) == 0:
        return math.nan
    allowed = int(math.floor(fpr * len(neg) + 1e-9))
    if allowed >= len(neg):
        return 1.0
    return float(np.mean(s[labels] > neg[allowed]))


# ------------------------------------------------------------------------------------------ features
def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else math.nan
