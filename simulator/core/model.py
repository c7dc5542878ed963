"""TDSSM, the seed paper's tiny diagonal state-space model: encoder -> one S4D block -> NCP decoder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from simulator.core.labels import CLASSES, LEADS
from simulator.core.ncp import NCPDecoder
from simulator.core.s4d import ChannelDropout, S4DBlock

PARTS: tuple[str, ...] = ("encoder", "middle", "decoder")


@dataclass(frozen=True)
class ModelConfig:
    """TDSSM shape: encoder Linear(leads -> d_model), one S4D block, NCP decoder (58,509 parameters at d_model 128)."""

    # Help text in metadata, read by `mupriv config explain` (the [model] section of the run config).
    d_model: int = field(default=128, metadata={"range": "[1, inf)", "help": "channels H of the encoder output and the S4D block"})
    d_state: int = field(default=64, metadata={"range": "[2, inf)", "help": "S4D state size N (N/2 complex-conjugate modes; must be even)"})
    n_leads: int = field(default=len(LEADS), metadata={"range": "[1, inf)", "help": "input leads per time step (the 12-lead order of simulator.core.labels)"})
    n_classes: int = field(default=len(CLASSES), metadata={"range": "[1, inf)", "help": "output classes (logits for 1dAVb, RBBB, LBBB, SB, AF, ST)"})
    dropout: float = field(default=0.1, metadata={"range": "[0, 1)", "help": "channel dropout inside and after the S4D block"})
    ncp_units: int = field(default=20, metadata={"range": "[1, inf)", "help": "NCP decoder neurons (AutoNCP wiring: inter, command and motor = n_classes)"})
    ncp_sparsity: float = field(default=0.5, metadata={"range": "[0.1, 0.9]", "help": "NCP wiring sparsity (share of possible synapses left out)"})
    ncp_seed: int = field(default=22222, metadata={"help": "seed of the NCP wiring draw (fixed: the wiring is part of the architecture)"})

    def to_dict(self) -> dict:
        return asdict(self)


class Middle(nn.Module):
    """The part µ-Training trains: one residual S4D block with post-norm. (B, L, H) -> (B, L, H)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.s4d = S4DBlock(cfg.d_model, cfg.d_state, cfg.dropout)
        self.dropout = ChannelDropout(cfg.dropout, channel_dim=2)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.s4d(x.transpose(1, 2))
        return self.norm(x + self.dropout(z))


class TDSSM(nn.Module):
    """(B, L, leads) signals -> (B, classes) logits. Parts are addressable by name: encoder, middle, decoder."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.encoder = nn.Linear(self.cfg.n_leads, self.cfg.d_model)
        self.middle = Middle(self.cfg)
        self.decoder = NCPDecoder(self.cfg.d_model, self.cfg.ncp_units, self.cfg.n_classes, self.cfg.ncp_sparsity, self.cfg.ncp_seed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled (B, d_model) features the decoder sees."""
        return self.middle(self.encoder(x)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.features(x))

    def part(self, name: str) -> nn.Module:
        if name not in PARTS:
            raise KeyError(f"unknown model part {name!r}; parts are {list(PARTS)}")
        return getattr(self, name)

    def part_of(self, param_name: str) -> str:
        return param_name.split(".", 1)[0]


def count_parameters(model: TDSSM) -> dict[str, int]:
    """Parameter counts per part the way the paper reports them: weights plus the fixed 0/1 wiring-mask
    entries (buffers here, so they can never train). Keys: encoder, middle, decoder, mask_entries, total."""
    counts = {p: sum(t.numel() for t in model.part(p).parameters()) for p in PARTS}
    counts["mask_entries"] = model.decoder.mask_entries()
    counts["decoder"] += counts["mask_entries"]
    counts["total"] = sum(counts[p] for p in PARTS)
    return counts
