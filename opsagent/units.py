"""Values shown to people, one way everywhere: sizes (binary multiples, like pg_size_pretty) and paths."""

from __future__ import annotations

from pathlib import Path


def label(path: Path) -> str:
    """A path as people typed it: relative to the working directory when inside it (clickable ``file:line``)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def human_bytes(size: float) -> str:
    """``2048`` → ``2.0 kB``; ``10`` → ``10 B``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
