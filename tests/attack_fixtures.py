"""Fixtures for the attack tests, not tests (pytest collects nothing here): a small TDSSM FedAvg federation on Flower
that writes a scheme run directory (scheme.json, ledger/, truth/) like the schemes do."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from simulator.core.model import PARTS, ModelConfig, TDSSM
from simulator.core.phases import Phase, train_phase
from simulator.core.tensors import ECGTensors, save_npz
from simulator.engine.api import run_federation
from simulator.ledger import LedgerEntry, WireLedger
from simulator.scheme_record import DataFormat, DPParams, SchemeRecord, Threat

CFG = ModelConfig(d_model=16, dropout=0.0)
LENGTH = 256


def client_data(n_clients: int, per_client: int, length: int = LENGTH, seed: int = 0) -> list[ECGTensors]:
    """Each client a few synthetic records (the project's generator), min-max scaled, `length` samples."""
    from simulator.data.preprocess import PreprocessConfig, preprocess_records
    from simulator.data.synthetic import synthesize

    out = []
    for k in range(n_clients):
        recs = preprocess_records(synthesize(per_client, seed=seed * 1000 + k + 1, n_patients=1),
                                  PreprocessConfig(fs=400.0, length=length))
        out.append(ECGTensors.from_arrays(recs.signals, recs.labels))
    return out


def fedavg_apps(data: list[ECGTensors], *, rounds: int, lr: float, epochs: int, batch_size: int, optimizer: str,
                cfg: ModelConfig = CFG, seed: int = 0) -> tuple[ServerApp, ClientApp]:
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(seed)
        model = TDSSM(cfg)
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=len(data), min_evaluate_nodes=0,
                          min_available_nodes=len(data))
        strategy.start(grid=grid, initial_arrays=_params_record(model),
                       num_rounds=rounds, train_config=ConfigRecord({"lr": lr, "local-epochs": epochs, "batch-size": batch_size,
                                                                     "pos-weight": 6.0}))

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        model = TDSSM(cfg)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, a in msg.content["arrays"].items():
                params[n].copy_(torch.from_numpy(a.numpy().copy()))
        conf = msg.content["config"]
        rnd = int(conf["server-round"])
        if optimizer == "sgd":
            steps = _sgd(model, data[pid], float(conf["lr"]), int(conf["local-epochs"]), int(conf["batch-size"]))
        else:
            phase = Phase("device", ("encoder", "middle", "decoder"), int(conf["local-epochs"]), data="personal",
                          lr=float(conf["lr"]), batch_size=int(conf["batch-size"]))
            steps = train_phase(model, phase, data[pid], None, seed=seed * 1000 + pid * 10 + rnd).steps
        reply = RecordDict({"arrays": _params_record(model),
                            "metrics": MetricRecord({"num-examples": len(data[pid]), "local-steps": steps, "train-loss": 0.0})})
        return Message(reply, reply_to=msg)

    return server, client


def _params_record(model: TDSSM) -> ArrayRecord:
    return ArrayRecord({n: Array(p.detach().numpy().copy()) for n, p in model.named_parameters()})


def _sgd(model: TDSSM, data: ECGTensors, lr: float, epochs: int, batch_size: int) -> int:
    """Plain SGD, fixed batch order (what the SGD threat grants)."""
    from simulator.core.phases import masked_bce

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps = 0
    for _ in range(epochs):
        for i in range(0, len(data), batch_size):
            opt.zero_grad()
            masked_bce(model(data.x[i : i + batch_size]), data.y[i : i + batch_size], data.known[i : i + batch_size], 6.0).backward()
            opt.step()
            steps += 1
    return steps


def write_run_dir(run_dir: Path, *, scheme: str, ledger: WireLedger, data: list[ECGTensors], optimizer: str, lr: float,
                  epochs: int, batch_size: int, observable: str, cfg: ModelConfig = CFG, dp: dict | None = None,
                  length: int = LENGTH, shared_parts: tuple[str, ...] = PARTS, device_parts: tuple[str, ...] = PARTS) -> Path:
    """A scheme run directory as the runner writes it: scheme.json (a SchemeRecord), ledger/, truth/. SGD is granted
    with no weight decay and a constant learning rate, AdamW with the project's defaults."""
    run_dir.mkdir(parents=True, exist_ok=True)
    clients = [f"client-{k:03d}" for k in range(len(data))]
    sgd = optimizer == "sgd"
    record = SchemeRecord(
        scheme=scheme, summary=f"test fixture: {scheme}", params={}, model=dataclasses.asdict(cfg), seed=0,
        observable=observable, shared_parts=shared_parts, device_parts=device_parts,
        threat=Threat(optimizer=optimizer, lr=lr, local_epochs=epochs, batch_size=batch_size, pos_weight=6.0,
                      weight_decay=0.0 if sgd else 0.01, schedule="constant" if sgd else "cosine"),
        dp=None if dp is None else DPParams(**dp), clients=tuple(clients),
        partition_to_client=dict(enumerate(clients)), engine="inline",
        data=DataFormat(length=length, fs=400.0, scale="record"))
    (run_dir / "scheme.json").write_text(record.to_json())
    ledger.save(run_dir / "ledger")
    (run_dir / "truth").mkdir(exist_ok=True)
    for c, d in zip(clients, data):
        save_npz(d, run_dir / "truth" / f"{c}.npz")
    return run_dir


