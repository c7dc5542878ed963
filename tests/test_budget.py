"""Matched budgets: every scheme trains as long on each device, unless the config says otherwise and the
report says the budgets differ."""
from __future__ import annotations

import pytest
import torch

from simulator.config import parse_config
from simulator.errors import MuprivError
from simulator.runner import run_scheme
from simulator.study import build_study

FEDERATED = ("fedavg", "fedprox", "dp-fedavg", "secagg-fedavg", "fedper", "fed-mu")


def _cfg(**federation) -> dict:
    return {"model": {"d_model": 16, "d_state": 8}, "data": {"synthetic_records": 64, "fs": 50.0, "length": 256},
            "train": {"full_epochs": 1, "mu_epochs": 1}, "finetune": {"epochs": 2, "batch_size": 8},
            "cohort": {"clients": 3, "records_per_client": 12, "test_records": 12}, "federation": federation}


def test_matched_rounds_give_every_device_the_on_device_epochs():
    cfg = parse_config({"finetune": {"epochs": 12}, "schemes": {"fedprox": {"local_epochs": 3},
                                                                "fed-mu": {"fraction_train": 0.5}}})
    for name in ("fedavg", "dp-fedavg", "secagg-fedavg", "fedper"):
        p = cfg.scheme_params(name)
        assert p.rounds * p.local_epochs == 12, name
    assert cfg.scheme_params("fedprox").rounds == 4  # 3 local epochs per round
    rep = cfg.scheme_params("fedrep")
    assert rep.rounds * (rep.local_epochs + rep.head_epochs) == 12  # a round trains the head and then the body
    assert cfg.scheme_params("fed-mu").rounds == 24  # sampled in half the rounds: 12 epochs in expectation
    assert cfg.scheme_params("mu-ft").epochs == 0  # 0 = finetune.epochs


@pytest.mark.parametrize("raw, match", [
    ({"finetune": {"epochs": 5}, "schemes": {"run": ["fedrep"]}}, "not a whole number of rounds"),
    ({"federation": {"rounds": 3}}, "derived from finetune.epochs"),
    ({"schemes": {"fedavg": {"rounds": 3}}}, "schemes.fedavg.rounds is set"),
    ({"federation": {"budget": "as-configured"}}, "rounds must be >= 1"),
    ({"federation": {"budget": "fair"}}, "federation.budget = 'fair'"),
])
def test_budgets_that_cannot_be_matched_are_one_clear_error(raw, match):
    with pytest.raises(MuprivError, match=match):
        parse_config(raw)


def test_local_steps_per_device_are_equal_across_schemes(tmp_path):
    """The quickstart's question in small: 2 device epochs of 12 records in batches of 8 are 4 local steps, on
    the device (mu-ft, local-ft) and in every federated scheme (2 rounds of 1 epoch; FedRep 1 round of head +
    body); as configured, fedavg's 5 rounds train 10 steps and say so."""
    torch.set_num_threads(1)
    study = build_study(parse_config(_cfg()), tmp_path / "work", cache_dir=tmp_path / "cache")
    steps = {}
    for name in ("mu-ft", "local-ft", "fedrep", *FEDERATED):
        table = run_scheme(study, name, tmp_path / name).table
        steps[name] = set(table["local_steps"])
    assert all(s == {4} for s in steps.values()), steps
    loose = build_study(parse_config(_cfg(budget="as-configured", rounds=5)), tmp_path / "work2", cache_dir=tmp_path / "cache")
    assert set(run_scheme(loose, "fedavg", tmp_path / "loose").table["local_steps"]) == {10}
