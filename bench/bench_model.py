"""Training-step throughput of TDSSM per phase, as ratios measured in one run (machines here are shared and noisy).

d_model 128, 4,096 samples, batch 32. Prints, per phase: seconds per step, FLOPs per step, achieved FLOP/s
as a fraction of torch.matmul FLOP/s measured in this run, and memory (counted, and the measured peak RSS
of a fresh process running that phase). Also times a straightforward implementation of the same math
(kernel by exp over the whole (H, N/2, L) tensor, autograd FFTs, Conv1d + GLU, decoder stepped sample by
sample) after checking it gives the same outputs, and bounds what any convolution algorithm could reach: the two
heavy kernels alone (matmuls, FFTs), and the step with the convolution removed.

FLOP convention, printed with the results: 2*m*n*k per matmul / 1x1 conv, 2.5*n*log2(n) per real FFT of
length n, elementwise work not counted; "convention" step FLOPs = 3 x forward (the issue's yardstick),
"executed" = the real forward + backward graph (fewer for phases that skip weight gradients).

Usage: python bench/bench_model.py [--steps 3] [--batch 32] [--length 4096]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.core.cost import phase_cost  # noqa: E402
from simulator.core.model import TDSSM, ModelConfig  # noqa: E402
from simulator.core.phases import full_training, make_optimizer, masked_bce, mu_finetuning, mu_training, set_trainable  # noqa: E402

PHASES = {"full": full_training(1), "mu-train": mu_training(1, self_distill=False), "mu-ft": mu_finetuning(1)}


def matmul_flops_per_s(size: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * size**3 / best


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_step(model: TDSSM, phase, x, y):
    set_trainable(model, phase.parts)
    opt = make_optimizer(model, phase)
    known = torch.ones_like(y, dtype=torch.bool)

    def step():
        opt.zero_grad(set_to_none=True)
        masked_bce(model(x), y, known, 6.0).backward()
        opt.step()

    return step


def time_steps(step, steps: int) -> float:
    step()  # warm-up
    return min(_time(step) for _ in range(steps))


# ------------------------------------------------------------------ the straightforward version


def naive_forward(model: TDSSM, x: torch.Tensor) -> torch.Tensor:
    """Same math as TDSSM.forward, written the direct way."""
    conv = model.middle.s4d.conv
    h = model.encoder(x)
    u = h.transpose(1, 2)
    L = u.shape[-1]
    dt = torch.exp(conv.log_dt)[:, None]
    A = torch.complex(-torch.exp(conv.log_A_real), conv.A_imag)
    C = torch.view_as_complex(conv.C) * (torch.exp(A * dt) - 1) / A
    K = 2 * torch.einsum("hn,hnl->hl", C, torch.exp((A * dt)[:, :, None] * torch.arange(L))).real
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L] + u * conv.D[:, None]
    y = model.middle.s4d.dropout(torch.nn.functional.gelu(y))
    lin = model.middle.s4d.output_linear
    y = torch.nn.functional.glu(torch.nn.functional.conv1d(y, lin.weight[:, :, None], lin.bias), dim=1).transpose(1, 2)
    z = model.middle.norm(h + model.middle.dropout(y)).mean(dim=1)
    return torch.cat([model.decoder(z[i : i + 1]) for i in range(z.shape[0])])


def naive_step(model: TDSSM, x, y):
    set_trainable(model, PHASES["full"].parts)
    opt = make_optimizer(model, PHASES["full"])
    known = torch.ones_like(y, dtype=torch.bool)

    def step():
        opt.zero_grad(set_to_none=True)
        masked_bce(naive_forward(model, x), y, known, 6.0).backward()
        opt.step()

    return step


# ------------------------------------------------------------------ the floor: the step's unavoidable kernels alone


def floor_seconds(B: int, L: int, H: int = 128) -> dict[str, float]:
    """Seconds of the full step's two heavy kernels timed alone at the step's shapes, nothing fused or skipped:
    the 1x1 convolution's three matmuls (forward, input gradient, weight gradient) and the causal FFT
    convolution's four length-2L FFTs and two spectrum products (forward: rfft(u), irfft; backward: rfft(dy),
    irfft for du; the kernel gradient's irfft is per channel, not per sample, so it is left out)."""
    rows, w, g = torch.randn(B * L, H), torch.randn(2 * H, H), torch.randn(B * L, 2 * H)
    u = torch.randn(B, H, L)
    spec, kf = torch.fft.rfft(u, n=2 * L), torch.fft.rfft(torch.randn(H, L), n=2 * L)
    matmuls = lambda: (rows @ w.T, g @ w, g.T @ rows)  # noqa: E731
    ffts = lambda: (torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * kf, n=2 * L),  # noqa: E731
                    torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * kf, n=2 * L))
    return {"matmuls": time_steps(matmuls, 3), "ffts": time_steps(ffts, 3)}


