"""`dp-fedavg`: FedAvg with differential privacy, in two variants (`mode`):

- "dp-sgd" (default): example-level DP on each device. Local training is DP-SGD with Opacus
  (`baselines.dp_local`); each device keeps one RDP accountant for the whole run and reports its
  cumulative epsilon at `delta`. With `target_epsilon > 0` the noise multiplier is derived before
  training so that the client with the fewest records (largest sample rate) ends the run at that
  epsilon; a target that cannot be reached is an error before anything trains.
- "client-level": Flower's `DifferentialPrivacyClientSideFixedClipping` wrapper around FedAvg and
  its `fixedclipping_mod` on the device (McMahan et al. 2018): devices clip their update to
  `max_grad_norm`, the server adds Gaussian noise to the sum. The server still sees each clipped
  update; epsilon is the client-level guarantee of the released model (RDP, sample rate =
  fraction_train, one step per round).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flwr.app import Context

from baselines.dp_local import dp_history, dp_train_on_device, epsilon_of, steps_per_epoch
from baselines.federated import FederatedParams, build_federated, flower_fedavg, min_train_nodes
from baselines.registry import Scheme, param, register
from baselines.setup import SchemeSetup, TALLY_KEY, train_on_device
from simulator.core.model import PARTS
from simulator.errors import MuprivError

MODES = ("dp-sgd", "client-level")
NOISE_SOURCES = ("secret", "seeded")


@dataclass(frozen=True)
class DPParams(FederatedParams):
    mode: str = param("dp-sgd", "'dp-sgd' (Opacus on each device) or 'client-level' (Flower's clipping wrapper)")
    noise_multiplier: float = param(1.0, "Gaussian noise std / clipping norm")
    max_grad_norm: float = param(1.0, "per-sample (dp-sgd) or per-update (client-level) clipping norm")
    delta: float = param(1e-5, "delta of the reported (epsilon, delta) guarantee")
    target_epsilon: float = param(0.0, "dp-sgd: derive the noise multiplier to end at this epsilon; 0 = use noise_multiplier")
    noise: str = param("secret", "dp-sgd: 'secret' draws each device's noise and batch sampling from the OS's randomness, "
                                 "which no one can replay (a real device); 'seeded' derives them from the run seed, so a "
                                 "run repeats exactly (simulation only: a server that knows the seed could remove the noise)")

    def check(self) -> str | None:
        problem = super().check()
        if problem:
            return problem
        if self.mode not in MODES:
            return f"mode {self.mode!r} unknown; choose from {list(MODES)}"
        if self.noise not in NOISE_SOURCES:
            return f"noise {self.noise!r} unknown; choose from {list(NOISE_SOURCES)}"
        if not (self.noise_multiplier >= 0 and self.max_grad_norm > 0 and 0 < self.delta < 1 and self.target_epsilon >= 0):
            return "need noise_multiplier >= 0, max_grad_norm > 0, 0 < delta < 1, target_epsilon >= 0"
        return None


def preflight(setup: SchemeSetup, client_sizes: list[int]) -> SchemeSetup:
    """Resolve `target_epsilon` into a noise multiplier before training, or say it cannot be reached."""
    p = DPParams(**setup.params)
    if p.mode != "dp-sgd" or p.target_epsilon <= 0:
        return setup
    from opacus.accountants.utils import get_noise_multiplier  # pylint: disable=import-outside-toplevel

    n = min(client_sizes)
    batch = int(setup.finetune["batch_size"])
    q = min(1.0, batch / n)
    steps = p.rounds * p.local_epochs * steps_per_epoch(n, batch)
    try:
        sigma = get_noise_multiplier(target_epsilon=p.target_epsilon, target_delta=p.delta, sample_rate=q, steps=steps,
                                     accountant="rdp")
    except ValueError as exc:
        raise MuprivError(f"schemes.dp-fedavg: target_epsilon={p.target_epsilon} cannot be reached at delta={p.delta} with "
                          f"{steps} steps at sample rate {q:.3f} ({exc}); raise target_epsilon or lower rounds/local_epochs") from None
    return dataclasses.replace(setup, params={**setup.params, "noise_multiplier": float(sigma)})


def _train(setup, context: Context, model, rnd, config, params: DPParams):  # noqa: ANN001 - LocalUpdate
    if params.mode == "client-level":  # plain local training; fixedclipping_mod clips the update on the way out
        result = train_on_device(setup, context, model, PARTS, params.local_epochs, rnd)
        eps = epsilon_of([(params.noise_multiplier, params.fraction_train, rnd)], params.delta) if params.noise_multiplier > 0 else float("inf")
    else:
        result = dp_train_on_device(setup, context, model, PARTS, params.local_epochs, rnd,
                                    params.noise_multiplier, params.max_grad_norm, params.delta,
                                    secret_noise=params.noise == "secret")
        eps = epsilon_of(dp_history(context), params.delta) if params.noise_multiplier > 0 else float("inf")
    counters = dict(context.state[TALLY_KEY])  # type: ignore[arg-type]
    counters["epsilon"] = eps
    from flwr.app import MetricRecord  # pylint: disable=import-outside-toplevel

    context.state[TALLY_KEY] = MetricRecord(counters)
    return result


def _strategy(params: DPParams, num_clients: int):  # noqa: ANN202
    inner = flower_fedavg(params, num_clients)
    if params.mode == "dp-sgd":
        return inner
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping  # pylint: disable=import-outside-toplevel

    return DifferentialPrivacyClientSideFixedClipping(inner, noise_multiplier=params.noise_multiplier,
                                                      clipping_norm=params.max_grad_norm,
                                                      num_sampled_clients=min_train_nodes(params, num_clients))


def build(setup: SchemeSetup):  # noqa: ANN201
    params = DPParams(**setup.params)
    mods = None
    if params.mode == "client-level":
        from flwr.clientapp.mod import fixedclipping_mod  # pylint: disable=import-outside-toplevel

        mods = [fixedclipping_mod]
    return build_federated(setup, params, PARTS, _train, _strategy, train_mods=mods)


SCHEME = register(Scheme(
    name="dp-fedavg",
    summary="FedAvg with DP: DP-SGD on each device (Opacus, per-client accountant) or client-level clipping + server noise",
    observable="noised per-client updates",
    shared_parts=PARTS,
    device_parts=PARTS,
    params=DPParams,
    build=build,
    preflight=preflight,
))
