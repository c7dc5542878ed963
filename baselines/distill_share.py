"""`distill-share`: every device uploads a distilled set of its records instead of its records (`central`) or its
updates (`fedavg`); the server fine-tunes the pretrained model on the union of the sets and sends it back.

One exchange, as `central`'s:
- **query.distill** (round 1): the server asks each device for its set; the message carries only the distillation
  settings (nothing else is needed: distribution matching embeds records with TDSSMs drawn afresh at random, not
  with the pretrained model). The device condenses its training records with the distribution-matching distiller
  of `mupriv continual` (simulator.continual.distill; the same code, not a second one) into `records_per_class`
  synthetic records per group it has (each diagnosis among its records, and normal records; at most its record
  count), starting from a class-balanced random selection of its real records, and replies with the synthetic
  signals, their soft labels (each group's mean label vector) and the known mask: an ArrayRecord the wire ledger
  serialises and counts like every other message.
- **evaluate.final** (round 2): the server trains `parts` (µ-Fine-Tuning's encoder + decoder by default: a few dozen
  synthetic records are too few to retrain the pretrained S4D middle on) for `epochs` (the run's finetune.epochs,
  so the training budget is every scheme's) on the union, then sends the full model to every device, which keeps
  it as its final model. There is no local fine-tuning afterwards: the scheme measures what a model trained on
  shared distilled sets gives, not a mix with `mu-ft`.

With `iterations = 0` the upload is exactly the initial selection of real records: a control in which the scheme
is `central` on a subset. The server (the attacker, attacks/) holds the sets: the `distilled-custodian` threat.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from baselines.central import keep_final, part_list, records_record, train_on_uploads
from baselines.registry import Scheme, param, register
from baselines.server import broadcast, model_content, wait_for_nodes
from baselines.setup import SchemeSetup, device_data, device_seed, parts_record, pretrained_model, tally
from simulator.continual.distill import distill
from simulator.continual.memory import Memory
from simulator.core.model import PARTS, ModelConfig
from simulator.core.tensors import ECGTensors
from simulator.scheme_record import DISTILLED

UPLOAD = "distilled"  # the reply's ArrayRecord: x (n, length, leads), y (soft labels), known
EMBEDS = ("features", "encoder")


@dataclass(frozen=True)
class DistillShareParams:
    records_per_class: int = param(2, "distilled records per group the device has (each diagnosis among its records, "
                                      "and normal records); at most the device's record count")
    iterations: int = param(100, "distribution-matching steps on the device (a fresh random encoder each); 0 = upload "
                                 "the initial class-balanced selection of real records unchanged (a control)")
    lr: float = param(0.01, "Adam learning rate on the synthetic records' samples")
    embed: str = param("features", "'features': match the random model's pooled encoder + S4D features; 'encoder': "
                                   "the pooled encoder output alone")
    freq_weight: float = param(0.1, "weight of the frequency term (mean |rfft| per group and lead); 0 = embeddings only")
    epochs: int = param(0, "server training epochs on the union of the distilled sets; 0 = the run's finetune.epochs")
    parts: str = param("encoder,decoder", "model parts the server trains on the union: 'all' or a comma list")

    def check(self) -> str | None:
        problems = [(self.records_per_class < 1, "records_per_class must be >= 1"),
                    (self.iterations < 0, "iterations must be >= 0"), (not self.lr > 0, "lr must be > 0"),
                    (self.embed not in EMBEDS, f"embed must be one of {', '.join(EMBEDS)}"),
                    (not self.freq_weight >= 0, "freq_weight must be >= 0"), (self.epochs < 0, "epochs must be >= 0")]
        bad = [p for p in self.part_list() if p not in PARTS]
        problems.append((bool(bad) or not self.part_list(), f"parts {bad or self.parts!r} unknown; choose from "
                                                             f"{list(PARTS)} or 'all'"))
        return next((why for failed, why in problems if failed), None)

    def part_list(self) -> tuple[str, ...]:
        return part_list(self.parts)

    # simulator.continual.distill.DistillSettings: the distiller reads its settings under these names
    @property
    def distill_iterations(self) -> int:
        return self.iterations

    @property
    def distill_lr(self) -> float:
        return self.lr

    @property
    def distill_embed(self) -> str:
        return self.embed

    @property
    def distill_freq_weight(self) -> float:
        return self.freq_weight


def distilled_set(data: ECGTensors, params: DistillShareParams, cfg: ModelConfig, seed: int) -> ECGTensors:
    """The device's distilled set: `records_per_class` records per group its records fall in (at most its record
    count), condensed by distribution matching from its records. The distiller draws its own random encoders of
    the architecture `cfg`; the pretrained weights play no part."""
    candidates = Memory.of_records(data, stage=0)
    groups = int(candidates.groups.any(dim=0).sum())
    result = distill(candidates, params.records_per_class * groups, cfg, params, stage=0, seed=seed)
    return result.memory.data


def build(setup: SchemeSetup) -> tuple[ServerApp, ClientApp]:
    params = DistillShareParams(**setup.params)
    epochs = params.epochs or int(setup.finetune["epochs"])
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = pretrained_model(setup)
        nodes = wait_for_nodes(grid, setup.num_clients)
        ask = {"server-round": 1, "records-per-class": params.records_per_class, "iterations": params.iterations}
        replies = broadcast(grid, nodes, "query.distill", lambda _n: model_content(None, ask), "1")
        uploads = [r.content[UPLOAD] for r in replies if r.has_content() and UPLOAD in r.content]
        train_on_uploads(setup, model, uploads, params.part_list(), epochs, "distill-share")
        full = parts_record(model, PARTS)
        broadcast(grid, nodes, "evaluate.final", lambda _n: model_content(full, {"server-round": 2}), "2")

    @client.query("distill")
    def upload(msg: Message, context: Context) -> Message:
        start = time.perf_counter()
        data = distilled_set(device_data(context), params, setup.model_config(), device_seed(setup, context, 1))
        tally(context, wall_s=time.perf_counter() - start)
        return Message(RecordDict({UPLOAD: records_record(data)}), reply_to=msg)

    @client.evaluate("final")
    def final(msg: Message, context: Context) -> Message:
        return keep_final(setup, msg, context)

    return server, client


SCHEME = register(Scheme(
    name="distill-share",
    summary="each device uploads a distilled set of its records; the server trains on their union and sends the model back",
    observable=DISTILLED,
    shared_parts=(),
    device_parts=(),
    params=DistillShareParams,
    build=build,
    federated=False,
))
