"""Calibrated leakage: null controls scored by the scorer show no leakage, the truth does, and the
statistics (AUC, TPR at low FPR, the two-level bootstrap, the Bonferroni adjustment) match hand computations.

The cohort mirrors the case a reviewer used to show that raw scores gave "leakage" to a stranger's ECG:
4 clients x 64 records of the project's synthetic generator. Nothing is trained: the scorer sees only the
(fake) reconstructions, so the test isolates the scoring pipeline."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from attacks.calibrate import (LEAKS, MIN_UNITS, QUANTITIES, UNIT_COLUMNS, _cells_per_draw, _drawn_units,
                               _membership_boots, auc, bootstrap_gain, calibrate, strongest, tpr_at_fpr)
from attacks.metrics import pearson_per_lead
from attacks.nulls import WAVEFORM_NULLS, null_records, presence_baselines, spectral_noise
from attacks.observe import DataSpec, LocalTraining, Observation
from attacks.priors import population_prior
from attacks.score import Scorer, Truth
from attacks.suite import AttackResult
from attacks.threat import THREAT_MODELS, UPDATES
from simulator.core.model import ModelConfig
from tests.attack_fixtures import client_data

CLIENTS = 4
PER_CLIENT = 64
ROUNDS = 3
LENGTH = 256
SPEC = DataSpec(LENGTH, 400.0, "record", "test")


@pytest.fixture(scope="module")
def cohort():
    data = client_data(CLIENTS, PER_CLIENT, seed=0)
    x = np.concatenate([d.x.numpy() for d in data])
    y = np.concatenate([d.y.numpy() for d in data])
    owners = np.array([f"client-{k:03d}" for k in range(CLIENTS) for _ in range(PER_CLIENT)], dtype=object)
    truth = Truth(x, y, owners, ())
    prior = population_prior(None, SPEC, 12, n_samples=48)
    # strangers: ECGs of the same generator and preprocessing that are in no client's data and not in the prior
    strangers = np.concatenate([d.x.numpy() for d in client_data(2, 32, seed=77)])
    return truth, prior, strangers


def _observations() -> list[Observation]:
    return [Observation(scheme="fedavg", round=r, kind="update", threat=THREAT_MODELS[UPDATES], model=ModelConfig(d_model=16),
                        data=SPEC, training=LocalTraining(), num_examples=PER_CLIENT, clients=(f"client-{k:03d}",))
            for r in range(1, ROUNDS + 1) for k in range(CLIENTS)]


def _score(truth: Truth, prior, make_x, n_rec: int, name: str, seed: int = 0) -> pd.DataFrame:
    """Score a fake reconstruction (make_x(observation index, client index) -> (n_rec, L, leads)) of every
    observation through the real Scorer; return the calibrated leakage rows."""
    obs = _observations()
    scorer = Scorer(obs, truth, prior, seed=seed, null_draws=12)
    results = [AttackResult(name, i, "curious-server", x=make_x(i, int(o.clients[0][-3:])).astype(np.float32))
               for i, o in enumerate(obs)]
    scorer.rows(results)
    return calibrate(scorer.units(), n_boot=1000)


def _row(leak: pd.DataFrame, quantity: str) -> dict:
    return leak[leak["quantity"] == quantity].iloc[0].to_dict()


@pytest.mark.parametrize("n_rec", [1, 4])
def test_null_controls_show_no_leakage_and_the_truth_does(cohort, n_rec):
    truth, prior, strangers = cohort
    rng = np.random.default_rng(5)
    lo, hi = float(truth.x.min()), float(truth.x.max())

    def own(i: int, k: int) -> np.ndarray:  # the client's own records: a perfect reconstruction
        return truth.x[k * PER_CLIENT + (i * 7 + np.arange(n_rec)) % PER_CLIENT]

    controls = {
        "prior mean": lambda i, k: np.repeat(prior.mean[None], n_rec, 0),
        "white noise": lambda i, k: rng.uniform(lo, hi, (n_rec, LENGTH, 12)),
        "smoothed noise": lambda i, k: np.apply_along_axis(lambda v: np.convolve(v, np.ones(5) / 5, "same"), 1,
                                                           rng.uniform(lo, hi, (n_rec, LENGTH, 12))),
        "stranger ECG": lambda i, k: strangers[rng.choice(len(strangers), n_rec, replace=False)],
        "another client's record": lambda i, k: truth.x[((k + 1) % CLIENTS) * PER_CLIENT + rng.choice(PER_CLIENT, n_rec)],
    }
    for name, make in controls.items():
        leak = _score(truth, prior, make, n_rec, name)
        for quantity in ("waveform_r", "waveform_lag_r", "reid_record", "reid_patient"):
            r = _row(leak, quantity)
            assert r["verdict"] != LEAKS, (name, quantity, r)
        if name == "stranger ECG":  # the strongest null control: its gain is zero within the interval
            r = _row(leak, "waveform_r")
            assert r["ci_low"] <= 0.0 <= r["ci_high"], r
    true = _score(truth, prior, own, n_rec, "truth")
    r = _row(true, "waveform_r")
    assert r["estimate"] > 0.999 and r["verdict"] == LEAKS
    assert r["gain"] == pytest.approx(1.0 - r["null"], abs=1e-3) and r["gain"] > 0.4
    assert _row(true, "reid_record")["verdict"] == LEAKS and _row(true, "reid_patient")["verdict"] == LEAKS


def test_nulls_are_scored_through_the_attacks_matching(cohort):
    """The old scorer compared a matched reconstruction with the prior mean *on the record the match
    picked*: strangers' ECGs then gained about 0.2 on average. Through the same matching, the nulls'
    level is as high as a stranger's score, and the strangers' mean gain is about zero."""
    truth, prior, strangers = cohort
    scorer = Scorer(_observations()[:1], truth, prior, null_draws=16)
    frame = scorer.rows([AttackResult("stranger", 0, "curious-server", x=strangers[k:k + 1].astype(np.float32))
                         for k in range(len(strangers))])
    by = frame.pivot_table(index="metric", values="value", aggfunc="mean")["value"]
    assert by["null_r_public-record"] > by["null_r_prior-mean"]  # matching favours any ECG-shaped record
    assert by["null_r"] == max(by[f"null_r_{k}"] for k in WAVEFORM_NULLS)
    assert abs(by["r_gain"]) < 0.06
    # the old definition, recomputed: r minus the prior mean's r on the matched record
    own = truth.x[:PER_CLIENT]
    old = []
    for k in range(len(strangers)):
        sims = [np.nanmean(pearson_per_lead(strangers[k], t)) for t in own]
        j = int(np.argmax(sims))
        old.append(sims[j] - np.nanmean(pearson_per_lead(prior.mean, own[j])))
    assert np.mean(old) > 0.1


def test_label_units_are_paired_with_no_attack_baselines(cohort):
    truth, prior, _ = cohort
    obs = _observations()[:CLIENTS]
    scorer = Scorer(obs, truth, prior)
    # "every class present" is itself a baseline: its gain is exactly 0 for every client
    results = [AttackResult("labels", i, "curious-server", presence=np.ones(6, np.int64)) for i in range(len(obs))]
    frame = scorer.rows(results)
    units = scorer.units()
    assert (units["quantity"] == "labels_presence_f1").sum() == len(obs)
    assert (units["value"] <= units["null"] + 1e-12).all()
    gains = frame[frame["metric"] == "presence_f1_gain"]["value"]
    assert len(gains) == len(obs) and (gains <= 1e-12).all()  # never above the best baseline it is one of
    leak = calibrate(units, n_boot=500)
    assert _row(leak, "labels_presence_f1")["verdict"] != LEAKS


def test_presence_baselines_follow_the_public_prevalence(cohort):
    _, prior, _ = cohort
    p = prior.prevalence()
    one = presence_baselines(prior, 1, 6)
    many = presence_baselines(prior, 64, 6)
    assert one["all-present"].tolist() == [1] * 6
    assert one["prevalence"].tolist() == (p >= 0.5).astype(int).tolist()
    assert many["prevalence"].tolist() == (1 - (1 - p) ** 64 >= 0.5).astype(int).tolist()


def test_spectral_noise_has_the_prior_spectrum(cohort):
    _, prior, _ = cohort
    noise = spectral_noise(prior.samples, 400, np.random.default_rng(0))
    x = prior.samples.astype(np.float64)
    power = lambda v: np.mean(np.abs(np.fft.rfft(v - v.mean(1, keepdims=True), axis=1)) ** 2, axis=0)  # noqa: E731
    ratio = power(noise)[1:40].sum(0) / power(x)[1:40].sum(0)
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-6)  # the amplitude is set exactly; only phases are random
    np.testing.assert_allclose(noise.mean(axis=(0, 1)), x.mean(axis=(0, 1)), atol=1e-6)
    assert null_records("prior-mean", prior, 3, np.random.default_rng(0)).shape == (3, LENGTH, 12)


# ------------------------------------------------------------------------------------------ statistics
def test_auc_and_tpr_match_brute_force():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=60), 1)  # ties on purpose
    y = (rng.random(60) < 0.4).astype(float)
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(s[y == 1], s[y == 0])]
    assert auc(s, y) == pytest.approx(np.mean(pairs))
    neg = np.sort(s[y == 0])[::-1]
    # 10% FPR over len(neg) non-members: the threshold sits at the (floor(0.1 n) + 1)-th highest non-member
    k = int(np.floor(0.1 * len(neg)))
    assert tpr_at_fpr(s, y, 0.1) == pytest.approx(np.mean(s[y == 1] > neg[k]))
    assert np.mean(s[y == 0] > neg[k]) <= 0.1
    assert math.isnan(auc(s, np.ones(60)))


def _entries(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(draw, unit) entries of a (draws, units) matrix of counts."""
    rows, cols = np.nonzero(weights)
    reps = weights[rows, cols]
    return np.repeat(rows, reps), np.repeat(cols, reps)


