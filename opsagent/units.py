"""Human-readable sizes, one way everywhere (binary multiples, like pg_size_pretty)."""

from __future__ import annotations


def human_bytes(size: float) -> str:
    """``2048`` → ``2.0 kB``; ``10`` → ``10 B``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
