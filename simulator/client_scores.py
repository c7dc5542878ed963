"""How a device's model is scored, the same way for every scheme and off the wire: macro and per-class AUROC/F1 on
the client's personal test records, macro AUROC/F1 on the server's held-out source records, and forgetting (the
pretrained model's source score minus the device model's).

Scores are memoised by (the model's exact weights, the records' name) in a `ScoreMemo` the study keeps for all its
schemes and their per-round curves (`Study.score_on_test`, `Study.score_on_source`): the pretrained model is scored on every patient's test records once, not once per scheme, and when every
device ends with the same model (fedavg, fedprox, dp-fedavg, secagg-fedavg, central) the source records are scored
once, not once per patient. A model in eval mode gives the same logits for the same weights and records, so the
numbers are those of scoring every time; 64 patients spent about a tenth of `configs/many-patients.toml` on the
repeats."""
from __future__ import annotations

import hashlib

from torch import nn

from simulator.core.metrics import ClassificationMetrics
from simulator.core.phases import evaluate
from simulator.core.tensors import ECGTensors


def weights_digest(model: nn.Module) -> str:
    """A digest of every parameter and buffer of `model`, bit for bit."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ScoreMemo:
    """`evaluate` of (model, records), remembered by the model's weights digest and the records' name. The name
    must identify the records within one study (a client's test set, the source records)."""

    def __init__(self) -> None:
        self._scores: dict[tuple[str, str], ClassificationMetrics] = {}
        self.hits = 0

    def score(self, model: nn.Module, records: ECGTensors, name: str) -> ClassificationMetrics:
        key = (weights_digest(model), name)
        if key in self._scores:
            self.hits += 1
        else:
            self._scores[key] = evaluate(model, records)
        return self._scores[key]


def prefixed(prefix: str, m: ClassificationMetrics) -> dict[str, float]:
    """Metrics as table columns: <prefix>_macro_auroc/_f1, plus per class unless it is the source task."""
    out = {f"{prefix}_macro_auroc": m.macro_auroc, f"{prefix}_macro_f1": m.macro_f1}
    if prefix != "source":
        out.update({f"{prefix}_auroc_{c}": m.auroc[c] for c in m.class_names})
        out.update({f"{prefix}_f1_{c}": m.f1[c] for c in m.class_names})
    return out


def device_scores(personal: ClassificationMetrics, after_source: ClassificationMetrics,
                  source_before: ClassificationMetrics) -> dict[str, float]:
    """personal_*, source_* and forgetting_* of a device's model from its scores on the client's test records and on
    the source records; ``source_before``: the pretrained model's on the source records."""
    row = prefixed("personal", personal)
    row.update(prefixed("source", after_source))
    row["forgetting_macro_auroc"] = source_before.macro_auroc - after_source.macro_auroc
    row["forgetting_macro_f1"] = source_before.macro_f1 - after_source.macro_f1
    return row
