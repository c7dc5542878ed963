"""A pretraining phase that keeps epoch 0 changed nothing: the run records it and the report says so."""
from pathlib import Path

import pandas as pd
import torch

from simulator.config import parse_config
from simulator.core.model import TDSSM
from simulator.report.load import RunData
from simulator.report.render import build_report
from simulator.provenance import study_facts
from simulator.study import _seeded, build_study

# lr 1e-30 moves no float32 weight: no epoch can beat the start, so both phases keep epoch 0.
TINY = {"model": {"d_model": 16, "d_state": 8}, "data": {"synthetic_records": 48, "fs": 50.0, "length": 256},
        "train": {"full_epochs": 1, "mu_epochs": 1, "lr": 1e-30, "kernel_lr": 1e-30, "batch_size": 16},
        "cohort": {"clients": 2, "records_per_client": 6, "test_records": 12, "test_min_positives": 2}}


def _text(blocks) -> str:
    return "\n".join(str(getattr(b, "text", "")) for b in blocks)


def test_phases_that_keep_epoch_0_are_recorded_and_reported(tmp_path, one_torch_thread):
    cfg = parse_config(TINY)
    study = build_study(cfg, tmp_path / "work", cache_dir=tmp_path / "cache")
    assert study.unchanged_phases() == ["full", "mu-train"]
    with _seeded(cfg.seed):
        initial = TDSSM(cfg.model).state_dict()
    assert all(torch.equal(initial[k], v) for k, v in study.pretrained().state_dict().items())  # bitwise the start
    log = study.pretrain_log
    assert [p["best_epoch"] for p in log] == [0, 0] and log[1]["val_macro_auroc"] == [log[1]["start_val_macro_auroc"]]
    cached = build_study(cfg, tmp_path / "work2", cache_dir=tmp_path / "cache")
    assert cached.pretrain_cached and cached.pretrain_log == log  # read back from the checkpoint

    facts = study_facts(study, Path("pretrained/seed-0.pt"))
    assert facts["pretrained"]["phases"] == log
    results = pd.DataFrame([(0, "mu-ft", "client-000", "personal_macro_auroc", 0.7)],
                           columns=["seed", "scheme", "client", "metric", "value"])
    _, blocks, _ = build_report(RunData(tmp_path, results, manifest={"studies": {"0": facts}}))
    text = _text(blocks)
    assert "µ-Training kept epoch 0 at seed 0 (of 1): the pretrained model is the full-training model." in text
    assert "Full training kept epoch 0 at seed 0 (of 1): µ-Training started from the initial model." in text

    trained = {**facts, "pretrained": {**facts["pretrained"], "phases": [{**p, "best_epoch": 1} for p in log]}}
    _, blocks, _ = build_report(RunData(tmp_path, results, manifest={"studies": {"0": trained, "1": facts}}))
    assert "µ-Training kept epoch 0 at seed 1 (of 2)" in _text(blocks)
    _, blocks, _ = build_report(RunData(tmp_path, results, manifest={"studies": {"0": trained}}))
    assert "kept epoch 0" not in _text(blocks)
