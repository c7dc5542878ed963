"""Per-round curves (`rounds.csv`): what each device would hold after every round, scored like the final model.

Federated schemes: after round r a device holds the server's global parameters after r aggregations merged
into its own model as of its last local update (its personal parts; for fedavg-like schemes every part is
shared, so it is the global model). On-device schemes (`mu-ft`, `local-ft`) and `central` are read per epoch
(round = epoch): the device's, or the server's, model after each epoch. Round 0 is the pretrained model.
The models come from the round probes the apps leave off the wire (`baselines.setup`), are rebuilt with
`probe_model` (as the final evaluation rebuilds the final probes) and scored the same way (`Study.score_on_test`,
`Study.score_on_source`, remembered by weights), so a curve's last round equals the final results.

Cumulative bytes come from the wire ledger, summed as the results sum them. A message counts from the round
it belongs to; the final delivery (a federated round R+1, or what an on-device or central run sends after
training) counts at the last round, so the last round's totals equal the ledger's.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from baselines.registry import Scheme
from baselines.setup import RoundProbes, probe_model
from simulator.core.device import rng_devices
from simulator.ledger import DOWN, UP
from simulator.study import Study

CURVE_COLUMNS = ("scheme", "round", "client", "metric", "value")


def round_curves(study: Study, scheme: Scheme, probes: RoundProbes, ledger: pd.DataFrame) -> pd.DataFrame:
    """Long form (scheme, round, client, metric, value): personal and source scores, cumulative bytes, epsilon.

    Runs on a forked torch RNG, so scoring the curves leaves the caller's random streams as they were."""
    rounds = probes.rounds()
    base = {n: p.detach().clone() for n, p in study.pretrained().named_parameters()}
    with_epsilon = any("epsilon" in blob.get("tally", {}) for per in probes.devices.values() for blob in per.values())
    message_rounds = _message_rounds(ledger, scheme.federated, rounds[-1])
    rows: list[dict[str, Any]] = []
    with torch.random.fork_rng(devices=rng_devices(study.device)):
        for c in study.clients:
            mine = probes.devices.get(c.partition, {})
            sent = ledger["partition_id"] == c.partition
            for rnd in rounds:
                device = _latest(mine, rnd)
                state = dict(base)
                if device is not None:
                    state.update(device["state"])
                shared = _latest(probes.globals, rnd)
                if shared is not None:
                    state.update(shared)
                model = probe_model(study.config.model, state).to(study.device)
                personal = study.score_on_test(model, c)  # remembered: clients holding one model share its source score
                values = {"personal_macro_auroc": personal.macro_auroc, "personal_macro_f1": personal.macro_f1,
                          "source_macro_auroc": study.score_on_source(model).macro_auroc}
                upto = sent & (message_rounds <= rnd)
                values["bytes_up"] = int(ledger.loc[upto & (ledger["direction"] == UP), "bytes"].sum())
                values["bytes_down"] = int(ledger.loc[upto & (ledger["direction"] == DOWN), "bytes"].sum())
                if with_epsilon:
                    values["epsilon"] = float(device["tally"].get("epsilon", 0.0)) if device is not None else 0.0
                rows += [{"scheme": scheme.name, "round": rnd, "client": c.id, "metric": m, "value": v}
                         for m, v in values.items()]
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def curves_long(curves: pd.DataFrame, seed: int) -> pd.DataFrame:
    """rounds.csv's form: a seed column first, rows sorted by (scheme, round, client, metric)."""
    long = curves.copy()
    long.insert(0, "seed", seed)
    return long.sort_values(["seed", "scheme", "round", "client", "metric"], kind="stable").reset_index(drop=True)


def _latest(per_round: dict[int, Any], rnd: int) -> Any:
    """The probe of the last round at or before `rnd` (a device keeps its model through rounds it sat out)."""
    done = [r for r in per_round if r <= rnd]
    return per_round[max(done)] if done else None


def _message_rounds(ledger: pd.DataFrame, federated: bool, last: int) -> pd.Series:
    """The curve round from which each ledger message counts in the cumulative bytes."""
    rnd = pd.to_numeric(ledger["round"], errors="coerce").fillna(0).astype(int)
    if federated:  # round 0's delivery at 0, round r's exchange at r, the final delivery (R + 1) at R
        return rnd.clip(upper=last)
    # on-device and central: the exchange that starts training (the model down to train on, central's
    # upload) counts from epoch 1; whatever comes after training (the acknowledgement, the final model) at the last
    starts = (ledger["direction"] == DOWN) & ledger["message_type"].astype(str).str.startswith("train")
    after = (rnd == rnd.max()) & ~starts if len(rnd) else rnd.astype(bool)
    return pd.Series(np.where(after, last, np.minimum(rnd, min(1, last))), index=ledger.index)

