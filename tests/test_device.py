"""The `device` key and --device: which torch device computes, the errors when it cannot, and that the CPU's
numbers are bitwise those of the code before the key existed (a CUDA end-to-end test runs where there is a GPU)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from baselines.registry import get_scheme
from baselines.setup import SchemeSetup, read_probe
from simulator.cli import app
from simulator.config import parse_config
from simulator.core.device import describe, resolve_device, rng_devices
from simulator.core.phases import Phase, predict, train_phase
from simulator.errors import MuprivError
from simulator.runner import run_scheme
from simulator.study import build_study, pretrain_key
from tests.helpers import frequency_task, tiny_model

runner = CliRunner()
HAS_CUDA = torch.cuda.is_available()

TINY = {
    "model": {"d_model": 8, "d_state": 4},
    "data": {"synthetic_records": 32, "fs": 50.0, "length": 64},
    "train": {"full_epochs": 1, "mu_epochs": 1},
    "finetune": {"epochs": 2, "batch_size": 4},
    "cohort": {"clients": 2, "records_per_client": 8, "test_records": 6},
    "federation": {"budget": "as-configured", "rounds": 1},
}
# (scheme, parameters): device training with a penalty, the server training on uploads, DP-SGD with Opacus
SCHEMES = (("fedprox", {}), ("central", {}), ("dp-fedavg", {"noise": "seeded"}))

# fingerprints(TINY) computed by the code before the device key existed (commit 603761f), with torch 2.13.0+cpu
# and 1 thread. Float kernels differ between CPU instruction sets and between vendors (MKL takes other paths on
# AMD: same weights after pretraining, other logits), so a set is compared only on the kind of CPU it came from.
FROZEN_ON = ("2.13.0+cpu", "AVX512")
FROZEN_BY_CPU = {
    # the machine they were first recorded on (2026-12-01; its model was not noted, its vendor is inferred)
    "GenuineIntel": {"pretrained": "2ae7aebfc5eef478", "logits": "343f86a8968c8ffb", "fedprox": "66af7ad0b576e3e2",
                     "central": "b6e08ce80104b0ab", "dp-fedavg": "d1f611180e2509d1"},
    # recomputed with commit 603761f's code on an "AMD EPYC" (2026-12-02): the current code gave the same
    "AuthenticAMD AMD EPYC": {"pretrained": "2ae7aebfc5eef478", "logits": "62688427a5a51846",
                              "fedprox": "7a6edcc3e2b02b42", "central": "35a8a7edcb47d66c",
                              "dp-fedavg": "d1968ba18e7a6cea"},
}


def cpu_kind() -> str:
    """The kind of CPU a frozen set belongs to: GenuineIntel, or the vendor and model name for AMD (e.g.
    AuthenticAMD AMD EPYC); empty when /proc/cpuinfo cannot be read."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    except OSError:
        return ""
    vendor, model = info.get("vendor_id\t", "").strip(), info.get("model name\t", "").strip()
    return vendor if vendor == "GenuineIntel" else f"{vendor} {model}".strip()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprints(table: dict, root: Path) -> dict[str, str]:
    """Hashes of a short pretraining (weights, and logits on the validation records) and of every client's final
    model after each scheme of SCHEMES."""
    study = build_study(parse_config(table), root / "work", cache_dir=root / "cache")
    model = study.pretrained()
    out = {"pretrained": _digest(p for _, p in sorted(model.state_dict().items())),
           "logits": _digest([predict(model, study.source_test)])}
    for name, params in SCHEMES:
        run = run_scheme(study, name, root / name, params=get_scheme(name).make_params(params) if params else None)
        states = [read_probe(run.setup.probe_dir, c.partition)["state"] for c in study.clients]
        out[name] = _digest(t for s in states for _, t in sorted(s.items()))
    return out


