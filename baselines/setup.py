"""What every scheme's apps share: the run setup (carried in Flower's run_config) and the device side.

The setup travels as one JSON string in ``context.run_config["mupriv-setup"]`` so the same apps
run on every engine (in-process, Ray actors, real SuperNodes). A device (ClientApp node) reads its
own personal training data from ``node_config["data-path"]`` and keeps its personal model in its
node ``context.state`` between rounds.

"Probes" are simulation-only: after its last update a device leaves its final personal model in
``probe_dir`` so the experimenter can evaluate it off the wire, the same way for every scheme.
Round probes (``probe_dir/rounds/``) do the same after every round or epoch, for the per-round curves:
each device's personal model after its local training, and the server's global (shared) parameters
after each aggregation. Nothing in a probe is visible to the server or recorded in the wire ledger,
and writing one draws no random numbers, so it cannot change what trains.
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from flwr.app import Array, ArrayRecord, Context, MetricRecord

from simulator.atomic import atomic_write
from simulator.core.device import resolve_device
from simulator.core.model import PARTS, ModelConfig, TDSSM
from simulator.core.jobs import TrainingJob, run_training
from simulator.core.phases import Phase, PhaseResult
from simulator.core.tensors import ECGTensors, load_npz

SETUP_KEY = "mupriv-setup"
DATA_PATH_KEY = "data-path"
PERSONAL_KEY = "mupriv.personal"
TALLY_KEY = "mupriv.tally"
ROUNDS_DIR = "rounds"  # under probe_dir: the round probes
GLOBAL = "global"  # round probe name of the server's global parameters


@dataclass(frozen=True)
class SchemeSetup:
    scheme: str
    model: dict[str, Any]  # ModelConfig fields
    finetune: dict[str, Any]  # on-device training hyperparameters: Phase fields (epochs, lr, batch_size, ...)
    params: dict[str, Any]  # the scheme's own parameters
    seed: int
    pretrained_path: str  # checkpoint of the server-pretrained model (read by the ServerApp only)
    probe_dir: str
    num_clients: int
    # partition id (str) -> the rounds it fails in, or ["*"] (see baselines.faults; [federation] fail)
    faults: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    # the torch device every model of the run computes on, resolved by the runner ("cpu", "cuda:0"; core.device)
    device: str = "cpu"

    def to_run_config(self) -> dict[str, str]:
        return {SETUP_KEY: json.dumps(dataclasses.asdict(self), sort_keys=True)}

    @classmethod
    def from_context(cls, context: Context) -> "SchemeSetup":
        return cls(**json.loads(str(context.run_config[SETUP_KEY])))

    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def torch_device(self) -> torch.device:
        """Where this run's models compute; checked again in the app's own process (a Ray actor or SuperNode
        may not see the GPU the runner saw)."""
        return resolve_device(self.device)

    def phase(self, parts: Sequence[str], epochs: int | None = None, name: str = "device") -> Phase:
        """An on-device training phase over `parts` with the run's fine-tuning hyperparameters."""
        kw = {k: v for k, v in self.finetune.items() if k in {f.name for f in dataclasses.fields(Phase)}}
        kw.update(name=name, parts=tuple(parts), data="personal")
        if epochs is not None:
            kw["epochs"] = int(epochs)
        return Phase(**kw)


# ----------------------------------------------------------------------------------- arrays <-> model
def part_names(model: TDSSM, parts: Sequence[str]) -> list[str]:
    """Parameter names (no buffers: the wiring masks are fixed and never sent) of the named parts."""
    return [n for n, _ in model.named_parameters() if n.split(".", 1)[0] in parts]


def parts_record(model: TDSSM, parts: Sequence[str]) -> ArrayRecord:
    params = dict(model.named_parameters())
    return ArrayRecord({n: Array(params[n].detach().cpu().numpy().copy()) for n in part_names(model, parts)})


def load_arrays(model: TDSSM, arrays: ArrayRecord) -> None:
    """Overwrite the model's parameters that `arrays` names; every name must be a parameter."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in arrays.items():
            if name not in params:
                raise KeyError(f"received array {name!r} is not a parameter of the model")
            params[name].copy_(torch.from_numpy(arr.numpy().copy()))


def pretrained_model(setup: SchemeSetup) -> TDSSM:
    from simulator.core.checkpoint import load_model  # pylint: disable=import-outside-toplevel

    model, _ = load_model(Path(setup.pretrained_path), setup.model_config())
    return model.to(setup.torch_device()).eval()


# ----------------------------------------------------------------------------------------- device side
_DATA_CACHE: dict[str, ECGTensors] = {}


def device_data(context: Context) -> ECGTensors:
    """The device's personal training data (read once per process)."""
    path = str(context.node_config[DATA_PATH_KEY])
    if path not in _DATA_CACHE:
        _DATA_CACHE[path] = load_npz(Path(path))
    return _DATA_CACHE[path]


def partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def device_seed(setup: SchemeSetup, context: Context, server_round: int) -> int:
    """Each device's seed derives from (run seed, partition, round): same config, same numbers."""
    return (setup.seed * 1_000_003 + partition(context) * 10_007 + server_round) % (2**31)


def device_model(setup: SchemeSetup, context: Context, received: ArrayRecord | None) -> TDSSM:
    """The device's model: its personal state from earlier rounds (if any), then what just came down."""
    model = TDSSM(setup.model_config())
    if PERSONAL_KEY in context.state:
        load_arrays(model, context.state[PERSONAL_KEY])  # type: ignore[arg-type]
    elif received is None or set(received.keys()) != set(part_names(model, PARTS)):
        raise RuntimeError("device has no model yet: the first message must carry every parameter")
    if received is not None:
        load_arrays(model, received)
    return model.to(setup.torch_device())  # built and loaded on the CPU (same RNG draws everywhere), then moved


