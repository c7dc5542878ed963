"""Per-round overhead of the inline engine vs Flower's Ray simulation, measured in one run.

Same ServerApp (Flower's message-API FedAvg, train + evaluate every round) and ClientApp (a small
MLP, a few SGD steps on seeded random data) for 8 clients on both engines. Prints, per engine:
the end-to-end wall time of `run_federation` (Ray: including its start-up), the first round, and
the median of the later rounds, timed inside the ServerApp; then the ratios, and the engine
overhead per round (round time minus the clients' bare compute). Target: inline at least 5x faster per round.

    FLWR_TELEMETRY_ENABLED=0 .venv/bin/python bench/bench_engine.py [--clients 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from flwr.app import ArrayRecord, Context, MetricRecord  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from simulator.engine import ray_available, run_federation, store_strategy_result  # noqa: E402
from simulator.engine.recording import LedgerGrid  # noqa: E402
from simulator.engine.toy import ToySpec, local_train, make_toy_client_app, toy_data, toy_model  # noqa: E402
from simulator.ledger import WireLedger  # noqa: E402

SPEC = ToySpec(in_features=12, hidden=64, out_features=6, samples=64, steps=5)


class _Clock(LedgerGrid):
    """A pass-through grid that timestamps every exchange (nothing recorded)."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner, WireLedger("bench-clock"))
        self.stamps: list[float] = []

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.stamps += [t0, time.perf_counter()]
        return out


def make_server_app(num_clients: int, num_rounds: int) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        clock = _Clock(grid)
        strategy = FedAvg(min_train_nodes=num_clients, min_evaluate_nodes=num_clients, min_available_nodes=num_clients)
        result = strategy.start(grid=clock, initial_arrays=ArrayRecord(toy_model(SPEC).state_dict()), num_rounds=num_rounds)
        store_strategy_result(context, result)
        # two exchanges (train, evaluate) per round, two stamps each
        ends = [clock.stamps[0]] + clock.stamps[3::4]
        context.state["bench"] = MetricRecord({"round_s": [b - a for a, b in zip(ends, ends[1:])]})

    return app


def run(engine: str, num_clients: int, num_rounds: int) -> tuple[float, list[float], int]:
    t0 = time.perf_counter()
    res = run_federation(
        make_server_app(num_clients, num_rounds),
        make_toy_client_app(SPEC),
        num_clients,
        engine=engine,
        scheme="bench",
        timeout_s=540,
    )
    wall = time.perf_counter() - t0
    return wall, [float(x) for x in res.state["bench"]["round_s"]], len(res.ledger)


def compute_only(num_clients: int, num_rounds: int) -> float:
    """Seconds per round of just the clients' work (train + evaluate), no Flower at all."""
    arrays = ArrayRecord(toy_model(SPEC).state_dict())
    t0 = time.perf_counter()
    for _ in range(num_rounds):
        for pid in range(num_clients):
            weights, _ = local_train(SPEC, arrays, pid)
            model = toy_model(SPEC)
            model.load_state_dict(weights)
            x, y = toy_data(SPEC, pid)
            with torch.no_grad():
                torch.nn.functional.cross_entropy(model(x), y)
    return (time.perf_counter() - t0) / num_rounds


def _fmt(engine: str, wall: float, rounds: list[float], msgs: int) -> str:
    return (f"{engine:7s} end-to-end {wall:7.3f} s | round 1 {rounds[0] * 1e3:8.1f} ms | "
            f"rounds 2+ median {_steady(rounds) * 1e3:8.1f} ms | {msgs} messages")


def _steady(rounds: list[float]) -> float:
    """Median time of the rounds after the first (Ray's first round includes actor start-up)."""
    return statistics.median(rounds[1:] or rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)  # Ray gives each actor one CPU (OMP_NUM_THREADS=1); match it
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)

    n_params = sum(p.numel() for p in toy_model(SPEC).parameters())
    print(f"model: MLP {SPEC.in_features}-{SPEC.hidden}-{SPEC.out_features} ({n_params} parameters), "
          f"{args.clients} clients, {args.rounds} rounds (train + evaluate each), {SPEC.steps} SGD steps per client")
    run("inline", 2, 1)  # warm-up: imports, first torch calls
    compute = compute_only(args.clients, args.rounds)
    print(f"compute only (clients' train+evaluate, no Flower): {compute * 1e3:8.1f} ms per round")
    inline_wall, inline_rounds, inline_msgs = run("inline", args.clients, args.rounds)
    print(_fmt("inline:", inline_wall, inline_rounds, inline_msgs))
    if not ray_available():
        print('ray: not installed (pip install -c constraints.txt "flwr[simulation]==1.41.0"); no ratio')
        return
    ray_wall, ray_rounds, ray_msgs = run("ray", args.clients, args.rounds)
    print(_fmt("ray:", ray_wall, ray_rounds, ray_msgs))
    ratio = _steady(ray_rounds) / _steady(inline_rounds)
    overhead = lambda xs: max(_steady(xs) - compute, 1e-9)  # noqa: E731
    print(f"ratio ray/inline: per round (rounds 2+) {ratio:6.1f}x | end-to-end {ray_wall / inline_wall:6.1f}x | "
          f"engine overhead per round (minus compute) {overhead(ray_rounds) / overhead(inline_rounds):6.1f}x "
          f"(target per round >= 5x: {'met' if ratio >= 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