def _weights(draw: np.ndarray, unit: np.ndarray, n_boot: int, n_units: int) -> np.ndarray:
    return np.bincount(draw * n_units + unit, minlength=n_boot * n_units).reshape(n_boot, n_units)


@pytest.mark.parametrize("key", ["membership_auc", "membership_tpr1"])
def test_membership_statistics_of_a_draw_equal_those_of_its_repeated_units(key):
    """The bootstrap counts how often each draw took each unit; for those counts the statistic must be exactly
    metrics.auc / metrics.tpr_at_fpr of the units repeated that often (ties, units not taken, a draw without
    members)."""
    rng = np.random.default_rng(7)
    q = QUANTITIES[key]
    s = np.round(rng.normal(size=150), 1)  # ties on purpose
    y = (rng.random(150) < 0.4).astype(float)
    w = rng.poisson(1.0, size=(40, 150))
    w[0, y == 1] = 0  # a draw without members
    w[1] = 1  # the plain sample
    got = _membership_boots(q, s, y, *_entries(w), 40)
    metric = auc if q.statistic == "auc" else (lambda v, lab: tpr_at_fpr(v, lab, q.fpr))
    want = [metric(np.repeat(s, row), np.repeat(y, row)) - q.chance for row in w]
    assert math.isnan(got[0]) and math.isnan(want[0])
    np.testing.assert_allclose(got[1:], want[1:], rtol=0, atol=1e-12)