# ------------------------------------------------------------------ one phase in a fresh process (peak RSS)


def _peak_rss_bytes() -> int:
    """VmHWM belongs to this address space; ru_maxrss would carry over a large parent's peak across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(phase: str, batch: int, length: int, steps: int) -> None:
    torch.manual_seed(0)
    model = TDSSM(ModelConfig())
    x, y = torch.randn(batch, length, 12), (torch.rand(batch, 6) > 0.5).float()
    base = _peak_rss_bytes()
    step = make_step(model, PHASES[phase], x, y)
    for _ in range(steps):
        step()
    print(json.dumps({"rss_growth_bytes": _peak_rss_bytes() - base}))


def measured_peak(phase: str, batch: int, length: int) -> int:
    out = subprocess.run([sys.executable, __file__, "--child", phase, "--batch", str(batch), "--length", str(length)],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_growth_bytes"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.batch, args.length, 2)

    torch.manual_seed(0)
    B, L = args.batch, args.length
    x, y = torch.randn(B, L, 12), (torch.rand(B, 6) > 0.5).float()
    model = TDSSM(ModelConfig())
    print(f"TDSSM d_model 128, batch {B}, length {L}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    mm = matmul_flops_per_s()
    print(f"torch.matmul 2048x2048: {mm / 1e9:.1f} GFLOP/s (this run's yardstick)")
    print("FLOPs: 2mnk per matmul/1x1 conv, 2.5 n log2 n per real FFT, elementwise not counted; convention step = 3 x forward\n")

    rows = {}
    for name, phase in PHASES.items():
        cost = phase_cost(model, phase, L, B)
        sec = time_steps(make_step(model, phase, x, y), args.steps)
        mm_now = matmul_flops_per_s(reps=3)  # re-measure: the machine's load drifts
        yardstick = max(mm, mm_now)
        rows[name] = dict(sec=sec, cost=cost, peak=measured_peak(name, B, L))
        conv = 3 * cost.forward_flops
        print(f"{name:9s} {sec:6.3f} s/step | executed {cost.step_flops / 1e9:5.1f} GFLOP, convention {conv / 1e9:5.1f} GFLOP"
              f" -> {conv / sec / 1e9:5.1f} GFLOP/s = {conv / sec / yardstick:5.1%} of matmul"
              f" | trainable {cost.trainable_params:,} | memory counted {cost.memory_bytes / 2**20:6.0f} MiB,"
              f" measured peak RSS growth {rows[name]['peak'] / 2**20:6.0f} MiB")

    full, ft = rows["full"], rows["mu-ft"]
    print(f"\nmu-ft / full: time {ft['sec'] / full['sec']:.2f}x, executed FLOPs {ft['cost'].step_flops / full['cost'].step_flops:.2f}x,"
          f" counted memory {ft['cost'].memory_bytes / full['cost'].memory_bytes:.2f}x, measured peak {ft['peak'] / full['peak']:.2f}x"
          f" (target <= 0.75x)")

    floor = floor_seconds(B, L)
    conv = 3 * full["cost"].forward_flops
    bound = floor["matmuls"] + floor["ffts"]
    print(f"\nfloor: the 1x1 conv's 3 matmuls alone {floor['matmuls']:.3f} s, the 4 FFTs + 2 spectrum products alone"
          f" {floor['ffts']:.3f} s: with every other op free, an FFT-convolution step could reach at most"
          f" {conv / bound / max(mm, matmul_flops_per_s(reps=3)):.1%} of matmul (the full step now takes {full['sec']:.3f} s,"
          f" {full['sec'] / bound:.2f}x that floor)")

    # Everything but the convolution: the same full step with the S4D convolution replaced by its skip term
    # D u. No convolution algorithm, FFT or not, can make the step faster than this.
    conv_module = model.middle.s4d.conv
    conv_module.forward = lambda u: u * conv_module.D[:, None]
    no_conv = time_steps(make_step(model, PHASES["full"], x, y), args.steps)
    del conv_module.forward
    print(f"without any convolution (y = D u, all else the same) the full step takes {no_conv:.3f} s:"
          f" a free convolution would give at most {conv / no_conv / max(mm, matmul_flops_per_s(reps=3)):.1%} of matmul")

    if not args.skip_naive:
        small = torch.randn(4, 256, 12)
        model.eval()
        same = torch.allclose(naive_forward(model, small), model(small), rtol=1e-4, atol=1e-5)
        model.train()
        naive = time_steps(naive_step(model, x, y), max(1, args.steps - 1))
        print(f"straightforward version (same outputs: {same}): {naive:.3f} s/step; this implementation is"
              f" {naive / full['sec']:.1f}x faster (target >= 6x for the full step)")


if __name__ == "__main__":
    main()
