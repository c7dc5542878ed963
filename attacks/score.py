"""The evaluation: join ground truth to finished attack results and score them (long-form rows).

This is the only place that reads the clients' data (RUN_DIR/truth/<client>.npz), and it runs after
every attack has finished. The cohort for re-identification is every client's records in the run.
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

from attacks.metrics import (cosine, label_scores, match_records, presence_scores, reid_rank, similarity_matrix,
                             waveform_scores)
from attacks.model import attacker_model
from attacks.observe import Observation
from attacks.priors import PopulationPrior
from attacks.suite import AttackResult
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


def _params_digest(params: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()


class Scorer:
    def __init__(self, observations: list[Observation], truth: Truth, prior: PopulationPrior, seed: int = 0):
        self.observations = observations
        self.truth = truth
        self.prior = prior
        self.seed = seed
        self.cases: list[Case] = []
        self._feature_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

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
        idx = self.truth.indices(obs.clients)
        if len(idx) == 0:
            scores["scored"] = 0.0
            return scores
        y_true = self.truth.y[idx]
        if res.presence is not None:
            scores.update(presence_scores(res.presence, (y_true > 0).any(0)))
        if res.counts is not None:
            scores["count_mae"] = float(np.mean(np.abs(np.asarray(res.counts) - y_true.sum(0))))
        if res.x is not None:
            scores.update(self._waveforms(res, obs, idx))
        elif res.labels is not None and len(idx) == len(res.labels):
            scores.update(label_scores(res.labels, y_true, CLASSES))
        if res.features is not None or res.encoder_input is not None:
            scores.update(self._features_scores(res, obs, idx))
        return scores

    # -------------------------------------------------------------------------------------- waveforms
    def _waveforms(self, res: AttackResult, obs: Observation, idx: np.ndarray) -> dict[str, float]:
        rec = np.asarray(res.x, np.float64)
        true = self.truth.x[idx]
        if rec.shape[1:] != true.shape[1:]:
            return {"scored": 0.0}
        rows, cols, _ = match_records(rec, true)
        max_lag = max(1, int(round(LAG_SECONDS * self.prior.fs)))
        per_pair = [waveform_scores(rec[r], true[c], self.prior.mean, max_lag) for r, c in zip(rows, cols)]
        out = {k: float(np.nanmean([p[k] for p in per_pair])) for k in per_pair[0]}
        out["r_best"] = float(np.nanmax([p["r"] for p in per_pair]))
        ranks, client_hits = [], []
        cohort_sims = similarity_matrix(rec[rows], self.truth.x)
        for k, (r, c) in enumerate(zip(rows, cols)):
            ranks.append(reid_rank(rec[r], self.truth.x, int(idx[c])))
            client_hits.append(self.truth.client[int(np.argmax(cohort_sims[k]))] in obs.clients)
            self.cases.append(Case(obs.scheme, "+".join(obs.clients), obs.round, res.attack, per_pair[k]["r"],
                                   rec[r].astype(np.float32), true[c], self.prior.mean))
        out.update(reid_rank=float(np.mean(ranks)), reid_top1=float(np.mean(np.asarray(ranks) == 1)),
                   reid_client_top1=float(np.mean(client_hits)), cohort_size=float(len(self.truth.x)),
                   # the "true" record is the batch record the matching paired it with, i.e. the closest of
                   # the batch: a random reconstruction is top-1 with probability about batch / cohort
                   reid_chance=float(min(1.0, len(true) / len(self.truth.x))),
                   records_reconstructed=float(len(rec)), records_true=float(len(true)))
        if res.labels is not None:
            out.update(label_scores(res.labels[rows], self.truth.y[idx][cols], CLASSES))
        return out

    # -------------------------------------------------------------------------------------- features
    def _true_features(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """(features of every cohort record, mean features of the public prior) at this round's weights.
        Keyed by the weights themselves: every client of a round starts from the same model, so a round's
        features are computed once, not once per client."""
        key = f"{obs.model}:{_params_digest(obs.base_params())}"
        if key not in self._feature_cache:
            cohort = _features(obs, self.truth.x, self.seed)
            centre = _features(obs, self.prior.samples, self.seed).mean(0)
            self._feature_cache[key] = (cohort, centre)  # (records x d_model) per round: small
        return self._feature_cache[key]

    def _features_scores(self, res: AttackResult, obs: Observation, idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        if res.features is not None:
            cohort, centre = self._true_features(obs)
            f = np.asarray(res.features, np.float64)
            mine = cohort[idx]
            out["feat_cos_best"] = max(cosine(f, t) for t in mine)
            out["feat_cos_mean"] = cosine(f, mine.mean(0))
            out["feat_ccos_best"] = max(cosine(f - centre, t - centre) for t in mine)
            out["feat_ccos_mean"] = cosine(f - centre, mine.mean(0) - centre)
            sims = np.array([cosine(f - centre, t - centre) for t in cohort])
            out["feat_reid_top1"] = float(int(np.nanargmax(sims)) in set(idx.tolist()))
            out["feat_reid_chance"] = len(idx) / len(cohort)
        if res.encoder_input is not None:
            lead_mean = self.truth.x[idx].mean(axis=(0, 1))
            prior_lead = self.prior.mean.mean(0)
            out["enc_ccos"] = cosine(np.asarray(res.encoder_input) - prior_lead, lead_mean - prior_lead)
        return out
