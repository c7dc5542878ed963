"""Attacks on a chosen torch device: the device reaches every stage that computes with a model (the inversions'
matching problem, membership's shadow models and its scoring passes), `mupriv attack --device` refuses a GPU this
machine does not have before it writes anything, and on a GPU (skipped without one) the attacks finish with
finite scores and leave the caller's random streams alone."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import attacks.membership as membership
import attacks.shadow_models as shadow_models
from attacks.budget import Budget
from attacks.replay import MatchProblem
from attacks.run import attack_run_report
from simulator.cli import app
from tests.attack_fixtures import add_membership_files, fedavg_run_dir

HAS_CUDA = torch.cuda.is_available()
# Two shadows so that LiRA trains; iteration caps only, so that two runs are comparable number for number.
SMALL = Budget(name="small", max_targets=2, max_records=2, dlg_iters=2, dlg_inner=4, ig_iters=6, multistep_iters=3,
               prior_samples=8, attribute_shadow_clients=16, mi_shadows=2, mi_max_targets=1, dlg_seconds=None,
               ig_seconds=None, multistep_seconds=None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield add_membership_files(fedavg_run_dir(tmp_path_factory.mktemp("fedavg") / "run", n_clients=2,
                                                  per_client=3, rounds=1, optimizer="sgd"))
    finally:
        torch.set_num_threads(before)


def assert_finite_scores(report) -> None:
    """What a run on any device must give: finite inversion residuals, membership AUCs in [0, 1], and
    reconstructions back on the CPU as float arrays. (Run on the CPU too, so the CUDA test's checks are known
    to select something.)"""
    frame = report.frame
    for attack in ("dlg", "ig"):
        res = frame[(frame["attack"] == attack) & (frame["metric"] == "residual")]["value"]
        assert len(res) and all(math.isfinite(v) for v in res), attack
    aucs = frame[frame["attack"].str.startswith("mi-") & (frame["metric"] == "mi_auc")]["value"]
    assert len(aucs) and all(0.0 <= v <= 1.0 for v in aucs)
    recs = [r.x for r in report.results if r.x is not None]
    assert recs and all(isinstance(x, np.ndarray) and x.dtype.kind == "f" for x in recs)


def _numbers(frame: pd.DataFrame) -> pd.Series:
    kept = frame[frame["metric"] != "seconds"]
    return kept.set_index(["client", "round", "attack", "metric"])["value"].sort_index()


def test_the_device_reaches_every_stage_that_computes(run_dir, monkeypatch):
    """A device object the defaults never use (cpu:0, which computes on the CPU) is passed to attack_run_report:
    each matching problem, the shadow bank and every scoring pass must receive exactly it, and the numbers are
    those of the default run."""
    marker = torch.device("cpu", 0)
    seen: dict[str, list] = {"problem": [], "shadows": [], "scoring": []}
    to, bank_init, stats = MatchProblem.to, shadow_models.ShadowBank.__init__, membership.record_stats

    def spy_to(self, dtype=None, device=None):
        seen["problem"].append(device)
        return to(self, dtype, device)

    def spy_bank(self, *args, **kwargs):
        bank_init(self, *args, **kwargs)
        seen["shadows"].append(self.device)

    def spy_stats(*args, **kwargs):
        seen["scoring"].append(kwargs.get("device"))
        return stats(*args, **kwargs)

    default = attack_run_report(run_dir, SMALL, seed=0).frame
    monkeypatch.setattr(MatchProblem, "to", spy_to)
    monkeypatch.setattr(shadow_models.ShadowBank, "__init__", spy_bank)
    monkeypatch.setattr(membership, "record_stats", spy_stats)
    report = attack_run_report(run_dir, SMALL, seed=0, device=marker)
    on_marker = report.frame
    assert_finite_scores(report)
    for stage, devices in seen.items():
        assert devices and all(d == marker for d in devices), (stage, devices)
    pd.testing.assert_series_equal(_numbers(on_marker), _numbers(default))
    inversions = on_marker[on_marker["attack"].isin(["dlg", "ig"])]
    assert {json.loads(s)["device"] for s in inversions["settings"]} == {"cpu:0"}


def test_attack_device_cuda_without_cuda_exits_2_before_writing(monkeypatch, run_dir, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["attack", str(run_dir), "--out", str(out), "--device", "cuda"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device = 'cuda'"), r.output
    assert not out.exists()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of torch")
def test_attacks_on_cuda_finish_with_finite_scores(run_dir):
    """On the GPU: the same rows as on the CPU, finite residuals and membership AUCs, reconstructions back on the
    CPU as arrays, and the caller's CPU and CUDA random streams as they were."""
    cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state()
    on_gpu = attack_run_report(run_dir, SMALL, seed=0, device=torch.device("cuda"))
    on_cpu = attack_run_report(run_dir, SMALL, seed=0).frame
    assert torch.equal(torch.get_rng_state(), cpu_rng) and torch.equal(torch.cuda.get_rng_state(), cuda_rng)
    frame = on_gpu.frame
    assert sorted(map(tuple, frame[["client", "attack", "metric"]].astype(str).values)) == \
        sorted(map(tuple, on_cpu[["client", "attack", "metric"]].astype(str).values))
    assert_finite_scores(on_gpu)
