"""The batched client backend ([federation] batch_clients): a round's clients train as one stacked computation
and give what training them one by one gives, message for message and to float tolerance."""
from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import pytest
import torch

from baselines.setup import read_probe
from simulator.config import parse_config
from simulator.core.jobs import TrainingJob, train_now
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import Phase, ProximalTerm
from simulator.core.stacked import stack_key, stack_parameters, stacked_forward, train_stacked
from simulator.core.tensors import ECGTensors
from simulator.errors import MuprivError
from simulator.runner import run_scheme
from simulator.study import build_study
from tests.helpers import tiny_study

CFG = ModelConfig(d_model=16, d_state=8, ncp_units=12, dropout=0.1)
BYTES = ["payload_bytes", "bytes", "content_bytes", "object_bytes"]


def _data(n: int, seed: int, length: int = 64) -> ECGTensors:
    g = torch.Generator().manual_seed(seed)
    return ECGTensors(torch.randn(n, length, 12, generator=g), (torch.rand(n, 6, generator=g) < 0.3).float(),
                      torch.rand(n, 6, generator=g) < 0.9)


def _models(k: int) -> list[TDSSM]:
    torch.manual_seed(3)
    return [TDSSM(CFG) for _ in range(k)]


def _max_diff(a: TDSSM, b: TDSSM) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_stacked_forward_is_each_clients_forward_in_eval_and_in_training():
    models = _models(3)
    x = torch.randn(3, 5, 64, 12)
    params = stack_parameters(models, set())
    expected = torch.stack([m.eval()(x[c]) for c, m in enumerate(models)])
    torch.testing.assert_close(stacked_forward(params, models[0], x), expected, rtol=1e-5, atol=1e-6)

    # training mode: client c's dropout masks come from its own generator, as train_phase's global stream would give
    seeds = [11, 12, 13]
    expected = []
    for c, m in enumerate(models):
        torch.manual_seed(seeds[c])
        expected.append(m.train()(x[c]))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    torch.testing.assert_close(stacked_forward(params, models[0], x, gens), torch.stack(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parts,proximal", [(("encoder", "decoder"), False), (("encoder", "middle", "decoder"), True),
                                            (("decoder",), False), (("encoder", "middle"), False)])
def test_stacked_training_equals_training_each_client_alone(parts, proximal):
    phase = Phase("device", parts, 3, batch_size=8, data="personal")
    datas = [_data(20, s) for s in range(3)]  # 20 records, batch 8: the last batch of each epoch is short
    start = _models(3)
    alone, together = [copy.deepcopy(m) for m in start], [copy.deepcopy(m) for m in start]
    logs_alone, logs_together = [], []

    def jobs(models, logs):
        return [TrainingJob(m, phase, d, 100 + c, ProximalTerm(0.1, m.parameters()) if proximal else None,
                            on_epoch=lambda log, c=c: logs.append((c, log.epoch, log.loss)))
                for c, (m, d) in enumerate(zip(models, datas))]

    seq = [train_now(job) for job in jobs(alone, logs_alone)]
    bat = train_stacked(jobs(together, logs_together))
    for a, b, s in zip(alone, together, start):
        assert _max_diff(a, s) > 1e-3, "training did not move the model"
        assert _max_diff(a, b) < 1e-5
        assert not b.training
        frozen = [n for n, _ in s.named_parameters() if n.split(".")[0] not in parts]
        for n in frozen:  # frozen parts stay bitwise the pretrained ones, as train_phase leaves them
            assert torch.equal(dict(b.named_parameters())[n], dict(s.named_parameters())[n])
    assert [o.result.steps for o in seq] == [o.result.steps for o in bat] == [9, 9, 9]
    for o_seq, o_bat in zip(seq, bat):
        np.testing.assert_allclose([h.loss for h in o_bat.result.history], [h.loss for h in o_seq.result.history],
                                   rtol=1e-5)
    assert [log[:2] for log in sorted(logs_together)] == [log[:2] for log in sorted(logs_alone)]
    np.testing.assert_allclose([log[2] for log in sorted(logs_together)], [log[2] for log in sorted(logs_alone)], rtol=1e-5)


