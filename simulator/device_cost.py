"""What one on-device training step costs a scheme's devices: trainable parameters, FLOPs and peak memory.

Counted on the real forward and backward graph (simulator.core.cost) for the parts the scheme trains on the device,
with the configured fine-tuning phase; the same for every client of a scheme, so it is computed once per run.
"""
from __future__ import annotations

import dataclasses

from baselines.registry import Scheme
from simulator.core.cost import phase_cost
from simulator.core.model import TDSSM
from simulator.study import Study


def device_cost(study: Study, scheme: Scheme) -> dict[str, float]:
    """What one on-device training step costs (counted on the real graph), for the parts the device trains."""
    if not scheme.device_parts:
        return {"trainable_params": 0, "flops_per_step": 0, "peak_memory_bytes": 0}
    phase = study.config.finetune.phase()
    phase = dataclasses.replace(phase, name=scheme.name, parts=tuple(scheme.device_parts))
    cost = phase_cost(TDSSM(study.config.model), phase, study.config.data.length)
    return {"trainable_params": cost.trainable_params, "flops_per_step": cost.step_flops,
            "peak_memory_bytes": cost.memory_bytes}
