"""How a device's model is scored, the same way for every scheme and off the wire: macro and per-class AUROC/F1 on
the client's personal test records, macro AUROC/F1 on the server's held-out source records, and forgetting (the
pretrained model's source score minus the device model's)."""
from __future__ import annotations

from simulator.core.metrics import ClassificationMetrics
from simulator.core.model import TDSSM
from simulator.core.phases import evaluate
from simulator.core.tensors import ECGTensors


def prefixed(prefix: str, m: ClassificationMetrics) -> dict[str, float]:
    """Metrics as table columns: <prefix>_macro_auroc/_f1, plus per class unless it is the source task."""
    out = {f"{prefix}_macro_auroc": m.macro_auroc, f"{prefix}_macro_f1": m.macro_f1}
    if prefix != "source":
        out.update({f"{prefix}_auroc_{c}": m.auroc[c] for c in m.class_names})
        out.update({f"{prefix}_f1_{c}": m.f1[c] for c in m.class_names})
    return out


def device_scores(model: TDSSM, personal: ECGTensors, source: ECGTensors, source_before: ClassificationMetrics) -> dict[str, float]:
    """personal_*, source_* and forgetting_* of a device's model; ``source_before``: the pretrained model on ``source``."""
    row = prefixed("personal", evaluate(model, personal))
    after_source = evaluate(model, source)
    row.update(prefixed("source", after_source))
    row["forgetting_macro_auroc"] = source_before.macro_auroc - after_source.macro_auroc
    row["forgetting_macro_f1"] = source_before.macro_f1 - after_source.macro_f1
    return row
