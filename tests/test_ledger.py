"""The WireLedger: bytes from Flower's serialisation, payloads bitwise, save/load."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.common.serde import message_to_proto  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from simulator.engine import run_federation  # noqa: E402
from simulator.engine.toy import ToySpec, local_train, make_toy_client_app, make_toy_server_app, toy_model  # noqa: E402
from simulator.errors import MuprivError  # noqa: E402
from simulator.ledger import WireLedger, summary_json  # noqa: E402

SPEC = ToySpec()
N = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run():
    uploads: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def on_upload(pid: int, rnd: int, weights: dict[str, torch.Tensor]) -> None:
        uploads[(pid, rnd)] = {k: v.clone() for k, v in weights.items()}

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_federation(
            make_toy_server_app(SPEC, num_clients=N, num_rounds=2),
            make_toy_client_app(SPEC, on_upload=on_upload),
            N,
            scheme="fedavg",
        )
    finally:
        torch.set_num_threads(before)
    return result, uploads


def _serialised_size(content: RecordDict, *, run_id: int, dst: int, src: int, reply_to: Message | None = None) -> int:
    """Size of a Flower message with this content, built independently of the engine."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, src
    try:
        if reply_to is None:
            msg = Message(content, dst, "train")
        else:
            msg = Message(content, reply_to=reply_to)
        msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return message_to_proto(msg).ByteSize()
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _request(run_id: int, dst: int) -> Message:
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, 1
    try:
        msg = Message(RecordDict(), dst, "train")
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
    msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    return msg


def test_fedavg_bytes_per_round_are_the_serialised_model_message_times_clients(run):
    result, _ = run
    run_id = result.context.run_id
    frame = result.ledger.to_frame()
    train = frame[frame["message_type"] == "train"]
    global_arrays = ArrayRecord(toy_model(SPEC).state_dict())  # what round 1 broadcasts
    for rnd in (1, 2):
        down = train[(train["round"] == rnd) & (train["direction"] == "down")]
        up = train[(train["round"] == rnd) & (train["direction"] == "up")]
        assert len(down) == len(up) == N
        # server -> clients: one model message per participating client
        if rnd == 2:  # round 2 broadcasts what the server aggregated: take it off the wire
            global_arrays = ArrayRecord({k.split("/", 1)[1]: Array(v) for k, v in result.ledger.payload(int(down["row"].iloc[0])).items()})
        content = RecordDict({"arrays": global_arrays, "config": ConfigRecord({"server-round": rnd})})
        expected = [_serialised_size(content, run_id=run_id, dst=int(n), src=1) for n in down["node_id"]]
        assert down["bytes"].sum() == sum(expected)
        assert down["content_bytes"].nunique() == 1  # the same model message to everyone ...
        assert down["sha256"].nunique() == 1  # ... byte for byte
        # clients -> server: recompute each client's update independently
        expected_up = []
        for _, row in up.iterrows():
            pid = int(row["partition_id"])
            weights, loss = local_train(SPEC, global_arrays, pid)
            reply = RecordDict(
                {
                    "arrays": ArrayRecord(weights),
                    "metrics": MetricRecord({"train_loss": loss, "num-examples": SPEC.samples, "rounds-seen": rnd}),
                }
            )
            request = _request(run_id, int(row["node_id"]))
            expected_up.append(_serialised_size(reply, run_id=run_id, dst=1, src=int(row["node_id"]), reply_to=request))
        assert up["bytes"].sum() == sum(expected_up)
        # and not an estimate from the parameter count
        assert (up["bytes"] > up["n_params"] * 4).all()
    per_round = result.ledger.bytes_per_round()
    assert set(per_round["direction"]) == {"down", "up"}


def test_up_payload_is_the_clients_weights_bitwise(run):
    result, uploads = run
    frame = result.ledger.to_frame()
    ups = frame[(frame["direction"] == "up") & (frame["message_type"] == "train")]
    assert len(ups) == len(uploads) == N * 2
    for _, row in ups.iterrows():
        sent = uploads[(int(row["partition_id"]), int(row["round"]))]
        payload = result.ledger.payload(int(row["row"]))
        assert sorted(payload) == sorted(f"arrays/{k}" for k in sent)
        for name, tensor in sent.items():
            got = payload[f"arrays/{name}"]
            assert got.dtype == np.float32 and got.shape == tuple(tensor.shape)
            assert got.tobytes() == tensor.numpy().tobytes()
        assert row["tensor_names"] == ["arrays/weight", "arrays/bias"]
        assert row["shapes"] == [[3, 8], [3]]
        assert row["dtypes"] == ["float32", "float32"]
        assert row["records"]["metrics"]["num-examples"] == SPEC.samples


