"""What the device keeps between stages, and how it chooses: the memory, its budget and the real-record selections.

Groups: a record belongs to the group of each class it is positive for (a multi-label record to several), and to
"none" when it is positive for no known class. Normal records are a group of their own because the model needs
negatives of every class too. A synthetic (distilled) record belongs to the one group it was distilled for.

Budget: ceil(memory_fraction x records seen so far) or memory_records when set, but at least one record per
group seen, so that no seen class is left without an example. The slots go round-robin over the groups seen
(CLASSES order, then "none"); a group with no candidate left gives its slot to the next. The candidates at a
stage are the memory kept so far plus the stage's new training records: the device never holds older raw
records, so a selection can only keep what the last memory kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from simulator.core.device import model_device
from simulator.core.labels import CLASSES
from simulator.core.model import TDSSM
from simulator.core.tensors import ECGTensors

GROUPS: tuple[str, ...] = CLASSES + ("none",)


@dataclass(frozen=True)
class Memory:
    """Records the device keeps: signals, labels (soft for distilled records), known mask, group membership
    (n, len(GROUPS)) and `origin`, the latest stage whose records shaped each one (a real record: its own stage;
    a distilled one: the stage it was last distilled at)."""

    data: ECGTensors
    groups: torch.Tensor
    origin: torch.Tensor
    synthetic: bool = False

    def __len__(self) -> int:
        return len(self.data)

    @property
    def nbytes(self) -> int:
        """What the memory occupies on the device: float32 samples and labels, one byte per known flag."""
        d = self.data
        return 4 * d.x.numel() + 4 * d.y.numel() + d.known.numel()

    def subset(self, index) -> "Memory":
        index = torch.as_tensor(index, dtype=torch.long)
        return Memory(self.data.subset(index), self.groups[index], self.origin[index], self.synthetic)

    @staticmethod
    def of_records(data: ECGTensors, stage: int) -> "Memory":
        """Real records of one stage, grouped by their labels."""
        return Memory(data, record_groups(data), torch.full((len(data),), stage, dtype=torch.long))

    @staticmethod
    def concat(parts: list["Memory"]) -> "Memory":
        parts = [p for p in parts if len(p)]
        data = ECGTensors(torch.cat([p.data.x for p in parts]), torch.cat([p.data.y for p in parts]),
                          torch.cat([p.data.known for p in parts]))
        return Memory(data, torch.cat([p.groups for p in parts]), torch.cat([p.origin for p in parts]),
                      any(p.synthetic for p in parts))


def record_groups(data: ECGTensors) -> torch.Tensor:
    """(n, len(GROUPS)) membership of real records: their known positive classes, or "none"."""
    pos = (data.y > 0.5) & data.known
    return torch.cat([pos, ~pos.any(dim=1, keepdim=True)], dim=1)


def budget(seen_records: int, seen_groups: int, fraction: float, records: int = 0) -> int:
    """Memory size in records after `seen_records` have arrived, covering `seen_groups` groups."""
    base = records if records > 0 else math.ceil(fraction * seen_records)
    return max(base, seen_groups)


def allocate(size: int, available: list[int]) -> list[int]:
    """Slots per group, round-robin, for groups with `available` candidates each (taken without overlap is the
    caller's job: this only bounds each group by its own count)."""
    slots = [0] * len(available)
    left = size
    while left > 0 and any(s < a for s, a in zip(slots, available)):
        for g, a in enumerate(available):
            if left and slots[g] < a:
                slots[g] += 1
                left -= 1
    return slots


def select(candidates: Memory, size: int, pick, rng: np.random.Generator) -> tuple[Memory, list[int]]:
    """Choose exactly min(size, len(candidates)) records, class-balanced. `pick(group_index, free_rows, count)`
    returns the rows to take for one group (random or herding). Returns the memory and each kept record's group
    (the first group it was picked for). Records left over after every group had its turn (a group ran short)
    fill the remaining slots at random."""
    n = len(candidates)
    size = min(size, n)
    member = candidates.groups.numpy()
    seen = [g for g in range(len(GROUPS)) if member[:, g].any()]
    slots = allocate(size, [int(member[:, g].sum()) for g in seen])
    taken = np.zeros(n, bool)
    rows, group_of = [], []
    for g, count in zip(seen, slots):
        free = np.flatnonzero(member[:, g] & ~taken)
        chosen = list(pick(g, free, min(count, len(free))))
        taken[chosen] = True
        rows += chosen
        group_of += [g] * len(chosen)
    if len(rows) < size:
        rest = rng.permutation(np.flatnonzero(~taken))[: size - len(rows)]
        rows += rest.tolist()
        group_of += [int(np.flatnonzero(member[r])[0]) for r in rest]
    return candidates.subset(rows), group_of


def select_random(candidates: Memory, size: int, rng: np.random.Generator) -> tuple[Memory, list[int]]:
    """A class-balanced random subset."""
    return select(candidates, size, lambda g, free, count: rng.permutation(free)[:count].tolist(), rng)


@torch.no_grad()
def embeddings(model: TDSSM, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The model's pooled features (what its decoder sees), L2-normalised as herding uses them; eval mode. Computed
    where the model is, returned on the CPU."""
    was = model.training
    model.eval()
    dev = model_device(model)
    try:
        f = torch.cat([model.features(x[i:i + batch_size].to(dev)) for i in range(0, len(x), batch_size)]).cpu()
    finally:
        model.train(was)
    return torch.nn.functional.normalize(f, dim=1)


def herd(features: torch.Tensor, count: int, target: torch.Tensor | None = None) -> list[int]:
    """Welling's herding (as iCaRL selects exemplars): greedily the rows whose running mean stays closest to
    `target` (default: the mean of all rows). Returns row indices in the order chosen."""
    mu = features.mean(dim=0) if target is None else target
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    free = torch.ones(len(features), dtype=torch.bool)
    for k in range(min(count, len(features))):
        dist = ((mu - (total + features) / (k + 1)) ** 2).sum(dim=1)
        dist[~free] = math.inf
        i = int(torch.argmin(dist))
        chosen.append(i)
        free[i] = False
        total += features[i]
    return chosen


def select_herding(candidates: Memory, size: int, model: TDSSM, rng: np.random.Generator) -> tuple[Memory, list[int]]:
    """Class-balanced herding on the current model's embeddings: per group, the records whose mean embedding best
    approximates the group's mean embedding over all its candidates."""
    feats = embeddings(model, candidates.data.x)
    member = candidates.groups.numpy()

    def pick(g: int, free: np.ndarray, count: int) -> list[int]:
        # the target is the whole group's mean, records already taken for another group included
        target = feats[torch.as_tensor(np.flatnonzero(member[:, g]))].mean(dim=0)
        return [int(free[i]) for i in herd(feats[torch.as_tensor(free)], count, target)]

    return select(candidates, size, pick, rng)
