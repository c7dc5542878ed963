"""Leakage metrics: pairing, waveform scores against the prior, re-identification, labels, threat models."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.metrics import (cosine, f1_per_class, label_scores, lagged_pearson_per_lead, match_records, pair_scores,
                             pearson_per_lead, prd, presence_scores, reid_rank, snr_db)
from attacks.priors import einthoven, lag_range, periodicity, smoothness
from attacks.threat import NOT_APPLICABLE_NOTHING, THREAT_MODELS, attacks_for, threat_for
from simulator.scheme_record import OBSERVABLES


def _ecgish(n: int, length: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 100.0
    f = rng.uniform(0.8, 2.0, (n, 1, 3))
    ph = rng.uniform(0, 2 * np.pi, (n, 1, 3))
    return 0.5 + 0.3 * np.sin(2 * np.pi * f * t[None, :, None] + ph)


def test_hungarian_pairs_a_permutation():
    true = _ecgish(5)
    perm = np.array([3, 0, 4, 1, 2])
    rows, cols, _ = match_records(true[perm] + 0.01 * np.random.default_rng(1).normal(size=true.shape), true)
    assert np.array_equal(cols[np.argsort(rows)], perm)


def test_waveform_scores_of_a_pair():
    true = _ecgish(1)[0]
    perfect = pair_scores(true[None], true[None], max_lag=10)
    assert perfect["r"][0] == pytest.approx(1.0) and perfect["mse"][0] == 0
    shifted = np.roll(true, 7, axis=0)
    s = pair_scores(shifted[None], true[None], max_lag=10)
    assert s["lag_r"][0] > 0.99 > s["r"][0]
    assert lagged_pearson_per_lead(true, shifted, 10).min() > 0.99


def test_prd_and_snr_agree():
    true = _ecgish(1)[0]
    noisy = true + 0.01 * np.random.default_rng(0).normal(size=true.shape)
    # PRD% = 100 * 10^(-SNR/20) with both normalised by the mean-removed truth.
    assert prd(noisy, true) == pytest.approx(100 * 10 ** (-snr_db(noisy, true) / 20), rel=1e-9)


def test_reid_rank():
    cohort = _ecgish(6, seed=3)
    assert reid_rank(cohort[2] + 0.01, cohort, 2) == 1
    assert reid_rank(cohort[4], cohort, 2) > 1


def test_label_metrics():
    pred = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]])
    true = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]])
    f1 = f1_per_class(pred, true)
    assert f1[0] == 1.0 and f1[1] == 0.0 and f1[2] == 0.0 and np.isnan(f1[3])
    s = label_scores(pred, true, ("a", "b", "c", "d", "e", "f"))
    assert s["label_exact"] == 0.5 and s["f1_a"] == 1.0
    p = presence_scores(np.array([1, 1, 0, 0, 0, 0]), np.array([1, 0, 1, 0, 0, 0]))
    assert p["presence_exact"] == 0.0 and p["presence_f1"] == pytest.approx(0.5)
    assert cosine(np.ones(3), 2 * np.ones(3)) == pytest.approx(1.0)


def test_signal_priors_prefer_ecg_like_signals():
    import torch

    smooth = torch.as_tensor(_ecgish(2, length=400), dtype=torch.float32)
    noise = torch.rand(2, 400, 3)
    assert smoothness(smooth) < smoothness(noise)
    lags = lag_range(100.0, 400)
    assert lags is not None and periodicity(smooth, lags) < periodicity(noise, lags)
    assert lag_range(400.0, 256) is None  # a 0.64-s record holds no two beats
    rng = np.random.default_rng(0)
    I, II = rng.normal(size=(2, 1, 300))
    limb = np.stack([I, II, II - I, -(I + II) / 2, I - II / 2, II - I / 2], axis=2) + 0.3  # common offset allowed
    assert float(einthoven(torch.as_tensor(limb))) < 1e-10
    assert float(einthoven(torch.as_tensor(rng.normal(size=(1, 300, 6))))) > 0.1


def _threat(scheme: str, dp: dict | None = None):
    """The threat model of a registered scheme, from the observable it declares (what its scheme.json carries)."""
    from baselines.registry import get_scheme  # the attacker itself never imports the registry

    return threat_for(scheme, get_scheme(scheme).observable, dp)


def test_threat_models_per_scheme():
    assert not _threat("mu-ft").applicable and attacks_for(_threat("local-ft")) == ()
    assert _threat("central").name == "data-custodian" and attacks_for(_threat("central")) == ("raw",)
    assert _threat("secagg-fedavg").observable == "aggregate only"
    assert _threat("fedavg", dp={"noise_multiplier": 1.0, "max_grad_norm": 1.0}).name == "curious-server-dp"
    assert _threat("fed-mu").name == "curious-server"
    assert NOT_APPLICABLE_NOTHING == "not applicable: nothing leaves the device"
    assert all(t.observable == k for k, t in THREAT_MODELS.items())
    with pytest.raises(KeyError):
        threat_for("made-up-scheme", "made-up observable")


def test_every_observable_has_a_threat_model():
    """Both sides read the observables' names from simulator.scheme_record; each one has a threat model, and every
    registered scheme declares one of them."""
    from baselines.registry import get_scheme, scheme_names

    assert {get_scheme(name).observable for name in scheme_names()} <= set(OBSERVABLES)
    assert set(THREAT_MODELS) == set(OBSERVABLES)


def test_pair_scores_match_the_one_pair_functions():
    """The vectorised scores of many pairs (FFT cross-correlation for every lag at once) equal the
    straightforward one-pair functions, including a constant lead."""
    rec, true = _ecgish(5, seed=4), _ecgish(5, seed=5)
    rec[2, :, 1] = 0.3  # a flat lead is left out of the means
    got = pair_scores(rec, true, max_lag=10)
    for k in range(5):
        assert got["r"][k] == pytest.approx(np.nanmean(pearson_per_lead(rec[k], true[k])), abs=1e-9)
        assert got["lag_r"][k] == pytest.approx(np.nanmean(lagged_pearson_per_lead(true[k], rec[k], 10)), abs=1e-9)
        assert got["prd"][k] == pytest.approx(prd(rec[k], true[k]))
        assert got["snr_db"][k] == pytest.approx(snr_db(rec[k], true[k]))
        assert got["mse"][k] == pytest.approx(np.mean((rec[k] - true[k]) ** 2))
