"""Client-rounds per second of local training at the quickstart's size, three ways, measured in one run.

Each client holds the quickstart's device data shape (48 records of 512 samples x 12 leads, random, seeded by its
partition) and, every round, trains the whole TDSSM (d_model 128, the paper's shape) for one epoch at batch 16
through the same `run_training` call the schemes use, then sends its parameters back to Flower's FedAvg. For 8, 32
and 128 clients the same federation runs on:

- the inline engine, clients one after another (`batch_clients = false`, the default);
- the inline engine with `batch_clients = true` (`simulator.engine.batching`): the round's training stacked;
- the Ray engine (Flower's simulation), when Ray is installed.

Printed per engine and size: the median round time and client-rounds per second, then the ratios to the
sequential inline engine. Target (issue 17): batched >= 5x sequential at 32+ clients.

With --device cuda (or cuda:N, auto) every client's model trains on that GPU, records moved there batch by batch as
in a run; the step timings then synchronise the GPU before reading the clock.

    FLWR_TELEMETRY_ENABLED=0 .venv/bin/python bench/bench_scale.py [--clients 8,32,128] [--rounds 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from simulator.core.device import resolve_device  # noqa: E402
from simulator.core.jobs import TrainingJob, run_training  # noqa: E402
from simulator.core.model import PARTS, TDSSM  # noqa: E402
from simulator.core.phases import Phase  # noqa: E402
from simulator.core.tensors import ECGTensors  # noqa: E402
from simulator.engine import ray_available, run_federation, store_strategy_result  # noqa: E402
from simulator.engine.inline import PARTITION_ID_KEY  # noqa: E402
from simulator.engine.recording import LedgerGrid  # noqa: E402
from simulator.errors import MuprivError  # noqa: E402
from simulator.ledger import WireLedger  # noqa: E402

RECORDS, LENGTH, BATCH = 48, 512, 16  # configs/quickstart.toml: records_per_client, data.length, finetune.batch_size
PHASE = Phase("device", PARTS, 1, data="personal", batch_size=BATCH)
DEVICE = torch.device("cpu")  # --device: where every client's model trains


def device_data(partition: int) -> ECGTensors:
    g = torch.Generator().manual_seed(partition)
    x = torch.randn(RECORDS, LENGTH, 12, generator=g)
    y = (torch.rand(RECORDS, 6, generator=g) < 0.2).float()
    return ECGTensors(x, y, torch.ones_like(y, dtype=torch.bool))


def model_arrays(model: TDSSM) -> ArrayRecord:
    return ArrayRecord({n: Array(p.detach().cpu().numpy().copy()) for n, p in model.named_parameters()})


def make_client_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model = TDSSM()
        model.load_state_dict({n: torch.from_numpy(a.numpy().copy()) for n, a in msg.content["arrays"].items()},
                              strict=False)
        model.to(DEVICE)
        partition = int(context.node_config[PARTITION_ID_KEY])
        rnd = int(msg.content["config"]["server-round"])
        run_training(TrainingJob(model, PHASE, device_data(partition), seed=1000 * partition + rnd))
        metrics = MetricRecord({"num-examples": RECORDS})
        return Message(RecordDict({"arrays": model_arrays(model), "metrics": metrics}), reply_to=msg)

    return app


class _Clock(LedgerGrid):
    """A pass-through grid that times every exchange that sends something (nothing recorded)."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner, WireLedger("bench-clock"))
        self.round_s: list[float] = []

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        t0 = time.perf_counter()
        out = list(self.inner.send_and_receive(messages, timeout=timeout))
        if messages:  # FedAvg's evaluate exchange is empty (fraction_evaluate 0)
            self.round_s.append(time.perf_counter() - t0)
        return out


def make_server_app(num_clients: int, num_rounds: int) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        clock = _Clock(grid)
        torch.manual_seed(0)
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=num_clients, min_evaluate_nodes=0,
                          min_available_nodes=num_clients)
        result = strategy.start(grid=clock, initial_arrays=model_arrays(TDSSM()), num_rounds=num_rounds)
        store_strategy_result(context, result)
        context.state["bench"] = MetricRecord({"round_s": clock.round_s})

    return app


def run(engine: str, num_clients: int, num_rounds: int, batch: bool) -> float:
    """Median seconds per round (the first round of Ray includes starting its actors: left out when possible)."""
    res = run_federation(make_server_app(num_clients, num_rounds), make_client_app(), num_clients, engine=engine,
                         scheme="bench", timeout_s=3000, batch_clients=batch)
    rounds = [float(x) for x in res.state["bench"]["round_s"]]
    return statistics.median(rounds[1:] or rounds) if engine == "ray" else statistics.median(rounds)


def step_seconds(batch: int, length: int, steps: int = 12) -> float:
    """Median seconds of one training step of the whole TDSSM on a (batch, length, 12) batch."""
    model = TDSSM().to(DEVICE).train()
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(batch, length, 12, device=DEVICE), (torch.rand(batch, 6, device=DEVICE) < 0.2).float()
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def where_the_time_goes() -> None:
    """A step at the quickstart's size against the same step on a (1, 8) batch, which is almost nothing but the
    fixed cost of dispatching its ops: batching clients can save at most that share."""
    full, tiny = step_seconds(BATCH, LENGTH), step_seconds(1, 8)
    wide = step_seconds(BATCH * 8, LENGTH, steps=4)
    print(f"one step at ({BATCH}, {LENGTH}): {full * 1e3:.1f} ms; at (1, 8), the fixed per-step cost: {tiny * 1e3:.1f} ms "
          f"({tiny / full:.0%} of the step); at ({BATCH * 8}, {LENGTH}), 8 clients' batches as one: {wide * 1e3:.1f} ms "
          f"= {wide / 8 / full:.2f}x a client's step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="8,32,128", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto: where the clients train")
    args = parser.parse_args()
    global DEVICE
    try:
        DEVICE = resolve_device(args.device, "--device")
    except MuprivError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(f"device {DEVICE}; torch threads {torch.get_num_threads()}; TDSSM {sum(p.numel() for p in TDSSM().parameters())} parameters, "
          f"{RECORDS} records x {LENGTH} samples per client, batch {BATCH}, 1 epoch per round, {args.rounds} rounds")
    run("inline", 2, 1, batch=True)  # warm-up: imports, first torch calls
    where_the_time_goes()
    ways = [("sequential", "inline", False), ("batched", "inline", True)]
    if DEVICE.type != "cpu":
        print("ray: left out on a GPU (the engine gives its actors no GPU)")
    elif ray_available():
        ways.append(("ray", "ray", False))
    else:
        print('ray: not installed (make test-ray installs it); no Ray column')
    for n in [int(c) for c in args.clients.split(",")]:
        per_round = {}
        for label, engine, batch in ways:
            per_round[label] = run(engine, n, args.rounds, batch)
            print(f"{n:4d} clients  {label:10s} {per_round[label]:8.2f} s/round  "
                  f"{n / per_round[label]:7.2f} client-rounds/s", flush=True)
        ratios = "  ".join(f"{label}/sequential {per_round['sequential'] / s:5.2f}x" for label, s in per_round.items()
                           if label != "sequential")
        met = per_round["sequential"] / per_round["batched"] >= 5
        print(f"{n:4d} clients  throughput ratios: {ratios}"
              + (f"  (target batched >= 5x: {'met' if met else 'NOT met'})" if n >= 32 else ""), flush=True)


if __name__ == "__main__":
    main()
