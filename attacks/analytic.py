"""Analytic recovery of a linear layer's input from its gradient.

For y = W x + b and one record, dL/dW = δ xᵀ and dL/db = δ: every row r with δ_r ≠ 0 gives
x = dW_r / db_r. Over many rows the least-squares rank-one fit x_i = Σ_r m_ri db_r dW_ri / Σ_r m_ri db_r²
(m: the layer's fixed 0/1 wiring mask; weights the mask removes carry no information) uses them all.
For a batch, or several SGD steps, the fit returns a gradient-weighted average of the inputs and the
rank-one residual says how far the gradient is from one record.

In TDSSM the decoder's first CfC layer reads [pooled features, zero hidden state] through a masked
`ff` map and a dense `time` map: both give the d_model pooled features. The encoder (a per-time-step
Linear) sums δ_t x_tᵀ over time, so its fit is only a weighted average of the input samples.
"""
from __future__ import annotations

import numpy as np


def rank_one_input(grad_w: np.ndarray, grad_b: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(x estimate (in_features,), relative rank-one residual) from one layer's weight and bias gradients."""
    W = np.asarray(grad_w, np.float64)
    b = np.asarray(grad_b, np.float64).reshape(-1)
    M = np.ones_like(W) if mask is None else np.asarray(mask, np.float64)
    den = (M * (b**2)[:, None]).sum(0)
    x = np.where(den > 0, (M * b[:, None] * W).sum(0) / np.where(den > 0, den, 1.0), 0.0)
    fit = M * np.outer(b, x)
    residual = float(np.linalg.norm(M * W - fit) / max(np.linalg.norm(M * W), 1e-30))
    return x, residual


def decoder_input_rows(grads: dict[str, np.ndarray], ff_mask: np.ndarray, layer: str = "decoder.layers.0"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Stack the gradient rows of the first CfC layer's `ff` (masked) and `time` (dense) maps:
    (W rows, b rows, mask rows), or None when neither map's weight and bias were observed."""
    Ws, bs, Ms = [], [], []
    for part, mask in (("ff", ff_mask), ("time", None)):
        wn, bn = f"{layer}.{part}.weight", f"{layer}.{part}.bias"
        if wn in grads and bn in grads:
            W = np.asarray(grads[wn], np.float64)
            Ws.append(W)
            bs.append(np.asarray(grads[bn], np.float64))
            Ms.append(np.ones_like(W) if mask is None else np.tile(mask, (W.shape[0] // mask.shape[0], 1)))
    if not Ws:
        return None
    return np.concatenate(Ws), np.concatenate(bs), np.concatenate(Ms)


def recover_pooled_features(grads: dict[str, np.ndarray], ff_mask: np.ndarray, d_model: int) -> tuple[np.ndarray, float] | None:
    """The pooled features (d_model,) the decoder saw, and the rank-one residual over those columns."""
    rows = decoder_input_rows(grads, ff_mask)
    if rows is None:
        return None
    W, b, M = rows
    x, _ = rank_one_input(W[:, :d_model], b, M[:, :d_model])
    fit = M[:, :d_model] * np.outer(b, x)
    Wm = M[:, :d_model] * W[:, :d_model]
    residual = float(np.linalg.norm(Wm - fit) / max(np.linalg.norm(Wm), 1e-30))
    return x, residual


def recover_encoder_input(grads: dict[str, np.ndarray]) -> tuple[np.ndarray, float] | None:
    """A gradient-weighted average of the input samples (n_leads,) from the encoder's gradients."""
    if "encoder.weight" not in grads or "encoder.bias" not in grads:
        return None
    return rank_one_input(grads["encoder.weight"], grads["encoder.bias"])
