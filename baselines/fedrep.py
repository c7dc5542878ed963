"""`fedrep`: FedRep (Collins et al. 2021). The representation (encoder + middle) is federated; each
round the device first trains its personal head (decoder) with the body frozen for `head_epochs`,
then the body with the head frozen for `body_epochs`, and sends only the body."""
from __future__ import annotations

from dataclasses import dataclass

from baselines.federated import FederatedParams, build_federated, flower_fedavg
from baselines.registry import Scheme, param, register
from baselines.setup import train_on_device
from simulator.core.phases import PhaseResult

BODY = ("encoder", "middle")


@dataclass(frozen=True)
class FedRepParams(FederatedParams):
    head_epochs: int = param(1, "epochs training the personal head (decoder) with the body frozen, per round")

    def check(self) -> str | None:
        return super().check() or ("head_epochs must be >= 1" if self.head_epochs < 1 else None)


def train_head_then_body(setup, context, model, rnd, config, params):  # noqa: ANN001 - LocalUpdate
    head = train_on_device(setup, context, model, ("decoder",), params.head_epochs, rnd)
    body = train_on_device(setup, context, model, BODY, params.local_epochs, rnd + 100_000)
    return PhaseResult(body.phase, head.history + body.history, steps=head.steps + body.steps)


SCHEME = register(Scheme(
    name="fedrep",
    summary="FedRep: head (decoder) trained first with the body frozen, then the body; body federated",
    observable="per-client updates",
    shared_parts=BODY,
    device_parts=("encoder", "middle", "decoder"),
    params=FedRepParams,
    build=lambda setup: build_federated(setup, FedRepParams(**setup.params), BODY, train_head_then_body, flower_fedavg),
))
