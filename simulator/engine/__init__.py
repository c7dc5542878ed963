"""Flower grid backends: run a ServerApp/ClientApp pair over simulated clients.

Engines: ``inline`` (in-process `InlineGrid`, deterministic, the default), ``ray``
(Flower's ``run_simulation`` on the Ray backend, in a killable child process) and ``deployment``
(a real SuperLink + SuperNodes on loopback, the app submitted with ``flwr run``; see
`simulator.engine.deployment`). On all three, the ServerApp talks to a `LedgerGrid` that records
every message into the `WireLedger`.
"""

from simulator.engine.api import ENGINES, FederationResult, run_federation
from simulator.engine.inline import EngineTimeout, InlineGrid, wire_copy
from simulator.engine.ray_engine import ray_available
from simulator.engine.recording import LedgerGrid
from simulator.engine.strategy_state import load_strategy_result, store_strategy_result

__all__ = [
    "ENGINES",
    "EngineTimeout",
    "FederationResult",
    "InlineGrid",
    "LedgerGrid",
    "load_strategy_result",
    "ray_available",
    "run_federation",
    "store_strategy_result",
    "wire_copy",
]
