"""Threat models: who attacks, what they observe on the wire and what they are granted besides.

The attacker is an honest-but-curious server (it runs the protocol faithfully and keeps every
message) or, equivalently for unencrypted schemes, an eavesdropper on the channel. It is always
granted the public architecture (`ModelConfig`, wiring seed included), the global weights it sent in
each round, the training hyperparameters it put in the config it sent (learning rate, local epochs,
batch size, positive-class weight) and public statistics (a population prior). It never sees a
client's data, its random seeds, its batch order or its dropout masks.
"""
from __future__ import annotations

from dataclasses import dataclass

NOTHING = "nothing"
RAW = "raw records"
UPDATES = "per-client updates"
CLIPPED = "clipped per-client updates"
NOISED = "noised per-client updates"
AGGREGATE = "aggregate only"
OBSERVABLES: tuple[str, ...] = (NOTHING, RAW, UPDATES, CLIPPED, NOISED, AGGREGATE)

GRANTS: tuple[str, ...] = ("architecture", "global weights of the round", "local hyperparameters (lr, epochs, batch size, "
                           "optimiser, pos_weight)", "public population prior")

NOT_APPLICABLE_NOTHING = "not applicable: nothing leaves the device"


@dataclass(frozen=True)
class ThreatModel:
    name: str
    observable: str
    description: str
    grants: tuple[str, ...] = GRANTS
    applicable: bool = True  # False: there is nothing to attack

    def to_dict(self) -> dict:
        return {"name": self.name, "observable": self.observable, "description": self.description,
                "grants": list(self.grants), "applicable": self.applicable}


THREAT_MODELS: dict[str, ThreatModel] = {
    NOTHING: ThreatModel("none", NOTHING, "only the model comes down; no data, gradients or weights go up", (), False),
    RAW: ThreatModel("data-custodian", RAW, "the server receives each client's raw records: leakage is total by definition",
                     ("raw records",)),
    UPDATES: ThreatModel("curious-server", UPDATES, "the server sees each client's parameters after local training, "
                         "per client and per round"),
    CLIPPED: ThreatModel("curious-server-clipped", CLIPPED, "per-client updates after norm clipping"),
    NOISED: ThreatModel("curious-server-dp", NOISED, "per-client updates after clipping and Gaussian noise (DP)"),
    AGGREGATE: ThreatModel("curious-server-secagg", AGGREGATE, "SecAgg+: the server learns only the sum of the "
                           "sampled clients' updates in each round"),
}

# The default observable per scheme, used when a run's scheme.json does not say.
SCHEME_OBSERVABLE: dict[str, str] = {
    "mu-ft": NOTHING,
    "local-ft": NOTHING,
    "central": RAW,
    "fedavg": UPDATES,
    "fedprox": UPDATES,
    "fedrep": UPDATES,
    "fedper": UPDATES,
    "fed-mu": UPDATES,
    "dp-fedavg": NOISED,
    "secagg-fedavg": AGGREGATE,
}


def threat_for(scheme: str, observable: str | None = None, dp: dict | None = None) -> ThreatModel:
    """The threat model of a scheme run: its scheme.json's `observable` wins over the default mapping;
    DP parameters on a per-client-update scheme make it the noised-update threat."""
    obs = observable or SCHEME_OBSERVABLE.get(scheme)
    if obs is None:
        raise KeyError(f"scheme {scheme!r} has no known observable; add \"observable\" to its scheme.json "
                       f"(one of {', '.join(OBSERVABLES)})")
    if obs not in THREAT_MODELS:
        raise KeyError(f"observable {obs!r} of scheme {scheme!r} is not one of {', '.join(OBSERVABLES)}")
    if obs == UPDATES and dp and float(dp.get("noise_multiplier") or 0.0) > 0:
        obs = NOISED
    return THREAT_MODELS[obs]


def attacks_for(threat: ThreatModel) -> tuple[str, ...]:
    """Which attack families apply to what this threat observes."""
    if not threat.applicable:
        return ()
    if threat.observable == RAW:
        return ("raw",)
    return ("labels", "features", "dlg", "ig", "multistep")
