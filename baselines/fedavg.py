"""`fedavg`: McMahan et al.'s FedAvg over the whole model (Flower's FedAvg strategy); every device
trains every layer for `local_epochs` per round and sends all its weights up."""
from __future__ import annotations

from baselines.federated import FederatedParams, build_federated, flower_fedavg, train_every_part
from baselines.registry import Scheme, register
from simulator.core.model import PARTS


SCHEME = register(Scheme(
    name="fedavg",
    summary="FedAvg: all weights up and down every round",
    observable="per-client updates",
    shared_parts=PARTS,
    device_parts=PARTS,
    params=FederatedParams,
    build=lambda setup: build_federated(setup, FederatedParams(**setup.params), PARTS, train_every_part, flower_fedavg),
))
