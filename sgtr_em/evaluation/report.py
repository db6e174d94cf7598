"""One line per evaluation for the end of a run (each eval module's `summary` uses these)."""
from __future__ import annotations


def fmt(x) -> str:
    """A metric for humans: 3 decimals, a 95 % interval as [low, high], n/a for None."""
    if x is None:
        return "n/a"
    if isinstance(x, dict) and "low" in x:
        return f"[{x['low']:.3f}, {x['high']:.3f}]"
    return f"{x:.3f}" if isinstance(x, float) else str(x)
