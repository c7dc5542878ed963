"""The federation engines: inline Grid (FedAvg, failures, isolation, SecAgg+), and Ray vs inline."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import ArrayRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from simulator.engine import EngineTimeout, ray_available, run_federation  # noqa: E402
from simulator.engine.toy import (  # noqa: E402
    ToySpec,
    make_toy_client_app,
    make_toy_secagg_apps,
    make_toy_server_app,
    toy_model,
)
from simulator.errors import MuprivError  # noqa: E402

SPEC = ToySpec()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fedavg(num_clients: int = 3, num_rounds: int = 2, seed: int = 0, **client_kw):
    return run_federation(
        make_toy_server_app(SPEC, num_clients=num_clients, num_rounds=num_rounds),
        make_toy_client_app(SPEC, **client_kw),
        num_clients,
        scheme="fedavg",
        seed=seed,
        timeout_s=120,
    )


def test_fedavg_inline_runs_and_is_deterministic():
    first, second = _fedavg(), _fedavg()
    a, b = first.final_arrays(), second.final_arrays()
    assert set(a) == {"weight", "bias"}
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs between two runs with the same seed"
    init = {k: v.numpy() for k, v in toy_model(SPEC).state_dict().items()}
    assert not np.array_equal(a["weight"], init["weight"]), "training did not move the weights"
    res = first.strategy_result()
    assert sorted(res.train_metrics_clientapp) == [1, 2]
    assert sorted(res.evaluate_metrics_clientapp) == [1, 2]
    assert first.errors().empty
    # 3 clients x 2 rounds x (train + evaluate) x (down + up)
    assert len(first.ledger) == 3 * 2 * 2 * 2
    assert sorted(first.node_to_partition.values()) == [0, 1, 2]


def test_each_node_keeps_its_context_across_rounds():
    res = _fedavg(num_rounds=3).strategy_result()
    # every client counts the rounds it saw in its own context.state; the mean is the round
    for rnd, rec in res.train_metrics_clientapp.items():
        assert rec["rounds-seen"] == pytest.approx(rnd)


def test_failing_client_is_reported_and_fedavg_aggregates_the_rest():
    result = _fedavg(fail=lambda pid, rnd: pid == 1 and rnd == 2)
    errors = result.errors()
    assert len(errors) == 1
    err = errors.iloc[0]
    assert (err["round"], err["partition_id"], err["message_type"]) == (2, 1, "train")
    assert err["error_code"] == 2  # ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "toy client 1 fails in round 2" in err["error_reason"]

    # FedAvg (min_train_nodes=2 satisfied) averaged the two replies it got in round 2
    frame = result.ledger.to_frame()
    ups = frame[(frame["round"] == 2) & (frame["direction"] == "up") & (frame["message_type"] == "train")]
    ok = ups[ups["error_code"].isna()]
    assert sorted(ok["partition_id"]) == [0, 2]
    final = result.final_arrays()
    for name in ("weight", "bias"):
        mean = np.mean([result.ledger.payload(r)[f"arrays/{name}"] for r in ok["row"]], axis=0)
        np.testing.assert_allclose(final[name], mean, rtol=1e-6, atol=1e-7)
    assert 2 in result.strategy_result().train_metrics_clientapp


def test_server_and_client_never_share_objects():
    sent: dict[str, object] = {}
    seen: list[tuple[int, int]] = []

    client = ClientApp()

    @client.query()
    def echo(msg: Message, context: Context) -> Message:
        arr = msg.content["arrays"]
        seen.append((id(msg.content), id(arr)))
        return Message(msg.content, reply_to=msg)  # echo the very object it received

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        content = RecordDict({"arrays": ArrayRecord(toy_model(SPEC).state_dict())})
        sent["content"] = content
        msgs = [Message(content, node, "query") for node in grid.get_node_ids()]
        sent["replies"] = list(grid.send_and_receive(msgs))

    run_federation(server, client, 2)
    replies = sent["replies"]
    assert len(replies) == 2 and len(seen) == 2
    assert all(cid != id(sent["content"]) for cid, _ in seen)
    assert len({cid for cid, _ in seen}) == 2  # each client got its own copy
    for reply in replies:
        assert reply.content is not sent["content"]
        got = reply.content["arrays"]["weight"].numpy()
        np.testing.assert_array_equal(got, sent["content"]["arrays"]["weight"].numpy())


def test_inline_timeout_is_a_clear_error():
    def slow(pid: int, rnd: int) -> bool:
        time.sleep(0.25)
        return False

    with pytest.raises(EngineTimeout, match="timeout_s"):
        run_federation(
            make_toy_server_app(SPEC, num_clients=3, num_rounds=3),
            make_toy_client_app(SPEC, fail=slow),
            3,
            timeout_s=0.5,
        )


def test_unknown_engine_is_one_clear_error():
    with pytest.raises(MuprivError, match="unknown engine 'grpc'"):
        run_federation(make_toy_server_app(SPEC, num_clients=2), make_toy_client_app(SPEC), 2, engine="grpc")


def test_secaggplus_legacy_workflow_runs_on_the_inline_grid():
    server, client = make_toy_secagg_apps(SPEC, num_clients=3, num_rounds=2)
    secagg = run_federation(server, client, 3, scheme="secagg-fedavg", timeout_s=120)
    plain = _fedavg()
    a, b = secagg.final_arrays(), plain.final_arrays()
    for k in ("weight", "bias"):  # the sum is only recovered up to SecAgg+'s quantisation
        np.testing.assert_allclose(a[k], b[k], atol=1e-3)
    frame = secagg.ledger.to_frame()
    assert secagg.errors().empty
    # the server never receives a client's model as an array: uploads are masked vectors
    assert frame.loc[frame["direction"] == "up", "n_params"].sum() == 0
    assert set(frame["round"]) == {1, 2}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(not ray_available(), reason='Ray not installed: pip install -c constraints.txt "flwr[simulation]==1.41.0"')
def test_ray_gives_the_same_weights_as_inline():
    ray_res = run_federation(
        make_toy_server_app(SPEC, num_clients=3, num_rounds=2),
        make_toy_client_app(SPEC),
        3,
        engine="ray",
        scheme="fedavg",
        timeout_s=300,
    )
    inline = _fedavg()
    a, b = ray_res.final_arrays(), inline.final_arrays()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    # the ledger is filled on the ray engine too, with partitions joined from the clients
    rf, inf = ray_res.ledger.to_frame(), inline.ledger.to_frame()
    assert len(rf) == len(inf)
    assert sorted(rf["partition_id"].unique()) == [0, 1, 2]
    assert (rf.groupby(["round", "direction"])["content_bytes"].sum()
            == inf.groupby(["round", "direction"])["content_bytes"].sum()).all()