def keep_personal(context: Context, model: TDSSM) -> None:
    context.state[PERSONAL_KEY] = parts_record(model, PARTS)


def tally(context: Context, **add: float) -> dict[str, float]:
    """Accumulate device-side counters (wall time, local steps, rounds) across messages."""
    current = dict(context.state[TALLY_KEY]) if TALLY_KEY in context.state else {}  # type: ignore[arg-type]
    for k, v in add.items():
        current[k] = float(current.get(k, 0.0)) + float(v)
    context.state[TALLY_KEY] = MetricRecord(current)
    return current


def train_on_device(
    setup: SchemeSetup,
    context: Context,
    model: TDSSM,
    parts: Sequence[str],
    epochs: int,
    server_round: int,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> PhaseResult:
    """Train `parts` on the device's personal data; no validation split on a device, so the last epoch is kept.
    `after_epoch(epoch)` runs after each epoch (the on-device schemes leave a round probe there)."""
    on_epoch = None if after_epoch is None else (lambda log: after_epoch(log.epoch))
    job = TrainingJob(model, setup.phase(parts, epochs), device_data(context), device_seed(setup, context, server_round),
                      penalty=penalty, on_epoch=on_epoch)
    done = run_training(job)  # here, or batched with the round's other clients ([federation] batch_clients)
    tally(context, wall_s=done.wall_s, local_steps=done.result.steps, trainings=1)
    return done.result


def update_metrics(result: PhaseResult, n_examples: int) -> MetricRecord:
    loss = result.history[-1].loss if result.history else float("nan")
    return MetricRecord({"num-examples": int(n_examples), "local-steps": int(result.steps), "train-loss": float(loss)})


def write_probe(setup: SchemeSetup, context: Context, model: TDSSM, **extra: Any) -> Path:
    """Leave the device's final personal model for off-wire evaluation (simulation only), atomically."""
    return _save_device_blob(Path(setup.probe_dir) / f"{partition(context)}.pt", context, model, extra)


def write_round_probe(setup: SchemeSetup, context: Context, model: TDSSM, rnd: int) -> Path:
    """The device's personal model after round (or epoch) `rnd`, with its counters so far (epsilon included)."""
    return _save_device_blob(Path(setup.probe_dir) / ROUNDS_DIR / f"{partition(context)}-{int(rnd)}.pt", context, model, {})


def write_global_probe(setup: SchemeSetup, rnd: int, arrays: Mapping[str, Any]) -> Path:
    """The server's global parameters after round (or epoch) `rnd`: the shared parts only, by name."""
    state = {n: torch.as_tensor(_numpy(a)).clone() for n, a in arrays.items()}
    return _save(Path(setup.probe_dir) / ROUNDS_DIR / f"{GLOBAL}-{int(rnd)}.pt", {"state": state})


def read_probe(probe_dir: Path, partition_id: int) -> dict[str, Any] | None:
    path = Path(probe_dir) / f"{partition_id}.pt"
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True)


@dataclass(frozen=True)
class RoundProbes:
    """What the round probes hold: per partition {round: blob}, and the global states {round: state}."""

    devices: dict[int, dict[int, dict[str, Any]]]
    globals: dict[int, dict[str, torch.Tensor]]

    def rounds(self) -> list[int]:
        """Every round any probe was written for, and round 0 (the pretrained model)."""
        found = {0, *self.globals}
        for per_round in self.devices.values():
            found |= set(per_round)
        return sorted(found)


def read_round_probes(probe_dir: Path) -> RoundProbes:
    devices: dict[int, dict[int, dict[str, Any]]] = {}
    globals_: dict[int, dict[str, torch.Tensor]] = {}
    folder = Path(probe_dir) / ROUNDS_DIR
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        if path.name.startswith("."):  # a temporary file an interrupted write left
            continue
        who, _, rnd = path.stem.rpartition("-")
        blob = torch.load(path, weights_only=True)
        if who == GLOBAL:
            globals_[int(rnd)] = blob["state"]
        else:
            devices.setdefault(int(who), {})[int(rnd)] = blob
    return RoundProbes(devices, globals_)


def probe_model(cfg: ModelConfig, state: Mapping[str, torch.Tensor]) -> TDSSM:
    """A model holding `state` (parameter name -> tensor; names it lacks keep their fresh values), in eval mode:
    how every probe is turned back into the model a device holds."""
    model = TDSSM(cfg)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in state.items():
            if name not in params:
                raise KeyError(f"probe tensor {name!r} is not a parameter of the model")
            params[name].copy_(t)
    return model.eval()


def _save_device_blob(path: Path, context: Context, model: TDSSM, extra: dict[str, Any]) -> Path:
    counters = dict(context.state[TALLY_KEY]) if TALLY_KEY in context.state else {}  # type: ignore[arg-type]
    return _save(path, {"state": {n: p.detach().cpu().clone() for n, p in model.named_parameters()},
                        "tally": {**counters, **extra}})


def _save(path: Path, blob: dict[str, Any]) -> Path:
    buf = io.BytesIO()  # in memory first: a full disk is then an OSError of the write, not torch's RuntimeError
    torch.save(blob, buf)
    return atomic_write(path, buf.getvalue())


def _numpy(a: Any) -> Any:
    return a.numpy() if hasattr(a, "numpy") and not isinstance(a, torch.Tensor) else a