def test_a_diverging_client_fails_alone_with_train_phases_error():
    phase = Phase("device", ("encoder", "decoder"), 2, batch_size=8, data="personal")
    datas = [_data(16, s) for s in range(3)]
    datas[1].x[0, :, 0] = 1e38  # finite, so the data passes its checks, but the loss overflows
    start = _models(3)
    with pytest.raises(MuprivError) as alone_error:
        train_now(TrainingJob(copy.deepcopy(start[1]), phase, datas[1], 7))
    alone = copy.deepcopy(start[0])
    train_now(TrainingJob(alone, phase, datas[0], 6))
    together = [copy.deepcopy(m) for m in start]
    out = train_stacked([TrainingJob(m, phase, d, 6 + c) for c, (m, d) in enumerate(zip(together, datas))])
    assert isinstance(out[1], MuprivError) and str(out[1]) == str(alone_error.value)
    assert not isinstance(out[0], Exception) and not isinstance(out[2], Exception)
    assert _max_diff(alone, together[0]) < 1e-5


def test_a_client_with_unusable_data_fails_alone():
    phase = Phase("device", ("encoder", "decoder"), 1, batch_size=8, data="personal")
    datas = [_data(16, s) for s in range(3)]
    datas[2].x[3, 0, 0] = float("nan")
    out = train_stacked([TrainingJob(m, phase, d, c) for c, (m, d) in enumerate(zip(_models(3), datas))])
    assert isinstance(out[2], MuprivError) and "NaN or infinite" in str(out[2])
    assert [o.result.steps for o in out[:2]] == [2, 2]


def test_jobs_that_cannot_train_together_say_why():
    model = _models(1)[0]
    data = _data(16, 0)
    mu = Phase("mu-train", ("middle",), 1, self_distill=True)
    assert stack_key(TrainingJob(model, mu, data, 0))[0] is None
    opaque = TrainingJob(model, Phase("d", ("decoder",), 1), data, 0, penalty=lambda: torch.zeros(()))
    assert "ProximalTerm" in stack_key(opaque)[1]
    plain = Phase("d", ("decoder",), 1)
    assert stack_key(TrainingJob(model, plain, data, 0))[0] != stack_key(TrainingJob(model, plain, _data(8, 0), 0))[0]


# ------------------------------------------------------------------------------------------- schemes on the engine
TINY = tiny_study(finetune={"epochs": 2},
                  schemes={"dp-fedavg": {"noise": "seeded"}})  # secret noise differs run to run, batched or not


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("batched")
    return build_study(parse_config(TINY), root / "work", cache_dir=root / "cache")


def _batched(study, **federation):
    table = copy.deepcopy(TINY)
    table["federation"].update(batch_clients=True, **federation)
    return dataclasses.replace(study, config=parse_config(table))


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedrep", "fedper", "fed-mu", "mu-ft", "local-ft", "secagg-fedavg",
                                  "dp-fedavg"])
def test_a_scheme_gives_the_same_messages_and_models_batched(study, tmp_path, caplog, name):
    alone = run_scheme(study, name, tmp_path / "alone")
    with caplog.at_level(logging.INFO, logger="simulator.core.jobs"):
        together = run_scheme(_batched(study), name, tmp_path / "together")
    a, b = alone.federation.ledger.to_frame(), together.federation.ledger.to_frame()
    assert len(a) == len(b) and a[BYTES].equals(b[BYTES])
    assert a[["round", "partition_id", "direction"]].equals(b[["round", "partition_id", "direction"]])
    assert together.federation.errors().empty
    for c in range(3):
        pa, pb = read_probe(alone.setup.probe_dir, c), read_probe(together.setup.probe_dir, c)
        for k, t in pa["state"].items():
            torch.testing.assert_close(pb["state"][k], t, rtol=1e-4, atol=1e-5)
    if name == "dp-fedavg":  # DP-SGD trains client by client, and says so
        assert "dp-sgd trains client by client" in caplog.text


def test_fraction_train_samples_the_same_clients_each_round_batched(study, tmp_path):
    params = dataclasses.replace(study.config.scheme_params("fedavg"), fraction_train=0.67, rounds=3)
    alone = run_scheme(study, "fedavg", tmp_path / "alone", params=params).federation.ledger.to_frame()
    together = run_scheme(_batched(study), "fedavg", tmp_path / "together", params=params).federation.ledger.to_frame()
    up = lambda f: f[f["direction"] == "up"].groupby("round")["partition_id"].apply(sorted).to_dict()  # noqa: E731
    assert up(alone) == up(together)
    assert {len(v) for r, v in up(alone).items() if 1 <= r <= 3} == {2}  # Flower's FedAvg sampled 2 of 3 per round
    assert a_round_differs(up(alone))


def a_round_differs(per_round: dict) -> bool:
    rounds = [tuple(v) for r, v in per_round.items() if 1 <= r <= 3]
    return len(set(rounds)) > 1


def test_batch_clients_needs_the_inline_engine():
    table = copy.deepcopy(TINY)
    table["federation"].update(batch_clients=True, engine="ray")
    with pytest.raises(MuprivError, match="batch_clients"):
        parse_config(table)