def test_drawn_units_keep_each_clusters_classes_and_sizes():
    """Every draw resamples a drawn cluster's members and non-members separately: per draw, a cluster's members
    are taken (times drawn) x (its member count) times, its non-members likewise, and the draws take as many
    clusters as there are (or, nested, as the drawn seeds hold)."""
    rng = np.random.default_rng(8)
    clusters = [(rng.normal(size=n), np.zeros(n), (np.arange(n) < m).astype(float)) for n, m in ((10, 4), (6, 3), (8, 1))]
    n_units = sum(len(c[0]) for c in clusters)
    for groups in (None, ["s0", "s0", "s1"]):
        w = _weights(*_drawn_units(clusters, groups, 500, np.random.default_rng(0)), 500, n_units)
        start, drawn = 0, np.zeros(500)
        for v, _n, lab in clusters:
            block = w[:, start:start + len(v)]
            times = block[:, lab == 1].sum(1) / (lab == 1).sum()
            assert np.all(times == block[:, lab == 0].sum(1) / (lab == 0).sum())
            assert np.all(times == np.round(times))
            drawn += times
            start += len(v)
        if groups is None:
            assert np.all(drawn == 3)  # three clusters drawn per draw
        else:  # two seeds drawn, each then draws as many clusters as it has (2 or 1)
            assert set(np.unique(drawn)) == {2, 3, 4}
    # each unit of a class is equally likely: 2,000 draws of one cluster of 4 members + 4 non-members
    one = [(np.arange(8.0), np.zeros(8), (np.arange(8) < 4).astype(float))]
    share = _weights(*_drawn_units(one, None, 2000, np.random.default_rng(1)), 2000, 8).mean(0)
    np.testing.assert_allclose(share, 1.0, atol=0.08)


