"""Run configuration: TOML in, validated frozen dataclasses out, with a stable hash.

Unknown keys are errors that suggest the closest valid name; wrong types name the key and the type wanted.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from attacks.budget import ATTACKS, PRESETS
from simulator.core.device import check_name as check_device_name
from simulator.core.labels import CLASSES
from simulator.core.model import ModelConfig
from simulator.core.phases import POSITIONS, Phase, mu_finetuning, pretraining_plan
from simulator.config_checks import check_values
from simulator.config_grid import Axis, Setting, grid, sweep_table_axes
from simulator.data.preprocess import DEFAULT_INPUT
from simulator.errors import MuprivError


@dataclass(frozen=True)
class DataConfig:
    """Where records come from and how they are shaped for the model (see simulator.data.preprocess)."""

    path: str = field(default="", metadata={"help": '"" = synthetic records; else a WFDB folder, a CODE-15 .hdf5 or an .npz (--data overrides it)'})
    synthetic_records: int = field(default=512, metadata={"range": "[1, inf)", "help": "how many synthetic source records when path is empty"})
    fs: float = field(default=DEFAULT_INPUT.fs, metadata={"range": "(0, inf)", "help": "resample every record to this rate (Hz)"})
    length: int = field(default=DEFAULT_INPUT.length, metadata={"range": "[1, inf)", "help": "samples per record fed to the model (centred crop / zero pad)"})
    scale: str = field(default=DEFAULT_INPUT.scale, metadata={"help": 'min-max per "record" (the paper), per "lead", or "none" (keep mV)'})
    skip_bad: bool = field(default=False, metadata={"help": "leave unreadable records out (counted in the summary) instead of stopping"})
    val_fraction: float = field(default=0.2, metadata={"range": "(0, 1)", "help": "share of the server's records (after source_holdout) held out to pick pretraining's best epochs; without a holdout they also measure forgetting"})
    source_holdout: float = field(default=0.0, metadata={"range": "[0, 1)", "help": "share of the server's records set aside before pretraining and never trained or selected on: forgetting and the source score are measured on them. 0 = measured on the validation records pretraining picked its epochs on (a little optimistic for the pretrained model)"})


@dataclass(frozen=True)
class TrainConfig:
    """Server pretraining: full training, then µ-Training (placed at the start, end or both ends)."""

    full_epochs: int = field(default=4, metadata={"range": "[0, inf)", "help": "epochs of full training (every part trains)"})
    mu_epochs: int = field(default=4, metadata={"range": "[0, inf)", "help": "epochs of µ-Training (only the middle S4D block trains)"})
    position: str = field(default="end", metadata={"help": 'where µ-Training goes: "start", "end", or split over "both" ends'})
    self_distill: bool = field(default=True, metadata={"help": "µ-Training with future-guided self-distillation (soft labels from a look-ahead step)"})
    alpha: float = field(default=0.8, metadata={"range": "[0, 1]", "help": "self-distillation weight: loss = (1-alpha)·BCE(labels) + alpha·BCE(soft labels)"})
    lr: float = field(default=3e-3, metadata={"range": "(0, inf)", "help": "AdamW learning rate (cosine schedule)"})
    kernel_lr: float = field(default=1e-3, metadata={"range": "[0, inf)", "help": "learning rate of the S4D kernel parameters (log_dt, log_A_real, A_imag), no weight decay"})
    weight_decay: float = field(default=0.01, metadata={"range": "[0, inf)", "help": "AdamW weight decay (not applied to the S4D kernel parameters)"})
    batch_size: int = field(default=32, metadata={"range": "[1, inf)", "help": "records per batch"})
    pos_weight: float = field(default=6.0, metadata={"range": "(0, inf)", "help": "BCE-with-logits positive-class weight (the paper's 6)"})

    def plan(self) -> list[Phase]:
        # alpha only weighs self-distillation; it used to be left out here, so train.alpha changed nothing
        return pretraining_plan(self.full_epochs, self.mu_epochs, self.position, self.self_distill, alpha=self.alpha,
                                **self._opt())

    def _opt(self) -> dict:
        return dict(lr=self.lr, kernel_lr=self.kernel_lr, weight_decay=self.weight_decay, batch_size=self.batch_size, pos_weight=self.pos_weight)


@dataclass(frozen=True)
class FinetuneConfig:
    """On-device personalisation: µ-Fine-Tuning trains encoder + decoder; `parts` can name others."""

    epochs: int = field(default=4, metadata={"range": "[0, inf)", "help": "on-device fine-tuning epochs (every scheme's device training and central's server training)"})
    parts: tuple[str, ...] = field(default=("encoder", "decoder"), metadata={"help": 'model parts that train: ["encoder", "decoder"] = µ-Fine-Tuning; add "middle" for full fine-tuning'})
    lr: float = field(default=3e-3, metadata={"range": "(0, inf)", "help": "AdamW learning rate (cosine schedule)"})
    kernel_lr: float = field(default=1e-3, metadata={"range": "[0, inf)", "help": "learning rate of the S4D kernel parameters, no weight decay"})
    weight_decay: float = field(default=0.01, metadata={"range": "[0, inf)", "help": "AdamW weight decay (not applied to the S4D kernel parameters)"})
    batch_size: int = field(default=32, metadata={"range": "[1, inf)", "help": "records per batch"})
    pos_weight: float = field(default=6.0, metadata={"range": "(0, inf)", "help": "BCE-with-logits positive-class weight"})

    def phase(self) -> Phase:
        base = mu_finetuning(self.epochs, lr=self.lr, kernel_lr=self.kernel_lr, weight_decay=self.weight_decay,
                             batch_size=self.batch_size, pos_weight=self.pos_weight)
        name = "mu-ft" if set(self.parts) == {"encoder", "decoder"} else "finetune"
        return dataclasses.replace(base, name=name, parts=tuple(self.parts))


@dataclass(frozen=True)
class CohortConfig:
    """The simulated study: the server's source data and the patient clients (see simulator.data.cohort)."""

    clients: int = field(default=4, metadata={"range": "[1, inf)", "help": 'number of clients (patients; hospitals with split = "source", where it is a cap)'})
    records_per_client: int = field(default=60, metadata={"range": "[1, inf)", "help": "synthetic: records each simulated patient holds"})
    test_fraction: float = field(default=0.3, metadata={"range": "(0, 1)", "help": "share of each client's records held out as its personal test set"})
    test_records: int = field(default=0, metadata={"range": "[0, inf)", "help": "synthetic: > 0 = each patient's personal test set is this many extra records (measurement only; all records_per_client then train, test_fraction is not used)"})
    test_min_positives: int = field(default=0, metadata={"range": "[0, inf)", "help": "synthetic, with test_records: > 0 = every patient's test set holds at least this many positives of each of the 6 classes (test records redrawn class-conditionally from the same patient and device; the training records are unchanged); at most test_records / 6. 0 = the patient's own i.i.d. mix"})
    shift: float = field(default=0.5, metadata={"range": "[0, 1]", "help": "synthetic: 0 = clients like the source population ... 1 = strongly shifted device (noise, rate, each patient's electrode placement), age and class mix"})
    split: str = field(default="patient", metadata={"help": 'real data: clients by "patient", by "source" (one hospital database each) or "dirichlet" (label skew)'})
    source_fraction: float = field(default=0.5, metadata={"range": "(0, 1)", "help": 'real data: share of the records (whole patients) the server keeps (not used by split = "source")'})
    dirichlet_alpha: float = field(default=0.5, metadata={"range": "(0, inf)", "help": 'real data with split = "dirichlet": smaller = more skewed clients'})
    client_data: str = field(default="", metadata={"help": '"" = the clients are split from the same records as the server; else a second data set (WFDB folder, CODE-15 .hdf5 or .npz) the clients are drawn from, and the server keeps all of data.path, or synthetic records when that is "" (the paper: pretrain on CODE-15%, personalise on CPSC 2018)'})
    balanced_per_class: int = field(default=0, metadata={"range": "[0, inf)", "help": "real data: > 0 = each client trains on the paper's balanced subset of its records (up to this many positives of each class, rarest first, plus as many with no class) and is tested on all its other records (test_fraction is not used)"})


