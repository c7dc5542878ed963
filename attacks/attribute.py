"""Attribute inference from updates: which diagnoses a client holds, and how many records of each.

The sign rule of `attacks.labels` is exact for one record, but for a batch trained with Adam it only
says whether positives outweigh negatives, and the counts are lost in Adam's normalisation. A curious
server can instead learn the map from update to class mix: it simulates the round on public records
(`attacks.shadow_updates`: pseudo-clients with known, varied class mixes and devices, trained as the
clients were from the round's global parameters) and fits a shadow classifier on the simulated updates:

- features: a fixed function of the update (FEATURE_SETS; default DEFAULT_FEATURES, the motor layer's
  24 biases): the chosen parameters' deltas, flattened, standardised on the shadow set (columns constant
  over it, e.g. masked NCP weights, are dropped), then projected on their first MAX_DIMS principal
  components over the shadow set when there are more;
- presence: one L2-regularised logistic regression per class (Newton), "present" above the probability
  cut with the best presence F1 on the held-out shadow rows;
- counts: one ridge regression per class on the share of records with the diagnosis, clipped to
  [0, 1] and multiplied by the records behind the update.
Each class's regularisation is chosen on a held-out part of the shadow set (log-loss, squared error);
the classifier is then refitted on the whole set. Its held-out presence error is the attack's `residual`;
its held-out presence F1 and count MAE are in the settings: what the attacker expects before anything
is scored.

The attack reads only the observation, the public prior and its own seed. Its quality rests on the
prior: the shadow updates are only as close to the clients' as the public records (under the assumed
device spread) are to the clients' records, and the pseudo-clients' mixes to the clients'. Why the
default features are the motor biases: they depend on the records only through the logits, so they
carry least of the mismatch between public and client records (measured in docs/attacks.md; richer
features fit the shadow set better and the clients worse).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.observe import Observation
from attacks.result import AttackContext, AttackResult
from attacks.shadow_updates import DEVICE_SPREAD, SHADOW_CLIENTS, DeviceSpread, ShadowSet, shadow_updates

ATTACK = "attribute"
FEATURE_SETS: dict[str, str] = {
    "motor-bias": "the motor (last decoder) layer's ff and time biases",
    "motor": "every parameter of the motor (last decoder) layer",
    "decoder": "every decoder parameter",
    "decoder+biases": "every decoder parameter and every other observed bias / 1-D parameter",
    "all": "every observed parameter",
}
DEFAULT_FEATURES = "motor-bias"  # the most robust on both measured cases (see docs/attacks.md)
MAX_DIMS = 64  # principal components kept when a feature set has more columns
LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # L2 strengths tried per class (on the summed loss)
NEWTON_ITERS = 25
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))  # presence cuts tried on the held-out shadow rows


# ------------------------------------------------------------------------------------------ features
def _decoder_layers(names: list[str]) -> list[str]:
    return sorted({".".join(n.split(".")[:3]) for n in names if n.startswith("decoder.layers.")},
                  key=lambda s: int(s.split(".")[2]))


def feature_names(kind: str, observed: list[str]) -> list[str]:
    """The observed parameters a feature set uses, in a fixed order (empty when none is observed)."""
    if kind not in FEATURE_SETS:
        raise ValueError(f"feature set {kind!r}: use one of {sorted(FEATURE_SETS)}")
    names = sorted(observed)
    layers = _decoder_layers(names)
    motor = layers[-1] if layers else None
    if kind == "motor-bias":
        return [n for n in names if motor and n in (f"{motor}.ff.bias", f"{motor}.time.bias")]
    if kind == "motor":
        return [n for n in names if motor and n.startswith(motor + ".")]
    if kind == "decoder":
        return [n for n in names if n.startswith("decoder.")]
    if kind == "decoder+biases":
        return [n for n in names if n.startswith("decoder.") or n.endswith(".bias") or n.endswith(".D")
                or n.endswith("norm.weight")]
    return names


def choose_features(kind: str, observed: list[str]) -> tuple[str, list[str]]:
    """(feature set, names): `kind`, else (its parameters not shared, e.g. fed-mu sends the middle only)
    the observed biases, else everything observed."""
    for k in (kind, "decoder+biases", "all"):
        names = feature_names(k, observed)
        if names:
            return k, names
    return kind, []


def update_matrix(updates: dict[str, np.ndarray], names: list[str], rows: int | None = None) -> np.ndarray:
    """(rows, d) float64: the named deltas flattened and concatenated (one observation: rows None -> (1, d))."""
    if rows is None:
        return np.concatenate([np.asarray(updates[n], np.float64).reshape(1, -1) for n in names], axis=1)
    return np.concatenate([np.asarray(updates[n], np.float64).reshape(rows, -1) for n in names], axis=1)


@dataclass
class Standardiser:
    """Centre and scale each column on the shadow set, drop constant columns, then (optionally) project
    on the leading principal components."""

    mean: np.ndarray
    scale: np.ndarray
    keep: np.ndarray  # bool columns
    basis: np.ndarray | None  # (kept, dims) or None

    @classmethod
    def fit(cls, X: np.ndarray, max_dims: int = MAX_DIMS) -> "Standardiser":
        mean, sd = X.mean(0), X.std(0)
        keep = sd > 1e-9 * max(float(sd.max(initial=0.0)), 1e-30)
        Z = (X[:, keep] - mean[keep]) / sd[keep]
        basis = None
        if Z.shape[1] > max_dims:  # principal axes from the (rows x rows) Gram matrix: rows << columns here
            evals, evecs = np.linalg.eigh(Z @ Z.T)
            top = np.argsort(evals)[::-1][:max_dims]
            top = top[evals[top] > 1e-9 * max(float(evals.max()), 1e-30)]
            basis = (Z.T @ evecs[:, top]) / np.sqrt(evals[top])
        return cls(mean, np.where(keep, sd, 1.0), keep, basis)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Z = (X[:, self.keep] - self.mean[self.keep]) / self.scale[self.keep]
        return Z if self.basis is None else Z @ self.basis

    @property
    def dims(self) -> int:
        return int(self.keep.sum()) if self.basis is None else int(self.basis.shape[1])


# ------------------------------------------------------------------------------------------ regressions
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Weights (intercept first) of L2-penalised logistic regression by Newton's method (intercept unpenalised).
    A class that never (or always) occurs gets a constant at its smoothed frequency."""
    A = np.hstack([np.ones((X.shape[0], 1)), X])
    w = np.zeros(A.shape[1])
    if y.min() == y.max():
        w[0] = math.log((y.sum() + 0.5) / (len(y) - y.sum() + 0.5))
        return w
    pen = np.full(A.shape[1], lam)
    pen[0] = 0.0
    for _ in range(NEWTON_ITERS):
        p = _sigmoid(A @ w)
        g = A.T @ (p - y) + pen * w
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(pen + 1e-9)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def predict_logistic(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    return _sigmoid(w[0] + X @ w[1:])


def fit_ridge(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Weights (intercept first) of ridge regression (intercept unpenalised)."""
    mx, my = X.mean(0), y.mean()
    Xc = X - mx
    coef = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ (y - my))
    return np.concatenate([[my - mx @ coef], coef])


def predict_ridge(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    return w[0] + X @ w[1:]


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def presence_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over observations of the F1 over classes (as attacks.metrics.presence_scores; nan rows skipped)."""
    p, t = pred.astype(bool), true.astype(bool)
    tp, fp, fn = (p & t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)
    den = 2 * tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan


def best_threshold(prob: np.ndarray, true: np.ndarray) -> float:
    """The probability cut with the best mean presence F1 on held-out shadow rows (ties: the one nearest 0.5).
    F1 rewards saying "present" more than accuracy does, so the cut is usually below 0.5."""
    scores = [(presence_f1(prob >= t, true), -abs(t - 0.5), t) for t in THRESHOLDS]
    return float(max(scores)[2])


# ------------------------------------------------------------------------------------------ the classifier
@dataclass
class AttributeClassifier:
    """Per class: logistic presence and ridge share, on standardised update features."""

    names: list[str]
    standardiser: Standardiser
    presence_w: list[np.ndarray]
    share_w: list[np.ndarray]
    presence_lambda: list[float]
    share_lambda: list[float]
    held_out: dict[str, float]

    def predict(self, update: dict[str, np.ndarray], n_examples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(presence 0/1, P(present), counts) for one observed update."""
        Z = self.standardiser(update_matrix(update, self.names))
        prob = np.array([predict_logistic(w, Z)[0] for w in self.presence_w])
        share = np.clip([predict_ridge(w, Z)[0] for w in self.share_w], 0.0, 1.0)
        return (prob >= self.held_out["threshold"]).astype(np.int64), prob, share * n_examples


def _best_lambda(fit, score, Xf: np.ndarray, yf: np.ndarray, Xh: np.ndarray, yh: np.ndarray) -> float:  # noqa: ANN001
    """The L2 strength with the lowest held-out loss (ties: the stronger one)."""
    losses = [score(fit(Xf, yf, lam), Xh, yh) for lam in LAMBDAS]
    best = min(losses)
    return max(lam for lam, loss in zip(LAMBDAS, losses) if loss <= best + 1e-12)


def _fit_all(Z: np.ndarray, presence: np.ndarray, share: np.ndarray, plam: list[float], slam: list[float]
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return ([fit_logistic(Z, presence[:, c], plam[c]) for c in range(presence.shape[1])],
            [fit_ridge(Z, share[:, c], slam[c]) for c in range(share.shape[1])])


def train_classifier(shadow: ShadowSet, names: list[str], max_dims: int = MAX_DIMS) -> AttributeClassifier:
    """Choose each class's regularisation on the shadow set's held-out part, report the held-out errors,
    then refit on the whole shadow set."""
    X = update_matrix(shadow.updates, names, rows=len(shadow.presence))
    presence = shadow.presence.astype(np.float64)
    share = shadow.counts / max(1, shadow.n_examples)
    fit_rows, held = ~shadow.held_out, shadow.held_out
    std = Standardiser.fit(X[fit_rows], max_dims)
    Zf, Zh = std(X[fit_rows]), std(X[held])
    C = presence.shape[1]
    plam = [_best_lambda(fit_logistic, lambda w, Z, y: _log_loss(predict_logistic(w, Z), y),
                         Zf, presence[fit_rows, c], Zh, presence[held, c]) for c in range(C)]
    slam = [_best_lambda(fit_ridge, lambda w, Z, y: float(np.mean((predict_ridge(w, Z) - y) ** 2)),
                         Zf, share[fit_rows, c], Zh, share[held, c]) for c in range(C)]
    pw, sw = _fit_all(Zf, presence[fit_rows], share[fit_rows], plam, slam)
    prob = np.stack([predict_logistic(w, Zh) for w in pw], axis=1)
    counts = np.stack([np.clip(predict_ridge(w, Zh), 0, 1) for w in sw], axis=1) * shadow.n_examples
    threshold = best_threshold(prob, presence[held] > 0)
    held_out = {"presence_f1": presence_f1(prob >= threshold, presence[held] > 0),
                "presence_f1_at_half": presence_f1(prob >= 0.5, presence[held] > 0),
                "presence_error": float(np.mean((prob >= threshold) != (presence[held] > 0))),
                "threshold": threshold,
                "count_mae": float(np.mean(np.abs(counts - shadow.counts[held]))),
                "rows": int(held.sum())}
    std = Standardiser.fit(X, max_dims)
    pw, sw = _fit_all(std(X), presence, share, plam, slam)
    return AttributeClassifier(names, std, pw, sw, plam, slam, held_out)


# ------------------------------------------------------------------------------------------ the attack
def _result(i: int, obs: Observation, **kw: Any) -> AttackResult:
    return AttackResult(ATTACK, i, obs.threat.name, **kw)


def _na(i: int, obs: Observation, why: str) -> AttackResult:
    return _result(i, obs, note=f"not applicable: {why}")


def budget_options(budget: Any) -> dict[str, Any]:
    """attack_attribute's keyword arguments from a Budget's attribute_* fields (module defaults where the
    Budget has none): attribute_shadow_clients, attribute_features, attribute_mode, attribute_device_variants,
    attribute_placement_deg, attribute_contact_gain_sd."""
    def get(name: str, default: Any) -> Any:
        return getattr(budget, f"attribute_{name}", default)

    spread = DeviceSpread(int(get("device_variants", DEVICE_SPREAD.variants)),
                          float(get("placement_deg", DEVICE_SPREAD.placement_deg)),
                          float(get("contact_gain_sd", DEVICE_SPREAD.contact_gain_sd)))
    return {"k": int(get("shadow_clients", SHADOW_CLIENTS)), "features": str(get("features", DEFAULT_FEATURES)),
            "mode": str(get("mode", "linear")), "spread": spread}


def attack_attribute(obs: Observation, i: int, ctx: AttackContext, k: int = SHADOW_CLIENTS,
                     features: str = DEFAULT_FEATURES, mode: str = "linear", spread: DeviceSpread = DEVICE_SPREAD,
                     shadow_seed: int = 0) -> AttackResult:
    """Presence and counts of every diagnosis behind an update (or a SecAgg aggregate), from a shadow classifier
    trained on simulated updates of the same round. `shadow_seed` (not ctx.seed, which differs per observation)
    seeds the shadow set, so every client of a round shares one."""
    start = time.perf_counter()
    if obs.kind not in ("update", "aggregate") or not obs.update:
        return _na(i, obs, "no parameter update observed")
    if ctx.prior.labels is None or len(ctx.prior.labels) == 0:
        return _na(i, obs, "the public prior has no labelled records to simulate clients with")
    used, names = choose_features(features, list(obs.update))
    shadow = shadow_updates(obs, ctx.prior, k, names=names, mode=mode, spread=spread, seed=shadow_seed)
    memo_key = ("classifier", tuple(names), MAX_DIMS)
    if memo_key not in shadow.memo:  # one fit serves every client of the round
        shadow.memo[memo_key] = train_classifier(shadow, names)
    clf = shadow.memo[memo_key]
    n_examples = shadow.n_examples
    presence, prob, counts = clf.predict(obs.update, n_examples)
    settings: dict[str, Any] = {
        "method": "shadow classifier on simulated updates", "features": used, "features_wanted": features,
        "feature_params": len(names), "feature_dims": clf.standardiser.dims, "presence_model": "logistic (L2)",
        "count_model": "ridge on the share", "presence_lambda": clf.presence_lambda, "share_lambda": clf.share_lambda,
        "held_out_presence_f1": clf.held_out["presence_f1"], "held_out_count_mae": clf.held_out["count_mae"],
        "threshold": clf.held_out["threshold"],
        "held_out_rows": clf.held_out["rows"], "n_examples": n_examples, "presence_prob": prob.round(4).tolist(),
        "shadow_seconds": shadow.seconds, **{f"shadow_{key}": v for key, v in shadow.settings.items()},
    }
    note = "" if used == features else f"feature set {features!r} not observed: used {used!r}"
    return _result(i, obs, settings=settings, note=note, residual=clf.held_out["presence_error"],
                   seconds=time.perf_counter() - start, presence=presence, counts=counts)