def test_membership_draws_are_blocked_by_their_padded_size():
    """One large client among small ones: each draw pads every drawn client to the largest one's member and
    non-member counts, so blocks of draws are sized by that, not by the unit count (hand count: 5 slots x
    (60 + 40)); nested in 2 seeds of 3 and 2 clients, 2 x 3 slots."""
    big = (np.zeros(100), np.zeros(100), (np.arange(100) < 60).astype(float))
    small = [(np.zeros(4), np.zeros(4), (np.arange(4) < 2).astype(float)) for _ in range(4)]
    assert _cells_per_draw([big, *small], None) == 5 * (60 + 40)
    assert _cells_per_draw([big, *small], ["a", "a", "a", "b", "b"]) == 2 * 3 * (60 + 40)


def _loop_bootstrap(clusters, q, level, n_boot, seed):
    """A reference two-level membership bootstrap, one Python loop per draw and cluster (independent of the
    weights the module uses)."""
    rng = np.random.default_rng(seed)
    metric = auc if q.statistic == "auc" else (lambda v, lab: tpr_at_fpr(v, lab, q.fpr))
    boots = []
    for _ in range(n_boot):
        vs, ls = [], []
        for j in rng.integers(0, len(clusters), size=len(clusters)):
            v, _n, lab = clusters[j]
            for k in (0, 1):
                idx = rng.choice(np.flatnonzero(lab == k), size=int((lab == k).sum()))
                vs.append(v[idx]), ls.append(lab[idx])
        boots.append(metric(np.concatenate(vs), np.concatenate(ls)) - q.chance)
    return np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])


@pytest.mark.parametrize("key", ["membership_auc", "membership_tpr1"])
def test_membership_bootstrap_matches_a_loop_reference(key):
    """Eight clients whose members score from weakly to clearly above their non-members: the vectorised
    interval agrees with a draw-by-draw loop bootstrap to Monte Carlo error."""
    rng = np.random.default_rng(9)
    q = QUANTITIES[key]
    clusters = []
    for k in range(8):
        lab = (np.arange(60) < 25).astype(float)
        clusters.append((rng.normal(0.25 * k * lab, 1.0), np.full(60, np.nan), lab))
    _, lo, hi = bootstrap_gain(clusters, q, 0.95, n_boot=3000, seed=1)
    ref_lo, ref_hi = _loop_bootstrap(clusters, q, 0.95, n_boot=3000, seed=2)
    tol = 0.02 if q.statistic == "auc" else 0.05
    assert lo == pytest.approx(ref_lo, abs=tol) and hi == pytest.approx(ref_hi, abs=tol)


