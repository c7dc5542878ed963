"""Aggregations of a run's long tables: per scheme, over clients and over seeds.

Statistics, for one scheme and one metric (see docs/report.md):

- per seed, the mean and the sample standard deviation (ddof 1) over clients;
- ``mean``: the mean over seeds of the per-seed client means;
- ``sd``: the mean over seeds of the per-seed client standard deviations (the spread between
  patients, not between seeds);
- ``ci_low``/``ci_high``: with two or more seeds, the 95% Student-t interval of the per-seed
  client means (n - 1 degrees of freedom); NaN with one seed.

NaN values (undefined metrics) are left out of every mean. Rows with client ``"all"`` hold
scheme-level numbers; they are used for a metric only when no per-client row has it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from simulator.core.labels import CLASSES
from simulator.report.load import RunData

ALL_CLIENTS = "all"

# The DESIGN's order of schemes: the method first, then on-device, central, federated.
SCHEME_ORDER = ("mu-ft", "local-ft", "central", "distill-share", "fedavg", "fedprox", "dp-fedavg", "secagg-fedavg",
                "fedrep", "fedper", "fed-mu")

STAT_COLUMNS = ("mean", "sd", "ci_low", "ci_high", "n_clients", "n_seeds")
SUMMARY_COLUMNS = ("scheme", "quantity", *STAT_COLUMNS, "attack", "threat_model", "note", "n_units")


@dataclass(frozen=True)
class Quantity:
    key: str  # a metric name in results.csv, a derived metric, or a leakage quantity
    label: str
    kind: str  # a simulator.report.fmt kind


# Per-client metrics of the summary, in display order.
ACCURACY = (
    Quantity("personal_macro_f1", "personal macro-F1", "score"),
    Quantity("personal_macro_auroc", "personal macro-AUROC", "score"),
    Quantity("improvement_macro_f1", "Δ macro-F1 vs pretrained", "delta"),
    Quantity("improvement_macro_auroc", "Δ macro-AUROC vs pretrained", "delta"),
    Quantity("forgetting_macro_f1", "forgetting (source macro-F1)", "delta"),
    Quantity("forgetting_macro_auroc", "forgetting (source macro-AUROC)", "delta"),
)
COMMUNICATION = (
    Quantity("bytes_up", "bytes up / client", "bytes"),
    Quantity("bytes_down", "bytes down / client", "bytes"),
    Quantity("rounds", "rounds", "count"),
)
DEVICE_COST = (
    Quantity("local_steps", "local steps / device", "count"),
    Quantity("train_flops", "training FLOPs / device", "flops"),
    Quantity("trainable_params", "trainable params", "count"),
    Quantity("flops_per_step", "FLOPs / step", "flops"),
    Quantity("peak_memory_bytes", "peak memory", "bytes"),
    Quantity("wall_s", "wall time", "seconds"),
)
PRIVACY = (Quantity("epsilon", "ε (DP)", "epsilon"),)


@dataclass(frozen=True)
class LeakageFamily(Quantity):
    quantities: tuple[str, ...] = ()  # attacks.calibrate quantities of this kind of leakage
    attacks: tuple[str, ...] = ()  # attack families whose "not applicable" rows explain a missing value


# One kind of leakage per family of calibrated quantities (attacks/calibrate.py): the summary row is the
# (attack, score) with the strongest evidence, its gain over the best null and its Bonferroni-adjusted
# interval; the verdict ("leaks" / "no evidence") is in the row's note.
_WAVE_ATTACKS = ("none", "raw", "distilled", "dlg", "ig", "multistep")
LEAKAGE = (
    LeakageFamily("leak_waveform", "waveform (r gain)", "delta", ("waveform_r", "waveform_lag_r"), _WAVE_ATTACKS),
    LeakageFamily("leak_reid", "re-identification (top-1 gain)", "delta", ("reid_patient", "reid_record"), _WAVE_ATTACKS),
    LeakageFamily("leak_labels", "diagnoses (gain)", "delta", ("labels_presence_f1", "labels_exact", "labels_count_mae"),
                  ("none", "raw", "distilled", "labels", "attribute")),
    LeakageFamily("leak_features", "pooled features (ccos gain)", "delta", ("features_ccos",), ("none", "raw", "features")),
    LeakageFamily("leak_membership", "membership (gain over chance)", "delta", ("membership_auc", "membership_tpr1"),
                  ("none", "mi-loss", "mi-calibrated", "mi-lira", "mi-nn")),
)
QUANTITIES: dict[str, Quantity] = {q.key: q for q in (*ACCURACY, *COMMUNICATION, *DEVICE_COST, *PRIVACY, *LEAKAGE)}

PER_CLASS_PREFIXES = ("personal_auroc_", "personal_f1_")
# Metrics of results.csv that a section of the report shows; everything else goes to the appendix.
SHOWN_METRICS = frozenset(
    {q.key for q in (*ACCURACY, *COMMUNICATION, *DEVICE_COST, *PRIVACY)}
    | {f"{p}{c}" for p in PER_CLASS_PREFIXES for c in CLASSES}
)


# ---------------------------------------------------------------------------- ordering
def scheme_key(scheme: str) -> tuple[int, str]:
    return (SCHEME_ORDER.index(scheme) if scheme in SCHEME_ORDER else len(SCHEME_ORDER), scheme)


def sorted_schemes(schemes: Iterable[str]) -> list[str]:
    return sorted(set(schemes), key=scheme_key)


def run_schemes(run: RunData) -> list[str]:
    schemes = set(run.results["scheme"])
    if run.attacks is not None:
        schemes |= set(run.attacks["scheme"])
    return sorted_schemes(schemes)


# ---------------------------------------------------------------------------- core statistics
def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaN, NaN with fewer than two)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def seed_client_stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``frame``: columns ``by`` + seed, client, value. Returns ``by`` + STAT_COLUMNS, sorted by ``by``."""
    cols = [*by, *STAT_COLUMNS]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    per_seed = (frame.groupby([*by, "seed"], sort=True, dropna=False)["value"]
                .agg(mean="mean", sd="std", n="count").reset_index())
    rows = []
    for key, grp in per_seed.groupby(by, sort=True, dropna=False):
        means = grp["mean"].dropna()
        lo, hi = t_interval(means.tolist())
        rows.append({
            **dict(zip(by, key if isinstance(key, tuple) else (key,))),
            "mean": float(means.mean()) if len(means) else math.nan,
            "sd": float(grp["sd"].mean()),  # NaN when every seed had a single client
            "ci_low": lo, "ci_high": hi,
            "n_clients": int(grp["n"].max()), "n_seeds": int(len(means)),
        })
    return pd.DataFrame(rows, columns=cols)