def fedavg_run_dir(run_dir: Path, *, n_clients: int = 2, per_client: int = 1, rounds: int = 1, optimizer: str = "sgd",
                   lr: float = 0.05, epochs: int = 1, batch_size: int = 32, scheme: str = "fedavg", seed: int = 0) -> Path:
    data = client_data(n_clients, per_client, seed=seed)
    server, client = fedavg_apps(data, rounds=rounds, lr=lr, epochs=epochs, batch_size=batch_size, optimizer=optimizer, seed=seed)
    result = run_federation(server, client, n_clients, scheme=scheme, seed=seed)
    return write_run_dir(run_dir, scheme=scheme, ledger=result.ledger, data=data, optimizer=optimizer, lr=lr, epochs=epochs,
                         batch_size=batch_size, observable="per-client updates")


def add_membership_files(run_dir: Path, heldout: int = 6) -> Path:
    """The files the schemes write for membership scoring, added to a fixture run: truth/heldout/<client>.npz
    (`heldout` records the client never trained on) and models/<client>.pt (the client's model after its last
    update)."""
    from attacks.observe import observe_run  # pylint: disable=import-outside-toplevel
    from simulator import layout  # pylint: disable=import-outside-toplevel

    info, observations = observe_run(run_dir)
    layout.heldout_file(run_dir, "x").parent.mkdir(parents=True, exist_ok=True)
    for k, client in enumerate(info.clients):
        save_npz(client_data(1, heldout, seed=50 + k)[0], layout.heldout_file(run_dir, client))
        last = [o for o in observations if o.clients == (client,)][-1]
        final = {n: torch.as_tensor(a + last.update.get(n, 0.0)) for n, a in last.base_params().items()}
        layout.model_file(run_dir, client).parent.mkdir(parents=True, exist_ok=True)
        torch.save(final, layout.model_file(run_dir, client))
    return run_dir


def secagg_view(ledger: WireLedger) -> WireLedger:
    """What SecAgg+ leaves the server: the DOWN messages and, per round, one "server" entry holding the sum of
    the clients' updates (the per-client uploads are masked: their arrays are dropped)."""
    out = WireLedger(ledger.scheme)
    entries = ledger.entries
    downs = {(e.exchange, e.node_id): e for e in entries if e.direction == "down"}
    sums: dict[int, dict[str, np.ndarray]] = {}
    counts: dict[int, int] = {}
    kept: list[LedgerEntry] = []
    for e in entries:
        if e.direction == "up" and e.payload:
            d = downs[(e.exchange, e.node_id)]
            acc = sums.setdefault(e.round, {})
            for name, arr in e.payload.items():
                acc[name] = acc.get(name, 0) + (arr - d.payload[name])
            counts[e.round] = counts.get(e.round, 0) + 1
            kept.append(dataclasses.replace(e, payload={}, tensor_names=[], shapes=[], dtypes=[]))
        else:
            kept.append(dataclasses.replace(e))
    template = next(e for e in entries if e.direction == "up")
    for rnd, acc in sums.items():
        names = list(acc)
        kept.append(dataclasses.replace(template, direction="server", message_type="aggregate", round=rnd, node_id=0,
                                        partition_id=None, tensor_names=names, shapes=[list(acc[n].shape) for n in names],
                                        dtypes=[str(acc[n].dtype) for n in names], payload=dict(acc),
                                        records={"metrics": {"__kind__": "metrics", "num-clients": counts[rnd]}}))
    out.extend(kept)
    return out


def query_apps(data: list[ECGTensors], *, upload: bool) -> tuple[ServerApp, ClientApp]:
    """One query round. upload=True: every device sends its raw records up (`central`); False: it only
    acknowledges the model that came down (`mu-ft`: nothing leaves the device)."""
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        import time

        while len(list(grid.get_node_ids())) < len(data):
            time.sleep(0.01)
        model = TDSSM(CFG)
        msgs = [Message(RecordDict({"arrays": _params_record(model), "config": ConfigRecord({"server-round": 1})}),
                        dst_node_id=node, message_type="query", group_id="1")
                for node in sorted(grid.get_node_ids())]
        list(grid.send_and_receive(msgs, timeout=60))

    @client.query()
    def query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if not upload:
            return Message(RecordDict(), reply_to=msg)
        d = data[pid]
        rec = ArrayRecord({k: Array(getattr(d, k).numpy().copy()) for k in ("x", "y", "known")})
        return Message(RecordDict({"data": rec}), reply_to=msg)

    return server, client


def query_run_dir(run_dir: Path, *, upload: bool, n_clients: int = 2, per_client: int = 2) -> Path:
    data = client_data(n_clients, per_client)
    scheme = "central" if upload else "mu-ft"
    server, client = query_apps(data, upload=upload)
    result = run_federation(server, client, n_clients, scheme=scheme)
    return write_run_dir(run_dir, scheme=scheme, ledger=result.ledger, data=data, optimizer="adamw", lr=3e-3, epochs=1,
                         batch_size=32, observable="raw records" if upload else "nothing", shared_parts=(),
                         device_parts=() if upload else ("encoder", "decoder"))
