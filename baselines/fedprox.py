"""`fedprox`: FedAvg with FedProx's proximal term (mu / 2) * ||w - w_global||^2 in every device's loss
(Flower's FedProx strategy sends mu as "proximal-mu"; the term itself is the device's job)."""
from __future__ import annotations

from dataclasses import dataclass

from baselines.federated import FederatedParams, build_federated, flower_fedavg
from baselines.registry import Scheme, param, register
from baselines.setup import train_on_device
from simulator.core.model import PARTS
from simulator.core.phases import ProximalTerm


@dataclass(frozen=True)
class FedProxParams(FederatedParams):
    mu: float = param(0.01, "proximal term weight (0 = FedAvg)")

    def check(self) -> str | None:
        return super().check() or ("mu must be >= 0" if self.mu < 0 else None)


def train_proximal(setup, context, model, rnd, config, params):  # noqa: ANN001 - LocalUpdate
    proximal = ProximalTerm(float(config["proximal-mu"]), model.parameters())
    return train_on_device(setup, context, model, PARTS, params.local_epochs, rnd, penalty=proximal)


def _strategy(params: FedProxParams, num_clients: int):  # noqa: ANN202
    from flwr.serverapp.strategy import FedProx  # pylint: disable=import-outside-toplevel

    return flower_fedavg(params, num_clients, cls=FedProx, proximal_mu=params.mu)


SCHEME = register(Scheme(
    name="fedprox",
    summary="FedProx: FedAvg plus a proximal term towards the global model in the local loss",
    observable="per-client updates",
    shared_parts=PARTS,
    device_parts=PARTS,
    params=FedProxParams,
    build=lambda setup: build_federated(setup, FedProxParams(**setup.params), PARTS, train_proximal, _strategy),
))
