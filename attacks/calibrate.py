"""Calibrated leakage: each attack's gain over its null, a bootstrap interval, and a verdict.

Scoring (attacks/score.py) writes *units*, one row per thing an attack can get right or wrong: a
reconstructed record, an observation's label guess, a membership candidate. Each unit carries the
attack's score (``value``) and what the best null control scored on the same unit through the same
pipeline (``null``, of kind ``null_kind``: the kind that scores highest on average over the attack's
units); membership units carry the truth (``label``: 1 member, 0 non-member) instead.

For each (scheme, attack, quantity) this module reports:
- the estimate (the mean score, or the AUC / TPR at 1% FPR for membership), the null level, the gain;
- a 95% interval of the gain from a two-level bootstrap: clients (a patient in one seed's cohort) are
  resampled, then units within each resampled client, so that records of one patient, which are not
  independent, never count as independent evidence. A percentile bootstrap over a handful of clients is too
  narrow, so for mean gains the interval is widened to the Student-t interval over the clients' means where
  that is wider (over the units when there is a single client);
- with two or more seeds, patients of one seed share a cohort and a pretrained model, so they are not
  independent either: mean gains are then widened to the Student-t interval over the seeds' means (each the
  mean of its clients' mean gains), and membership statistics resample seeds first, then clients within each
  drawn seed, then units. This is the nesting the report's Conclusions use for accuracy;
- a verdict: "leaks" only when the interval's lower bound is above 0, else "no evidence".

Choosing the strongest of several attacks (and of several scores of one kind of leakage, e.g. Pearson r
and best-lag r of a waveform) is a multiple comparison: within a (scheme, family of quantities) the
intervals are Bonferroni-adjusted for the number of (attack, quantity) pairs compared (each at level
1 - 0.05 / m), so "some attack leaks this kind of information" holds with family-wise error at most 5%.
The adjustment is stated per row.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from attacks.metrics import auc, tpr_at_fpr

UNIT_COLUMNS = ["scheme", "client", "round", "attack", "threat_model", "quantity", "unit", "value", "null", "null_kind",
                "label"]
LEAKAGE_COLUMNS = ["scheme", "quantity", "attack", "threat_model", "estimate", "null", "null_kind", "gain", "ci_low",
                   "ci_high", "level", "compared", "n_units", "n_clients", "verdict", "note"]
LEVEL = 0.95
MIN_UNITS = 3  # fewer units than this give no interval worth the name
N_BOOT = 2000
BOOT_CELLS = 1 << 21  # membership draws are made in blocks of about this many (draw, unit) entries
LEAKS, NO_EVIDENCE, NOT_APPLICABLE = "leaks", "no evidence", "not applicable"


@dataclass(frozen=True)
class Quantity:
    key: str
    label: str
    statistic: str  # "mean" (of value - null), "auc" or "tpr@fpr" (membership units)
    higher_leaks: bool = True  # False: a lower value is the stronger attack (errors)
    fpr: float = 0.0  # for "tpr@fpr"
    chance: float | None = None  # the null of auc / tpr@fpr
    short: str = ""  # a few characters for table cells
    span: tuple[float, float] | None = None  # the range of a score (and so of a gain's size): intervals are clipped to it

    @property
    def family(self) -> str:
        """waveform, reid, labels, features or membership: the kind of leakage, Bonferroni's unit."""
        return self.key.split("_", 1)[0]


