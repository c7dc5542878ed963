"""DP-SGD on a device (Abadi et al. 2016) with Opacus: per-sample gradients from Opacus'
`GradSampleModule` (hooks mode; mupriv's samplers for S4D and the NCP layers), clipping and Gaussian
noise by Opacus' `DPOptimizer`, Poisson sampling of each batch, and an RDP accountant whose history
the device keeps for the whole run (so epsilon covers every round it took part in)."""
from __future__ import annotations

import functools
import math
import secrets
import time
import warnings
from typing import Any, Callable, Sequence

import torch
from flwr.app import ConfigRecord, Context

from baselines.setup import SchemeSetup, device_data, device_seed, tally
from simulator.core.device import model_device, seeded
from simulator.core.jobs import note_unbatched
from simulator.core.model import TDSSM
from simulator.core.phases import EpochLog, PhaseResult, make_optimizer, masked_bce, set_trainable

ACCOUNTANT_KEY = "mupriv.dp-history"


def dp_history(context: Context) -> list[tuple[float, float, int]]:
    """The device's accountant history: (noise multiplier, sample rate, steps) per training session."""
    if ACCOUNTANT_KEY not in context.state:
        return []
    rec = context.state[ACCOUNTANT_KEY]
    return [(float(s), float(q), int(n)) for s, q, n in zip(rec["sigma"], rec["q"], rec["steps"])]  # type: ignore[index]


def epsilon_of(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Opacus' RDP epsilon at `delta` after the (noise multiplier, sample rate, steps) entries of `history`."""
    return _epsilon(tuple((float(s), float(q), int(n)) for s, q, n in history), float(delta))


@functools.lru_cache(maxsize=4096)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    # Cached: devices with the same record count share a history, and the accountant's fractional RDP orders
    # cost about 0.1 s per entry (64 patients of many-patients.toml spent 67 s here before the cache).
    from opacus.accountants import RDPAccountant  # pylint: disable=import-outside-toplevel

    if not history:
        return 0.0
    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def dp_train_on_device(
    setup: SchemeSetup,
    context: Context,
    model: TDSSM,
    parts: Sequence[str],
    epochs: int,
    server_round: int,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
    grad_hook: Callable[[Any], None] | None = None,
    secret_noise: bool = False,
) -> PhaseResult:
    """`epochs * ceil(n / batch)` DP-SGD steps, each on a Poisson sample with rate batch / n.

    `grad_hook` is for auditing only (`attacks.audit`): called with the Opacus `DPOptimizer` after each
    step's backward pass and before `opt.step()`, so before clipping and noise. It may append rows to
    each trainable parameter's `grad_sample` (an auditor's canary gradients, sampled like records) and
    may `opt.attach_step_hook` to read the noised gradient. None (the default) leaves training as it was.

    `secret_noise`: the Gaussian noise and the Poisson batch sampling (both part of the mechanism the
    accountant assumes secret) come from the OS's randomness instead of the device seed, so that no one who
    knows the run seed can replay and subtract them. Everything else stays seeded."""
    import simulator.core.private  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from opacus import GradSampleModule  # pylint: disable=import-outside-toplevel
    from opacus.optimizers import DPOptimizer  # pylint: disable=import-outside-toplevel

    note_unbatched("dp-sgd trains client by client (Opacus' per-sample gradients, clipping and noise are not batched)")
    data = device_data(context)
    n = len(data)
    phase = setup.phase(parts, epochs, name="dp-sgd")
    q = min(1.0, phase.batch_size / n)
    steps = epochs * steps_per_epoch(n, phase.batch_size)
    seed = device_seed(setup, context, server_round)
    start = time.perf_counter()
    result = PhaseResult(phase)
    trainable = set_trainable(model, parts)
    dev = model_device(model)
    # The Poisson sampler draws on the CPU (the records live there); Opacus draws the noise where the gradients
    # are, so its generator lives on the model's device (on the CPU exactly the generator it always was).
    with seeded(seed, dev):
        if secret_noise:  # a fresh secret per call: unknown to the server, never written anywhere
            sampler = torch.Generator().manual_seed(secrets.randbits(63))
            noise = torch.Generator(device=dev).manual_seed(secrets.randbits(63))
        else:  # reproducible from the run seed: simulation only
            sampler = torch.Generator().manual_seed(seed)
            noise = torch.Generator(device=dev).manual_seed(seed + 1)
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        base = make_optimizer(model, phase)
        opt = DPOptimizer(base, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                          expected_batch_size=max(1, int(round(q * n))), loss_reduction="mean", generator=noise)
        model.train()
        total = 0.0
        # The encoder's input never needs a gradient; Opacus' full backward hooks warn about that harmlessly.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        for _ in range(steps):
            pick = torch.nonzero(torch.rand(n, generator=sampler) < q).flatten()
            opt.zero_grad(set_to_none=True)
            if len(pick) == 0:  # an empty Poisson sample still takes a (pure-noise) step
                for p in trainable:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=dev)
                loss = torch.tensor(0.0)
            else:
                loss = masked_bce(gsm(data.x[pick].to(dev)), data.y[pick].to(dev), data.known[pick].to(dev), phase.pos_weight)
                loss.backward()
            if grad_hook is not None:
                grad_hook(opt)
            opt.step()
            total += float(loss.detach())
            result.steps += 1
        gsm._close()  # pylint: disable=protected-access  # remove Opacus' hooks; the model is plain again
        for p in model.parameters():
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(p, attr):
                    delattr(p, attr)
    model.eval()
    result.history.append(EpochLog(phase.name, epochs, total / max(1, steps)))
    history = dp_history(context) + [(float(noise_multiplier), float(q), int(steps))]
    context.state[ACCOUNTANT_KEY] = ConfigRecord({"sigma": [h[0] for h in history], "q": [h[1] for h in history],
                                                  "steps": [h[2] for h in history]})
    tally(context, wall_s=time.perf_counter() - start, local_steps=steps, trainings=1)
    return result