# ------------------------------------------------------------------------------------------ resolve_device
def test_cpu_and_auto_without_cuda_resolve_to_the_cpu(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert rng_devices(resolve_device("auto")) == []  # the RNG forks exactly as before: the CPU's generator only
    assert describe(torch.device("cpu")) == {"device": "cpu"}


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_an_error_naming_the_key_and_the_fix(no_cuda, name):
    with pytest.raises(MuprivError) as e:
        resolve_device(name)
    msg = str(e.value)
    assert msg.startswith(f"device = {name!r}:") and "CUDA build of torch" in msg and "README" in msg
    assert "\n" not in msg


def test_auto_picks_cuda_when_torch_says_it_is_available(monkeypatch):
    """Decided without touching a GPU: only the answer of torch.cuda.is_available (and device_count) counts."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert rng_devices(torch.device("cuda", 1)) == [1]
    with pytest.raises(MuprivError, match=r"device = 'cuda:2': this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


# ------------------------------------------------------------------------------------------------ config
def test_the_key_defaults_to_the_cpu_and_accepts_every_documented_name():
    assert parse_config({}).device == "cpu"
    for name in ("cpu", "cuda", "cuda:3", "auto"):  # valid on any machine: availability is checked when a run starts
        assert parse_config({"device": name}).device == name


@pytest.mark.parametrize("value, match", [("gpu", r"device = 'gpu': choose \"cpu\""), ("cuda:x", "device = 'cuda:x'"),
                                          ("CPU", "device = 'CPU'"), (1, "device must be str")])
def test_a_bad_value_is_an_error_naming_the_key(value, match):
    with pytest.raises(MuprivError, match=match):
        parse_config({"device": value})


def test_scheme_setup_carries_the_device_and_old_setups_read_as_cpu():
    setup = SchemeSetup(scheme="mu-ft", model={}, finetune={}, params={}, seed=0, pretrained_path="p", probe_dir="d",
                        num_clients=1, device="cuda:0")
    blob = json.loads(setup.to_run_config()["mupriv-setup"])
    assert blob["device"] == "cuda:0"
    del blob["device"]  # a run config written before the field existed
    assert SchemeSetup(**blob).device == "cpu"


# --------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("command", [["simulate", "--no-attacks"], ["run-scheme", "mu-ft"], ["train"], ["finetune", "--checkpoint", "x.pt"],
                                     ["continual"]])
def test_device_cuda_without_cuda_exits_2_with_one_line(no_cuda, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    if command[0] == "finetune":  # finetune reads its checkpoint first: give it a real one
        from simulator.core.checkpoint import save_checkpoint

        save_checkpoint(tmp_path / "x.pt", tiny_model(), config=TINY)
    out = ["--out", str(tmp_path / "out")] if command[0] in ("simulate", "run-scheme", "continual") else ["-o", str(tmp_path / "m.pt")]
    r = runner.invoke(app, [*command, *out, "--device", "cuda"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "device = 'cuda'" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.pt").exists()  # stopped before anything was written


def test_a_bad_device_flag_names_the_key(tmp_path):
    r = runner.invoke(app, ["train", "-o", str(tmp_path / "m.pt"), "--device", "gpu"])
    assert r.exit_code == 2 and r.output.startswith("error: command line: device = 'gpu'")


# --------------------------------------------------------------------------------- the CPU, bitwise as before
def test_the_cpu_computes_bitwise_what_it_did_before_the_key(no_cuda, tmp_path):
    """Unset, and "auto" on a machine without CUDA, give the same bits (pretraining, logits, three schemes'
    final models); on the machine the frozen values came from, they are also those of the code before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        unset = fingerprints(TINY, tmp_path / "unset")
        auto = fingerprints({**TINY, "device": "auto"}, tmp_path / "auto")
    finally:
        torch.set_num_threads(threads)
    assert auto == unset
    here = (torch.__version__, torch.backends.cpu.get_cpu_capability())
    if here != FROZEN_ON or cpu_kind() not in FROZEN_BY_CPU:
        pytest.skip(f"frozen fingerprints are from {FROZEN_ON} on {sorted(FROZEN_BY_CPU)}; this is {here} on "
                    f"{cpu_kind()!r}, which gave {unset} (the unset/auto comparison above ran)")
    assert unset == FROZEN_BY_CPU[cpu_kind()]


CONTINUAL = {"model": {"d_model": 8, "d_state": 4, "ncp_units": 10},
             "data": {"fs": 100.0, "length": 128, "scale": "none", "val_fraction": 0.5},
             "train": {"full_epochs": 1, "mu_epochs": 1}, "cohort": {"shift": 1.0}, "finetune": {"batch_size": 8},
             "continual": {"patients": 1, "train_records": 12, "test_records": 10, "epochs": 1, "distill_iterations": 2,
                           "pretrain_records": 10, "methods": ["herding", "adaptive"], "widths": [16],
                           "widen_threshold": 1.0}}
FROZEN_CONTINUAL = "09f4dac08ee7c56d"  # as FROZEN: the rows of the code before the key, on FROZEN_ON, 1 thread


def test_continual_on_the_cpu_is_bitwise_what_it_was(no_cuda):
    """Pretraining, herding's embeddings, widening and the FLOP count of `mupriv continual` move with the device;
    on the CPU its rows are those of the code before."""
    from simulator.continual.run import run_continual

    def rows(table: dict) -> str:
        blob = json.dumps(run_continual(parse_config(table)).rows, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        unset, auto = rows(CONTINUAL), rows({**CONTINUAL, "device": "auto"})
    finally:
        torch.set_num_threads(threads)
    assert auto == unset
    if (torch.__version__, torch.backends.cpu.get_cpu_capability()) != FROZEN_ON:
        pytest.skip(f"frozen rows are from {FROZEN_ON} (the unset/auto comparison above ran)")
    assert unset == FROZEN_CONTINUAL


def test_the_pretraining_cache_key_does_not_change_with_the_cpu_named_differently(no_cuda):
    cfg = parse_config(TINY)
    assert pretrain_key(cfg, None) == pretrain_key(parse_config({**TINY, "device": "auto"}), None)


def test_the_manifest_records_the_device(no_cuda, tmp_path):
    from simulator.provenance import manifest

    class Plan:  # the fields manifest() reads from simulator.simulate.Plan
        seeds, schemes, attack, attack_budget, data_path = [0], ["mu-ft"], False, "quick", None

    m = manifest(parse_config({**TINY, "device": "auto"}), Plan(), tmp_path)
    assert m["device"] == {"configured": "auto", "device": "cpu"}


# ------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of torch")
def test_cuda_end_to_end_pretraining_and_schemes(tmp_path):
    """Pretraining and three schemes on the GPU: the models compute there, everything that leaves them (checkpoint,
    probes, metrics) is on the CPU, the numbers are finite and differ from the CPU's key in the cache, and the
    caller's CPU and CUDA random streams are left as they were."""
    table = {**TINY, "device": "cuda"}
    cfg = parse_config(table)
    assert pretrain_key(cfg, None) != pretrain_key(parse_config(TINY), None)  # a GPU model is never a CPU model
    cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state()
    study = build_study(cfg, tmp_path / "work", cache_dir=tmp_path / "cache")
    assert study.device.type == "cuda"
    assert all(t.device.type == "cpu" for t in study.pretrained().state_dict().values())
    for name, params in SCHEMES:
        run = run_scheme(study, name, tmp_path / name, params=get_scheme(name).make_params(params) if params else None)
        assert run.setup.device == str(study.device)
        assert (run.table["error"].fillna("") == "").all(), run.table["error"].tolist()
        assert run.table["personal_macro_auroc"].notna().any()
        for c in study.clients:
            assert all(t.device.type == "cpu" for t in read_probe(run.setup.probe_dir, c.partition)["state"].values())
    assert torch.equal(torch.get_rng_state(), cpu_rng) and torch.equal(torch.cuda.get_rng_state(), cuda_rng)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of torch")
def test_cuda_training_is_seeded():
    """Dropout masks on the GPU come from its own generator: the phase seeds it, so the same seed repeats the losses
    (to cuFFT's rounding) and another seed does not; frozen parts stay bitwise frozen on the GPU too."""
    data = frequency_task(n=48, length=64)
    phase = Phase("device", ("encoder", "decoder"), 2, data="personal", batch_size=8)

    def losses(seed: int) -> tuple[list[float], bool]:
        model = tiny_model(0, dropout=0.3).to("cuda")
        middle = [p.detach().clone() for p in model.middle.parameters()]
        result = train_phase(model, phase, data, None, seed=seed)
        frozen = all(torch.equal(a, b) for a, b in zip(middle, model.middle.parameters()))
        assert predict(model, data).device.type == "cpu"
        return [h.loss for h in result.history], frozen

    (a, frozen), (b, _), (c, _) = losses(1), losses(1), losses(2)
    assert frozen and a == pytest.approx(b, rel=1e-5) and a != pytest.approx(c, rel=1e-5)


def test_a_gpu_run_on_the_ray_engine_is_refused_before_it_starts(monkeypatch, tmp_path):
    """Ray's actors are granted no GPU (simulator.engine.ray_engine), so the run stops with the fix instead."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = build_study(parse_config({**TINY, "device": "auto"}), tmp_path / "work", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" now means cuda:0; nothing touches it
    with pytest.raises(MuprivError, match="device = 'auto' with federation.engine = \"ray\": Ray's actors get no GPU"):
        run_scheme(study, "mu-ft", tmp_path / "mu-ft", engine="ray")
    assert not (tmp_path / "mu-ft").exists()
