"""The evaluation: join ground truth to finished attack results and score them (long-form rows).

This is the only place that reads the clients' data (RUN_DIR/truth/<client>.npz), and it runs after
every attack has finished. The cohort for re-identification is every client's records in the run.

Every score is computed twice: for the attack, and for null controls that carry no information about
the patient (attacks/nulls.py), through exactly the same matching and metrics. ``rows`` gives both
per observation (attacks.csv: ``r`` and ``null_r``, ``r_gain`` = r minus the best null); ``units``
gives one row per reconstructed record, label guess or feature estimate with the attack's score and
the best null's on the same unit, from which attacks/calibrate.py draws intervals and verdicts.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from attacks.calibrate import QUANTITIES, UNIT_COLUMNS
from attacks.metrics import cosine, label_scores, pair_scores, presence_scores, row_products, standardised_rows
from attacks.model import attacker_model
from attacks.nulls import (NULL_DRAWS, WAVEFORM_NULLS, count_baseline, majority_labels, null_records,
                           presence_baselines)
from attacks.observe import Observation
from attacks.priors import PopulationPrior
from attacks.result import AttackResult
from simulator.core.labels import CLASSES
from simulator.core.metrics import json_safe
from simulator.core.tensors import load_npz

COLUMNS = ["scheme", "client", "round", "attack", "threat_model", "metric", "value", "settings", "note"]
LAG_SECONDS = 0.1  # best-lag correlation searches shifts up to this


@dataclass
class Truth:
    x: np.ndarray  # (M, length, leads): every client's training records, the re-identification cohort
    y: np.ndarray  # (M, classes)
    client: np.ndarray  # (M,) client id of each record
    missing: tuple[str, ...]  # clients without a truth file

    def indices(self, clients: tuple[str, ...]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.client, list(clients)))


@dataclass
class Case:
    """One reconstructed record next to its true record, for plots."""

    scheme: str
    client: str
    round: int | None
    attack: str
    r: float
    rec: np.ndarray
    true: np.ndarray
    prior: np.ndarray


def load_truth(run_dir: Path, clients: tuple[str, ...]) -> Truth:
    xs, ys, owner, missing = [], [], [], []
    for c in clients:
        path = Path(run_dir) / "truth" / f"{c}.npz"
        if not path.is_file():
            missing.append(c)
            continue
        data = load_npz(path)
        xs.append(data.x.numpy())
        ys.append(data.y.numpy())
        owner += [c] * len(data)
    if not xs:
        return Truth(np.zeros((0, 1, 1), np.float32), np.zeros((0, len(CLASSES))), np.array([], dtype=object), tuple(missing))
    return Truth(np.concatenate(xs), np.concatenate(ys), np.array(owner, dtype=object), tuple(missing))


def _features(obs: Observation, x: np.ndarray, seed: int) -> np.ndarray:
    model = attacker_model(obs.model, obs.base_params(), seed=seed)
    with torch.no_grad():
        return torch.cat([model.features(torch.as_tensor(x[i : i + 64])) for i in range(0, len(x), 64)]).double().numpy()


def _finite_mean(v: Any) -> float:
    v = np.asarray(v, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def _params_digest(params: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()


class Scorer:
    def __init__(self, observations: list[Observation], truth: Truth, prior: PopulationPrior, seed: int = 0,
                 null_draws: int = NULL_DRAWS):
        self.observations = observations
        self.truth = truth
        self.prior = prior
        self.seed = seed
        self.null_draws = null_draws
        self.cases: list[Case] = []
        self._units: list[dict[str, Any]] = []
        self._feature_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._null_cache: dict[tuple, dict[str, dict[str, float]]] = {}
        self._majority = majority_labels(prior, len(CLASSES))
        self._zc: np.ndarray | None = None  # the standardised cohort, for every similarity against it

    def units(self) -> pd.DataFrame:
        """UNIT_COLUMNS: every unit scored so far (attacks/calibrate.py turns them into gains and verdicts).

        A unit's ``null`` is the score of one null kind on that unit: the kind that scores best on average
        over all units of the same (scheme, attack, quantity). Choosing the kind per unit instead would let a
        deterministic null that happens to hit one client (the prior mean's nearest record belongs to
        someone) set that client's bar at the maximum: a cherry-picked null, not an expected one."""
        rows = []
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for u in self._units:
            groups.setdefault((u["scheme"], u["attack"], u["quantity"]), []).append(u)
        for (_, _, quantity), units in groups.items():
            lower_better = not QUANTITIES[quantity].higher_leaks
            kinds = sorted({k for u in units for k in u["nulls"]})
            means = {k: _finite_mean([u["nulls"].get(k, math.nan) for u in units]) for k in kinds}
            usable = {k: m for k, m in means.items() if math.isfinite(m)}
            best = (min if lower_better else max)(usable, key=lambda k: (usable[k], k)) if usable else ""
            for u in units:
                rows.append({**{c: u[c] for c in UNIT_COLUMNS if c in u}, "null": u["nulls"].get(best, math.nan),
                             "null_kind": best})
        frame = pd.DataFrame(rows, columns=UNIT_COLUMNS)
        frame["round"] = frame["round"].astype("Int64")
        return frame

    def _unit(self, res: AttackResult, obs: Observation, quantity: str, unit: Any, value: float,
              nulls: dict[str, float]) -> None:
        """One unit: the attack's score and every null kind's score on the same unit."""
        if not math.isfinite(value):
            return
        self._units.append({"scheme": obs.scheme, "client": "+".join(obs.clients), "round": obs.round,
                            "attack": res.attack, "threat_model": res.threat_model, "quantity": quantity,
                            "unit": str(unit), "value": float(value), "label": math.nan, "nulls": dict(nulls)})

    # -------------------------------------------------------------------------------------- rows
    def rows(self, results: list[AttackResult]) -> pd.DataFrame:
        out: list[dict[str, Any]] = []
        for res in results:
            obs = self.observations[res.obs_index]
            settings = json.dumps(json_safe({**res.settings, "threat": obs.threat.to_dict(), "observation": obs.kind,
                                             "num_clients": obs.num_clients, "dp": obs.dp,
                                             "training": obs.training.to_dict()}), sort_keys=True, default=str)
            base = {"scheme": obs.scheme, "client": "+".join(obs.clients), "round": obs.round, "attack": res.attack,
                    "threat_model": res.threat_model, "settings": settings, "note": res.note or obs.note}
            for metric, value in self.score(res, obs).items():
                out.append({**base, "metric": metric, "value": float(value) if value is not None else math.nan})
        frame = pd.DataFrame(out, columns=COLUMNS)
        frame["round"] = frame["round"].astype("Int64")
        return frame

    def score(self, res: AttackResult, obs: Observation) -> dict[str, float]:
        if not res.applicable:
            return {"applicable": 0.0}
        if res.skipped:
            return {"skipped": 1.0}
        scores: dict[str, float] = {"applicable": 1.0, "residual": res.residual, "seconds": res.seconds}
        converged = getattr(res, "converged", None)
        if converged is not None:
            scores.update(converged=float(bool(converged)), iterations=float(getattr(res, "iterations", 0) or 0))
        idx = self.truth.indices(obs.clients)
        if len(idx) == 0:
            scores["scored"] = 0.0
            return scores
        y_true = self.truth.y[idx]
        if res.presence is not None:
            scores.update(self._presence(res, obs, y_true))
        if res.counts is not None:
            scores.update(self._counts(res, obs, y_true))
        if res.x is not None:
            scores.update(self._waveforms(res, obs, idx))
        elif res.labels is not None and len(idx) == len(res.labels):
            scores.update(self._record_labels(res, obs, np.asarray(res.labels), y_true, np.arange(len(idx))))
        if res.features is not None or res.encoder_input is not None:
            scores.update(self._features_scores(res, obs, idx))
        return scores

    # -------------------------------------------------------------------------------------- labels
    def _n_records(self, obs: Observation, idx_len: int) -> int:
        return int(obs.num_examples or idx_len)

    def _presence(self, res: AttackResult, obs: Observation, y_true: np.ndarray) -> dict[str, float]:
        """Presence scores, and the best no-attack guess's F1 on the same truth (the unit's null)."""
        truth = (y_true > 0).any(0)
        out = presence_scores(res.presence, truth)
        nulls = {k: presence_scores(v, truth)["presence_f1"]
                 for k, v in presence_baselines(self.prior, self._n_records(obs, len(y_true)), len(CLASSES)).items()}
        finite = [v for v in nulls.values() if math.isfinite(v)]
        best = max(finite) if finite else math.nan
        out.update({f"null_presence_f1_{k}": v for k, v in nulls.items()})
        out["null_presence_f1"] = best
        out["presence_f1_gain"] = out["presence_f1"] - best
        self._unit(res, obs, "labels_presence_f1", obs.round, out["presence_f1"], nulls)
        return out

    def _counts(self, res: AttackResult, obs: Observation, y_true: np.ndarray) -> dict[str, float]:
        true_counts = y_true.sum(0)
        mae = float(np.mean(np.abs(np.asarray(res.counts, np.float64) - true_counts)))
        base = count_baseline(self.prior, self._n_records(obs, len(y_true)), len(CLASSES))
        null = float(np.mean(np.abs(base - true_counts)))
        self._unit(res, obs, "labels_count_mae", obs.round, mae, {"prevalence": null})
        return {"count_mae": mae, "null_count_mae": null}

    def _record_labels(self, res: AttackResult, obs: Observation, pred: np.ndarray, true: np.ndarray,
                       true_rows: np.ndarray) -> dict[str, float]:
        """Record-level label scores; each record's unit is paired with the public majority label vector's
        hit on the same record (the no-attack guess)."""
        out = label_scores(pred, true, CLASSES)
        hits = np.all(np.asarray(pred).astype(int) == np.asarray(true).astype(int), axis=1)
        null_hits = np.all(self._majority[None, :] == np.asarray(true).astype(int), axis=1)
        out["null_label_exact"] = float(null_hits.mean())
        for k, (h, n) in enumerate(zip(hits, null_hits)):
            self._unit(res, obs, "labels_exact", f"{obs.round}:{int(true_rows[k])}", float(h), {"majority": float(n)})
        return out

    # -------------------------------------------------------------------------------------- waveforms
    def _max_lag(self) -> int:
        return max(1, int(round(LAG_SECONDS * self.prior.fs)))

    def _cohort_rows(self) -> np.ndarray:
        if self._zc is None:
            self._zc = standardised_rows(self.truth.x)
        return self._zc

    def _matched(self, recs: np.ndarray, n: int, idx: np.ndarray, clients: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        """For each of len(recs) // n sets of n records (an attack's reconstruction, or the draws of a null):
        the Hungarian pairing with the client's records and, per pair, r, lag_r, mse, prd, snr_db, whether the
        nearest record of the whole cohort is the paired record (reid_record) or one of the attacked clients'
        (reid_patient), and the pairing itself (rows, cols)."""
        leads = recs.shape[-1]
        sims = row_products(standardised_rows(recs), self._cohort_rows()) / leads  # (sets * n, cohort)
        pick_rec, pick_true, sets = [], [], []
        for d in range(len(recs) // n):
            block = sims[d * n:(d + 1) * n]
            rows, cols = linear_sum_assignment(-block[:, idx])
            pick_rec.append(d * n + rows)
            pick_true.append(cols)
            sets.append((rows, cols))
        pr, pt = np.concatenate(pick_rec), np.concatenate(pick_true)
        scores = pair_scores(recs[pr], self.truth.x[idx[pt]], self._max_lag())
        nearest = np.argmax(sims[pr], axis=1)
        scores["reid_record"] = (nearest == idx[pt]).astype(np.float64)
        scores["reid_patient"] = np.isin(self.truth.client[nearest], list(clients)).astype(np.float64)
        out = []
        for d, (rows, cols) in enumerate(sets):
            part = slice(d * len(rows), (d + 1) * len(rows))
            out.append({**{m: v[part] for m, v in scores.items()}, "rows": rows, "cols": cols})
        return out

    def _null_levels(self, n: int, idx: np.ndarray, clients: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """{null kind: {metric: expected score}} of n-record nulls matched against this observation's records
        (averaged over NULL_DRAWS draws of the random kinds). Shared by every attack on the observation."""
        key = (tuple(idx.tolist()), tuple(clients), n)
        if key not in self._null_cache:
            digest = hashlib.sha256(repr(key).encode()).digest()  # stable across processes, unlike hash()
            rng = np.random.default_rng([self.seed, int.from_bytes(digest[:8], "big")])
            others = self.truth.x[~np.isin(self.truth.client, list(clients))]
            levels: dict[str, dict[str, float]] = {}
            for kind in WAVEFORM_NULLS:
                # the null's level averages draws x n records: ~null_draws records are enough (a raw upload of 48
                # records needs one draw, not 32)
                draws = 1 if kind == "prior-mean" else max(1, math.ceil(self.null_draws / max(1, n)))
                if kind in ("prior-mean", "spectral-noise"):  # i.i.d. records: every draw in one call
                    recs = null_records(kind, self.prior, n * draws, rng, others)
                else:  # records without replacement within a draw, as a reconstruction's records are distinct
                    sets = [null_records(kind, self.prior, n, rng, others) for _ in range(draws)]
                    recs = None if sets[0] is None else np.concatenate(sets)
                if recs is None:
                    continue
                per_set = self._matched(recs, n, idx, clients)
                levels[kind] = {m: _finite_mean([_finite_mean(sc[m]) for sc in per_set])
                                for m in ("r", "lag_r", "mse", "reid_record", "reid_patient")}
            self._null_cache[key] = levels
        return self._null_cache[key]

    def _waveforms(self, res: AttackResult, obs: Observation, idx: np.ndarray) -> dict[str, float]:
        rec = np.asarray(res.x, np.float64)
        true = self.truth.x[idx]
        if rec.shape[1:] != true.shape[1:]:
            return {"scored": 0.0}
        (sc,) = self._matched(rec, len(rec), idx, obs.clients)
        rows, cols = sc.pop("rows"), sc.pop("cols")
        out = {m: _finite_mean(v) for m, v in sc.items() if m not in ("reid_record", "reid_patient")}
        out["r_best"] = float(np.nanmax(sc["r"])) if np.isfinite(sc["r"]).any() else math.nan
        levels = self._null_levels(len(rec), idx, obs.clients)
        best = {m: max((lv[m] for lv in levels.values() if math.isfinite(lv[m])), default=math.nan)
                for m in ("r", "lag_r", "reid_record", "reid_patient")}
        best["mse"] = min((lv["mse"] for lv in levels.values() if math.isfinite(lv["mse"])), default=math.nan)
        for kind, lv in levels.items():
            out[f"null_r_{kind}"] = lv["r"]
        out.update(null_r=best["r"], null_lag_r=best["lag_r"], null_mse=best["mse"],
                   r_gain=out["r"] - best["r"], lag_r_gain=out["lag_r"] - best["lag_r"],
                   mse_skill=1.0 - out["mse"] / best["mse"] if best["mse"] > 0 else math.nan)
        sims = row_products(standardised_rows(rec[rows]), self._cohort_rows()) / rec.shape[-1]
        ranks = [1 + int(np.sum(sims[k] > sims[k, idx[c]])) for k, c in enumerate(cols)]  # 1-based, as reid_rank
        out.update(reid_rank=float(np.mean(ranks)), reid_top1=float(np.mean(sc["reid_record"])),
                   reid_null=best["reid_record"], reid_client_top1=float(np.mean(sc["reid_patient"])),
                   reid_client_null=best["reid_patient"], cohort_size=float(len(self.truth.x)),
                   records_reconstructed=float(len(rec)), records_true=float(len(true)))
        for k, (r, c) in enumerate(zip(rows, cols)):
            unit = f"{obs.round}:{int(c)}"
            for quantity, metric in (("waveform_r", "r"), ("waveform_lag_r", "lag_r"), ("reid_record", "reid_record"),
                                     ("reid_patient", "reid_patient")):
                self._unit(res, obs, quantity, unit, sc[metric][k], {kind: lv[metric] for kind, lv in levels.items()})
            self.cases.append(Case(obs.scheme, "+".join(obs.clients), obs.round, res.attack, float(sc["r"][k]),
                                   rec[r].astype(np.float32), true[c], self.prior.mean))
        if res.labels is not None:
            out.update(self._record_labels(res, obs, np.asarray(res.labels)[rows], self.truth.y[idx][cols], cols))
        return out

    # -------------------------------------------------------------------------------------- features
    def _true_features(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features of every cohort record, mean features of the public prior, the public records' features)
        at this round's weights. Keyed by the weights themselves: every client of a round starts from the same
        model, so a round's features are computed once, not once per client."""
        key = f"{obs.model}:{_params_digest(obs.base_params())}"
        if key not in self._feature_cache:
            cohort = _features(obs, self.truth.x, self.seed)
            public = _features(obs, self.prior.samples, self.seed)
            self._feature_cache[key] = (cohort, public.mean(0), public)  # (records x d_model) per round: small
        return self._feature_cache[key]

    @staticmethod
    def _best_ccos(f: np.ndarray, mine: np.ndarray, centre: np.ndarray) -> float:
        a = f - centre
        b = mine - centre
        den = np.linalg.norm(a) * np.linalg.norm(b, axis=1)
        sims = np.where(den > 0, b @ a / np.where(den > 0, den, 1.0), np.nan)
        return float(np.nanmax(sims)) if np.isfinite(sims).any() else math.nan

    def _features_scores(self, res: AttackResult, obs: Observation, idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        if res.features is not None:
            cohort, centre, public = self._true_features(obs)
            f = np.asarray(res.features, np.float64)
            mine = cohort[idx]
            out["feat_cos_best"] = max(cosine(f, t) for t in mine)
            out["feat_cos_mean"] = cosine(f, mine.mean(0))
            out["feat_ccos_best"] = self._best_ccos(f, mine, centre)
            out["feat_ccos_mean"] = cosine(f - centre, mine.mean(0) - centre)
            # null: a public record's own features, scored the same way (best of this client's records)
            null = float(np.nanmean([self._best_ccos(p, mine, centre) for p in public]))
            out["null_feat_ccos_best"] = null
            self._unit(res, obs, "features_ccos", obs.round, out["feat_ccos_best"], {"public-record": null})
            sims = np.array([cosine(f - centre, t - centre) for t in cohort])
            out["feat_reid_top1"] = float(int(np.nanargmax(sims)) in set(idx.tolist()))
            out["feat_reid_chance"] = len(idx) / len(cohort)
        if res.encoder_input is not None:
            lead_mean = self.truth.x[idx].mean(axis=(0, 1))
            prior_lead = self.prior.mean.mean(0)
            out["enc_ccos"] = cosine(np.asarray(res.encoder_input) - prior_lead, lead_mean - prior_lead)
        return out
