"""data.source_holdout: server records no phase trains or selects on, and forgetting is measured on them."""
import json

import pandas as pd
import pytest

import simulator.study as study_module
from simulator.config import parse_config
from simulator.core.checkpoint import load_model
from simulator.core.phases import evaluate
from simulator.datasets import split_train_val
from simulator.errors import MuprivError
from simulator.report.load import RunData
from simulator.report.render import build_report
from simulator.simulate import simulate
from simulator.study import build_cohort, build_study, split_source

TINY = {"model": {"d_model": 16, "d_state": 8}, "data": {"synthetic_records": 80, "fs": 50.0, "length": 256},
        "train": {"full_epochs": 1, "mu_epochs": 1, "batch_size": 16},
        "finetune": {"epochs": 1, "batch_size": 8},
        "cohort": {"clients": 2, "records_per_client": 8, "test_records": 12},
        "schemes": {"run": ["mu-ft"]}, "attacks": {"enabled": False}, "report": {"curves": False}}


def _rows(t) -> set[bytes]:
    return {x.numpy().tobytes() for x in t.x}


def _config(holdout: float):
    return parse_config({**TINY, "data": {**TINY["data"], "source_holdout": holdout}})


def test_without_a_holdout_the_split_is_the_earlier_one():
    cfg = _config(0.0)
    source = build_cohort(cfg).source
    train, val, holdout = split_source(source, cfg)
    old_train, old_val = split_train_val(source, cfg.data.val_fraction, cfg.seed)
    assert holdout is None
    assert _rows(train) == _rows(old_train) and _rows(val) == _rows(old_val)


def test_the_holdout_is_disjoint_and_never_reaches_pretraining(tmp_path, monkeypatch, one_torch_thread):
    cfg = _config(0.25)
    seen = []
    real = study_module.train_plan

    def spying(model, plan, train, val, **kw):
        seen.extend([*train.values(), *val.values()])
        return real(model, plan, train, val, **kw)

    monkeypatch.setattr(study_module, "train_plan", spying)
    study = build_study(cfg, tmp_path / "work", cache_dir=tmp_path / "cache")
    train, val, held = _rows(study.source_train), _rows(study.source_test), _rows(study.source_holdout)
    assert len(held) == 20 and len(train) + len(val) + len(held) == 80
    assert not held & train and not held & val and not train & val
    assert seen and all(not _rows(t) & held for t in seen)  # pretraining trained and selected without it
    assert study.source_eval is study.source_holdout and study.source_eval_name == "holdout"


def test_a_holdout_too_large_for_the_source_is_one_error_line():
    cfg = parse_config({**TINY, "data": {**TINY["data"], "synthetic_records": 4, "source_holdout": 0.9}})
    with pytest.raises(MuprivError, match="source_holdout"):
        split_source(build_cohort(cfg).source, cfg)


def test_forgetting_is_measured_on_the_holdout_and_the_report_says_so(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("MUPRIV_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _config(0.25)
    run_dir = simulate(cfg, runs_root=tmp_path / "runs", name="h").run_dir
    facts = json.loads((run_dir / "manifest.json").read_text())["studies"]["0"]
    assert facts["source_scored_on"] == "holdout" and facts["source_holdout"] == 20

    study = build_study(cfg, tmp_path / "again", cache_dir=tmp_path / "cache")
    pretrained, _ = load_model(run_dir / "pretrained" / "seed-0.pt", cfg.model)
    on_holdout = evaluate(pretrained.eval(), study.source_holdout).macro_auroc
    on_validation = evaluate(pretrained.eval(), study.source_test).macro_auroc
    assert on_holdout != on_validation  # the check below can tell the two sets apart
    results = pd.read_csv(run_dir / "results.csv")
    wide = results.pivot_table(index="client", columns="metric", values="value")
    before = wide["forgetting_macro_auroc"] + wide["source_macro_auroc"]  # forgetting = before - after
    assert before.to_numpy() == pytest.approx([on_holdout] * len(wide), abs=1e-9)

    _, blocks, _ = build_report(RunData(run_dir, results, manifest=json.loads((run_dir / "manifest.json").read_text())))
    text = "\n".join(str(getattr(b, "text", "")) for b in blocks)
    assert "measured on the server's holdout records, which no phase trained or selected on" in text
    _, blocks, _ = build_report(RunData(run_dir, results, manifest={"studies": {"0": {**facts, "source_scored_on": "validation"}}}))
    assert "on which pretraining also picked its best epochs" in "\n".join(str(getattr(b, "text", "")) for b in blocks)