def _dedupe(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One value per key: duplicated rows (e.g. a resumed run) are averaged."""
    return frame.groupby(keys, sort=True, dropna=False)["value"].mean().reset_index()


# ---------------------------------------------------------------------------- results.csv
def with_derived(results: pd.DataFrame) -> pd.DataFrame:
    """Add improvement_macro_{auroc,f1} = personal - pretrained_personal, and train_flops = local_steps x
    flops_per_step (a device's whole training, from the core's cost model), where they are absent."""
    keys = ["seed", "scheme", "client"]
    frame = _dedupe(results, [*keys, "metric"])
    extra = []
    if not (frame["metric"] == "train_flops").any():
        steps = frame[frame["metric"] == "local_steps"][[*keys, "value"]]
        flops = frame[frame["metric"] == "flops_per_step"][[*keys, "value"]]
        both = steps.merge(flops, on=keys, suffixes=("_steps", "_flops"))
        if not both.empty:
            both["value"] = both["value_steps"] * both["value_flops"]
            both["metric"] = "train_flops"
            extra.append(both[[*keys, "metric", "value"]])
    for m in ("auroc", "f1"):
        name = f"improvement_macro_{m}"
        if (frame["metric"] == name).any():
            continue
        after = frame[frame["metric"] == f"personal_macro_{m}"][[*keys, "value"]]
        before = frame[frame["metric"] == f"pretrained_personal_macro_{m}"][[*keys, "value"]]
        both = after.merge(before, on=keys, suffixes=("_after", "_before"))
        if both.empty:
            continue
        both["value"] = both["value_after"] - both["value_before"]
        both["metric"] = name
        extra.append(both[[*keys, "metric", "value"]])
    out = pd.concat([frame, *extra], ignore_index=True) if extra else frame
    return out.sort_values([*keys, "metric"], kind="stable").reset_index(drop=True)


def metric_stats(results: pd.DataFrame) -> pd.DataFrame:
    """scheme, metric, STAT_COLUMNS for every metric of results (derived ones included)."""
    frame = with_derived(results)
    per_client = frame[frame["client"] != ALL_CLIENTS]
    scheme_level = frame[frame["client"] == ALL_CLIENTS]
    # scheme-level rows only where no client has the metric for that scheme
    have = set(zip(per_client["scheme"], per_client["metric"]))
    scheme_level = scheme_level[[(s, m) not in have for s, m in zip(scheme_level["scheme"], scheme_level["metric"])]]
    out = seed_client_stats(pd.concat([per_client, scheme_level], ignore_index=True), ["scheme", "metric"])
    return _sort_schemes(out, "metric")


def per_client_values(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """scheme, client, mean and sd over seeds of one metric, per client (client 'all' left out)."""
    frame = _dedupe(results, ["seed", "scheme", "client", "metric"])
    frame = frame[(frame["metric"] == metric) & (frame["client"] != ALL_CLIENTS)]
    if frame.empty:
        return pd.DataFrame(columns=["scheme", "client", "mean", "sd", "n_seeds"])
    out = (frame.groupby(["scheme", "client"], sort=True)["value"]
           .agg(mean="mean", sd="std", n_seeds="count").reset_index())
    return _sort_schemes(out, "client")


def _sort_schemes(frame: pd.DataFrame, then: str) -> pd.DataFrame:
    order = frame["scheme"].map(scheme_key)
    frame = frame.assign(_k=order).sort_values(["_k", then], kind="stable").drop(columns="_k")
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------------------- attacks.csv
def attack_stats(attacks: pd.DataFrame | None) -> pd.DataFrame:
    """scheme, attack, threat_model, metric, STAT_COLUMNS; each client's rounds averaged first."""
    by = ["scheme", "attack", "threat_model", "metric"]
    if attacks is None or attacks.empty:
        return pd.DataFrame(columns=[*by, *STAT_COLUMNS])
    per_client = _dedupe(attacks, ["seed", "client", *by])
    return _sort_schemes(seed_client_stats(per_client, by), "attack")


def _not_applicable_text(attacks: pd.DataFrame | None, scheme: str, family: LeakageFamily) -> str | None:
    """Why ``scheme`` has no value for a kind of leakage: the note of an attack that could have produced it
    and reported ``applicable`` = 0 ("not applicable: nothing leaves the device", "... is not shared")."""
    if attacks is None or attacks.empty:
        return None
    grp = attacks[(attacks["scheme"] == scheme) & (attacks["metric"] == "applicable") & (attacks["value"] == 0)]
    grp = grp[grp["attack"].isin(family.attacks)]
    if grp.empty or "note" not in grp.columns:
        return None
    notes = sorted(str(n) for n in grp["note"].dropna() if str(n).startswith("not applicable"))
    return notes[0] if notes else None


def best_leakage(run: RunData) -> pd.DataFrame:
    """Per scheme and kind of leakage: the calibrated (attack, score) with the strongest evidence.
    mean = its gain over the best null, ci_low/ci_high = its adjusted interval, note = the verdict."""
    from attacks.calibrate import QUANTITIES as CALIBRATED  # pylint: disable=import-outside-toplevel

    leakage = run.leakage if run.leakage is not None else pd.DataFrame(columns=["scheme", "quantity"])
    schemes = set(leakage["scheme"]) | (set(run.attacks["scheme"]) if run.attacks is not None else set())
    seeds = int(run.results["seed"].nunique())
    rows = []
    for scheme in sorted_schemes(schemes):
        for fam in LEAKAGE:
            cand = leakage[(leakage["scheme"] == scheme) & leakage["quantity"].isin(fam.quantities)]
            if not cand.empty:
                ranked = cand.assign(_lo=cand["ci_low"].astype(float).fillna(-np.inf),
                                     _g=cand["gain"].astype(float).fillna(-np.inf))
                best = ranked.sort_values(["_lo", "_g", "attack"], ascending=[False, False, True], kind="stable").iloc[0]
                rows.append({"scheme": scheme, "quantity": fam.key, "mean": float(best["gain"]), "sd": math.nan,
                             "ci_low": float(best["ci_low"]), "ci_high": float(best["ci_high"]),
                             "n_clients": int(best["n_clients"]), "n_seeds": seeds,
                             "attack": f"{best['attack']}, {CALIBRATED[best['quantity']].short}",
                             "threat_model": str(best["threat_model"]), "note": str(best["verdict"]),
                             "n_units": int(best["n_units"])})
            elif (why := _not_applicable_text(run.attacks, scheme, fam)) is not None:
                rows.append({"scheme": scheme, "quantity": fam.key, "mean": math.nan, "sd": math.nan,
                             "ci_low": math.nan, "ci_high": math.nan, "n_clients": 0, "n_seeds": 0,
                             "attack": "", "threat_model": why, "note": "not applicable"})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


# ---------------------------------------------------------------------------- the summary
def scheme_summary(run: RunData) -> pd.DataFrame:
    """Long table: scheme, quantity, mean, sd, ci_low, ci_high, n_clients, n_seeds, attack, threat_model, note.

    One row per (scheme, quantity) that has data; quantities are QUANTITIES' keys.
    """
    per_metric = metric_stats(run.results)
    keys = [q.key for q in (*ACCURACY, *COMMUNICATION, *DEVICE_COST, *PRIVACY)]
    rows = per_metric[per_metric["metric"].isin(keys)].rename(columns={"metric": "quantity"})
    rows = rows.assign(attack="", threat_model="", note="", n_units=math.nan)
    out = pd.concat([rows, best_leakage(run)], ignore_index=True)[list(SUMMARY_COLUMNS)]
    rank = {k: i for i, k in enumerate(QUANTITIES)}
    out = out.assign(_s=out["scheme"].map(scheme_key), _q=out["quantity"].map(rank))
    return out.sort_values(["_s", "_q"], kind="stable").drop(columns=["_s", "_q"]).reset_index(drop=True)


def leak_verdicts(summary: pd.DataFrame, scheme: str) -> str:
    """The kinds of leakage with verdict "leaks" for a scheme, e.g. "diagnoses, membership"; "none detected"
    when every assessed kind has no evidence; "n/a (why)" when nothing could be attacked; "—" when not attacked."""
    rows = [(fam, lookup(summary, scheme, fam.key)) for fam in LEAKAGE]
    rows = [(fam, r) for fam, r in rows if r is not None]
    if not rows:
        return "—"
    if all(r["note"] == "not applicable" for _, r in rows):
        why = str(rows[0][1]["threat_model"])
        return f"n/a ({why.split(':', 1)[-1].strip()})" if ":" in why else "n/a"
    leaking = [fam.label.split(" (")[0] for fam, r in rows if r["note"] == "leaks"]
    return ", ".join(leaking) if leaking else "none detected"


def lookup(summary: pd.DataFrame, scheme: str, quantity: str) -> dict | None:
    """The summary row of (scheme, quantity) as a dict, or None."""
    hit = summary[(summary["scheme"] == scheme) & (summary["quantity"] == quantity)]
    return None if hit.empty else hit.iloc[0].to_dict()


# ---------------------------------------------------------------------------- ledger.csv
def ledger_per_round(ledger: pd.DataFrame | None) -> pd.DataFrame:
    """scheme, round, direction, messages, bytes: summed over clients (mean over seeds if a seed column exists).

    Messages without a round (e.g. set-up queries) are left out.
    """
    cols = ["scheme", "round", "direction", "messages", "bytes"]
    if ledger is None or ledger.empty or "round" not in ledger.columns:
        return pd.DataFrame(columns=cols)
    frame = ledger[ledger["round"].notna()].assign(seed=ledger["seed"] if "seed" in ledger.columns else 0)
    if frame.empty:
        return pd.DataFrame(columns=cols)
    per_seed = (frame.groupby(["seed", "scheme", "round", "direction"], sort=True)["bytes"]
                .agg(messages="size", bytes="sum").reset_index())
    out = per_seed.groupby(["scheme", "round", "direction"], sort=True)[["messages", "bytes"]].mean().reset_index()
    out["round"] = out["round"].astype(int)
    return _sort_schemes(out, "round")[cols]


def curve_means(rounds: pd.DataFrame | None) -> pd.DataFrame:
    """scheme, round, personal_macro_auroc, bytes_up: each the mean over clients (NaN left out), then over seeds."""
    cols = ["scheme", "round", "personal_macro_auroc", "bytes_up"]
    if rounds is None or rounds.empty:
        return pd.DataFrame(columns=cols)
    wanted = rounds[rounds["metric"].isin(cols[2:])]
    per_seed = wanted.groupby(["seed", "scheme", "round", "metric"], sort=True)["value"].mean().reset_index()
    out = (per_seed.groupby(["scheme", "round", "metric"], sort=True)["value"].mean()
           .unstack("metric").reindex(columns=cols[2:]).reset_index())
    out.columns.name = None
    return _sort_schemes(out, "round")[cols]


def ledger_totals(ledger: pd.DataFrame | None) -> pd.DataFrame:
    """scheme, direction, messages, bytes over the whole run (mean over seeds if a seed column exists)."""
    cols = ["scheme", "direction", "messages", "bytes"]
    if ledger is None or ledger.empty:
        return pd.DataFrame(columns=cols)
    frame = ledger.assign(seed=ledger["seed"] if "seed" in ledger.columns else 0)
    per_seed = (frame.groupby(["seed", "scheme", "direction"], sort=True)["bytes"]
                .agg(messages="size", bytes="sum").reset_index())
    out = per_seed.groupby(["scheme", "direction"], sort=True)[["messages", "bytes"]].mean().reset_index()
    return _sort_schemes(out, "direction")[cols]


# ---------------------------------------------------------------------------- appendix
def other_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """metric_stats rows of the metrics no other section shows (unknown metrics included)."""
    per_metric = metric_stats(results)
    return per_metric[~per_metric["metric"].isin(SHOWN_METRICS)].reset_index(drop=True)
