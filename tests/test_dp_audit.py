"""One-run DP audit (attacks/audit.py): the bound against hand computations, a broken mechanism caught,
a valid one never audited above its accountant epsilon, and the audit hook leaving DP-SGD as it was."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from attacks.audit import (AuditResult, DPSGDConfig, GradientCanaries, ROW_COLUMNS, audit_dp_sgd, audit_rows,
                           count_correct, epsilon_lower_bound, guess_settings, p_value, run_device, trainable_names)
from baselines.dp_local import epsilon_of
from baselines.setup import SchemeSetup
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.tensors import ECGTensors
from simulator.errors import MuprivError

CONFIG = ModelConfig(d_model=16, d_state=8)
M = 2000  # of the 2,596 trainable coordinates at d_model 16


def records(n: int, seed: int) -> ECGTensors:
    g = torch.Generator().manual_seed(seed)
    return ECGTensors(torch.randn(n, 128, 12, generator=g), (torch.rand(n, 6, generator=g) > 0.7).float(),
                      torch.ones(n, 6, dtype=torch.bool))


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return TDSSM(CONFIG).state_dict(), records(48, 1), records(200, 2)


def dp(sigma: float, **kw) -> DPSGDConfig:
    """48 records, batch 8: sample rate 1/6, 6 steps per epoch, one round of one epoch."""
    return DPSGDConfig(**{"noise_multiplier": sigma, "max_grad_norm": 1.0, "delta": 1e-5, "batch_size": 8, "rounds": 1,
                          "local_epochs": 1, **kw})


# ------------------------------------------------------------------------------------------ the bound
def hand_p_value(eps: float, m: int, r: int, v: int, delta: float) -> float:
    """The theorem written out with math.comb: f(v) + 2 m delta max_{i=1..m} (f(v - i) - f(v)) / i."""
    p = math.exp(eps) / (1 + math.exp(eps))
    f = lambda k: sum(math.comb(r, w) * p ** w * (1 - p) ** (r - w) for w in range(max(k, 0), r + 1))  # noqa: E731
    return f(v) + 2 * m * delta * max((f(v - i) - f(v)) / i for i in range(1, m + 1))


@pytest.mark.parametrize("r", [10, 100, 1000])
def test_all_correct_without_delta_is_the_closed_form(r):
    # P[Binomial(r, p) >= r] = p^r <= beta  <=>  p <= beta^(1/r)  <=>  eps <= logit(beta^(1/r))
    b = 0.05 ** (1 / r)
    assert epsilon_lower_bound(r, r, r, 0.0, 0.05) == pytest.approx(math.log(b / (1 - b)), abs=1e-9)
    assert epsilon_lower_bound(2 * r, r, r, 0.0, 0.05) == pytest.approx(math.log(b / (1 - b)), abs=1e-9)


@pytest.mark.parametrize("m,r,v,delta", [(10, 10, 10, 1e-3), (12, 10, 9, 1e-3), (30, 20, 18, 2e-3), (40, 30, 30, 1e-5)])
def test_bound_with_delta_matches_the_theorem_written_out(m, r, v, delta):
    for eps in (0.0, 0.5, 1.7, 4.0):
        assert p_value(eps, m, r, v, delta) == pytest.approx(min(1.0, hand_p_value(eps, m, r, v, delta)), rel=1e-9, abs=1e-15)
    expected = brentq(lambda e: hand_p_value(e, m, r, v, delta) - 0.05, 1e-9, 30.0, xtol=1e-12)
    assert epsilon_lower_bound(m, r, v, delta, 0.05) == pytest.approx(expected, abs=1e-8)
    assert epsilon_lower_bound(m, r, v, delta, 0.05) <= epsilon_lower_bound(m, r, v, 0.0, 0.05)  # delta only loosens


@pytest.mark.parametrize("m,r,v", [(100, 50, 0), (100, 0, 0), (1000, 200, 100), (1000, 200, 108)])
def test_no_better_than_chance_gives_zero(m, r, v):
    assert epsilon_lower_bound(m, r, v, 1e-5) == 0.0


def test_a_large_delta_term_alone_can_rule_out_any_bound():
    # 18 of 20 correct bounds eps by 0.93 at delta 0, but with 2 m delta = 0.6 nothing is rejected
    assert epsilon_lower_bound(30, 20, 18, 0.0) > 0.9
    assert hand_p_value(0.0, 30, 20, 18, 1e-2) > 0.05 and epsilon_lower_bound(30, 20, 18, 1e-2) == 0.0


def test_bound_refuses_impossible_counts_and_a_swamping_delta():
    with pytest.raises(ValueError, match="correct"):
        epsilon_lower_bound(10, 5, 6, 0.0)
    with pytest.raises(ValueError, match="2 m delta"):
        epsilon_lower_bound(100_000, 10, 10, 1e-5)


def test_guesses_take_the_top_as_in_and_the_bottom_as_out():
    scores = np.array([0.1, 5.0, -3.0, 2.0, 0.0, -1.0])
    included = np.array([False, True, False, False, True, False])
    assert count_correct(scores, included, 2, 0) == 1  # top 2: indices 1 (in), 3 (out)
    assert count_correct(scores, included, 1, 2) == 3  # top 1: 1 (in); bottom 2: 2, 5 (both out)
    settings = guess_settings(1000)
    assert (400, 0) in settings and (10, 10) in settings and all(kp + km <= 1000 for kp, km in settings)
    assert guess_settings(10)[0] == (1, 0)


# ------------------------------------------------------------------------------------------ the mechanism
def test_the_audit_hook_leaves_dp_sgd_bitwise_as_it_was(tiny):
    """Canaries that are never included add zero rows: the run (noise, sampling, weights) is unchanged."""
    state, train, _ = tiny
    plain = TDSSM(CONFIG)
    plain.load_state_dict(state)
    run_device(plain, train, dp(1.0), seed=3, batch_size=8)
    hooked = TDSSM(CONFIG)
    hooked.load_state_dict(state)
    names = trainable_names(hooked, dp(1.0).parts)
    sizes = [dict(hooked.named_parameters())[n].numel() for n in names]
    canaries = GradientCanaries(names, sizes, 50, 1 / 6, np.random.default_rng(0))
    canaries.included[:] = False
    canaries.bind(hooked)
    run_device(hooked, train, dp(1.0), seed=3, batch_size=8, grad_hook=canaries)
    assert len(canaries.observed) == 6  # the hook ran and read every step's noised gradient
    for a, b in zip(plain.parameters(), hooked.parameters()):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")  # the sigma-0.05 run's own epsilon is huge
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_a_broken_mechanism_is_audited_above_its_claimed_epsilon(tiny, sigma):
    """Noise off (or 40x too small) while the accountant is told noise_multiplier 2: the white-box audit must
    bound epsilon above what the accountant would claim."""
    state, train, _ = tiny
    claimed = epsilon_of([(2.0, 8 / 48, 6)], 1e-5)
    result = audit_dp_sgd(CONFIG, state, train, None, dp(sigma), "gradient", m=M, seed=0)[0]
    assert result.observation == "noisy-gradients"
    assert result.epsilon_lower_bound > claimed + 1.0, (result, claimed)
    assert result.correct == result.guesses  # every "in" guess right: each present canary stands out exactly


def test_a_valid_mechanism_is_never_audited_above_its_accountant_epsilon(tiny):
    state, train, public = tiny
    results = audit_dp_sgd(CONFIG, state, train, public, dp(1.0), "gradient", m=M, seed=1)
    results += audit_dp_sgd(CONFIG, state, train, public, dp(1.0), "input", m=100, seed=1)
    accountant = epsilon_of([(1.0, 8 / 48, 6)], 1e-5)
    assert [r.observation for r in results] == ["noisy-gradients", "final-update", "final-model-loss"]
    for r in results:
        assert 0.0 <= r.epsilon_lower_bound <= r.accountant_epsilon, r
        assert r.correct <= r.guesses <= r.m and r.confidence == 0.95
    assert results[0].accountant_epsilon == pytest.approx(accountant, rel=1e-12)  # the configured mechanism, exactly
    assert results[0].steps == 6 and results[0].sample_rate == pytest.approx(1 / 6)
    assert results[2].steps == 6  # input canaries keep the configured steps (the batch grows with the records)
    assert results[0].ideal_lower_bound is not None and 0.0 <= results[0].ideal_lower_bound <= accountant


def test_rows_are_the_long_attacks_form():
    result = AuditResult("gradient", "noisy-gradients", 1.5, 6.8, 5000, 200, 180, 200, 0, 11, 0.95, 1e-5, 1.0, 1 / 3, 6,
                         12.0, 1.4)
    rows = audit_rows(result, client="client-000")
    assert all(set(r) == set(ROW_COLUMNS) for r in rows)
    values = {r["metric"]: r["value"] for r in rows}
    assert values["eps_lower_bound"] == 1.5 and values["eps_accountant"] == 6.8 and values["canaries"] == 5000
    assert values["audit_correct"] == 180 and values["audit_guesses"] == 200 and values["eps_lower_bound_ideal"] == 1.4
    assert {r["attack"] for r in rows} == {"dp-audit-gradient"}
    assert {r["threat_model"] for r in rows} == {"auditor-noisy-gradients"}


def test_config_from_the_dp_fedavg_setup():
    setup = SchemeSetup(scheme="dp-fedavg", model=CONFIG.to_dict(), finetune={"lr": 3e-3, "batch_size": 16},
                        params={"mode": "dp-sgd", "noise_multiplier": 1.3, "max_grad_norm": 0.5, "delta": 1e-6,
                                "rounds": 2, "local_epochs": 1}, seed=0, pretrained_path="", probe_dir="", num_clients=4)
    cfg = DPSGDConfig.from_setup(setup)
    assert (cfg.noise_multiplier, cfg.max_grad_norm, cfg.delta, cfg.batch_size, cfg.rounds) == (1.3, 0.5, 1e-6, 16, 2)
    with pytest.raises(MuprivError, match="dp-sgd"):
        DPSGDConfig.from_setup(SchemeSetup(**{**setup.__dict__, "params": {**setup.params, "mode": "client-level"}}))
    with pytest.raises(MuprivError, match="canaries"):
        audit_dp_sgd(CONFIG, {}, records(4, 0), None, cfg, "membership")