@dataclass(frozen=True)
class FederationConfig:
    """How schemes run: the Flower engine and the defaults every federated scheme starts from."""

    engine: str = field(default="inline", metadata={"help": '"inline" (in-process, deterministic), "ray" (Flower\'s simulation engine) or "deployment" (a real local SuperLink + SuperNodes, flwr run)'})
    budget: str = field(default="matched", metadata={"help": '"matched": every scheme trains finetune.epochs on each device, so federated rounds are derived (rounds x epochs per round = finetune.epochs, divided by fraction_train); "as-configured": rounds as set here or in [schemes.<name>], and the report says the budgets differ'})
    rounds: int = field(default=0, metadata={"range": "[0, inf)", "help": "federated rounds (a [schemes.<name>] table can override it); only with budget = \"as-configured\", derived otherwise"})
    local_epochs: int = field(default=1, metadata={"range": "[1, inf)", "help": "local epochs per round (a [schemes.<name>] table can override it)"})
    timeout_s: float = field(default=3600.0, metadata={"range": "(0, inf)", "help": "hard time limit per scheme run (seconds)"})
    batch_clients: bool = field(default=False, metadata={"help": 'inline engine: train a round\'s clients as one batched computation '
                                 '(the same messages and results to float tolerance; DP-SGD still trains client by client). '
                                 'Measured on 2 CPU cores it is not faster at the quickstart\'s size (README, Benchmarks); it is meant for GPUs'})
    fail: tuple[str, ...] = field(default=(), metadata={"help": 'make devices fail, to test that failures are reported: '
                                  '"<client>@<round>" raises on that client\'s messages of that round (the ledger\'s: 0 = '
                                  'the first full download, 1..R training, R+1 the final model), "<client>@*" in every training '
                                  'round (1..R: it still gets the final model); client "*" = every client. E.g. ["client-001@2"]; every scheme '
                                  'of the run gets the same failures'})


