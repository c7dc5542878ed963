"""scheme.json has one owner (simulator.scheme_record): it round-trips, it is read strictly (an unknown or missing key
is one error naming the file and the key), files written by earlier versions still read, and the attacker reads
exactly what the runner writes."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from attacks.observe import load_run_info
from baselines.registry import get_scheme
from simulator.config import parse_config
from simulator.errors import MuprivError
from simulator.runner import run_scheme
from simulator.scheme_record import DataFormat, DPParams, SchemeRecord, Threat
from simulator.study import build_study

RECORD = SchemeRecord(
    scheme="dp-fedavg", summary="FedAvg with DP", params={"rounds": 2, "noise_multiplier": 1.0}, model={"d_model": 16},
    seed=3, observable="noised per-client updates", shared_parts=("encoder", "middle", "decoder"),
    device_parts=("encoder", "middle", "decoder"),
    threat=Threat(optimizer="adamw", lr=3e-3, local_epochs=1, batch_size=16, pos_weight=6.0, weight_decay=0.01,
                  kernel_lr=1e-3, schedule="constant"),
    dp=DPParams(mode="dp-sgd", noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, noise="secret"),
    clients=("client-000", "client-001"), partition_to_client={0: "client-000", 1: "client-001"}, engine="inline",
    data=DataFormat(length=512, fs=100.0, scale="none"))

# What `run-scheme` wrote before 2026-11-21 (commit e0eb733): no data block, no kernel_lr or schedule, no DP noise
# source. Such run folders must still be attackable.
OLD_FILE = {
    "scheme": "dp-fedavg", "summary": "FedAvg with DP", "params": {"rounds": 2}, "model": {"d_model": 16}, "seed": 0,
    "observable": "noised per-client updates", "shared_parts": ["encoder", "middle", "decoder"],
    "device_parts": ["encoder", "middle", "decoder"],
    "threat": {"optimizer": "adamw", "lr": 0.003, "local_epochs": 1, "batch_size": 16, "pos_weight": 6.0, "weight_decay": 0.01},
    "dp": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-05, "mode": "dp-sgd"},
    "clients": ["client-000"], "partition_to_client": {"0": "client-000"}, "engine": "inline",
}


def test_a_record_round_trips_through_json():
    assert SchemeRecord.from_json(RECORD.to_json()) == RECORD
    on_device = dataclasses.replace(RECORD, scheme="mu-ft", observable="nothing", dp=None, shared_parts=())
    assert SchemeRecord.from_json(on_device.to_json()) == on_device
    assert json.loads(on_device.to_json())["dp"] is None


def test_an_old_file_reads_with_its_documented_defaults_and_writes_back_unchanged(tmp_path):
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps(OLD_FILE))
    record = SchemeRecord.read(path)
    assert record.data is None and record.threat.kernel_lr is None and record.threat.schedule is None
    assert record.dp.noise is None and record.dp.noise_source == "seeded"
    assert json.loads(record.to_json()) == OLD_FILE


@pytest.mark.parametrize("edit, key", [
    (lambda d: d.update(colour="red"), "key colour: unknown key"),
    (lambda d: d.pop("observable"), "key observable: missing"),
    (lambda d: d["threat"].update({"kernel-lr": 1e-3}), "key threat.kernel-lr: unknown key"),  # the old alias
    (lambda d: d["threat"].pop("lr"), "key threat.lr: missing"),
    (lambda d: d["threat"].update(optimizer="adam"), "key threat.optimizer: 'adam' is not one of adamw, sgd"),
    (lambda d: d["dp"].update(epsilon=3.0), "key dp.epsilon: unknown key"),
    (lambda d: d.update(data={"length": 512, "fs": 100.0}), "key data.scale: missing"),
    (lambda d: d.update(seed="0"), "key seed: '0' is not an integer"),
    (lambda d: d.update(observable="everything"), "key observable: 'everything' is not one of"),
    (lambda d: d.update(partition_to_client={"a": "client-000"}), "key partition_to_client.a: must map"),
])
def test_an_unknown_missing_or_mistyped_key_is_one_error_naming_the_file_and_the_key(tmp_path, edit, key):
    info = json.loads(json.dumps(OLD_FILE))
    edit(info)
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps(info))
    with pytest.raises(MuprivError) as err:
        SchemeRecord.read(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}") and "\n" not in message


def test_not_json_and_not_an_object_are_errors_too(tmp_path):
    path = tmp_path / "scheme.json"
    path.write_text("{not json")
    with pytest.raises(MuprivError, match="scheme.json is not valid JSON"):
        SchemeRecord.read(path)
    path.write_text("[]")
    with pytest.raises(MuprivError, match=r"scheme.json: key \(top level\): is not a JSON object"):
        SchemeRecord.read(path)


TINY = {
    "model": {"d_model": 16, "d_state": 8},
    "data": {"synthetic_records": 32, "fs": 50.0, "length": 128},
    "train": {"full_epochs": 1, "mu_epochs": 0},
    "finetune": {"epochs": 1, "batch_size": 8, "kernel_lr": 2e-3},
    "cohort": {"clients": 2, "records_per_client": 8, "test_records": 8},
    "federation": {"budget": "as-configured", "rounds": 1},
    "schemes": {"fedprox": {"mu": 0.05}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("record")
    yield build_study(parse_config(TINY), root / "work", cache_dir=root / "cache")
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["fedprox", "dp-fedavg", "mu-ft"])
def test_the_attacker_reads_what_the_runner_writes(study, tmp_path, name):
    run = run_scheme(study, name, tmp_path / "work")
    folder = run.save(tmp_path / "cell", study)
    written = run.record(study)
    info = load_run_info(folder)
    assert info.record == written == SchemeRecord.read(folder / "scheme.json")
    assert info.scheme == name and info.clients == tuple(c.id for c in study.clients)
    assert (info.data.length, info.data.fs, info.data.source) == (128, 50.0, "scheme.json data")
    assert (info.training.lr, info.training.kernel_lr, info.training.batch_size) == (3e-3, 2e-3, 8)
    assert info.training.prox_mu == (0.05 if name == "fedprox" else 0.0)
    assert info.training.schedule == ("constant" if name == "dp-fedavg" else "cosine")
    assert (info.dp is None) == (name != "dp-fedavg")
    assert info.threat.observable == get_scheme(name).observable