def test_to_frame_has_no_payload_and_save_load_round_trips(run, tmp_path):
    result, _ = run
    ledger = result.ledger
    frame = ledger.to_frame()
    assert "payload" not in frame.columns
    for col in ("scheme", "round", "direction", "node_id", "partition_id", "message_type",
                "tensor_names", "shapes", "dtype" + "s", "bytes", "sha256"):
        assert col in frame.columns
    out = ledger.save(tmp_path / "ledger")
    assert sorted(p.name for p in out.iterdir()) == ["ledger.csv", "payloads.npz"]  # no temp files left
    back = WireLedger.load(out)
    pd.testing.assert_frame_equal(back.to_frame(), frame)
    for e in ledger:
        for name, arr in e.payload.items():
            assert back.payload(e.row)[name].tobytes() == arr.tobytes()
    assert len(ledger.tensor_frame()) == sum(len(e.tensor_names) for e in ledger)


def _synthetic_down() -> Message:
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 1
    try:
        down = Message(
            RecordDict(
                {
                    "cfg": ConfigRecord({"keys": [b"\x00\x01", b"\xff"], "flag": True, "name": "x", "server-round": 4}),
                    "w": ArrayRecord({"a": Array(np.arange(6, dtype=np.int64).reshape(2, 3))}),
                }
            ),
            42,
            "train",
        )
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
    down.metadata.__dict__["_message_id"] = "m1"
    return down


def test_records_with_bytes_errors_and_non_finite_values_survive_save_load(tmp_path):
    ledger = WireLedger("secagg-fedavg")
    down = _synthetic_down()
    ledger.record(down, direction="down", node_id=42, exchange=0, partition_id=5)
    up = Message(RecordDict({"m": MetricRecord({"loss": float("nan"), "n": 3})}), reply_to=down)
    ledger.record(up, direction="up", node_id=42, exchange=0, partition_id=5, round=4)
    err = Message(Error(code=2, reason="boom, \"quoted\"\nnewline"), reply_to=down)
    e = ledger.record(err, direction="up", node_id=42, exchange=0, partition_id=5, round=4)
    assert e.is_error and e.content_bytes == 0 and e.bytes > 0

    frame = ledger.to_frame()
    assert frame.loc[0, "round"] == 4  # read from the config's server-round
    back = WireLedger.load(ledger.save(tmp_path))
    assert back[0].records["cfg"]["keys"] == [b"\x00\x01", b"\xff"]
    assert np.isnan(back[1].records["m"]["loss"])
    assert back[2].error_reason == "boom, \"quoted\"\nnewline"
    assert back.payload(0)["w/a"].dtype == np.int64
    errs = back.errors()
    assert list(errs["row"]) == [2]


def test_bytes_in_records_are_stored_as_payloads_not_as_hex(tmp_path):
    """SecAgg+ sends each masked vector as bytes in a config record: as hex in the CSV that made a 64-patient
    run's ledgers 405 MB; they now sit in payloads.npz, and the run-level table keeps only their length."""
    ledger = WireLedger("secagg-fedavg")
    ledger.record(_synthetic_down(), direction="down", node_id=42, exchange=0, partition_id=5)
    out = ledger.save(tmp_path / "new")
    text = (out / "ledger.csv").read_text()
    assert "__bytes__" not in text and "ff" not in text.split("keys", 1)[1].split("]", 1)[0]
    assert WireLedger.load(out)[0].records["cfg"]["keys"] == [b"\x00\x01", b"\xff"]
    assert json.loads(summary_json(ledger[0].records))["cfg"]["keys"] == [{"__bytes_len__": 2}, {"__bytes_len__": 1}]

    # a ledger written before (bytes as hex in the CSV) still loads
    frame = pd.read_csv(out / "ledger.csv", dtype=str, keep_default_na=False)
    frame["records"] = [json.dumps({"cfg": {"__kind__": "config", "keys": [{"__bytes__": "0001"}]}})]
    frame.to_csv(out / "ledger.csv", index=False)
    assert WireLedger.load(out)[0].records["cfg"]["keys"] == [b"\x00\x01"]


def test_loading_a_missing_ledger_is_one_clear_error(tmp_path):
    with pytest.raises(MuprivError, match="ledger file .*ledger.csv is missing"):
        WireLedger.load(tmp_path)


def test_object_bytes_match_flowers_deflated_object_tree(run):
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, no_object_id_recompute

    down = _synthetic_down()
    with no_object_id_recompute():
        direct = sum(len(o.deflate()) for o in get_all_nested_objects(down).values())
    ledger = WireLedger()
    first = ledger.record(down, direction="down", node_id=42, exchange=0)
    again = ledger.record(down, direction="down", node_id=42, exchange=0)  # cached content tree
    assert first.object_bytes == again.object_bytes == direct
    result, _ = run
    frame = result.ledger.to_frame()
    assert (frame["object_bytes"] > frame["bytes"]).all()  # object headers cost extra
