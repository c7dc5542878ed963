"""`fed-mu`: only the middle (S4D) layer is federated; encoder and decoder stay personal. Each round the
device trains every layer on its own data and sends the middle only (FedPer with the split moved)."""
from __future__ import annotations

from baselines.federated import FederatedParams, build_federated, flower_fedavg, train_every_part
from baselines.registry import Scheme, register
from simulator.core.model import PARTS

SHARED = ("middle",)


SCHEME = register(Scheme(
    name="fed-mu",
    summary="middle (S4D) layer federated; encoder + decoder personal",
    observable="per-client updates",
    shared_parts=SHARED,
    device_parts=PARTS,
    params=FederatedParams,
    build=lambda setup: build_federated(setup, FederatedParams(**setup.params), SHARED, train_every_part, flower_fedavg),
))