BUDGETS = ("matched", "as-configured")


def parse_fail(entries: tuple[str, ...]) -> list[tuple[str, int | str]]:
    """[federation] fail entries as (client id or "*", round >= 0 or "*"); a malformed one is an error naming it."""
    out: list[tuple[str, int | str]] = []
    for entry in entries:
        client, sep, rnd = str(entry).partition("@")
        if not sep or not client.strip() or "@" in rnd or not (rnd == "*" or rnd.isdigit()):
            raise MuprivError(f"federation.fail entry {entry!r} is not \"<client>@<round>\": write e.g. "
                              f"\"client-001@2\" (round 2), \"client-001@*\" (every round) or \"*@1\" (every client)")
        out.append((client.strip(), rnd if rnd == "*" else int(rnd)))
    return out


def matched_rounds(scheme: str, device_epochs: int, params: dict[str, Any]) -> int:
    """Rounds that give each device `device_epochs` of local training in expectation: a round trains
    local_epochs (+ head_epochs for FedRep) on each sampled device, and a device is sampled in a fraction
    fraction_train of the rounds."""
    per_round = int(params.get("local_epochs", 1)) + int(params.get("head_epochs", 0) or 0)
    fraction = float(params.get("fraction_train", 1.0) or 1.0)
    exact = device_epochs / (per_round * fraction)
    rounds = round(exact)
    if rounds < 1 or abs(rounds - exact) > 1e-9:
        raise MuprivError(f"{scheme}: finetune.epochs = {device_epochs} is not a whole number of rounds of {per_round} "
                          f"epoch(s) per round at fraction_train {fraction:g} ({exact:.3g} rounds): change finetune.epochs, "
                          f"local_epochs or fraction_train so that they divide, or set federation.budget = \"as-configured\"")
    return rounds