QUANTITIES: dict[str, Quantity] = {q.key: q for q in (
    Quantity("waveform_r", "waveform (Pearson r)", "mean", short="r", span=(-1.0, 1.0)),
    Quantity("waveform_lag_r", "waveform (best-lag r)", "mean", short="lag r", span=(-1.0, 1.0)),
    Quantity("reid_record", "re-identified record (top-1)", "mean", short="record", span=(0.0, 1.0)),
    Quantity("reid_patient", "re-identified patient (top-1)", "mean", short="patient", span=(0.0, 1.0)),
    Quantity("labels_presence_f1", "diagnoses present (F1)", "mean", short="presence F1", span=(0.0, 1.0)),
    Quantity("labels_exact", "record diagnoses (exact)", "mean", short="exact labels", span=(0.0, 1.0)),
    Quantity("labels_count_mae", "diagnosis counts (MAE)", "mean", higher_leaks=False, short="count MAE"),
    Quantity("features_ccos", "pooled features (centred cosine)", "mean", short="ccos", span=(-1.0, 1.0)),
    Quantity("membership_auc", "membership (AUC)", "auc", chance=0.5, short="AUC", span=(0.0, 1.0)),
    Quantity("membership_tpr1", "membership (TPR at 1% FPR)", "tpr@fpr", fpr=0.01, chance=0.01, short="TPR@1%",
             span=(0.0, 1.0)),
)}


# ------------------------------------------------------------------------------------------ statistics
def _stat_fn(q: Quantity) -> Callable[[np.ndarray, np.ndarray, np.ndarray], float]:
    if q.statistic == "mean":
        sign = 1.0 if q.higher_leaks else -1.0
        return lambda v, n, _l: float(sign * np.mean(v - n))
    if q.statistic == "auc":
        return lambda v, _n, l: auc(v, l) - (q.chance or 0.0)
    if q.statistic == "tpr@fpr":
        return lambda v, _n, l: tpr_at_fpr(v, l, q.fpr) - (q.chance or 0.0)
    raise ValueError(f"unknown statistic {q.statistic!r}")


