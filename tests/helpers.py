"""Small shared builders for the tests."""
import copy

import torch

from simulator.core.model import ModelConfig, TDSSM
from simulator.core.tensors import ECGTensors

FREQS = torch.tensor([3.0, 6.0, 10.0, 15.0, 21.0, 28.0])


def frequency_task(n: int = 256, length: int = 128, seed: int = 1, noise: float = 0.5) -> ECGTensors:
    """At most one class per record (or none), each marked by its own sinusoid in every lead, under noise."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 7, (n,), generator=g)
    y = torch.nn.functional.one_hot(cls, 7)[:, :6].float()
    t = torch.arange(length) / length
    x = noise * torch.randn(n, length, 12, generator=g)
    x += (y @ torch.sin(2 * torch.pi * FREQS[:, None] * t[None]))[:, :, None]
    return ECGTensors(x, y, torch.ones_like(y, dtype=torch.bool))


def tiny_model(seed: int = 0, d_model: int = 16, dropout: float = 0.0) -> TDSSM:
    torch.manual_seed(seed)
    return TDSSM(ModelConfig(d_model=d_model, dropout=dropout))


# The smallest study every scheme runs on: 3 clients (SecAgg+'s default num_shares is 3), 2 rounds, d_model 16.
TINY_STUDY = {
    "model": {"d_model": 16, "d_state": 8},
    "data": {"synthetic_records": 64, "fs": 50.0, "length": 256},
    "train": {"full_epochs": 1, "mu_epochs": 1},
    "finetune": {"epochs": 1, "batch_size": 8},
    "cohort": {"clients": 3, "records_per_client": 12, "test_records": 12},
    "federation": {"budget": "as-configured", "rounds": 2},
}


def tiny_study(**sections: dict) -> dict:
    """TINY_STUDY as a config table, each given section's keys updated (a new section is added)."""
    table = copy.deepcopy(TINY_STUDY)
    for name, keys in sections.items():
        table.setdefault(name, {}).update(copy.deepcopy(keys))
    return table