@dataclass(frozen=True)
class SchemesConfig:
    """Which schemes run, and per-scheme parameters (TOML tables [schemes.<name>])."""

    run: tuple[str, ...] = field(default=("mu-ft", "local-ft", "central", "fedavg", "fedprox", "dp-fedavg", "secagg-fedavg",
                                          "fedrep", "fedper", "fed-mu"),
                                 metadata={"help": "the schemes simulate runs, in order (mupriv schemes lists them)"})
    # Held as ((scheme, ((key, value), ...)), ...); in TOML these are the [schemes.<name>] tables, hence "toml_key".
    options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = field(default=(), metadata={
        "toml_key": "<name>", "help": "one table per scheme of its parameters, e.g. [schemes.fedprox] mu = 0.01 (see the scheme tables)"})

    def params_for(self, name: str) -> dict[str, Any]:
        return {k: v for scheme, items in self.options if scheme == name for k, v in items}


@dataclass(frozen=True)
class AttacksConfig:
    """The curious server's attacks on every scheme's wire ledger (see docs/attacks.md)."""

    enabled: bool = field(default=True, metadata={"help": "attack every scheme's ledger after it runs (the privacy column); --no-attacks turns it off"})
    budget: str = field(default="quick", metadata={"help": 'compute per attack: "quick", "standard" or "thorough" (iterations, restarts, targets)'})
    run: tuple[str, ...] = field(default=("labels", "attribute", "features", "dlg", "ig", "multistep", "membership"),
                                 metadata={"help": "attack families to run where the threat model allows them"})
    audit: bool = field(default=True, metadata={"help": "dp-fedavg (mode dp-sgd): audit one device's DP-SGD with canaries "
                                                        "after the scheme runs; an empirical lower bound on epsilon "
                                                        "next to the accountant's (docs/attacks.md, DP audit)"})


@dataclass(frozen=True)
class ReportConfig:
    """What a simulate run records beyond the final results."""

    curves: bool = field(default=True, metadata={"help": "rounds.csv and the report's per-round curves: every device's model "
                                                         "scored after every federated round (every epoch on the device), "
                                                         "which costs about one evaluation pass per round and client"})


CONTINUAL_KINDS = ("class", "domain", "both")
CONTINUAL_METHODS = ("finetune", "replay-all", "random", "herding", "distill")
SIZE_METHODS = ("adaptive", "fixed-large")  # model-size adaption: need continual.widths


