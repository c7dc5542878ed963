"""The federated schemes' common shape, over Flower's Message-API strategies.

Round 0 (only when the scheme shares a subset of the model): the server sends the full pretrained
model down once so that each device's personal parts start from it. Rounds 1..R: a Flower strategy
(`FedAvg`, `FedProx`, a DP wrapper, ...) sends the shared parameters down, each sampled device
trains on its own data (`local_update`) and sends its shared parameters back, the strategy
aggregates. Round R+1: the server sends the final shared parameters to every device, which merges
them with its personal parts and acknowledges with an empty reply.

Off the wire, for the per-round curves: the server leaves its global parameters after every round and
each device its personal model after every local update (round probes, `baselines.setup`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from baselines.registry import param
from baselines.server import DEFAULT_ROUND_TIMEOUT_S, ack, broadcast, model_content, wait_for_nodes
from baselines.setup import (SchemeSetup, device_data, device_model, keep_personal, parts_record, pretrained_model,
                             tally, train_on_device, update_metrics, write_global_probe, write_probe, write_round_probe)
from simulator.core.model import PARTS, TDSSM
from simulator.core.phases import PhaseResult
from simulator.engine.strategy_state import store_strategy_result

LocalUpdate = Callable[[SchemeSetup, Context, TDSSM, int, ConfigRecord, Any], PhaseResult]


@dataclass(frozen=True)
class FederatedParams:
    rounds: int = param(3, "federated rounds")
    local_epochs: int = param(1, "epochs of local training on each device per round")
    fraction_train: float = param(1.0, "fraction of the clients sampled in each round")

    def check(self) -> str | None:
        if self.rounds < 1 or self.local_epochs < 1:
            return "rounds and local_epochs must be >= 1"
        if not 0.0 < self.fraction_train <= 1.0:
            return f"fraction_train must be in (0, 1], got {self.fraction_train}"
        return None


def train_every_part(setup, context, model, rnd, config, params):  # noqa: ANN001 - LocalUpdate
    """The plain local update: every layer, `local_epochs` on the device's records."""
    return train_on_device(setup, context, model, PARTS, params.local_epochs, rnd)


def min_train_nodes(params: FederatedParams, num_clients: int) -> int:
    return max(1, int(params.fraction_train * num_clients))


def train_config(setup: SchemeSetup, params: FederatedParams) -> ConfigRecord:
    """The public training hyperparameters every device receives (and a curious server knows)."""
    ft = setup.finetune
    return ConfigRecord({"lr": float(ft["lr"]), "local-epochs": int(params.local_epochs),
                         "batch-size": int(ft["batch_size"]), "pos-weight": float(ft["pos_weight"])})


def build_federated(
    setup: SchemeSetup,
    params: FederatedParams,
    shared_parts: Sequence[str],
    local_update: LocalUpdate,
    make_strategy: Callable[[FederatedParams, int], Any],
    train_mods: list | None = None,
) -> tuple[ServerApp, ClientApp]:
    shared = tuple(shared_parts)
    partial = set(shared) != set(PARTS)
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = pretrained_model(setup)
        nodes = wait_for_nodes(grid, setup.num_clients)
        if partial:  # personal parts start from the pretrained model: one full download
            full = parts_record(model, PARTS)
            broadcast(grid, nodes, "query.deliver", lambda _n: model_content(full, {"server-round": 0}), "0")
        strategy = make_strategy(params, setup.num_clients)
        initial = parts_record(model, shared)
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=params.rounds,
                                timeout=DEFAULT_ROUND_TIMEOUT_S, train_config=train_config(setup, params),
                                evaluate_fn=lambda rnd, arrays: _probe_global(setup, rnd, arrays))
        if len(result.arrays) == 0:  # no round produced an aggregate (every sampled client failed)
            result.arrays = initial
        store_strategy_result(context, result)
        final = result.arrays
        last = params.rounds + 1
        broadcast(grid, nodes, "evaluate.final", lambda _n: model_content(final, {"server-round": last}), str(last))

    @client.query("deliver")
    def deliver(msg: Message, context: Context) -> Message:
        keep_personal(context, device_model(setup, context, msg.content["arrays"]))
        return ack(msg)

    @client.train(mods=train_mods)
    def train(msg: Message, context: Context) -> Message:
        model = device_model(setup, context, msg.content["arrays"])
        config = msg.content["config"]
        rnd = int(config["server-round"])
        result = local_update(setup, context, model, rnd, config, params)
        keep_personal(context, model)
        tally(context, rounds=1)
        write_round_probe(setup, context, model, rnd)
        content = RecordDict({"arrays": parts_record(model, shared),
                              "metrics": update_metrics(result, len(device_data(context)))})
        return Message(content, reply_to=msg)

    @client.evaluate("final")
    def final(msg: Message, context: Context) -> Message:
        model = device_model(setup, context, msg.content["arrays"])
        keep_personal(context, model)
        write_probe(setup, context, model)
        return ack(msg)

    return server, client


def _probe_global(setup: SchemeSetup, rnd: int, arrays: Any) -> None:
    """Flower's centralised-evaluation hook, used only to leave the global parameters after each round (it
    runs after the round's aggregation, and with the unchanged parameters when a round aggregated nothing)."""
    write_global_probe(setup, rnd, arrays)
    return None


def flower_fedavg(params: FederatedParams, num_clients: int, cls: Any = None, **kw: Any) -> Any:
    """Flower's FedAvg (or a subclass) sampling `fraction_train` of the clients, no federated evaluation
    (every device is evaluated off the wire on its final personal model)."""
    from flwr.serverapp.strategy import FedAvg  # pylint: disable=import-outside-toplevel

    cls = cls or FedAvg
    return cls(fraction_train=params.fraction_train, fraction_evaluate=0.0,
               min_train_nodes=min_train_nodes(params, num_clients), min_evaluate_nodes=0,
               min_available_nodes=num_clients, **kw)
