"""`central`: every device uploads its raw training records; the server fine-tunes the pretrained model
on the pooled records and sends the result back to every device. After every epoch the server leaves its
model as a round probe (round = epoch): what every device would hold had training stopped there."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from baselines.registry import Scheme, param, register
from baselines.server import ack, broadcast, model_content, wait_for_nodes
from baselines.setup import (SchemeSetup, device_data, device_model, keep_personal, parts_record, pretrained_model,
                             write_global_probe, write_probe)
from simulator.core.model import PARTS
from simulator.core.phases import train_phase
from simulator.core.tensors import ECGTensors


@dataclass(frozen=True)
class CentralParams:
    epochs: int = param(0, "server fine-tuning epochs on the pooled records; 0 = the run's finetune.epochs")
    parts: str = param("all", "model parts the server fine-tunes: 'all' or a comma list, e.g. 'encoder,decoder'")

    def check(self) -> str | None:
        if self.epochs < 0:
            return "epochs must be >= 0"
        bad = [p for p in self.part_list() if p not in PARTS]
        return f"parts {bad} unknown; choose from {list(PARTS)} or 'all'" if bad else None

    def part_list(self) -> tuple[str, ...]:
        return PARTS if self.parts == "all" else tuple(p.strip() for p in self.parts.split(",") if p.strip())


def build(setup: SchemeSetup) -> tuple[ServerApp, ClientApp]:
    params = CentralParams(**setup.params)
    epochs = params.epochs or int(setup.finetune["epochs"])
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = pretrained_model(setup)
        nodes = wait_for_nodes(grid, setup.num_clients)
        replies = broadcast(grid, nodes, "query.upload", lambda _n: model_content(None, {"server-round": 1}), "1")
        uploads = [r.content["data"] for r in replies if r.has_content() and "data" in r.content]
        if uploads:  # with none (every device failed) the pretrained model goes back, as FedAvg's does
            pooled = ECGTensors.from_arrays(*(np.concatenate([u[k].numpy() for u in uploads]) for k in ("x", "y", "known")))
            phase = setup.phase(params.part_list(), epochs, name="central")
            train_phase(model, phase, pooled, None, seed=setup.seed * 7919 + 1,
                        on_epoch=lambda log: write_global_probe(setup, log.epoch, parts_record(model, PARTS)))
        full = parts_record(model, PARTS)
        broadcast(grid, nodes, "evaluate.final", lambda _n: model_content(full, {"server-round": 2}), "2")

    @client.query("upload")
    def upload(msg: Message, context: Context) -> Message:
        data = device_data(context)
        record = ArrayRecord({k: Array(getattr(data, k).numpy().copy()) for k in ("x", "y", "known")})
        return Message(RecordDict({"data": record}), reply_to=msg)

    @client.evaluate("final")
    def final(msg: Message, context: Context) -> Message:
        model = device_model(setup, context, msg.content["arrays"])
        keep_personal(context, model)
        write_probe(setup, context, model, rounds=1)
        return ack(msg)

    return server, client


SCHEME = register(Scheme(
    name="central",
    summary="raw records uploaded; the server fine-tunes on the pooled data and sends the model back",
    observable="raw records",
    shared_parts=(),
    device_parts=(),
    params=CentralParams,
    build=build,
    federated=False,
))