@dataclass(frozen=True)
class ContinualConfig:
    """`mupriv continual`: each synthetic patient's records arrive in stages; the device keeps a small memory (see simulator/continual/)."""

    kind: str = field(default="class", metadata={"help": '"class": a new condition appears at each later stage (new_classes); '
                                                        '"domain": the device is worn a new way at each stage (new electrode '
                                                        'placement and contact gains); "both"'})
    stages: int = field(default=3, metadata={"range": "[2, inf)", "help": "stages the records arrive in"})
    new_classes: tuple[str, ...] = field(default=("AF", "ST"), metadata={
        "help": 'kind "class"/"both": the class that first appears at stage 1, 2, ... (one per later stage, stages - 1 '
                'in all); stage 0 knows the other classes'})
    new_share: float = field(default=0.5, metadata={"range": "(0, 1]", "help": "kind \"class\"/\"both\": share of a later stage's "
                                                                             "records whose main finding is the new class (the "
                                                                             "rest follow the mix of the classes known by then)"})
    patients: int = field(default=4, metadata={"range": "[1, inf)", "help": "synthetic patients (each one device, run separately)"})
    train_records: int = field(default=40, metadata={"range": "[2, inf)", "help": "records a patient's device trains on per stage"})
    test_records: int = field(default=60, metadata={"range": "[2, inf)", "help": "held-out records per patient and stage (measurement only)"})
    epochs: int = field(default=8, metadata={"range": "[1, inf)", "help": "device training epochs per stage ([finetune] gives lr, batch_size, parts)"})
    methods: tuple[str, ...] = field(default=CONTINUAL_METHODS, metadata={
        "help": 'what the device keeps between stages: "finetune" (nothing), "replay-all" (every record), "random", '
                '"herding" or "distill" (a memory of the budget\'s size); with widths set, also "adaptive" (start at '
                'model.d_model, widen when the trigger fires) and "fixed-large" (the last width from the start), both '
                'keeping size_memory\'s memory'})
    memory_fraction: float = field(default=0.01, metadata={"range": "(0, 1]", "help": "memory budget as a share of the records seen so far "
                                                                                    "(at least one record per seen class and one normal)"})
    memory_records: int = field(default=0, metadata={"range": "[0, inf)", "help": "> 0: a fixed memory budget in records instead of memory_fraction "
                                                                                 "(still at least one per seen class and one normal)"})
    replay_share: float = field(default=0.5, metadata={"range": "(0, 1)", "help": "memory records are repeated to make up about this share "
                                                                                "of each stage's training records"})
    distill_iterations: int = field(default=100, metadata={"range": "[0, inf)", "help": "distribution-matching steps per stage (a fresh random encoder each)"})
    distill_lr: float = field(default=0.01, metadata={"range": "(0, inf)", "help": "Adam learning rate on the synthetic records' samples"})
    distill_embed: str = field(default="features", metadata={"help": '"features": match the random model\'s pooled encoder + S4D '
                                                                     'features; "encoder": the pooled encoder output alone'})
    distill_freq_weight: float = field(default=0.1, metadata={"range": "[0, inf)", "help": "weight of the frequency term (mean |rfft| per class "
                                                                                          "and lead); 0 = embeddings only"})
    pretrain_records: int = field(default=400, metadata={"range": "[4, inf)", "help": "synthetic source records the server pretrains on ([train] plan)"})
    widths: tuple[int, ...] = field(default=(), metadata={"help": "model-size adaption: the d_model values the device may "
                                                                  "grow to, in order, each a multiple of the one before "
                                                                  "(model.d_model is the start), e.g. [64, 128]"})
    widen_threshold: float = field(default=0.8, metadata={"range": "[0, 1]", "help": "\"adaptive\" widens when the "
                                                                                   "macro-AUROC on its validation share "
                                                                                   "(data.val_fraction) of the stage's new "
                                                                                   "records is below this"})
    widen_plateau: float = field(default=0.0, metadata={"range": "[0, 1)", "help": "> 0: \"adaptive\" also widens when the "
                                                                                 "training loss fell by less than this share "
                                                                                 "over the stage's second half of epochs"})
    size_memory: str = field(default="random", metadata={"help": 'the memory "adaptive" and "fixed-large" keep: "random", '
                                                                 '"herding" or "distill"'})


