"""`run_federation`: run a Flower ServerApp/ClientApp pair over N simulated clients.

How results come back: the ServerApp's own `Context`. Whatever the ServerApp stores in
``context.state`` (a Flower RecordDict) is returned in `FederationResult.context`, on every
engine -- with Ray the ServerApp runs in another process and the Context travels back as Flower
protobuf. `store_strategy_result` (`simulator.engine.strategy_state`) / `FederationResult.strategy_result` put a
`flwr.serverapp.strategy.Result` (final arrays + per-round metrics) into that state and read it
back, so a Message-API ServerApp only adds one line after ``strategy.start(...)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import Result
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from simulator.engine.inline import EngineTimeout, InlineGrid
from simulator.engine.recording import LedgerGrid
from simulator.engine.strategy_state import load_strategy_result
from simulator.errors import MuprivError
from simulator.ledger import WireLedger

ENGINES = ("inline", "ray", "deployment")
DEFAULT_TIMEOUT_S = 3600.0

@dataclass
class FederationResult:
    """What a federation run leaves behind."""

    engine: str
    ledger: WireLedger
    context: Context | None  # the ServerApp's Context after the run (its ``state`` is the outbox)
    node_to_partition: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def state(self) -> RecordDict:
        """The ServerApp's ``context.state`` after the run."""
        if self.context is None:
            raise RuntimeError("the ServerApp returned no Context (did it finish?)")
        return self.context.state

    def errors(self) -> pd.DataFrame:
        """Client failures seen by the server: round, node, partition, message type, error."""
        return self.ledger.errors()

    def strategy_result(self) -> Result:
        """The `Result` a ServerApp saved with `store_strategy_result`."""
        return load_strategy_result(self.state)

    def final_arrays(self) -> dict[str, np.ndarray]:
        """The final global arrays saved with `store_strategy_result`, as numpy."""
        return {k: v.numpy() for k, v in self.strategy_result().arrays.items()}


@contextlib.contextmanager
def _task_identity(run_id: int) -> Iterator[None]:
    """Flower's Message() reads the process-wide TaskIdentity; set it for the run, then restore."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)  # pylint: disable=W0212
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved  # pylint: disable=W0212


@contextlib.contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    """Flower strategies sample nodes with the global `random`, and its client-level DP wrapper draws the server's
    noise from numpy's global generator: seed both for the run, then restore them."""
    saved, saved_np = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(saved)
        np.random.set_state(saved_np)


def _run_id(seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"mupriv-run-{seed}".encode()).digest()[:8], "big") >> 1


def run_federation(  # pylint: disable=too-many-arguments,too-many-locals
    server_app: ServerApp | None,
    client_app: ClientApp | None,
    num_clients: int,
    *,
    engine: str = "inline",
    ledger: WireLedger | None = None,
    scheme: str = "",
    run_config: Mapping[str, Any] | None = None,
    node_config: Callable[[int], Mapping[str, Any]] | None = None,
    seed: int = 0,
    timeout_s: float | None = None,
    num_cpus: int = 2,
    cpus_per_client: float = 1.0,
    verbose: bool = False,
    app_factory: str | None = None,
    superlink: str | None = None,
    batch_clients: bool = False,
) -> FederationResult:
    """Run ``server_app`` against ``num_clients`` simulated nodes running ``client_app``.

    Parameters
    ----------
    engine : "inline" (default, in-process, deterministic), "ray" (Flower's run_simulation) or
        "deployment" (a real SuperLink + N SuperNodes on loopback, the app submitted with ``flwr run``).
    ledger : where every message goes; a new ``WireLedger(scheme)`` when omitted.
    run_config : the ``context.run_config`` of the ServerApp and of every ClientApp.
    node_config : ``partition_id -> dict`` merged into each node's ``node_config``
        (which always has ``partition-id`` and ``num-partitions``); must be picklable for Ray.
    seed : seeds node/message ids (inline) and the global ``random`` Flower's strategies sample
        with, for the duration of the run only.
    timeout_s : hard limit (ray: the simulation process is killed; inline: checked between client
        messages). Raises `EngineTimeout`.
    num_cpus, cpus_per_client : Ray cluster size and per-ClientApp resources.
    app_factory : deployment only, and required there: ``"package.module:function"``, a function
        ``run_config -> (ServerApp, ClientApp)`` that the app processes import to build the pair
        (``server_app``/``client_app`` are not used: objects cannot reach other processes).
    superlink : deployment only: ``host:port`` of a SuperLink someone else started (default: the
        ``MUPRIV_SUPERLINK`` environment variable; unset = start a local federation).
    batch_clients : inline only: the clients of one round train as one batched computation
        (`simulator.engine.batching`); the messages and the ledger are unchanged.
    """
    if engine not in ENGINES:
        raise MuprivError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if num_clients < 1:
        raise MuprivError(f"num_clients must be at least 1, got {num_clients}")
    ledger = WireLedger(scheme) if ledger is None else ledger
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    start = time.perf_counter()

    if engine == "deployment":
        from simulator.engine.deployment import run_deployment

        context, node_map = run_deployment(
            app_factory,
            num_clients,
            ledger=ledger,
            timeout_s=timeout_s,
            run_config=run_config,
            node_config=node_config,
            seed=seed,
            verbose=verbose,
            superlink=superlink,
        )
        return FederationResult("deployment", ledger, context, node_map, time.perf_counter() - start)

    if server_app is None or client_app is None:
        raise MuprivError(f"engine {engine!r} needs server_app and client_app")

    if engine == "ray":
        from simulator.engine.ray_engine import run_ray

        context, node_map = run_ray(
            server_app,
            client_app,
            num_clients,
            ledger=ledger,
            timeout_s=timeout_s,
            num_cpus=num_cpus,
            cpus_per_client=cpus_per_client,
            run_config=run_config,
            node_config=node_config,
            seed=seed,
            verbose=verbose,
        )
        return FederationResult("ray", ledger, context, node_map, time.perf_counter() - start)

    run_id = _run_id(seed)
    grid = InlineGrid(
        client_app,
        num_clients,
        run_id=run_id,
        seed=seed,
        run_config=run_config,
        node_config=node_config,
        deadline=time.monotonic() + timeout_s,
        batch_clients=batch_clients,
    )
    grid.set_run(Run.create_empty(run_id))
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )
    recording = LedgerGrid(grid, ledger, node_to_partition=grid.node_to_partition)
    with _task_identity(run_id), _seeded_global_random(seed):
        server_app(recording, context)
    return FederationResult("inline", ledger, context, dict(grid.node_to_partition), time.perf_counter() - start)


__all__ = [
    "ENGINES",
    "EngineTimeout",
    "FederationResult",
    "load_strategy_result",
    "run_federation",
    "store_strategy_result",
]
