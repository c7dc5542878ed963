"""The issue's check on the method itself: on a synthetic cohort with shift, on-device µ-Fine-Tuning
and full local fine-tuning improve each patient's macro-AUROC over the pretrained model, and their
forgetting of the source task is reported side by side. Uses the quickstart's settings (about a
minute on 2 cores: pretraining, then two on-device schemes)."""
from __future__ import annotations

import math

import pytest
import torch

from simulator.config import load_config
from simulator.runner import run_scheme
from simulator.study import build_study


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("personal")
    cfg = load_config("configs/quickstart.toml")
    assert cfg.cohort.shift > 0  # patients differ from the server's source population
    study = build_study(cfg, root / "work", cache_dir=root / "cache")
    return {name: run_scheme(study, name, root / name).table for name in ("mu-ft", "local-ft")}


@pytest.mark.parametrize("scheme", ["mu-ft", "local-ft"])
def test_on_device_fine_tuning_improves_personal_auroc(tables, scheme):
    t = tables[scheme]
    gain = t["personal_macro_auroc"] - t["pretrained_personal_macro_auroc"]
    assert gain.mean() > 0.02, gain.tolist()
    assert (gain > 0).sum() >= len(gain) / 2, gain.tolist()  # most patients gain, not one outlier


def test_forgetting_is_reported_for_both(tables):
    for scheme, t in tables.items():
        assert t["forgetting_macro_auroc"].map(math.isfinite).all(), scheme
