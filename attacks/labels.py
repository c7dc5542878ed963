"""Label leakage from the motor neurons' bias updates (multi-label BCE).

The logits are the NCP motor neurons' outputs, z = f1 (1 - s) + s f2 with f1 = tanh(a1), f2 = tanh(a2),
s = sigmoid(t_a + t_b), all from one CfC step. The bias of a1 (the "f1" rows of the motor layer's
`ff`) reaches z_j only through f1_j, so dL/db_f1_j = dL/dz_j (1 - s_j)(1 - f1_j²): the chain factor is
strictly positive, and the same holds for the f2 rows with s_j (1 - f2_j²). For BCE with logits and
pos_weight w, dL/dz_j = -w (1 - σ(z_j)) < 0 for a positive label and σ(z_j) > 0 for a negative one.
Hence, for one record, label_j = 1 exactly when the f1 + f2 bias gradient of class j is negative.

An update is a negative multiple of summed gradients (SGD) or of a sign-preserving per-coordinate
rescaling of their running mean (Adam), so the same sign rule reads every diagnosis of a batch-1
client from its weight delta, over any number of local steps. For a batch, the sign says which
classes occur; the per-class count follows from the size of the bias gradient once the attacker
calibrates the mean contribution of a positive and of a negative record on public records (SGD only:
Adam's normalisation destroys the magnitudes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from attacks.observe import LocalTraining
from attacks.replay import lr_at


def motor_bias_name(n_layers: int = 3) -> str:
    return f"decoder.layers.{n_layers - 1}.ff.bias"


def labels_from_bias_gradient(grad_bias: np.ndarray, n_classes: int) -> np.ndarray:
    """The sign rule: (n_classes,) 0/1 from the motor ff bias gradient ([f1 rows; f2 rows]).
    A class whose gradient is exactly 0 (label masked out) reads as 0."""
    g = np.asarray(grad_bias, dtype=np.float64).reshape(-1)
    s = g[:n_classes] + (g[n_classes : 2 * n_classes] if g.size >= 2 * n_classes else 0.0)
    return (s < 0).astype(np.int64)


def lr_sum(training: LocalTraining, steps: int) -> float:
    return float(sum(lr_at(training, training.lr, t, steps) for t in range(steps)))


def gradient_like(delta: np.ndarray, base: np.ndarray, training: LocalTraining, steps: int) -> np.ndarray:
    """-(update with weight decay removed) / Σ lr: the summed gradient (SGD) or a sign-faithful proxy (Adam)."""
    total = lr_sum(training, steps)
    corrected = np.asarray(delta, np.float64) + total * training.weight_decay * np.asarray(base, np.float64)
    return -corrected / max(total, 1e-12)


def motor_chain_factors(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits z, chain factor a = dz/db_f1 + dz/db_f2), both (n, classes), per record.
    Mirrors NCPDecoder.forward (one CfC step from a zero state per layer); tested against autograd."""
    with torch.no_grad():
        h = model.features(x)
        layers = list(model.decoder.layers)
        for layer in layers[:-1]:
            h = layer(h, h.new_zeros(h.shape[0], layer.hidden))
        last = layers[-1]
        inp = torch.cat([h, h.new_zeros(h.shape[0], last.hidden)], dim=1)
        f1, f2 = torch.tanh(last.ff(last.mask, inp)).chunk(2, dim=1)
        t_a, t_b = last.time(inp).chunk(2, dim=1)
        gate = torch.sigmoid(t_a + t_b)
        z = f1 * (1 - gate) + gate * f2
        a = (1 - gate) * (1 - f1**2) + gate * (1 - f2**2)
    return z, a


@dataclass
class CountCalibration:
    """Mean per-record contribution to C·(f1+f2 bias gradient) of a positive and a negative record."""

    m_pos: np.ndarray  # (classes,) < 0
    m_neg: np.ndarray  # (classes,) > 0


def calibrate_counts(model: torch.nn.Module, public_x: torch.Tensor, pos_weight: float | None) -> CountCalibration:
    z, a = motor_chain_factors(model, public_x)
    w = 1.0 if pos_weight is None else float(pos_weight)
    sig = torch.sigmoid(z)
    return CountCalibration(m_pos=(a * (-w) * (1 - sig)).mean(0).double().numpy(), m_neg=(a * sig).mean(0).double().numpy())


@dataclass
class LabelEstimate:
    presence: np.ndarray  # (classes,) 0/1: the class occurs among the records behind the update
    record_labels: np.ndarray | None  # (1, classes) when the update came from one record
    fraction: np.ndarray | None  # (classes,) estimated share of positive records (SGD only)
    counts: np.ndarray | None  # (classes,) estimated positives (fraction x records, when the count is known)
    residual: float  # count fit: relative error of the bias gradient the estimate predicts (nan without counts)


def estimate_labels(grad_bias: np.ndarray, n_classes: int, n_examples: int | None,
                    calibration: CountCalibration | None) -> LabelEstimate:
    """One record: the sign rule (exact). A batch: the sign rule says whether positives outweigh negatives;
    with a calibration (SGD) the estimated share of positives decides presence and counts instead."""
    g = np.asarray(grad_bias, dtype=np.float64).reshape(-1)
    sign = labels_from_bias_gradient(g, n_classes)
    record = sign[None, :].copy() if n_examples == 1 else None
    if calibration is None or n_examples == 1:
        return LabelEstimate(sign, record, None if calibration is None else sign.astype(np.float64),
                             None if calibration is None or n_examples is None else sign.astype(np.float64), math.nan)
    s = n_classes * (g[:n_classes] + g[n_classes : 2 * n_classes])  # mean over records of a_ij dL/dz_ij
    span = calibration.m_pos - calibration.m_neg
    frac = np.clip((s - calibration.m_neg) / np.where(np.abs(span) > 1e-12, span, -1e-12), 0.0, 1.0)
    # A negative bias gradient means positives outweigh negatives: at least one positive record.
    frac = np.maximum(frac, sign.astype(np.float64) / max(n_examples or 1, 1))
    counts = None
    if n_examples:
        counts = np.round(frac * n_examples)
        frac = counts / n_examples
    presence = (frac > 0).astype(np.int64) if counts is not None else (frac > 0.02).astype(np.int64)
    pred = frac * calibration.m_pos + (1 - frac) * calibration.m_neg
    residual = float(np.linalg.norm(pred - s) / max(np.linalg.norm(s), 1e-30))
    return LabelEstimate(presence, record, frac, counts, residual)