def test_bootstrap_of_one_cluster_matches_the_normal_interval():
    """One client, many units: the two-level bootstrap reduces to resampling units, whose percentile
    interval of a mean matches mean ± 1.96 sd / sqrt(n) computed by hand."""
    rng = np.random.default_rng(1)
    v = rng.normal(0.3, 1.0, 400)
    q = QUANTITIES["waveform_r"]
    gain, lo, hi = bootstrap_gain([(v, np.zeros_like(v), np.full_like(v, np.nan))], q, 0.95, n_boot=4000, seed=0)
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v))
    assert gain == pytest.approx(v.mean())
    assert lo == pytest.approx(v.mean() - half, abs=0.015) and hi == pytest.approx(v.mean() + half, abs=0.015)


def test_bootstrap_respects_clients():
    """Ten records of each of 4 clients whose means differ: the interval must reflect the spread between
    clients, not the (tiny) spread of 40 records around their client's mean."""
    clusters = [(np.full(10, m) + 1e-3 * np.arange(10), np.zeros(10), np.full(10, np.nan)) for m in (0.0, 0.2, 0.4, 0.6)]
    q = QUANTITIES["waveform_r"]
    _, lo, hi = bootstrap_gain(clusters, q, 0.95, n_boot=2000, seed=0)
    assert hi - lo > 0.3  # pooling the 40 records as independent would give about 0.01
    gain, lo1, hi1 = bootstrap_gain([(np.concatenate([c[0] for c in clusters]), np.zeros(40), np.full(40, np.nan))], q, 0.95,
                                    n_boot=2000, seed=0)
    assert hi1 - lo1 < hi - lo


def test_bonferroni_widens_intervals_and_rows_say_so():
    rng = np.random.default_rng(2)
    rows = []
    for attack, shift in (("a", 0.05), ("b", 0.0), ("c", 0.0)):
        for k in range(4):
            for u in range(8):
                rows.append({"scheme": "s", "client": f"c{k}", "round": 1, "attack": attack, "threat_model": "t",
                             "quantity": "waveform_r", "unit": str(u), "value": shift + rng.normal(0, 0.05), "null": 0.0,
                             "label": math.nan})
    units = pd.DataFrame(rows, columns=UNIT_COLUMNS)
    three = calibrate(units, n_boot=1000)
    one = calibrate(units[units["attack"] == "a"], n_boot=1000)
    a3, a1 = three[three["attack"] == "a"].iloc[0], one.iloc[0]
    assert a3["compared"] == 3 and a3["level"] == pytest.approx(1 - 0.05 / 3) and "Bonferroni over 3" in a3["note"]
    lag = units.assign(quantity="waveform_lag_r")  # a second score of the same family doubles the comparisons
    assert calibrate(pd.concat([units, lag]), n_boot=200)["compared"].eq(6).all()
    assert (a3["ci_high"] - a3["ci_low"]) > (a1["ci_high"] - a1["ci_low"])
    best = strongest(three)
    assert len(best) == 1 and best.iloc[0]["attack"] == "a"


def test_too_few_units_give_no_verdict_of_leakage():
    units = pd.DataFrame([{"scheme": "s", "client": "c", "round": 1, "attack": "a", "threat_model": "t",
                           "quantity": "labels_presence_f1", "unit": str(u), "value": 1.0, "null": 0.5, "label": math.nan}
                          for u in range(MIN_UNITS - 1)], columns=UNIT_COLUMNS)
    row = calibrate(units).iloc[0]
    assert row["verdict"] != LEAKS and math.isnan(row["ci_low"]) and "too few" in row["note"]


def test_membership_quantities_use_auc_chance():
    rng = np.random.default_rng(3)
    rows = []
    for k in range(4):
        for u in range(100):
            member = u < 50
            rows.append({"scheme": "s", "client": f"c{k}", "round": 1, "attack": "mi", "threat_model": "t",
                         "quantity": "membership_auc", "unit": str(u), "value": rng.normal(1.0 if member else 0.0),
                         "null": math.nan, "label": float(member)})
    units = pd.DataFrame(rows, columns=UNIT_COLUMNS)
    row = calibrate(units, n_boot=300).iloc[0]
    assert row["null"] == 0.5 and row["estimate"] == pytest.approx(row["gain"] + 0.5)
    assert 0.7 < row["estimate"] < 0.82 and row["verdict"] == LEAKS  # Phi(1/sqrt(2)) = 0.76
    shuffled = units.assign(label=rng.permutation(units["label"].to_numpy()))
    assert calibrate(shuffled, n_boot=300).iloc[0]["verdict"] != LEAKS


