"""`fedper`: FedPer (Arivazhagan et al. 2019). Base layers (encoder + middle) are federated with
FedAvg; the personalisation layers (the NCP decoder) stay on the device. Each round the device trains
base and head together, as in the paper, and sends only the base."""
from __future__ import annotations

from baselines.federated import FederatedParams, build_federated, flower_fedavg, train_every_part
from baselines.registry import Scheme, register
from simulator.core.model import PARTS

BODY = ("encoder", "middle")


SCHEME = register(Scheme(
    name="fedper",
    summary="FedPer: body (encoder + middle) federated, decoder head personal; trained jointly",
    observable="per-client updates",
    shared_parts=BODY,
    device_parts=PARTS,
    params=FederatedParams,
    build=lambda setup: build_federated(setup, FederatedParams(**setup.params), BODY, train_every_part, flower_fedavg),
))
