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
from simulator.core.model import PARTS, TDSSM
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
        return part_list(self.parts)


def part_list(parts: str) -> tuple[str, ...]:
    """'all' or a comma list of model parts -> the parts (unchecked)."""
    return PARTS if parts == "all" else tuple(p.strip() for p in parts.split(",") if p.strip())


def records_record(data: ECGTensors) -> ArrayRecord:
    """A device's records (real or distilled) as the ArrayRecord it uploads: x, y and the known mask."""
    return ArrayRecord({k: Array(getattr(data, k).numpy().copy()) for k in ("x", "y", "known")})


def train_on_uploads(setup: SchemeSetup, model: TDSSM, uploads: list[ArrayRecord], parts: tuple[str, ...], epochs: int,
                     name: str) -> None:
    """The server trains `parts` of `model` for `epochs` on the union of the uploaded records, leaving a global probe
    per epoch. With no uploads (every device failed) the model stays as it is, as FedAvg's does."""
    if not uploads:
        return
    union = ECGTensors.from_arrays(*(np.concatenate([u[k].numpy() for u in uploads]) for k in ("x", "y", "known")))
    train_phase(model, setup.phase(parts, epochs, name=name), union, None, seed=setup.seed * 7919 + 1,
                on_epoch=lambda log: write_global_probe(setup, log.epoch, parts_record(model, PARTS)))


def keep_final(setup: SchemeSetup, msg: Message, context: Context) -> Message:
    """A device keeps the model the server sent back as its final personal model."""
    model = device_model(setup, context, msg.content["arrays"])
    keep_personal(context, model)
    write_probe(setup, context, model, rounds=1)
    return ack(msg)


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
        train_on_uploads(setup, model, uploads, params.part_list(), epochs, "central")
        full = parts_record(model, PARTS)
        broadcast(grid, nodes, "evaluate.final", lambda _n: model_content(full, {"server-round": 2}), "2")

    @client.query("upload")
    def upload(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"data": records_record(device_data(context))}), reply_to=msg)

    @client.evaluate("final")
    def final(msg: Message, context: Context) -> Message:
        return keep_final(setup, msg, context)

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