def test_a_handful_of_units_gets_at_least_the_student_t_interval():
    """Four units of one client: a percentile bootstrap of four values is too narrow; the interval is at least
    mean ± t(3, 0.975) sd / 2, computed here by hand."""
    v = np.array([0.02, 0.05, 0.03, 0.06])
    q = QUANTITIES["waveform_r"]
    gain, lo, hi = bootstrap_gain([(v, np.zeros(4), np.full(4, np.nan))], q, 0.95, n_boot=2000, seed=0)
    half = 3.182446305284263 * v.std(ddof=1) / 2.0  # scipy.stats.t.ppf(0.975, 3)
    assert gain == pytest.approx(0.04)
    assert lo == pytest.approx(0.04 - half) and hi == pytest.approx(0.04 + half)
    boots = [np.mean(np.random.default_rng(k).choice(v, 4)) for k in range(2000)]
    assert np.quantile(boots, 0.025) > lo  # the percentile bootstrap alone would have been narrower


def _seeded_units(seed_gains: dict[int, float], clients: int = 3, units: int = 5) -> pd.DataFrame:
    """Every unit of a seed's clients gains exactly that seed's gain over its null (waveform r)."""
    rows = [{"seed": s, "scheme": "s", "client": f"c{k}", "round": 1, "attack": "a", "threat_model": "t",
             "quantity": "waveform_r", "unit": str(u), "value": 0.1 + g, "null": 0.1, "label": math.nan}
            for s, g in seed_gains.items() for k in range(clients) for u in range(units)]
    return pd.DataFrame(rows, columns=["seed", *UNIT_COLUMNS])


def test_patients_of_one_seed_are_nested_in_it():
    """Three seeds whose patients all gain 0.2, 0.5 and 0.8: the interval is the Student-t interval over the three
    seed means (hand-computed: 0.5 ± t(2, 0.975) * 0.3 / sqrt(3)), which contains 0, so no evidence. Treating the
    nine patients as independent (no seed column, nine distinct clients) would call it a leak."""
    units = _seeded_units({0: 0.2, 1: 0.5, 2: 0.8})
    row = calibrate(units, n_boot=500).iloc[0]
    half = 4.302652729911275 * 0.3 / math.sqrt(3)
    assert row["gain"] == pytest.approx(0.5)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.5 - half, 0.5 + half))
    assert row["verdict"] != LEAKS and "nested in 3 seeds" in row["note"]
    flat = units.drop(columns="seed").assign(client=[f"{s}-{c}" for s, c in zip(units["seed"], units["client"])])
    flat_row = calibrate(flat, n_boot=500).iloc[0]
    assert flat_row["verdict"] == LEAKS and flat_row["ci_low"] > 0.25


def test_membership_resamples_seeds_before_patients():
    """Membership separates perfectly in one seed and not at all in the other: resampling seeds first puts draws
    where only the blind seed was drawn (gain 0) into the interval; resampling the patients alone rarely does."""
    rng = np.random.default_rng(5)
    rows = []
    for s, strength in ((0, 50.0), (1, 0.0)):
        for k in range(6):
            for u in range(40):
                member = u < 20
                rows.append({"seed": s, "scheme": "s", "client": f"c{k}", "round": 1, "attack": "mi",
                             "threat_model": "t", "quantity": "membership_auc", "unit": str(u),
                             "value": rng.normal(strength if member else 0.0), "null": math.nan, "label": float(member)})
    units = pd.DataFrame(rows, columns=["seed", *UNIT_COLUMNS])
    nested = calibrate(units, n_boot=400).iloc[0]
    flat = calibrate(units.drop(columns="seed").assign(client=[f"{s}-{c}" for s, c in zip(units["seed"], units["client"])]),
                     n_boot=400).iloc[0]
    assert nested["ci_low"] < 0.05 < flat["ci_low"]
    assert nested["ci_high"] > 0.45
