"""Conclusions: µ-Fine-Tuning against each other scheme, as paired differences with intervals and a verdict.

For one metric and one other scheme, the difference is taken per patient (same seed, same client: the
same cohort, pretrained model and test records), then averaged over the patients of each seed. Patients
of one seed share a cohort and a pretrained model, so they are not independent draws of the study:

- with two or more seeds, the interval is the Student-t interval of the per-seed mean differences
  (n_seeds - 1 degrees of freedom), which covers cohort and pretraining variation;
- with one seed, it is the t interval over that seed's patients, and says so: it covers only which
  patients were drawn, not a different cohort or pretrained model.

Comparing µ-FT with every other scheme is a family of comparisons per metric, so each interval is
Bonferroni-adjusted (level 1 - 0.05 / m for m schemes compared), and the verdict is "better" or "worse"
only when the adjusted interval excludes 0; otherwise "no detectable difference".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from simulator.report.tables import ALL_CLIENTS, sorted_schemes, t_interval, with_derived

REFERENCE = "mu-ft"
FAMILY_LEVEL = 0.95


@dataclass(frozen=True)
class Compared:
    metric: str
    label: str
    higher_is_better: bool


COMPARED = (
    Compared("improvement_macro_auroc", "Δ macro-AUROC", True),
    Compared("forgetting_macro_auroc", "forgetting", False),
    Compared("bytes_up", "bytes up / client", False),
)

# What a sweep's points are compared on: bytes do not depend on a pretraining setting; the pretrained model's
# source score (forgetting + source score after: what it scored before the device trained) and the patient's final
# score do, and the seed paper's claims are about them.
POINT_COMPARED = (
    Compared("pretrained_source_macro_auroc", "pretrained model's source macro-AUROC", True),
    Compared("personal_macro_auroc", "personal macro-AUROC after", True),
    *COMPARED[:2],
)

COLUMNS = ("metric", "scheme", "difference", "ci_low", "ci_high", "level", "n_seeds", "n_pairs", "basis", "verdict")


def paired_difference(results: pd.DataFrame, metric: str, reference: str, other: str,
                      level: float = FAMILY_LEVEL) -> dict | None:
    """reference - other for one metric: mean over seeds of the per-seed mean paired difference, with its
    t interval at `level` (over seed means, or over patients with one seed). None without common patients."""
    frame = results[(results["metric"] == metric) & (results["client"] != ALL_CLIENTS)]
    ref = frame[frame["scheme"] == reference][["seed", "client", "value"]]
    oth = frame[frame["scheme"] == other][["seed", "client", "value"]]
    pairs = ref.merge(oth, on=["seed", "client"], suffixes=("_ref", "_other")).dropna()
    if pairs.empty:
        return None
    pairs["diff"] = pairs["value_ref"] - pairs["value_other"]
    seed_means = pairs.groupby("seed", sort=True)["diff"].mean()
    if len(seed_means) >= 2:
        lo, hi = t_interval(seed_means.tolist(), level)
        basis = f"over {len(seed_means)} seed means"
    else:
        lo, hi = t_interval(pairs["diff"].tolist(), level)
        basis = f"over {len(pairs)} patients of one seed (not over cohorts)"
    return {"difference": float(seed_means.mean()), "ci_low": lo, "ci_high": hi, "level": level,
            "n_seeds": int(len(seed_means)), "n_pairs": int(len(pairs)), "basis": basis}


def verdict(row: dict, higher_is_better: bool) -> str:
    lo, hi = row["ci_low"], row["ci_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "too few patients to tell"
    if lo > 0 or hi < 0:
        reference_higher = lo > 0
        return "better" if reference_higher == higher_is_better else "worse"
    return "no detectable difference"


def points_compared(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """A sweep's points against its reference point, per scheme: (point - reference) of POINT_COMPARED, paired
    per (seed, client) as in `conclusions` (the points share the seed's cohort; what differs is
    the swept setting, e.g. the pretrained model), with Bonferroni over the points compared. ``results`` has a
    `point` column (the sweep folder's results.csv). Columns: scheme, point, then COLUMNS with `point` for `scheme`."""
    rows = []
    for scheme in sorted_schemes(results["scheme"]):
        # the point takes the scheme's place, so the derived gains and the pairing are per point
        one = results[results["scheme"] == scheme]
        by_point = _with_pretrained_source(with_derived(one.assign(scheme=one["point"].astype(str)).drop(columns="point")))
        others = [p for p in dict.fromkeys(by_point["scheme"]) if p != reference]
        for compared in POINT_COMPARED:
            present = [p for p in others if paired_difference(by_point, compared.metric, p, reference) is not None]
            level = 1 - (1 - FAMILY_LEVEL) / max(1, len(present))
            for point in present:
                row = paired_difference(by_point, compared.metric, point, reference, level)
                rows.append({"scheme": scheme, "point": point, "metric": compared.metric, **row,
                             "verdict": verdict(row, compared.higher_is_better)})
    return pd.DataFrame(rows, columns=["scheme", "point", *[c for c in COLUMNS if c != "scheme"]])


def _with_pretrained_source(frame: pd.DataFrame) -> pd.DataFrame:
    """Add pretrained_source_macro_auroc = source_macro_auroc + forgetting_macro_auroc per (seed, scheme, client)."""
    keys = ["seed", "scheme", "client"]
    after = frame[frame["metric"] == "source_macro_auroc"][[*keys, "value"]]
    drop = frame[frame["metric"] == "forgetting_macro_auroc"][[*keys, "value"]]
    both = after.merge(drop, on=keys, suffixes=("_after", "_drop"))
    if both.empty:
        return frame
    both = both.assign(metric="pretrained_source_macro_auroc", value=both["value_after"] + both["value_drop"])
    return pd.concat([frame, both[[*keys, "metric", "value"]]], ignore_index=True)


def conclusions(results: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per (metric, other scheme): COLUMNS. Empty when the reference scheme did not run."""
    frame = with_derived(results)
    schemes = [s for s in sorted_schemes(frame["scheme"]) if s != reference]
    if reference not in set(frame["scheme"]) or not schemes:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for compared in COMPARED:
        present = [s for s in schemes if paired_difference(frame, compared.metric, reference, s) is not None]
        level = 1 - (1 - FAMILY_LEVEL) / max(1, len(present))  # Bonferroni over the schemes compared
        for scheme in present:
            row = paired_difference(frame, compared.metric, reference, scheme, level)
            rows.append({"metric": compared.metric, "scheme": scheme, **row,
                         "verdict": verdict(row, compared.higher_is_better)})
    return pd.DataFrame(rows, columns=COLUMNS)
