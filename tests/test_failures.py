"""Client failures end to end: `[federation] fail` makes chosen devices raise in chosen rounds, and results.csv,
failures.csv, the report and the terminal table all say so (a scheme whose every round failed is never a
silent "Δ +0.000")."""
from __future__ import annotations

import pandas as pd
import pytest
from flwr.app import ConfigRecord, Metadata, RecordDict
from flwr.app.message.message import make_message
from typer.testing import CliRunner

from baselines.faults import should_fail
from simulator.cli import app
from simulator.config import parse_config, parse_fail
from simulator.errors import MuprivError

TINY = """
seed = 0
[model]
d_model = 16
d_state = 8
[data]
synthetic_records = 64
fs = 50.0
length = 256
[train]
full_epochs = 1
mu_epochs = 1
[finetune]
epochs = 1
batch_size = 8
[cohort]
clients = 3
records_per_client = 12
test_records = 12
[federation]
budget = "as-configured"
rounds = 2
"""


def _simulate(tmp_path, fail: str, name: str):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(TINY + f"fail = {fail}\n")
    result = CliRunner().invoke(app, ["simulate", str(cfg), "-o", str(tmp_path / "runs"), "--name", name,
                                      "--schemes", "mu-ft,fedavg", "--no-attacks"],
                                env={"MUPRIV_CACHE_DIR": str(tmp_path.parent / "failures-cache"), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").glob(f"{name}-*")
    return run, result.output


def test_one_client_failing_one_round_is_counted_listed_and_reported(tmp_path):
    run, output = _simulate(tmp_path, '["client-001@2"]', "one")
    results = pd.read_csv(run / "results.csv")
    failed = results[results["metric"] == "failed_rounds"].set_index(["scheme", "client"])["value"]
    assert failed[("fedavg", "client-001")] == 1 and failed.drop(("fedavg", "client-001")).eq(0).all()
    failures = pd.read_csv(run / "failures.csv")
    assert failures[["seed", "scheme", "client", "round", "message_type"]].values.tolist() == [[0, "fedavg", "client-001", 2, "train"]]
    assert failures["error"].iloc[0].startswith("InjectedFailure: injected failure (federation.fail) in round 2")
    report = (run / "report.md").read_text()
    assert "## Client failures" in report and "fedavg ⚠ 1/3 clients failed" in report
    assert "mu-ft ⚠" not in report and "every round failed" not in report
    assert "fedavg: 1 of 3 clients" in output


def test_a_scheme_whose_every_round_failed_is_never_a_silent_zero(tmp_path):
    run, output = _simulate(tmp_path, '["*@*"]', "all")
    results = pd.read_csv(run / "results.csv")
    fedavg = results[results["scheme"] == "fedavg"].pivot_table(index="client", columns="metric", values="value")
    assert (fedavg["failed_rounds"] == 2).all() and (fedavg["rounds"] == 2).all()
    # the devices still received the final (= pretrained) model: the numbers exist, and equal the start
    assert (fedavg["personal_macro_auroc"] - fedavg["pretrained_personal_macro_auroc"]).abs().max() < 1e-12
    assert set(pd.read_csv(run / "failures.csv")["scheme"]) == {"mu-ft", "fedavg"}
    report = (run / "report.md").read_text()
    summary = report.split("## Summary", 1)[1].split("## Plots", 1)[0]  # the summary and its quantity tables
    assert "| fedavg ⚠ every round failed |" in summary and "| mu-ft ⚠ every round failed |" in summary
    assert "| fedavg |" not in summary
    assert "a Δ of +0.000 means nothing ran" in report
    assert "every round failed" in output and "fedavg: every client failed in every round" in output


def test_fail_entries_are_validated():
    assert parse_fail(("client-001@2", "*@*", "c@0")) == [("client-001", 2), ("*", "*"), ("c", 0)]
    for bad in ("client-001", "client-001@", "@2", "client-001@-1", "client-001@two", "a@1@2"):
        with pytest.raises(MuprivError, match="is not \"<client>@<round>\""):
            parse_config({"federation": {"fail": [bad]}})


def test_an_unknown_client_is_refused_before_anything_trains(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY + 'fail = ["client-01@1"]\n')
    result = CliRunner().invoke(app, ["simulate", str(cfg), "-o", str(tmp_path / "runs"), "--no-attacks"],
                                env={"MUPRIV_CACHE_DIR": str(tmp_path / "cache")})
    error = result.output.strip().splitlines()[-1]  # after the progress lines
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "Traceback" not in result.output
    assert error.startswith("error: federation.fail names client 'client-01'") and "did you mean 'client-001'?" in error
    # refused before pretraining (the cohort, which names the clients, is built and cached first)
    assert not list((tmp_path / "cache").glob("pretrained/*"))
    assert not list((tmp_path / "runs").iterdir())  # and a run that never started leaves no .partial folder


@pytest.mark.parametrize("entry,message_type,rnd,fails", [
    ("1", "train", 1, True), ("1", "train", 2, False), ("3", "evaluate.final", 3, True),
    ("*", "train", 1, True), ("*", "query.upload", 1, True), ("*", "query.deliver", 0, False),
    ("*", "evaluate.final", 3, False),
])
def test_which_messages_fail(entry, message_type, rnd, fails):
    faults = {"1": [entry if entry == "*" else int(entry)]}
    # FedAvg's messages carry the round in their config (no group id), the other schemes' in the group id
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                    created_at=0.0, ttl=60.0, message_type=message_type)
    msg = make_message(meta, RecordDict({"config": ConfigRecord({"server-round": rnd})}))
    assert should_fail(faults, 1, msg) is fails and should_fail(faults, 0, msg) is False


def test_secure_aggregation_that_would_sample_too_few_clients_is_refused():
    """Before: fraction_train 0.25 of 4 clients sampled 1 per round, SecAgg+ could unmask nothing, and the run
    reported 0 rounds and Δ +0.000 for every client without an error."""
    table = {"cohort": {"clients": 4}, "schemes": {"run": ["secagg-fedavg"], "secagg-fedavg": {"fraction_train": 0.25}}}
    with pytest.raises(MuprivError, match="samples 1 of 4 clients per round, fewer than secure aggregation needs"):
        parse_config(table)
    table["schemes"]["secagg-fedavg"]["fraction_train"] = 0.5
    assert parse_config(table).scheme_params("secagg-fedavg").fraction_train == 0.5
