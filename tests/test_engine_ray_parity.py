"""Every scheme gives the same results on the ray engine as on the inline engine, for the same seed.

One tiny study (3 clients, 2 rounds, d_model 16); every registered scheme runs on it inline
(well under a second each) and on Ray (~12-22 s each, mostly Ray's start-up), and each pair is
compared on what the study reports: every device's final model (bitwise), the per-client accuracy
and counts of the client table (exactly), and the wire ledger message by message (the same
messages per round and direction, the same node ids, tensor names, shapes, content bytes and
content hashes).

Why bitwise holds: the ray engine gives its nodes the inline engine's seeded ids and lists them
in partition order (`simulator.engine.ray_engine._use_seeded_node_ids`, `_InlineOrderGrid`), and
`LedgerGrid.send_and_receive` returns replies in push order, so the servers sample, sum and
concatenate the clients in the same order on both engines; each ClientApp trains with its own
seed and one torch thread on both.

What is not equal, asserted below as what it is:
- ``bytes`` (the whole serialised Message): the run id in every message's metadata is derived from
  the seed inline and drawn by Flower on Ray, and its varint can be one byte longer or shorter.
- ``dp-fedavg`` runs with ``noise = "seeded"``: the default ``"secret"`` draws the DP-SGD noise from
  the OS on purpose, so two runs differ on any engine. Its ``client-level`` mode adds the server's
  noise with numpy's global RNG (Flower's ``add_gaussian_noise_inplace``), which every engine seeds
  from the run seed where the server runs; checked below.
- ``secagg-fedavg``: SecAgg+ draws fresh key pairs and masks from the OS on every run, so its
  protocol messages hash differently between any two runs; only those differ.

Run with ``make test-ray`` (or ``pytest -m ray``); skipped when Ray is not installed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from baselines.registry import get_scheme, scheme_names  # noqa: E402
from baselines.setup import read_probe, read_round_probes  # noqa: E402
from simulator.config import parse_config  # noqa: E402
from simulator.engine.ray_engine import RAY_INSTALL_HINT, ray_available  # noqa: E402
from simulator.ledger import SERVER  # noqa: E402
from simulator.runner import run_scheme  # noqa: E402
from simulator.study import build_study  # noqa: E402
from tests.helpers import tiny_study  # noqa: E402


def needs_ray(test):
    """Marked `ray` (``make test-ray``, ``pytest -m ray``) and skipped with the install hint without Ray."""
    return pytest.mark.ray(pytest.mark.skipif(not ray_available(), reason=f"Ray not installed: {RAY_INSTALL_HINT}")(test))


TINY = tiny_study(schemes={"dp-fedavg": {"noise": "seeded"}, "distill-share": {"iterations": 5}})
CLIENT_LEVEL = "dp-fedavg/client-level"
# the client table's columns that must be equal: accuracy (and forgetting) and the counts
SAME_PREFIXES = ("pretrained_", "personal_", "source_", "forgetting_")
SAME_COUNTS = ("content_bytes_up", "params_up", "messages_up", "rounds", "local_steps", "failed_rounds", "epsilon",
               "trainable_params", "flops_per_step", "peak_memory_bytes", "error")
# the ledger's columns that must be equal, message by message
SAME_LEDGER = ["round", "exchange", "direction", "node_id", "partition_id", "message_type", "group_id", "tensor_names",
               "shapes", "dtypes", "n_params", "content_bytes", "payload_bytes", "sha256", "error_code"]


def _cases() -> list[str]:
    return [*scheme_names(), CLIENT_LEVEL]


def _run(study, case: str, root: Path, engine: str):
    """One scheme run; "<scheme>/<mode>" runs that scheme in another mode."""
    name, _, mode = case.partition("/")
    params = None
    if mode:
        params = get_scheme(name).make_params({**vars(study.config.scheme_params(name)), "mode": mode})
    return run_scheme(study, name, root / engine / case.replace("/", "-"), params=params, engine=engine, timeout_s=300)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("parity-study")
    return build_study(parse_config(TINY), root / "work", cache_dir=root / "cache")


class _Pairs(dict):
    """(inline run, ray run) per case, each pair made when a test first asks for it, so that
    ``-k fedavg`` runs one Ray cluster, not twelve; Ray runs one at a time (one cluster in memory)."""

    def __init__(self, study, root: Path) -> None:
        super().__init__()
        self.study, self.root = study, root

    def __missing__(self, case: str):
        self[case] = (_run(self.study, case, self.root, "inline"), _run(self.study, case, self.root, "ray"))
        return self[case]


@pytest.fixture(scope="module")
def pairs(study, tmp_path_factory):
    return _Pairs(study, tmp_path_factory.mktemp("parity-runs"))


def _final_states(run, study) -> dict[int, dict[str, torch.Tensor]]:
    probes = Path(run.setup.probe_dir)
    return {c.partition: read_probe(probes, c.partition)["state"] for c in study.clients}


def _ledger(run) -> pd.DataFrame:
    """The ledger in a canonical order: replies arrive in a different order on Ray, the content does not."""
    frame = run.ledger.to_frame()
    frame = frame.assign(**{col: frame[col].map(repr) for col in ("tensor_names", "shapes", "dtypes")})
    return frame.sort_values(["exchange", "direction", "partition_id", "message_type"], kind="stable").reset_index(drop=True)


def _varint_len(value: int) -> int:
    return max(1, (int(value).bit_length() + 6) // 7)


@needs_ray
@pytest.mark.parametrize("case", _cases())
def test_final_models_are_bitwise_equal(pairs, study, case):
    inline, ray = pairs[case]
    a, b = _final_states(inline, study), _final_states(ray, study)
    for partition, state in a.items():
        assert state.keys() == b[partition].keys()
        for name, value in state.items():
            assert torch.equal(value, b[partition][name]), f"{case}: client {partition} {name} differs by " \
                f"{(value - b[partition][name]).abs().max().item():.3g}"


@needs_ray
@pytest.mark.parametrize("case", _cases())
def test_round_probes_are_bitwise_equal(pairs, case):
    """The models after every round (rounds.csv's curves) too, on the devices and at the server."""
    inline, ray = (read_round_probes(Path(run.setup.probe_dir)) for run in pairs[case])
    assert inline.devices.keys() == ray.devices.keys() and inline.globals.keys() == ray.globals.keys()
    for rnd, state in inline.globals.items():
        assert all(torch.equal(v, ray.globals[rnd][k]) for k, v in state.items()), (case, "global", rnd)
    for partition, rounds in inline.devices.items():
        assert rounds.keys() == ray.devices[partition].keys(), (case, partition)
        for rnd, blob in rounds.items():
            other = ray.devices[partition][rnd]["state"]
            assert all(torch.equal(v, other[k]) for k, v in blob["state"].items()), (case, partition, rnd)


@needs_ray
@pytest.mark.parametrize("case", _cases())
def test_client_tables_are_equal(pairs, case):
    inline, ray = (run.table.set_index("client") for run in pairs[case])
    cols = [c for c in inline.columns if c.startswith(SAME_PREFIXES) or c in SAME_COUNTS]
    assert any(c.startswith("personal_") for c in cols) and "content_bytes_up" in cols
    pd.testing.assert_frame_equal(inline[cols], ray[cols], check_exact=True)


@needs_ray
@pytest.mark.parametrize("case", _cases())
def test_ledgers_hold_the_same_messages(pairs, case):
    inline, ray = (_ledger(run) for run in pairs[case])
    assert len(inline) == len(ray) > 0
    same = [c for c in SAME_LEDGER if not (case == "secagg-fedavg" and c == "sha256")]
    pd.testing.assert_frame_equal(inline[same], ray[same], check_exact=True)
    counts = [run.groupby(["round", "direction"]).size() for run in (inline, ray)]
    pd.testing.assert_series_equal(*counts)


@needs_ray
def test_secagg_differs_only_in_its_fresh_protocol_secrets(pairs, study, tmp_path):
    """SecAgg+ draws its key pairs and masks from the OS on every run, so its key, share and masked
    messages hash differently from run to run on any engine: exactly the messages that differ
    between two inline runs differ between inline and Ray; everything else, the unmasked aggregate
    the server learns (the ``server`` rows) and the final model sent down included, is the same."""
    inline, ray = (_ledger(run) for run in pairs["secagg-fedavg"])
    again = _ledger(_run(study, "secagg-fedavg", tmp_path, "inline"))
    fresh = inline["sha256"] != again["sha256"]
    assert fresh.any() and not fresh.all()
    pd.testing.assert_series_equal(inline["sha256"] != ray["sha256"], fresh)
    assert (inline["direction"] == SERVER).sum() == 2 and not fresh[inline["direction"] == SERVER].any()


@needs_ray
@pytest.mark.parametrize("case", _cases())
def test_whole_message_bytes_differ_only_by_the_run_id(pairs, case):
    """A message's metadata holds the run id once: inline's comes from the seed, Ray's from Flower."""
    run_inline, run_ray = pairs[case]
    shift = _varint_len(run_ray.federation.context.run_id) - _varint_len(run_inline.federation.context.run_id)
    inline, ray = _ledger(run_inline), _ledger(run_ray)
    wire = inline["direction"] != SERVER  # SecAgg+'s observed aggregate never crossed the wire
    diff = (ray["bytes"] - inline["bytes"])[wire]
    assert (diff == shift).all(), (case, shift, sorted(set(diff)))


@needs_ray
@pytest.mark.parametrize("case", ["fedavg", "secagg-fedavg"])
def test_the_node_map_is_the_inline_one(pairs, case):
    """Partition i is the same node id on both engines (the ids the servers order and sample by)."""
    inline, ray = (run.federation.node_to_partition for run in pairs[case])
    assert inline == ray and sorted(ray.values()) == [0, 1, 2]


# -- attaching to an existing Ray cluster (no Ray needed: nothing here starts it) ------------------
def test_without_an_address_the_run_gets_its_own_local_cluster(monkeypatch):
    """address="local": ray.init must not attach to a cluster it finds (it would refuse num_cpus)."""
    from simulator.engine.ray_engine import ray_backend_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = ray_backend_config(num_cpus=2, cpus_per_client=1.0)
    assert config["init_args"]["address"] == "local"
    assert config["init_args"]["num_cpus"] == 2 and config["init_args"]["num_gpus"] == 0
    assert config["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.0}


@pytest.mark.parametrize("argument,env", [("auto", None), (None, "10.0.0.5:6379"), ("ray://head:10001", "auto")])
def test_an_address_attaches_without_sizing_the_cluster(monkeypatch, argument, env):
    """The argument wins over RAY_ADDRESS; ray.init refuses num_cpus/num_gpus when it attaches."""
    from simulator.engine.ray_engine import ray_backend_config

    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    init_args = ray_backend_config(num_cpus=2, cpus_per_client=0.5, address=argument)["init_args"]
    assert init_args["address"] == (argument or env)
    assert "num_cpus" not in init_args and "num_gpus" not in init_args


def test_run_ray_hands_the_address_to_the_simulation_process(monkeypatch, tmp_path):
    """run_ray(address=...) reaches the backend_config its forked child gives run_simulation (the child
    is replaced by one that writes down what it got, so no Ray starts)."""
    import json

    from simulator.engine import outbox, ray_engine
    from simulator.ledger import WireLedger

    seen = tmp_path / "backend_config.json"

    def child(*args):  # noqa: ANN002, ANN202 - _child's positional arguments
        backend_config, work_dir = args[3], args[8]
        seen.write_text(json.dumps(backend_config))
        outbox.write_result(Path(work_dir), {"entries": [], "context": None, "error": None, "node_map": {}})
        os._exit(0)

    monkeypatch.setattr(ray_engine, "ray_available", lambda: True)
    monkeypatch.setattr(ray_engine, "_child", child)
    ray_engine.run_ray(None, None, 2, ledger=WireLedger("x"), timeout_s=30, address="head:6379")
    assert json.loads(seen.read_text())["init_args"]["address"] == "head:6379"
