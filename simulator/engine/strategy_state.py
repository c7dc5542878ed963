"""A strategy's `Result` kept in the ServerApp's ``context.state``: the one codec every engine's caller reads.

Its own module so that apps (baselines, the toy pair) can store their result without importing the engine API
that runs them.
"""
from __future__ import annotations

from flwr.app import Context, MetricRecord, RecordDict
from flwr.serverapp.strategy import Result

_RESULT_PREFIX = "mupriv.result"


def store_strategy_result(context: Context, result: Result) -> None:
    """Save a strategy's `Result` into the ServerApp's ``context.state`` (call at the end of main)."""
    state = context.state
    state[f"{_RESULT_PREFIX}.arrays"] = result.arrays
    for name, per_round in (
        ("train", result.train_metrics_clientapp),
        ("evaluate", result.evaluate_metrics_clientapp),
        ("server", result.evaluate_metrics_serverapp),
    ):
        for rnd, rec in per_round.items():
            state[f"{_RESULT_PREFIX}.{name}.{int(rnd)}"] = rec


def load_strategy_result(state: RecordDict) -> Result:
    """Inverse of `store_strategy_result`."""
    key = f"{_RESULT_PREFIX}.arrays"
    if key not in state:
        raise KeyError("no strategy result in the ServerApp state: call store_strategy_result(context, result)")
    res = Result(arrays=state[key])  # type: ignore[arg-type]
    target = {
        "train": res.train_metrics_clientapp,
        "evaluate": res.evaluate_metrics_clientapp,
        "server": res.evaluate_metrics_serverapp,
    }
    for k, rec in state.items():
        parts = k.split(".")
        if k.startswith(_RESULT_PREFIX + ".") and len(parts) == 4 and parts[2] in target:
            if isinstance(rec, MetricRecord):
                target[parts[2]][int(parts[3])] = rec
    for d in target.values():
        ordered = dict(sorted(d.items()))
        d.clear()
        d.update(ordered)
    return res
