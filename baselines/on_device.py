"""On-device personalisation: the server sends the pretrained model down once; the device trains
some parts on its own data and sends nothing back but an empty acknowledgement.

Used by `mu-ft` (encoder + decoder, the paper's µ-Fine-Tuning) and `local-ft` (every layer). After every
epoch the device leaves a round probe (round = epoch) for the per-round curves, off the wire.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from baselines.registry import param
from baselines.server import ack, broadcast, model_content, wait_for_nodes
from baselines.setup import (SchemeSetup, device_model, keep_personal, parts_record, pretrained_model,
                             train_on_device, write_probe, write_round_probe)
from simulator.core.model import PARTS


@dataclass(frozen=True)
class OnDeviceParams:
    epochs: int = param(0, "on-device training epochs; 0 = the run's finetune.epochs")

    def check(self) -> str | None:
        return "epochs must be >= 0" if self.epochs < 0 else None


def build_on_device(setup: SchemeSetup, parts: Sequence[str]) -> tuple[ServerApp, ClientApp]:
    params = OnDeviceParams(**setup.params)
    epochs = params.epochs or int(setup.finetune["epochs"])
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = pretrained_model(setup)
        nodes = wait_for_nodes(grid, setup.num_clients)
        full = parts_record(model, PARTS)
        broadcast(grid, nodes, "train", lambda _n: model_content(full, {"server-round": 1, "local-epochs": epochs}), "1")

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        model = device_model(setup, context, msg.content["arrays"])
        train_on_device(setup, context, model, parts, epochs, server_round=1,
                        after_epoch=lambda epoch: write_round_probe(setup, context, model, epoch))
        keep_personal(context, model)
        write_probe(setup, context, model, rounds=1)
        return ack(msg)

    return server, client
