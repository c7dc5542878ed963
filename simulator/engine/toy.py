"""A toy FedAvg pair (a Linear layer on seeded random data) for tests, benchmarks and smoke runs.

Defined at module level so Ray's actors can import it. Every client derives its data from
(seed, partition id); training is plain SGD, so a run is deterministic on one engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from simulator.engine.strategy_state import store_strategy_result


@dataclass(frozen=True)
class ToySpec:
    """Shape of the toy problem."""

    in_features: int = 8
    out_features: int = 3
    hidden: int = 0  # > 0: Linear -> ReLU -> Linear
    samples: int = 32
    steps: int = 3
    lr: float = 0.1
    seed: int = 0


def toy_model(spec: ToySpec) -> torch.nn.Module:
    """The model, initialised from ``spec.seed`` (own generator; the global RNG is untouched)."""
    if spec.hidden > 0:
        model: torch.nn.Module = torch.nn.Sequential(
            torch.nn.Linear(spec.in_features, spec.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(spec.hidden, spec.out_features),
        )
    else:
        model = torch.nn.Linear(spec.in_features, spec.out_features)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                bound = module.in_features ** -0.5  # torch's default range, from our generator
                module.weight.uniform_(-bound, bound, generator=gen)
                module.bias.uniform_(-bound, bound, generator=gen)
    return model


def toy_data(spec: ToySpec, partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's fixed data, derived from (seed, partition id)."""
    gen = torch.Generator().manual_seed(spec.seed * 100_003 + partition_id)
    x = torch.randn(spec.samples, spec.in_features, generator=gen)
    y = torch.randint(0, spec.out_features, (spec.samples,), generator=gen)
    return x, y


def local_train(spec: ToySpec, arrays: ArrayRecord, partition_id: int) -> tuple[dict[str, torch.Tensor], float]:
    """What a toy client does with the global arrays: ``spec.steps`` SGD steps on its data."""
    model = toy_model(spec)
    model.load_state_dict(arrays.to_torch_state_dict())
    x, y = toy_data(spec, partition_id)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
    loss = torch.tensor(0.0)
    for _ in range(spec.steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, float(loss.detach())


def make_toy_client_app(
    spec: ToySpec = ToySpec(),
    *,
    fail: Callable[[int, int], bool] | None = None,
    on_upload: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None,
) -> ClientApp:
    """ClientApp: ``train`` runs `local_train`; ``evaluate`` reports the loss.

    ``fail(partition_id, server_round)`` -> True makes that client raise in that round;
    ``on_upload(partition_id, server_round, weights)`` sees what the client sends (inline only).
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        if fail is not None and fail(pid, rnd):
            raise RuntimeError(f"toy client {pid} fails in round {rnd}")
        weights, loss = local_train(spec, msg.content["arrays"], pid)
        if on_upload is not None:
            on_upload(pid, rnd, weights)
        rounds = int(context.state["toy"]["rounds"]) + 1 if "toy" in context.state else 1
        context.state["toy"] = MetricRecord({"rounds": rounds})
        content = RecordDict(
            {
                "arrays": ArrayRecord(weights),
                "metrics": MetricRecord({"train_loss": loss, "num-examples": spec.samples, "rounds-seen": rounds}),
            }
        )
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        model = toy_model(spec)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        x, y = toy_data(spec, pid)
        with torch.no_grad():
            loss = float(torch.nn.functional.cross_entropy(model(x), y))
        content = RecordDict({"metrics": MetricRecord({"eval_loss": loss, "num-examples": spec.samples})})
        return Message(content, reply_to=msg)

    return app


def make_toy_server_app(
    spec: ToySpec = ToySpec(),
    *,
    num_clients: int,
    num_rounds: int = 2,
    min_train_nodes: int = 2,
    fraction_evaluate: float = 1.0,
    round_timeout: float = 600.0,
) -> ServerApp:
    """ServerApp: Flower's message-API FedAvg ``start(...)``, result stored in the server state.

    ``min_available_nodes = num_clients``: under Ray the nodes register while the ServerApp is
    already running, so the strategy must wait for all of them before sampling.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        num_nodes = num_clients
        strategy = FedAvg(
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min(2, num_nodes) if fraction_evaluate > 0 else 0,
            min_available_nodes=num_nodes,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(toy_model(spec).state_dict()),
            num_rounds=num_rounds,
            timeout=round_timeout,
        )
        store_strategy_result(context, result)

    return app


# --------------------------------------------------------------------------- SecAgg+ (legacy API)
def make_toy_secagg_apps(
    spec: ToySpec = ToySpec(),
    *,
    num_clients: int,
    num_rounds: int = 2,
    num_shares: int | float = 3,
    reconstruction_threshold: int | float = 2,
) -> tuple[ServerApp, ClientApp]:
    """The toy problem under Flower's SecAgg+ (only in the legacy workflow API in Flower 1.41).

    Server: ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` over a legacy
    ``flwr.server.strategy.FedAvg``; client: a ``NumPyClient`` behind ``secaggplus_mod``.
    The final parameters are stored in the server state like `store_strategy_result` does.
    """
    import numpy as np
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.serverapp.strategy import Result

    names = list(toy_model(spec).state_dict().keys())

    class _Client(NumPyClient):
        def __init__(self, partition_id: int) -> None:
            self.partition_id = partition_id

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            arrays = ArrayRecord({n: _np_to_array(p) for n, p in zip(names, parameters)})
            weights, loss = local_train(spec, arrays, self.partition_id)
            return [weights[n].numpy() for n in names], spec.samples, {"train_loss": loss}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return _Client(int(context.node_config["partition-id"])).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        init = [v.numpy() for v in toy_model(spec).state_dict().values()]
        strategy = LegacyFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=num_clients,
            min_available_clients=num_clients,
            initial_parameters=ndarrays_to_parameters(init),
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=num_rounds), strategy=strategy)
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=reconstruction_threshold)
        )
        workflow(grid, legacy)
        final = legacy.state.array_records[MAIN_PARAMS_RECORD]
        params = [np.asarray(a.numpy()) for a in final.values()]
        store_strategy_result(context, Result(arrays=ArrayRecord({n: _np_to_array(p) for n, p in zip(names, params)})))

    return server_app, client_app


def _np_to_array(a):  # type: ignore[no-untyped-def]
    from flwr.app import Array

    return Array(a)


def toy_apps(run_config: dict[str, Any]) -> tuple[ServerApp, ClientApp]:
    """The FedAvg pair from run_config (``toy-clients``, ``toy-rounds``): the deployment engine's test factory
    (``app_factory="simulator.engine.toy:toy_apps"``)."""
    spec = ToySpec()
    num_clients = int(run_config.get("toy-clients", 2))
    server = make_toy_server_app(spec, num_clients=num_clients, num_rounds=int(run_config.get("toy-rounds", 1)),
                                 min_train_nodes=min(2, num_clients))
    return server, make_toy_client_app(spec)
