"""Model-size adaption: grow a TDSSM's width only when a stage needs it, without changing what it computes.

Widening d_model from H to r*H (Net2Net's function-preserving "wider" operation, Chen et al. 2016): every channel
j of the wider model is a copy of channel j mod H. The encoder's rows, each S4D channel's parameters (dt, A, C, D)
and the LayerNorm's gain and bias are copied; a layer that reads the channels (the S4D block's 1x1 map, the
decoder's sensory inputs) gets each copied input column divided by r, so its sums are unchanged; the 1x1 map's
output rows are copied per GLU half. Replicating every channel exactly r times keeps the LayerNorm's mean and
variance over channels, so the whole network's output is the same (to float rounding). The decoder's wiring is
the old one with each sensory row copied (a fresh TDSSM of the wider shape would draw another wiring). Copies
start identical; channel dropout during training tells them apart.

The trigger (`should_widen`) fires when the macro-AUROC on the device's validation records of the new stage is
below a threshold, or when the training loss has plateaued (its relative drop over the second half of the
stage's epochs is below `plateau`; 0 turns that test off).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch

from simulator.core.device import model_device
from simulator.core.model import TDSSM
from simulator.errors import MuprivError


def widen(model: TDSSM, width: int) -> TDSSM:
    """A new TDSSM of d_model `width` (a multiple of the model's) computing the same function."""
    H = model.cfg.d_model
    if width <= H or width % H:
        raise MuprivError(f"widening d_model {H} to {width}: the new width must be a larger multiple of {H}")
    r = width // H
    g = torch.arange(width) % H
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # every weight below is overwritten; the seed only keeps the caller's RNG untouched
        wide = TDSSM(replace(model.cfg, d_model=width))
    old, new = {k: t.cpu() for k, t in model.state_dict().items()}, {}  # built on the CPU, moved back below
    halves = torch.cat([g, H + g])  # the GLU's value and gate halves of the 1x1 map's outputs
    for name, t in old.items():
        if name in ("encoder.weight", "encoder.bias", "middle.norm.weight", "middle.norm.bias") or name.startswith("middle.s4d.conv."):
            new[name] = t[g].clone()
        elif name == "middle.s4d.output_linear.weight":
            new[name] = t[halves][:, g] / r
        elif name == "middle.s4d.output_linear.bias":
            new[name] = t[halves].clone()
        elif name.startswith("decoder.layers.0.") and name.endswith(("ff.weight", "time.weight", "mask")):
            cols = torch.cat([g, torch.arange(H, t.shape[1])])  # sensory inputs, then the recurrent block as is
            new[name] = t[:, cols] / (r if name.endswith("weight") else 1)
        else:
            new[name] = t.clone()
    for name, t in new.items():  # buffers of another shape (the decoder's first mask) are replaced, not copied into
        if name.endswith("mask"):
            module = wide.get_submodule(name.rsplit(".", 1)[0])
            module.register_buffer("mask", t.contiguous())
    wide.load_state_dict(new)
    w = wide.decoder.wiring
    wide.decoder.wiring = replace(w, sensory_to_inter=model.decoder.wiring.sensory_to_inter[g.numpy()],
                                  inter_to_command=model.decoder.wiring.inter_to_command,
                                  command_to_motor=model.decoder.wiring.command_to_motor)
    wide.to(model_device(model))
    wide.train(model.training)
    return wide


def should_widen(val_macro_auroc: float, losses: Sequence[float], threshold: float, plateau: float = 0.0) -> bool:
    """True when the stage needs more capacity: validation macro-AUROC below `threshold` (an undefined one does not
    fire), or with plateau > 0 a training loss whose relative drop over the second half of the epochs
    (loss at the middle epoch to the last) is below `plateau`."""
    if math.isfinite(val_macro_auroc) and val_macro_auroc < threshold:
        return True
    if plateau > 0 and len(losses) >= 2:
        mid, last = losses[(len(losses) - 1) // 2], losses[-1]
        return mid > 0 and (mid - last) / mid < plateau
    return False
