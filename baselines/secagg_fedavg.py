"""`secagg-fedavg`: FedAvg under Flower's SecAgg+ protocol (Bell et al. 2020), which in Flower 1.41
exists only in the legacy workflow API (`DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` on
the server, a `NumPyClient` behind `secaggplus_mod` on the device).

The server never sees an individual update: the ledger holds the protocol messages it relays (public
keys, encrypted shares, masked quantised vectors) and, as a "server" entry per round, the unmasked
aggregate it reconstructs, with the number of clients summed in it, their total examples and (bookkeeping)
their partition ids. The final model reaches every device as a legacy evaluate message whose reply
carries nothing useful (zero loss, zero examples).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from baselines.federated import FederatedParams, train_config
from baselines.registry import Scheme, param, register
from baselines.setup import (SchemeSetup, device_data, device_model, keep_personal, part_names, parts_record,
                             pretrained_model, tally, train_on_device, write_global_probe, write_probe,
                             write_round_probe)
from simulator.core.model import PARTS, TDSSM
from simulator.engine.strategy_state import store_strategy_result


@dataclass(frozen=True)
class SecAggParams(FederatedParams):
    num_shares: int = param(3, "SecAgg+ shares of each secret (clients each one is paired with, itself included)")
    reconstruction_threshold: int = param(2, "shares needed to reconstruct a secret")
    clipping_range: float = param(8.0, "quantisation range: update values are clipped to [-range, range]")
    quantization_range: int = param(4_194_304, "quantisation levels (2^22 by default)")

    def check(self) -> str | None:
        problem = super().check()
        if problem:
            return problem
        if self.num_shares < 2 or not 1 <= self.reconstruction_threshold <= self.num_shares:
            return "need num_shares >= 2 and 1 <= reconstruction_threshold <= num_shares"
        return None


def _seeded_quantisation(seed: int):  # noqa: ANN202 - a Flower mod
    """SecAgg+ quantises with stochastic rounding drawn from numpy's *global* RNG. Seed it per
    (run seed, partition, message) for the duration of the call and restore it afterwards, so that
    the same seed gives the same aggregate whatever ran in the process before."""

    def mod(msg, ctx, call_next):  # type: ignore[no-untyped-def]
        key = f"{seed}/{ctx.node_config.get('partition-id')}/{msg.metadata.group_id}/{msg.metadata.message_type}"
        saved = np.random.get_state()
        np.random.seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big"))
        try:
            return call_next(msg, ctx)
        finally:
            np.random.set_state(saved)

    return mod


def aggregate_metrics(grid: Any, results: list) -> dict[str, Any]:
    """What the server knows about the aggregate it unmasked: how many clients it sums, their total weight
    (SecAgg+ unmasks the sum of the weights with the weighted sum, and Flower's legacy workflow passes each
    client's num_examples in clear) and, as simulation bookkeeping, the partitions of the nodes it summed
    (only survivors are summed, so these can be fewer than the round's recipients)."""
    metrics: dict[str, Any] = {"num-clients": len(results), "aggregate-of": "params-mean",
                               "num-examples": int(sum(int(res.num_examples) for _, res in results))}
    to_partition = getattr(grid, "node_to_partition", None) or {}
    pids = [to_partition.get(proxy.node_id) for proxy, _ in results]
    if pids and all(p is not None for p in pids):
        metrics["partition-ids"] = [int(p) for p in pids]
    return metrics


def build(setup: SchemeSetup) -> tuple[ServerApp, ClientApp]:
    from flwr.client import NumPyClient  # pylint: disable=import-outside-toplevel
    from flwr.client.mod import secaggplus_mod  # pylint: disable=import-outside-toplevel
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # pylint: disable=import-outside-toplevel
    from flwr.server import LegacyContext, ServerConfig  # pylint: disable=import-outside-toplevel
    from flwr.server.strategy import FedAvg as LegacyFedAvg  # pylint: disable=import-outside-toplevel
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # pylint: disable=import-outside-toplevel
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD  # pylint: disable=import-outside-toplevel

    params = SecAggParams(**setup.params)
    names = part_names(TDSSM(setup.model_config()), PARTS)
    config = dict(train_config(setup, params))

    class Device(NumPyClient):
        def __init__(self, context: Context) -> None:
            self.ctx = context

        def _model(self, parameters: list[np.ndarray]) -> TDSSM:
            return device_model(setup, self.ctx, ArrayRecord({n: Array(p) for n, p in zip(names, parameters)}))

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            model = self._model(parameters)
            rnd = int(config["server-round"])
            result = train_on_device(setup, self.ctx, model, PARTS, params.local_epochs, rnd)
            keep_personal(self.ctx, model)
            tally(self.ctx, rounds=1)
            write_round_probe(setup, self.ctx, model, rnd)
            weights = [a.numpy() for a in parts_record(model, PARTS).values()]
            return weights, len(device_data(self.ctx)), {"local-steps": result.steps}

        def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
            model = self._model(parameters)  # the final model: kept and probed, nothing reported
            keep_personal(self.ctx, model)
            write_probe(setup, self.ctx, model)
            return 0.0, 0, {}

    client = ClientApp(client_fn=lambda context: Device(context).to_client(),
                       mods=[_seeded_quantisation(setup.seed), secaggplus_mod])
    server = ServerApp()

    class ObservedFedAvg(LegacyFedAvg):
        """Legacy FedAvg that records the unmasked aggregate (what the server learns) in the ledger;
        evaluates (= delivers the final model) in the last round only."""

        def __init__(self, grid: Grid, **kw: Any) -> None:
            super().__init__(**kw)
            self.grid = grid

        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            if results and hasattr(self.grid, "observe"):
                total = parameters_to_ndarrays(results[0][1].parameters)
                self.grid.observe(server_round, dict(zip(names, total)), aggregate_metrics(self.grid, results))
            return super().aggregate_fit(server_round, results, failures)

        def evaluate(self, server_round, parameters):  # type: ignore[no-untyped-def]
            """The legacy workflow's centralised evaluation, after every round's aggregation: used only to
            leave the global parameters as a round probe (off the wire) for the per-round curves."""
            write_global_probe(setup, server_round, dict(zip(names, parameters_to_ndarrays(parameters))))
            return None

        def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            return None, {}  # the final delivery reports nothing to aggregate

        def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
            if server_round < params.rounds:
                return []
            return super().configure_evaluate(server_round, parameters, client_manager)

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        init = [a.numpy() for a in parts_record(pretrained_model(setup), PARTS).values()]
        n = setup.num_clients
        strategy = ObservedFedAvg(
            grid,
            fraction_fit=params.fraction_train, fraction_evaluate=1.0,
            min_fit_clients=max(1, int(params.fraction_train * n)), min_evaluate_clients=n, min_available_clients=n,
            initial_parameters=ndarrays_to_parameters(init),
            on_fit_config_fn=lambda rnd: {**config, "server-round": rnd},
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=params.rounds), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=params.num_shares, reconstruction_threshold=params.reconstruction_threshold,
            clipping_range=params.clipping_range, quantization_range=params.quantization_range))
        workflow(grid, legacy)
        final = [np.asarray(a.numpy()) for a in legacy.state.array_records[MAIN_PARAMS_RECORD].values()]
        store_strategy_result(context, Result(arrays=ArrayRecord({n_: Array(p) for n_, p in zip(names, final)})))

    return server, client


SCHEME = register(Scheme(
    name="secagg-fedavg",
    summary="FedAvg under SecAgg+: the server learns only the sum of the clients' updates",
    observable="aggregate only",
    shared_parts=PARTS,
    device_parts=PARTS,
    params=SecAggParams,
    build=build,
))
