"""Which torch device trains and attacks: the one place that decides, and the few helpers the rest needs.

The run config's top-level ``device`` key (``--device`` on the command line) names it: "cpu" (the default),
"cuda" or "cuda:N" (an error when this torch cannot use CUDA), or "auto" (the first CUDA device when there is
one, else the CPU). Models move to the device once; records stay on the CPU in `ECGTensors` and each batch
moves to the model's device where it is used (`simulator.core.phases`), and whatever leaves a model (arrays on
the wire, probes, metrics) comes back to the CPU. On the CPU every number is bitwise what it was before this
module existed: nothing here draws random numbers or copies a CPU tensor.

CUDA numbers are not bitwise comparable with CPU numbers (other kernels, other float summation orders, and
dropout masks drawn from the CUDA generator), and are repeatable only as far as cuDNN/cuFFT are deterministic.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

import torch
from torch import nn

from simulator.errors import MuprivError

KEY = "device"
CHOICES = ("cpu", "cuda", "auto")  # and "cuda:N"
_NAME = re.compile(r"^(cpu|cuda|auto|cuda:\d+)$")
NO_CUDA_FIX = ("this torch build cannot use CUDA (no GPU, no driver, or a CPU-only wheel): install a CUDA build of "
               "torch (see README, \"GPU\"), or use device = \"cpu\" / \"auto\"")


def check_name(name: str, key: str = KEY) -> str:
    """`name` if it is a device name the config accepts ("cpu", "cuda", "cuda:N", "auto"); an error naming `key`
    otherwise. Says nothing about whether this machine has that device: a config written for a GPU machine
    stays valid (and `mupriv config check` passes) on a laptop; `resolve_device` decides when a run starts."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise MuprivError(f"{key} = {name!r}: choose \"cpu\", \"cuda\", \"cuda:N\" (a GPU index) or \"auto\" "
                          f"(CUDA when available, else the CPU)")
    return name


def resolve_device(name: str, key: str = KEY) -> torch.device:
    """The torch device `name` stands for on this machine. "cuda"/"cuda:N" without a usable CUDA (or without GPU
    N) is an error naming `key` and the fix, never a silent fall-back to the CPU: numbers from the two differ."""
    check_name(name, key)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        raise MuprivError(f"{key} = {name!r}: {NO_CUDA_FIX}")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise MuprivError(f"{key} = {name!r}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1}); "
                          f"choose one of them")
    return torch.device("cuda", index)


def describe(device: torch.device) -> dict:
    """What a run records about the device that produced its numbers (manifest.json, checkpoints)."""
    if device.type != "cuda":
        return {"device": "cpu"}
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (batches are moved there)."""
    return next(model.parameters()).device


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generator a `torch.random.fork_rng` must save and restore when the model is on
    `device`: none on the CPU (exactly what the code did before), the model's GPU on CUDA (dropout masks there
    come from that GPU's generator, which `torch.manual_seed` seeds too)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """A private RNG stream for code running on `device`: the caller's generators are restored afterwards and
    every generator (the CPU's and, through `torch.manual_seed`, each GPU's) starts from `seed`."""
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(seed)
        yield
