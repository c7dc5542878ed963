"""Small shared builders for the tests."""
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
