"""Threat models: who attacks, what they observe on the wire and what they are granted besides.

The attacker is an honest-but-curious server (it runs the protocol faithfully and keeps every
message) or, equivalently for unencrypted schemes, an eavesdropper on the channel. It is always
granted the public architecture (`ModelConfig`, wiring seed included), the global weights it sent in
each round, the training hyperparameters it put in the config it sent (learning rate, local epochs,
batch size, positive-class weight) and public statistics (a population prior). It never sees a
client's data, its random seeds, its batch order or its dropout masks.

Each threat model is also placed on the axes the literature uses, so that a reader can compare with
published attacks (docs/attacks.md, *Threat models*): the adversary's position (who), its access
(what it observes: white-box parameters or updates, an aggregate, a released model), and the
auxiliary knowledge it is granted, graded by how accessible that knowledge is to a real adversary as
the gradient-leakage SoK of Du et al. (2024) grades the assumptions of published attacks:
- K0, protocol knowledge: what the server has by running the protocol (architecture, the weights it
  sent, the hyperparameters it configured, the num-examples clients report);
- K1, public data: a population of ECGs from the same kind of source (the server's own source data);
- K2, client-private side information: a client's labels, batch order, dropout masks, seeds. Never
  granted here; where an attack would need it, it estimates it (labels from the sign rule) instead.
Membership inference follows the challenger/attacker game that LeakPro builds on (Salem et al. 2023):
the challenger (the evaluation) picks members and non-members, the attacker scores them.
"""
from __future__ import annotations

from dataclasses import dataclass

# what a server can observe: the names scheme.json's "observable" holds, owned by the run-folder contract
from simulator.scheme_record import AGGREGATE, CLIPPED, DISTILLED, NOISED, NOTHING, OBSERVABLES, RAW, UPDATES  # noqa: F401

GRANTS: tuple[str, ...] = ("architecture", "global weights of the round", "local hyperparameters (lr, epochs, batch size, "
                           "optimiser, pos_weight)", "public population prior")
KNOWLEDGE_LEVELS: dict[str, str] = {
    "K0": "protocol knowledge (architecture, weights sent, configured hyperparameters, reported num-examples)",
    "K1": "public data (a population of ECGs from the server's own source)",
    "K2": "client-private side information (labels, batch order, dropout masks, seeds): never granted",
}

NOT_APPLICABLE_NOTHING = "not applicable: nothing leaves the device"


@dataclass(frozen=True)
class ThreatModel:
    name: str
    observable: str
    description: str
    grants: tuple[str, ...] = GRANTS
    applicable: bool = True  # False: there is nothing to attack
    position: str = "honest-but-curious server, or an eavesdropper on an unencrypted channel"
    access: str = ""  # what it observes, in the literature's terms
    knowledge: tuple[str, ...] = ("K0", "K1")  # KNOWLEDGE_LEVELS granted

    def to_dict(self) -> dict:
        return {"name": self.name, "observable": self.observable, "description": self.description,
                "grants": list(self.grants), "applicable": self.applicable, "position": self.position,
                "access": self.access, "knowledge": list(self.knowledge)}


THREAT_MODELS: dict[str, ThreatModel] = {
    NOTHING: ThreatModel("none", NOTHING, "only the model comes down; no data, gradients or weights go up", (), False,
                         position="honest-but-curious server", access="nothing after the download", knowledge=()),
    RAW: ThreatModel("data-custodian", RAW, "the server receives each client's raw records: leakage is total by definition",
                     ("raw records",), position="the server as data custodian", access="the raw records"),
    UPDATES: ThreatModel("curious-server", UPDATES, "the server sees each client's parameters after local training, "
                         "per client and per round", access="white-box: global weights and each client's update, every round"),
    CLIPPED: ThreatModel("curious-server-clipped", CLIPPED, "per-client updates after norm clipping",
                         access="white-box: each client's clipped update, every round"),
    NOISED: ThreatModel("curious-server-dp", NOISED, "per-client updates after clipping and Gaussian noise (DP)",
                        access="white-box: each client's clipped, noised update, every round"),
    AGGREGATE: ThreatModel("curious-server-secagg", AGGREGATE, "SecAgg+: the server learns only the sum of the "
                           "sampled clients' updates in each round, and whom it sampled; with partial participation "
                           "it can disaggregate across rounds (Lam et al. 2021)",
                           access="white-box: the sum of the sampled clients' updates per round, and who was sampled"),
    DISTILLED: ThreatModel("distilled-custodian", DISTILLED, "the server receives each client's distilled set: synthetic "
                           "records condensed from the client's records by distribution matching, with soft labels. "
                           "Whether they are private is the question (Dong et al. 2022 claim privacy for free; Carlini "
                           "et al. 2022 dispute it), so they are attacked like reconstructions",
                           ("distilled records and their soft labels",), position="the server as custodian of the "
                           "distilled sets", access="each client's distilled records, once"),
}
# Not tied to what a scheme sends: models that are broadcast or that a device keeps. They apply to every
# scheme that has them, the on-device ones included (membership inference, attacks/membership.py).
DEVICE_LOST = ThreatModel("device-lost", "the device's final model",
                          "a lost, stolen or published device: its final personal model, with the pretrained model it "
                          "started from (the first download in the ledger)",
                          ("architecture", "the device's final model", "the pretrained model", "local hyperparameters",
                           "public population prior"),
                          position="whoever holds the device or the published model",
                          access="white-box: the final personal model (and the public pretrained model)")
GLOBAL_MODEL = ThreatModel("global-model", "global models",
                           "the server, any device or anyone the model is published to: the global model of each round "
                           "as broadcast", ("architecture", "the global models", "the pretrained model",
                                            "local hyperparameters", "public population prior"),
                           position="the server, any participating device, or anyone the model is published to",
                           access="white-box: every broadcast global model")


def threat_for(scheme: str, observable: str, dp: dict | None = None) -> ThreatModel:
    """The threat model of a scheme run, from what its scheme.json says leaves the device (`observable`, which
    the scheme record requires); DP parameters on a per-client-update scheme make it the noised-update threat."""
    obs = observable
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
    if threat.observable == DISTILLED:
        return ("distilled",)
    return ("labels", "attribute", "features", "dlg", "ig", "multistep")
