"""Fixed number formatting, so that rendering the same numbers twice gives the same text."""
from __future__ import annotations

import math
from typing import Any, Mapping

MISSING = "—"  # no value (metric absent or undefined)

_IEC = ("B", "KiB", "MiB", "GiB", "TiB")
_SI = ("", "k", "M", "G", "T", "P")


def finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_bytes(x: float) -> str:
    """1536 -> '1.5 KiB'; plain bytes below 1 KiB."""
    if abs(x) < 1024:
        return f"{x:.0f} B"
    k = min(int(math.log(abs(x), 1024)), len(_IEC) - 1)
    return f"{x / 1024 ** k:.1f} {_IEC[k]}"


def fmt_si(x: float) -> str:
    """22.4e9 -> '22.4 G' (three significant digits)."""
    if abs(x) < 1000:
        return f"{x:.3g}"
    k = min(int(math.log10(abs(x)) // 3), len(_SI) - 1)
    return f"{x / 1000 ** k:.3g} {_SI[k]}"


# kind -> formatter of one finite number
_FORMATS = {
    "score": lambda x: f"{x:.3f}",
    "delta": lambda x: f"{x:+.3f}",
    "bytes": fmt_bytes,
    "count": lambda x: f"{round(x):,}",
    "flops": fmt_si,
    "epsilon": lambda x: f"{x:.2f}",
    "seconds": lambda x: f"{x:.1f} s",
    "generic": lambda x: f"{x:.4g}",
}
# kinds whose spread is shown only when it is not zero (costs are usually equal on every client)
_QUIET_SPREAD = {"bytes", "count", "flops", "seconds"}


def fmt_value(x: Any, kind: str = "generic") -> str:
    if not finite(x):
        return MISSING
    fmt = _FORMATS.get(kind, _FORMATS["generic"])
    text = fmt(float(x))
    if text.startswith("-") and not any(ch in "123456789" for ch in text):
        text = fmt(0.0)  # no "-0.000" from rounding noise
    return text


def fmt_spread(x: Any, kind: str) -> str:
    # a spread is a magnitude: '+' signs of delta kind make no sense here
    return fmt_value(x, "score" if kind == "delta" else kind)


def fmt_stat(stat: Mapping[str, Any], kind: str = "generic", *, ci: bool = True) -> str:
    """'mean ± sd [ci_low, ci_high]': sd over clients, the interval over seeds (only with >= 2 seeds)."""
    mean = stat.get("mean")
    if not finite(mean):
        return MISSING
    text = fmt_value(mean, kind)
    sd = stat.get("sd")
    if finite(sd) and not (kind in _QUIET_SPREAD and float(sd) == 0.0):
        text += f" ± {fmt_spread(sd, kind)}"
    if ci and (interval := fmt_interval(stat, kind)):
        text += f" [{interval}]"
    return text


def fmt_interval(stat: Mapping[str, Any], kind: str, sep: str = ", ") -> str:
    """'low, high' of the seed interval; '' without one or when it has no width at this precision."""
    if not (finite(stat.get("ci_low")) and finite(stat.get("ci_high"))):
        return ""
    low, high = fmt_value(stat["ci_low"], kind), fmt_value(stat["ci_high"], kind)
    return "" if low == high else f"{low}{sep}{high}"


def fmt_leakage(row: Mapping[str, Any] | None, *, ci: bool = True, with_source: bool = True) -> str:
    """A calibrated leakage cell: the verdict and the gain over the best null with its (Bonferroni-adjusted)
    interval, then which attack under which threat model; or why the scheme cannot be attacked."""
    if row is None:
        return MISSING  # no attack scored this scheme
    if row.get("note") == "not applicable":
        return f"n/a ({row['threat_model'].split(':', 1)[-1].strip()})" if ":" in str(row["threat_model"]) else "n/a"
    if not finite(row.get("mean")):
        return MISSING
    text = f"{row.get('note') or '?'} {fmt_value(row['mean'], 'delta')}"
    if ci:
        interval = fmt_interval(row, "delta")
        units = row.get("n_units")
        text += f" [{interval}]" if interval else (f" ({int(units)} unit{'s' * (int(units) != 1)}: no interval)"
                                                     if finite(units) else "")
    if row.get("attack"):  # which attack and score: a kind of leakage has several
        text += f" ({row['attack']}; {row['threat_model']})" if with_source and row.get("threat_model") else f" ({row['attack']})"
    return text