def _seed_for(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def _t_interval(clusters: list[tuple[np.ndarray, np.ndarray, np.ndarray]], sign: float, level: float,
                groups: list | None = None) -> tuple[float, float]:
    """Student-t interval of the mean gain over the groups' means when there are two or more groups (a group's
    mean is the mean of its clusters' mean gains), else over the clusters' mean gains (over the units of a single
    cluster)."""
    means = [float(np.mean(sign * (v - n))) for v, n, _ in clusters]
    if groups is not None and len(set(groups)) >= 2:
        x = np.array([np.mean([m for m, g in zip(means, groups) if g == key]) for key in dict.fromkeys(groups)])
    elif len(clusters) >= 2:
        x = np.array(means)
    else:
        v, n, _ = clusters[0]
        x = sign * (v - n)
    if len(x) < 2:
        return math.inf, -math.inf  # no interval of its own: the bootstrap's stands
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return float(np.mean(x) - half), float(np.mean(x) + half)


def _drawn_clusters(n_clusters: int, groups: list | None, n_boot: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(clusters, valid), both (n_boot, slots): the clusters each bootstrap draw took, with replacement (within
    seeds drawn with replacement when ``groups`` nests them; a draw's slots past its seeds' cluster count are
    padding, valid False)."""
    if groups is None:
        return rng.integers(0, n_clusters, size=(n_boot, n_clusters)), np.ones((n_boot, n_clusters), bool)
    keys = list(dict.fromkeys(groups))
    members = [np.array([j for j, k in enumerate(groups) if k == key]) for key in keys]
    widest = max(len(m) for m in members)
    size = np.array([len(m) for m in members])
    table = np.stack([np.pad(m, (0, widest - len(m))) for m in members])  # (seeds, widest), padded with 0
    seeds = rng.integers(0, len(keys), size=(n_boot, len(keys)))  # (n_boot, seeds drawn)
    within = (rng.random((n_boot, len(keys), widest)) * size[seeds][..., None]).astype(np.int64)
    valid = np.arange(widest) < size[seeds][..., None]
    picked = table[seeds[..., None], np.where(valid, within, 0)]
    return picked.reshape(n_boot, -1), valid.reshape(n_boot, -1)


def _drawn_units(clusters: list[tuple[np.ndarray, np.ndarray, np.ndarray]], groups: list | None, n_boot: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(draw, unit): one entry per unit taken by a two- or three-level bootstrap draw (units numbered as the
    clusters concatenated). Clusters are drawn (`_drawn_clusters`), then each drawn cluster's members and
    non-members with replacement within their class, every draw at once."""
    picked, valid = _drawn_clusters(len(clusters), groups, n_boot, rng)
    offsets = np.cumsum([0] + [len(c[0]) for c in clusters])
    draws, units = [], []
    for k in (0, 1):
        of_class = [offsets[j] + np.flatnonzero(c[2] == k) for j, c in enumerate(clusters)]
        count = np.array([len(u) for u in of_class])
        widest = int(count.max())
        if widest == 0:
            continue
        table = np.stack([np.pad(u, (0, widest - len(u))) for u in of_class])  # (clusters, widest)
        n = count[picked]  # (n_boot, slots): this class's units in each drawn cluster
        take = valid[..., None] & (np.arange(widest) < n[..., None])
        which = (rng.random((*picked.shape, widest)) * n[..., None]).astype(np.int64)
        unit = table[picked[..., None], np.where(take, which, 0)]
        draws.append(np.broadcast_to(np.arange(n_boot)[:, None, None], take.shape)[take])
        units.append(unit[take])
    return np.concatenate(draws), np.concatenate(units)


def _cells_per_draw(clusters: list[tuple[np.ndarray, np.ndarray, np.ndarray]], groups: list | None) -> int:
    """The (slot, unit) cells `_drawn_units` fills per draw, padding included: slots x the largest member count +
    slots x the largest non-member count."""
    slots = len(clusters) if groups is None else \
        len(set(groups)) * max(groups.count(key) for key in set(groups))
    widest = sum(max(int((c[2] == k).sum()) for c in clusters) for k in (0, 1))
    return max(1, slots * widest)


def _tie_groups(value: np.ndarray) -> np.ndarray:
    """Each unit's rank among the distinct values, highest first (tied units share one)."""
    distinct = np.unique(value)
    return len(distinct) - 1 - np.searchsorted(distinct, value)


def _grouped_stat(q: Quantity, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(n_boot,) the membership statistic minus chance on each draw, from how many members (pos) and non-members
    (neg) each draw holds at each distinct score, (n_boot, distinct scores), highest score first: for integer
    counts exactly metrics.auc / metrics.tpr_at_fpr of the units repeated that often."""
    n1, n0 = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if q.statistic == "auc":
            neg_below = n0[:, None] - np.cumsum(neg, axis=1)  # non-members strictly below each score
            out = (pos * (neg_below + 0.5 * neg)).sum(1) / (n1 * n0)
        else:
            # The threshold is the (allowed + 1)-th highest non-member; members strictly above it are caught.
            allowed = np.floor(q.fpr * n0 + 1e-9)
            at = np.argmax(np.cumsum(neg, axis=1) > allowed[:, None], axis=1)
            pos_above = np.cumsum(pos, axis=1) - pos
            out = np.where(allowed >= n0, 1.0, pos_above[np.arange(len(at)), at] / n1)
        out = np.where((n1 > 0) & (n0 > 0), out, np.nan)
    return out - (q.chance or 0.0)


def _membership_boots(q: Quantity, value: np.ndarray, label: np.ndarray, draw: np.ndarray, unit: np.ndarray,
                      n_boot: int) -> np.ndarray:
    """(n_boot,) the statistic of each draw, given the (draw, unit) entries it took."""
    tie = _tie_groups(value)
    width = int(tie.max()) + 1
    cell = draw * width + tie[unit]
    member = label[unit] == 1
    pos = np.bincount(cell[member], minlength=n_boot * width).reshape(n_boot, width).astype(np.float64)
    neg = np.bincount(cell[~member & (label[unit] == 0)], minlength=n_boot * width).reshape(n_boot, width)
    return _grouped_stat(q, pos, neg.astype(np.float64))


def bootstrap_gain(clusters: list[tuple[np.ndarray, np.ndarray, np.ndarray]], q: Quantity, level: float,
                   n_boot: int = N_BOOT, seed: int = 0, groups: list | None = None) -> tuple[float, float, float]:
    """(gain, low, high): the gain on all units and its percentile interval from a two-level bootstrap
    (clusters with replacement, then units with replacement within each drawn cluster; membership units
    are resampled within members and within non-members, so every draw keeps both). ``groups`` names each
    cluster's seed: with two or more, the clusters are nested in them (see the module docstring)."""
    nested = groups is not None and len(set(groups)) >= 2
    stat = _stat_fn(q)
    value = np.concatenate([c[0] for c in clusters])
    null = np.concatenate([c[1] for c in clusters])
    label = np.concatenate([c[2] for c in clusters])
    gain = stat(value, null, label)
    rng = np.random.default_rng(seed)
    alpha = 1.0 - level
    if q.statistic == "mean":
        sign = 1.0 if q.higher_leaks else -1.0
        # Within-cluster resampled sums, (n_boot, clusters), without a Python loop per draw: each draw's units are
        # drawn as indices and gathered (numpy's multinomial, used before, cost a binomial per unit and draw).
        sums = np.stack([(sign * (v - n))[rng.integers(0, len(v), size=(n_boot, len(v)))].sum(1)
                         for v, n, _ in clusters], axis=1)
        sizes = np.array([len(v) for v, _, _ in clusters], np.float64)
        pick = rng.integers(0, len(clusters), size=(n_boot, len(clusters)))
        rows = np.arange(n_boot)[:, None]
        boots = sums[rows, pick].sum(1) / sizes[pick].sum(1)
        low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
        t_low, t_high = _t_interval(clusters, sign, level, groups if nested else None)
        # A percentile bootstrap of a handful of clients (or units) is too narrow: take the wider of it and the
        # Student-t interval over the clients' means (over the units when there is one client), but no wider
        # than a gain can be (a score in [a, b] against a null in [a, b] gains at most b - a either way).
        width = (q.span[1] - q.span[0]) if q.span else math.inf
        return gain, float(max(min(low, t_low), -width)), float(min(max(high, t_high), width))
    nesting = groups if nested else None
    step = max(1, BOOT_CELLS // _cells_per_draw(clusters, nesting))  # draws per block: a few MB of indices
    boots = []
    for b in range(0, n_boot, step):
        size = min(step, n_boot - b)
        boots.append(_membership_boots(q, value, label, *_drawn_units(clusters, nesting, size, rng), size))
    boots = np.concatenate(boots)
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return gain, math.nan, math.nan
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return gain, float(low), float(high)


# ------------------------------------------------------------------------------------------ the table
def _estimate(q: Quantity, frame: pd.DataFrame) -> tuple[float, float]:
    """(the attack's own score, the null's) for display, on all units."""
    if q.statistic == "mean":
        return float(frame["value"].mean()), float(frame["null"].mean())
    v, lab = frame["value"].to_numpy(np.float64), frame["label"].to_numpy(np.float64)
    est = auc(v, lab) if q.statistic == "auc" else tpr_at_fpr(v, lab, q.fpr)
    return est, float(q.chance or 0.0)


def _clusters(frame: pd.DataFrame) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], list | None]:
    """One (value, null, label) cluster per (seed, client), and each cluster's seed (None without a seed column)."""
    keys = ["seed", "client"] if "seed" in frame.columns else ["client"]
    out, seeds = [], []
    for key, grp in frame.groupby(keys, sort=True):
        out.append((grp["value"].to_numpy(np.float64), grp["null"].to_numpy(np.float64),
                    grp["label"].to_numpy(np.float64)))
        seeds.append(key[0])
    return out, (seeds if "seed" in frame.columns else None)


def calibrate(units: pd.DataFrame, level: float = LEVEL, n_boot: int = N_BOOT) -> pd.DataFrame:
    """LEAKAGE_COLUMNS, one row per (scheme, quantity, attack) with units; Bonferroni over the (attack,
    quantity) pairs of a (scheme, family)."""
    if units is None or units.empty:
        return pd.DataFrame(columns=LEAKAGE_COLUMNS)
    frame = units[units["quantity"].isin(list(QUANTITIES))].copy()
    frame = frame[np.isfinite(frame["value"].astype(float))]
    keep = [QUANTITIES[q].statistic != "mean" or np.isfinite(n) for q, n in zip(frame["quantity"], frame["null"].astype(float))]
    frame = frame[keep]
    frame["family"] = [QUANTITIES[q].family for q in frame["quantity"]]
    rows = []
    for (scheme, _family), fam in frame.groupby(["scheme", "family"], sort=True):
        pairs = sorted(set(zip(fam["quantity"], fam["attack"])))
        m = len(pairs)
        adj_level = 1.0 - (1.0 - level) / m
        for quantity, attack in pairs:
            q = QUANTITIES[quantity]
            sub = fam[(fam["quantity"] == quantity) & (fam["attack"] == attack)]
            est, null = _estimate(q, sub)
            clusters, seeds = _clusters(sub)
            threat = ",".join(sorted(set(map(str, sub["threat_model"]))))
            kinds = sorted({str(k) for k in sub["null_kind"].dropna() if str(k) not in ("", "nan")}) \
                if "null_kind" in sub.columns else []
            null_kind = ",".join(kinds) if kinds else (f"chance ({q.chance:g})" if q.chance is not None else "")
            base = {"scheme": scheme, "quantity": quantity, "attack": attack, "threat_model": threat, "estimate": est,
                    "null": null, "null_kind": null_kind, "level": adj_level, "compared": m, "n_units": len(sub),
                    "n_clients": len(clusters)}
            if len(sub) < MIN_UNITS:
                gain = _stat_fn(q)(sub["value"].to_numpy(float), sub["null"].to_numpy(float), sub["label"].to_numpy(float))
                rows.append({**base, "gain": gain, "ci_low": math.nan, "ci_high": math.nan, "verdict": NO_EVIDENCE,
                             "note": f"{len(sub)} unit(s): too few for an interval"})
                continue
            gain, low, high = bootstrap_gain(clusters, q, adj_level, n_boot, _seed_for(scheme, quantity, attack), seeds)
            verdict = LEAKS if math.isfinite(low) and low > 0 else NO_EVIDENCE
            notes = [f"Bonferroni over {m} (attack, score) pairs"] if m > 1 else []
            if seeds is not None and len(set(seeds)) >= 2:
                notes.append(f"patients nested in {len(set(seeds))} seeds")
            note = "; ".join(notes)
            rows.append({**base, "gain": gain, "ci_low": low, "ci_high": high, "verdict": verdict, "note": note})
    out = pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)
    order = {k: i for i, k in enumerate(QUANTITIES)}
    return (out.assign(_q=out["quantity"].map(order)).sort_values(["scheme", "_q", "attack"], kind="stable")
            .drop(columns="_q").reset_index(drop=True))


def strongest(leakage: pd.DataFrame, by: str = "quantity") -> pd.DataFrame:
    """Per (scheme, quantity) -- or per (scheme, family) with by="family" -- the row with the strongest
    evidence (the highest adjusted lower bound, then the highest gain). The intervals are already adjusted
    for choosing among a family's rows, so its verdict is the scheme's verdict for that quantity/family."""
    if leakage.empty:
        return leakage
    ranked = leakage.assign(_lo=leakage["ci_low"].astype(float).fillna(-np.inf),
                            _g=leakage["gain"].astype(float).fillna(-np.inf),
                            family=[QUANTITIES[q].family if q in QUANTITIES else q for q in leakage["quantity"]])
    ranked = ranked.sort_values(["scheme", by, "_lo", "_g", "attack"], ascending=[True, True, False, False, True],
                                kind="stable")
    return ranked.groupby(["scheme", by], sort=True).head(1).drop(columns=["_lo", "_g"]).reset_index(drop=True)
