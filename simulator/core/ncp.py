"""The NCP decoder: closed-form continuous-time (CfC) cells wired as a Neural Circuit Policy.

Written from standard torch modules (not the `ncps` package) for two reasons: `ncps`' wired CfC
multiplies its masks into the weights outside its Linear modules, which Opacus cannot see, and it
stores the masks as parameters that a careless "unfreeze the decoder" would make trainable. Here the
masks are buffers of the CfC layers, and each masked product goes through `MaskedLinear`, which has its own Opacus
grad sampler (simulator.core.private). Numerically equal to `ncps.torch.CfC` with the same wiring
and weights (tests/test_model.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class NCPWiring:
    """Sparse sensory -> inter -> command -> motor wiring. `sensory_to_inter` is (n_inputs, n_inter),
    `inter_to_command` (n_inter, n_command), `command_to_motor` (n_command, n_motor); entries 0/1."""

    sensory_to_inter: np.ndarray
    inter_to_command: np.ndarray
    command_to_motor: np.ndarray

    @property
    def layer_sizes(self) -> tuple[int, int, int]:
        return (self.sensory_to_inter.shape[1], self.inter_to_command.shape[1], self.command_to_motor.shape[1])

    @classmethod
    def auto(cls, n_inputs: int, units: int, n_outputs: int, sparsity: float = 0.5, seed: int = 22222) -> "NCPWiring":
        """AutoNCP sizing (Lechner et al. 2020, as in `ncps.wirings.AutoNCP`): of the non-motor units 40%
        are command neurons; fan-outs/fan-ins are the layer size times the density (1 - sparsity).
        Neurons that random fan-out leaves unreached get a mean fan-in, so every neuron is connected."""
        if not 0.1 <= sparsity <= 0.9:
            raise ValueError(f"NCP sparsity must be in [0.1, 0.9], got {sparsity}")
        if n_outputs >= units - 2:
            raise ValueError(f"NCP needs more than n_outputs + 2 units, got units={units}, outputs={n_outputs}")
        density = 1.0 - sparsity
        n_command = max(int(0.4 * (units - n_outputs)), 1)
        n_inter = units - n_outputs - n_command
        rng = np.random.default_rng(seed)
        s2i = _fan_out(rng, n_inputs, n_inter, max(int(n_inter * density), 1))
        i2c = _fan_out(rng, n_inter, n_command, max(int(n_command * density), 1))
        c2m = _fan_out(rng, n_outputs, n_command, max(int(n_command * density), 1)).T  # motor fan-in
        return cls(s2i, i2c, c2m)


def _fan_out(rng: np.random.Generator, n_src: int, n_dst: int, fanout: int) -> np.ndarray:
    """Each source connects to `fanout` random destinations; unreached destinations then get
    connections from a mean fan-in of random sources."""
    adj = np.zeros((n_src, n_dst), dtype=np.float32)
    for src in range(n_src):
        adj[src, rng.choice(n_dst, size=fanout, replace=False)] = 1.0
    mean_fanin = int(np.clip(n_src * fanout // n_dst, 1, n_src))
    for dst in np.flatnonzero(adj.sum(axis=0) == 0):
        adj[rng.choice(n_src, size=mean_fanin, replace=False), dst] = 1.0
    return adj


class MaskedLinear(nn.Module):
    """y = x (W * mask)^T + b for a fixed 0/1 mask given at call time: masked weights get zero gradient and
    stay sparse. The mask (m, in_features) is tiled over the output rows (out_features = k * m), so maps that
    share a wiring (CfC's two candidate maps) share one mask and one weight matrix. The mask lives in the
    owning CfC layer, not here, because Opacus refuses trainable layers that hold buffers."""

    def __init__(self, in_features: int, out_features: int, mask_rows: int):
        super().__init__()
        if out_features % mask_rows:
            raise ValueError(f"out_features {out_features} is not a multiple of the mask's {mask_rows} rows")
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        for rows in self.weight.data.split(mask_rows):
            nn.init.xavier_uniform_(rows)

    def tile(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.repeat(self.weight.shape[0] // mask.shape[0], 1)

    def forward(self, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # x comes last: Opacus reads a layer's batch size from its last input.
        return nn.functional.linear(x, self.weight * self.tile(mask), self.bias)


class LeCunTanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(0.666 * x)


class CfCLayer(nn.Module):
    """One CfC layer ('default' mode, no backbone): h' = tanh(f1) (1 - s) + s tanh(f2),
    s = sigmoid(t_a * ts + t_b), all four maps taking [input, h]. f1 and f2 follow the wiring mask and
    are computed as one masked map (`ff`: rows [f1; f2]); t_a and t_b as one dense map (`time`)."""

    def __init__(self, in_features: int, hidden: int, input_mask: np.ndarray):
        super().__init__()
        self.hidden = hidden
        cat = in_features + hidden
        # The recurrent block of the mask is dense, as in the NCP CfC formulation.
        mask = torch.cat([torch.as_tensor(input_mask, dtype=torch.float32), torch.ones(hidden, hidden)], dim=0).T
        self.register_buffer("mask", mask.contiguous())  # (hidden, in + hidden)
        self.ff = MaskedLinear(cat, 2 * hidden, hidden)
        self.time = nn.Linear(cat, 2 * hidden)
        for rows in self.time.weight.data.split(hidden):
            nn.init.xavier_uniform_(rows)

    def forward(self, inputs: torch.Tensor, h: torch.Tensor, ts: float = 1.0) -> torch.Tensor:
        x = torch.cat([inputs, h], dim=1)
        f1, f2 = torch.tanh(self.ff(self.mask, x)).chunk(2, dim=1)
        t_a, t_b = self.time(x).chunk(2, dim=1)
        gate = torch.sigmoid(t_a * ts + t_b)
        return f1 * (1.0 - gate) + gate * f2


class NCPDecoder(nn.Module):
    """Pooled features (B, d_model) -> logits (B, n_outputs): one CfC step per sample from a zero state.

    Every sample is its own length-1 sequence, so a prediction never depends on its batch neighbours."""

    def __init__(self, d_model: int, units: int = 20, n_outputs: int = 6, sparsity: float = 0.5, seed: int = 22222):
        super().__init__()
        self.wiring = NCPWiring.auto(d_model, units, n_outputs, sparsity, seed)
        sizes = self.wiring.layer_sizes
        masks = (self.wiring.sensory_to_inter, self.wiring.inter_to_command, self.wiring.command_to_motor)
        ins = (d_model, sizes[0], sizes[1])
        self.layers = nn.ModuleList(CfCLayer(i, h, m) for i, h, m in zip(ins, sizes, masks))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for layer in self.layers:
            x = layer(x, x.new_zeros(x.shape[0], layer.hidden))
        return x

    def mask_entries(self) -> int:
        return sum(int(m.numel()) for name, m in self.named_buffers() if name.endswith("mask"))
