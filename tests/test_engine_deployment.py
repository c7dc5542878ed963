"""The deployment engine: a real SuperLink + SuperNodes on loopback, apps submitted with `flwr run`.

Each federation run costs tens of seconds (process start-up, one flwr-clientapp process per message,
SuperNodes polling every 3 s), so every run happens once in a module fixture and the asserts share it.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from simulator.config import parse_config  # noqa: E402
from simulator.engine import EngineTimeout, run_federation  # noqa: E402
from simulator.engine import deployment  # noqa: E402
from simulator.engine.toy import toy_apps  # noqa: E402
from simulator.errors import MuprivError  # noqa: E402
from simulator.ledger import DOWN, UP  # noqa: E402



def _have_flower() -> bool:
    try:
        deployment._flower_bin()  # pylint: disable=protected-access
        return True
    except MuprivError:
        return False


pytestmark = pytest.mark.skipif(not _have_flower(), reason="flower-superlink is not installed")

TOY = "simulator.engine.toy:toy_apps"
TOY_CONFIG = {"toy-clients": 2, "toy-rounds": 1}
TIMEOUT_S = 300  # generous: a loaded CI box can be several times slower than a laptop
# Flower metadata that differs by runtime, per message: message ids are 64-hex object ids on the real
# runtime (36-char UUIDs inline), reply-to ids likewise, and task/node ids are random 64-bit varints.
METADATA_SLACK = 100

TINY = {
    "model": {"d_model": 16, "d_state": 8},
    "data": {"synthetic_records": 64, "fs": 50.0, "length": 256},
    "train": {"full_epochs": 1, "mu_epochs": 1},
    "finetune": {"epochs": 1, "batch_size": 8},
    "cohort": {"clients": 2, "records_per_client": 12},
    "federation": {"budget": "as-configured", "rounds": 1},
}


def _ours_alive() -> list[str]:
    """Live processes started by a deployment run of this test process (their env carries our pid)."""
    prefix = f"{deployment.TOKEN_ENV}={os.getpid()}-".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if b"\0" + prefix in b"\0" + env:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    server, client = toy_apps(TOY_CONFIG)
    inline = run_federation(server, client, 2, scheme="fedavg", run_config=TOY_CONFIG, timeout_s=TIMEOUT_S)
    deployed = run_federation(None, None, 2, engine="deployment", app_factory=TOY, scheme="fedavg",
                              run_config=TOY_CONFIG, timeout_s=TIMEOUT_S)
    left = _ours_alive()
    return inline, deployed, left


@pytest.fixture(scope="module")
def fedavg(tmp_path_factory):
    from simulator.runner import run_scheme
    from simulator.study import build_study

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("deploy-study")
    study = build_study(parse_config(TINY), root / "work", cache_dir=root / "cache")
    inline = run_scheme(study, "fedavg", root / "inline")
    deployed = run_scheme(study, "fedavg", root / "deployment", engine="deployment", timeout_s=TIMEOUT_S)
    return inline, deployed


def test_toy_fedavg_on_a_real_federation_matches_inline(toy):
    inline, deployed, left = toy
    assert deployed.engine == "deployment"
    assert deployed.errors().empty
    a, b = deployed.final_arrays(), inline.final_arrays()
    assert set(a) == set(b) == {"weight", "bias"}
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert sorted(deployed.strategy_result().train_metrics_clientapp) == [1]
    assert not left, f"processes survived a finished run: {left}"


def test_toy_ledger_has_the_same_messages_and_content_bytes(toy):
    inline, deployed, _ = toy
    df, inf = deployed.ledger.to_frame(), inline.ledger.to_frame()
    keys = ["message_type", "direction"]
    assert df.groupby(keys).size().to_dict() == inf.groupby(keys).size().to_dict()
    assert (df["direction"] == UP).sum() == (df["direction"] == DOWN).sum() == 4  # 2 clients x (train + evaluate)
    for col in ("content_bytes", "payload_bytes", "n_params"):
        assert df.groupby(keys)[col].sum().to_dict() == inf.groupby(keys)[col].sum().to_dict(), col
    # whole-message bytes differ only by Flower's metadata (ids), never by content
    per_message = (df.groupby(keys)["bytes"].mean() - inf.groupby(keys)["bytes"].mean()).abs()
    assert (per_message <= METADATA_SLACK).all(), per_message.to_dict()
    # the server saw real node ids; the partitions were joined from the clients' out-of-band notes
    assert sorted(deployed.node_to_partition.values()) == [0, 1]
    assert sorted(df["partition_id"].unique()) == [0, 1]
    assert set(df["node_id"]) == set(deployed.node_to_partition)


def test_fedavg_scheme_on_a_real_federation_matches_inline(fedavg):
    inline, deployed = fedavg
    assert deployed.federation.engine == "deployment"
    a, b = inline.table.set_index("client"), deployed.table.set_index("client")
    assert list(a.index) == list(b.index)
    assert (b["error"] == "").all(), b["error"].to_dict()
    np.testing.assert_allclose(b["personal_macro_auroc"], a["personal_macro_auroc"], atol=0.02)
    assert (b["content_bytes_up"] == a["content_bytes_up"]).all()
    assert (b["params_up"] == a["params_up"]).all() and (b["messages_up"] == a["messages_up"]).all()
    assert ((b["bytes_up"] - a["bytes_up"]).abs() <= METADATA_SLACK * b["messages_up"]).all()


def test_timeout_raises_and_leaves_no_process_behind():
    with pytest.raises(EngineTimeout, match="timeout_s=2"):
        run_federation(None, None, 2, engine="deployment", app_factory=TOY, run_config=TOY_CONFIG, timeout_s=2)
    assert not _ours_alive()


def test_keyboard_interrupt_stops_the_federation(monkeypatch):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(deployment, "_submit", interrupted)  # the SuperLink and SuperNodes are up by then
    with pytest.raises(KeyboardInterrupt):
        run_federation(None, None, 2, engine="deployment", app_factory=TOY, run_config=TOY_CONFIG, timeout_s=120)
    assert not _ours_alive()


@pytest.mark.parametrize("kwargs, message", [
    ({"num_clients": 0, "app_factory": TOY}, "num_clients must be at least 1"),
    ({"app_factory": None}, "needs app_factory='package.module:function'"),
    ({"app_factory": "simulator.nope:apps"}, "app_factory 'simulator.nope:apps' cannot be imported"),
    ({"app_factory": "simulator.engine.deploy_app:nope"}, "cannot be imported"),
    ({"app_factory": "simulator.engine.deploy_app:split_run_config"}, r"must return \(ServerApp, ClientApp\)"),
    ({"app_factory": TOY, "run_config": {"nested": {"a": 1}}}, r"run_config\['nested'\] is a dict"),
    ({"app_factory": TOY, "run_config": {"mupriv-deploy-seed": 1}}, "reserved"),
])
def test_bad_input_is_one_clear_line(kwargs, message):
    args = {"num_clients": 2, **kwargs}
    with pytest.raises(MuprivError, match=message) as err:
        run_federation(None, None, args.pop("num_clients"), engine="deployment", timeout_s=30, **args)
    assert "\n" not in str(err.value)
    assert not _ours_alive()


def test_config_accepts_the_deployment_engine():
    assert parse_config({"federation": {"engine": "deployment"}}).federation.engine == "deployment"
    with pytest.raises(MuprivError, match="'deployment'"):
        parse_config({"federation": {"engine": "kubernetes"}})