@dataclass(frozen=True)
class RunConfig:
    # Every key carries metadata["help"] and every section class a docstring: `mupriv config explain` and
    # docs/config.md read them from here, and tests/test_config_cli.py fails on a key without help.
    seed: int = field(default=0, metadata={"help": "one seed for everything; phases, splits, clients and data derive their own from it"})
    seeds: int = field(default=1, metadata={"range": "[1, inf)", "help": "repeat the whole study with seeds seed, seed+1, ...; the report gives 95% intervals over them"})
    device: str = field(default="cpu", metadata={"help": 'the torch device this machine computes on (not the patients\' simulated devices): "cpu", "cuda" / "cuda:N" (an error without a GPU and a CUDA build of torch) or "auto" (CUDA when available, else the CPU); --device overrides it. Pretraining, every scheme\'s device and server training (DP-SGD too), `mupriv continual` and the scoring use it; the attacks run on the CPU. CUDA numbers are not bitwise those of the CPU'})
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    cohort: CohortConfig = field(default_factory=CohortConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    schemes: SchemesConfig = field(default_factory=SchemesConfig)
    attacks: AttacksConfig = field(default_factory=AttacksConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)

    def study_seeds(self) -> list[int]:
        """The seeds of the repeated studies: seed, seed + 1, ..."""
        return [self.seed + i for i in range(self.seeds)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable over key order and formatting: sha256 of the canonical JSON of the resolved config."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def validate(self) -> "RunConfig":
        check_values(self)  # every float finite, every key in its declared range (simulator.config_checks)
        check_device_name(self.device)  # whether this machine has it is decided when a run starts (core.device)
        if self.train.position not in POSITIONS:
            raise MuprivError(f"train.position = {self.train.position!r} is not one of {list(POSITIONS)}")
        if self.model.d_state % 2:
            raise MuprivError(f"model.d_state must be even (complex-conjugate pairs), got {self.model.d_state}")
        if self.model.ncp_units <= self.model.n_classes + 2:
            raise MuprivError(f"model.ncp_units = {self.model.ncp_units}: the NCP decoder needs more than n_classes + 2 = "
                              f"{self.model.n_classes + 2} neurons (the motor neurons are n_classes); raise ncp_units")
        self.finetune.phase()  # validates parts
        self.train.plan()  # validates epochs / alpha
        if self.federation.engine not in ("inline", "ray", "deployment"):
            raise MuprivError(f"federation.engine = {self.federation.engine!r}: choose 'inline', 'ray' or 'deployment'")
        if self.federation.batch_clients and self.federation.engine != "inline":
            raise MuprivError(f"federation.batch_clients = true needs federation.engine = \"inline\" (got "
                              f"{self.federation.engine!r}): Ray and deployment run every client in its own process")
        if self.federation.budget not in BUDGETS:
            raise MuprivError(f"federation.budget = {self.federation.budget!r}: choose {' or '.join(map(repr, BUDGETS))}")
        parse_fail(self.federation.fail)
        if self.federation.budget == "matched" and self.federation.rounds:
            raise MuprivError(f"federation.rounds = {self.federation.rounds} with federation.budget = \"matched\": rounds are "
                              f"derived from finetune.epochs so that every scheme trains as long on a device; remove rounds, "
                              f"or set budget = \"as-configured\" to choose them (the report then says the budgets differ)")
        if self.federation.budget == "as-configured" and self.federation.rounds < 1:
            raise MuprivError("federation.rounds must be >= 1 with federation.budget = \"as-configured\"")
        _check_test_min_positives(self.cohort)
        _check_continual(self.continual, self.model.d_model)
        if self.cohort.split not in ("patient", "source", "dirichlet"):
            raise MuprivError(f"cohort.split = {self.cohort.split!r}: choose 'patient', 'source' or 'dirichlet'")
        if self.attacks.budget not in PRESETS:
            raise MuprivError(f"attacks.budget = {self.attacks.budget!r}: choose one of {', '.join(PRESETS)}")
        for name in self.attacks.run:
            if name not in ATTACKS:
                close = difflib.get_close_matches(name, ATTACKS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; choose from {', '.join(ATTACKS)}"
                raise MuprivError(f"attacks.run has unknown attack {name!r}{hint}")
        for name in self.schemes.run:
            params = self.scheme_params(name)  # unknown schemes and parameters fail here, before any training
            threshold = getattr(params, "reconstruction_threshold", None)
            if threshold is not None:  # SecAgg+ cannot unmask a round with fewer clients than its threshold
                sampled = max(1, int(params.fraction_train * self.cohort.clients))
                if sampled < max(2, threshold):
                    raise MuprivError(f"schemes.{name}: fraction_train {params.fraction_train} samples {sampled} of "
                                      f"{self.cohort.clients} clients per round, fewer than secure aggregation needs "
                                      f"(max(2, reconstruction_threshold = {threshold})); raise fraction_train or "
                                      "lower reconstruction_threshold")
        return self

    def scheme_params(self, name: str) -> Any:
        """A scheme's parameters: its defaults, then [federation] rounds/local_epochs, then [schemes.<name>].

        With federation.budget = "matched" the rounds of a federated scheme are derived so that a device trains
        finetune.epochs in all, as the on-device schemes do: rounds x (epochs per round) x fraction_train =
        finetune.epochs, where a round's epochs are local_epochs (+ head_epochs for FedRep). A budget that does not
        divide into whole rounds is an error naming the numbers, never a silent mismatch."""
        from baselines.registry import get_scheme  # pylint: disable=import-outside-toplevel

        scheme = get_scheme(name)
        fields_ = {f.name for f in dataclasses.fields(scheme.params)}
        own = self.schemes.params_for(name)
        values = {k: getattr(self.federation, k) for k in ("rounds", "local_epochs") if k in fields_}
        values.update(own)
        if "rounds" in fields_ and self.federation.budget == "matched":
            if "rounds" in own:
                raise MuprivError(f"schemes.{name}.rounds is set with federation.budget = \"matched\": rounds are derived "
                                  f"from finetune.epochs; remove it, or set federation.budget = \"as-configured\"")
            values["rounds"] = matched_rounds(name, self.finetune.epochs, {**dataclasses.asdict(scheme.params()), **values})
        return scheme.make_params(values)

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved config as a TOML-shaped table (scheme options back as [schemes.<name>] tables)."""
        table = self.to_dict()
        table["schemes"] = {"run": list(self.schemes.run), **{n: dict(items) for n, items in self.schemes.options}}
        return table


def _check_continual(c: ContinualConfig, d_model: int) -> None:
    """[continual]: names that must be known, as many new classes as later stages, widths that can be grown to."""
    for key, value, choices in (("kind", c.kind, CONTINUAL_KINDS), ("distill_embed", c.distill_embed, ("features", "encoder"))):
        if value not in choices:
            raise MuprivError(f"continual.{key} = {value!r}: choose {', '.join(map(repr, choices))}")
    if not c.methods:
        raise MuprivError(f"continual.methods is empty: name at least one of {', '.join(CONTINUAL_METHODS)}")
    for name in c.methods:
        if name not in CONTINUAL_METHODS + SIZE_METHODS:
            close = difflib.get_close_matches(name, CONTINUAL_METHODS + SIZE_METHODS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(CONTINUAL_METHODS + SIZE_METHODS)}"
            raise MuprivError(f"continual.methods has unknown method {name!r}: {hint}")
    if c.size_memory not in ("random", "herding", "distill"):
        raise MuprivError(f"continual.size_memory = {c.size_memory!r}: choose 'random', 'herding' or 'distill'")
    if any(m in SIZE_METHODS for m in c.methods) and not c.widths:
        raise MuprivError("continual.methods lists \"adaptive\" or \"fixed-large\", which need continual.widths "
                          f"(the d_model values to grow to from model.d_model = {d_model}, e.g. [{2 * d_model}, {4 * d_model}])")
    width = d_model
    for w in c.widths:
        if w <= width or w % width:
            raise MuprivError(f"continual.widths = {list(c.widths)}: each width must be a larger multiple of the one "
                              f"before (starting at model.d_model = {d_model}); {w} is not a larger multiple of {width}")
        width = w
    if len(set(c.methods)) != len(c.methods):
        raise MuprivError(f"continual.methods names a method twice: {list(c.methods)}")
    if c.kind == "domain":
        return
    for name in c.new_classes:
        if name not in CLASSES:
            raise MuprivError(f"continual.new_classes has unknown class {name!r}: classes are {', '.join(CLASSES)}")
    if len(set(c.new_classes)) != len(c.new_classes):
        raise MuprivError(f"continual.new_classes names a class twice: {list(c.new_classes)}")
    if len(c.new_classes) != c.stages - 1:
        raise MuprivError(f"continual.new_classes lists {len(c.new_classes)} class(es) for stages = {c.stages}: kind = "
                          f"{c.kind!r} needs one new class per later stage ({c.stages - 1}); change one or the other")
    if len(c.new_classes) >= len(CLASSES):
        raise MuprivError(f"continual.new_classes leaves stage 0 no class: list at most {len(CLASSES) - 1}")


def _check_test_min_positives(c: CohortConfig) -> None:
    """cohort.test_min_positives redraws a synthetic patient's extra test records, so it needs test_records, and
    k positives of every class must fit in them."""
    k = c.test_min_positives
    if k < 0:
        raise MuprivError(f"cohort.test_min_positives must be >= 0, got {k}")
    if k and c.test_records < 1:
        raise MuprivError(f"cohort.test_min_positives = {k} needs cohort.test_records > 0: it redraws a synthetic "
                          f"patient's extra test records (set test_records, e.g. 100)")
    if len(CLASSES) * k > c.test_records:
        raise MuprivError(f"cohort.test_min_positives = {k} needs cohort.test_records >= {len(CLASSES) * k} "
                          f"({len(CLASSES)} classes x {k}), "
                          f"got {c.test_records}: lower test_min_positives or raise test_records")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise MuprivError(f"[{key}] must be a table, got {type(value).__name__}")
        return _build(typ, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise MuprivError(f"{key} must be a list, got {value!r}")
        (item,) = {a for a in get_args(typ) if a is not Ellipsis}
        return tuple(_coerce(v, item, key) for v in value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool) and (type(value) is not typ):
        raise MuprivError(f"{key} must be {typ.__name__}, got {value!r}")
    return value


def _schemes(table: Any) -> SchemesConfig:
    """[schemes]: `run` lists scheme names; every other key must be a scheme name holding its parameter table."""
    from baselines.registry import get_scheme  # pylint: disable=import-outside-toplevel

    if isinstance(table, SchemesConfig):
        return table
    if not isinstance(table, dict):
        raise MuprivError(f"[schemes] must be a table, got {type(table).__name__}")
    table = dict(table)
    run = table.pop("run", SchemesConfig.run)
    if isinstance(run, str) or not isinstance(run, (list, tuple)):
        raise MuprivError(f"schemes.run must be a list of scheme names, got {run!r}")
    for name in run:
        get_scheme(str(name))
    options = []
    for name, items in table.items():
        if name == "options" and isinstance(items, (list, tuple)):  # to_dict() of an existing SchemesConfig
            options.extend((str(n), tuple(v)) for n, v in items)
            continue
        get_scheme(name)
        if not isinstance(items, dict):
            raise MuprivError(f"[schemes.{name}] must be a table of that scheme's parameters")
        options.append((name, tuple(sorted(items.items()))))
    return SchemesConfig(run=tuple(str(n) for n in run), options=tuple(sorted(options)))


def _build(cls: type, table: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise MuprivError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _schemes(value) if hints[key] is SchemesConfig else _coerce(value, hints[key], full)
    return cls(**kwargs)


def parse_config(table: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return _build(RunConfig, table).validate()
    except MuprivError as e:
        raise MuprivError(f"{source}: {e}") from None


def load_config(path: Path | None) -> RunConfig:
    """The defaults when `path` is None, else the TOML file at `path` over the defaults."""
    if path is None:
        return RunConfig().validate()
    path = Path(path)
    if not path.is_file():
        raise MuprivError(f"{path}: config file not found; pass an existing .toml (see configs/)")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise MuprivError(f"{path}: not valid TOML ({e})") from None
    sweep = table.pop("sweep", None)  # a sweep is a grid of configs (simulator/config_grid.py), not a setting
    cfg = parse_config(table, str(path))
    if sweep is not None:
        check_axes(cfg, sweep_table_axes(sweep, str(path)))  # every point must be a valid config
    return cfg


def with_overrides(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Apply CLI overrides like with_overrides(cfg, train={"full_epochs": 2}); None values are ignored."""
    table = cfg.to_dict()
    for section, values in sections.items():
        for k, v in values.items():
            if v is not None:
                if section == "":
                    table[k] = v
                else:
                    table[section][k] = v
    return parse_config(table, "command line")


# ---------------------------------------------------------------------------------------- sweep points
def apply_settings(cfg: RunConfig, settings: list[Setting] | tuple[Setting, ...], source: str = "command line") -> RunConfig:
    """The config with each dotted key set, parsed and validated as a config file would be."""
    if not settings:
        return cfg
    table = cfg.to_toml_dict()
    for key, value in settings:
        parts = key.split(".")
        node = table
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise MuprivError(f"{source}: {key}: {'.'.join(parts[:i + 1])} is a value, not a table")
            node = child
        node[parts[-1]] = value
    return parse_config(table, f"{source} ({', '.join(k for k, _ in settings)})")


def check_axes(cfg: RunConfig, axes: tuple[Axis, ...]) -> list[RunConfig]:
    """Every point's config, validated before anything runs (a bad value fails here, naming its key)."""
    if not axes:
        raise MuprivError("a sweep needs at least one --sweep KEY=V1,V2 or a [sweep] table")
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise MuprivError(f"sweep axes repeat a key: {keys}; give each key once with all its values")
    return [apply_settings(cfg, list(point), "sweep point") for point in grid(axes)]
