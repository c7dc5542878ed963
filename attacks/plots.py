"""True vs reconstructed leads (PNG, matplotlib Agg), written atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.score import Case
from simulator.atomic import atomic_write
from simulator.core.labels import LEADS


def pick_cases(cases: list[Case]) -> dict[str, Case]:
    """Per waveform attack, its best and its median reconstruction by Pearson r, keyed "<attack>-best" and
    "<attack>-median" (raw uploads excluded: they are the truth itself)."""
    out: dict[str, Case] = {}
    for attack in dict.fromkeys(c.attack for c in cases if c.attack != "raw"):
        pool = sorted((c for c in cases if c.attack == attack and np.isfinite(c.r)), key=lambda c: c.r)
        if pool:
            out[f"{attack}-best"] = pool[-1]
            out[f"{attack}-median"] = pool[(len(pool) - 1) // 2]
    return out


def plot_case(case: Case, path: Path, title: str, fs: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_leads = case.true.shape[1]
    cols = 4 if n_leads >= 4 else n_leads
    rows = int(np.ceil(n_leads / cols))
    t = np.arange(case.true.shape[0]) / fs
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 1.9 * rows), sharex=True, squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        if k >= n_leads:
            ax.axis("off")
            continue
        ax.plot(t, case.true[:, k], color="black", lw=0.9, label="true")
        ax.plot(t, case.rec[:, k], color="tab:red", lw=0.8, alpha=0.85, label="reconstructed")
        ax.plot(t, case.prior[:, k], color="tab:blue", lw=0.7, ls="--", alpha=0.6, label="population mean")
        ax.set_title(LEADS[k] if k < len(LEADS) else f"lead {k}", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{title}: {case.scheme} {case.client} round {case.round} {case.attack}, r = {case.r:.3f}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return path
