"""Values shown to people and read from them, one way everywhere: sizes, transfer rates, durations and paths.

Sizes are in **binary multiples with PostgreSQL's labels**: 1 kB = 1024 bytes,
1 MB = 1024 kB, and so on.  That is what ``pg_size_pretty`` and psql's ``\\l+``
print and what a ``hazards: large_table_bytes: 1GB`` threshold means, so a size
opsagent shows can be compared with the server's own figures.  Every size on the
screen comes from ``human_bytes``; progress bars take their byte columns from
``byte_progress_columns`` (Rich's ``DownloadColumn``/``TransferSpeedColumn``
count in powers of 1000: the same dump read 303.3 MB on the bar and 289.2 MB in
the summary).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")
STEP = 1024

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}  # PostgreSQL's spelling of its own units
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*")


def parse_duration(text: str, *, bare_unit: str | None, whole: bool = False) -> float | None:
    """Seconds in ``5s``, ``500ms``, ``2min``, ``1h``, ``1.5s`` or ``0``; None when ``text`` is not such a duration.

    ``bare_unit``: the unit of a number written without one (PostgreSQL settings: ``ms``; waits: ``s``);
    None refuses a bare number other than 0, which would be ambiguous.  ``whole``: refuse decimals
    (a value pasted into a PostgreSQL setting).  The one parser behind every duration flag and inventory key.
    """
    match = _DURATION.fullmatch(text)
    if match is None or (whole and "." in match.group(1)):
        return None
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if bare_unit is None and match.group(1) != "0":  # only a plain 0 needs no unit
            return None
        unit = bare_unit or "s"
    return number * DURATION_UNITS[unit]


def label(path: Path) -> str:
    """A path as people typed it: relative to the working directory when inside it (clickable ``file:line``)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def human_bytes(size: float) -> str:
    """``2048`` → ``2.0 kB``; ``10`` → ``10 B``; ``303_300_000`` → ``289.2 MB`` (binary multiples, see the module)."""
    value = float(size)
    for unit in BYTE_UNITS[:-1]:
        if abs(value) < STEP:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= STEP
    return f"{value:.1f} {BYTE_UNITS[-1]}"


def human_rate(bytes_per_second: float | None) -> str:
    """``1048576`` → ``1.0 MB/s``; unknown (no sample yet) → ``?``."""
    return "?" if bytes_per_second is None else f"{human_bytes(bytes_per_second)}/s"


def transferred(done: float, total: float | None) -> str:
    """``12.0 MB/289.2 MB``, or ``12.0 MB`` while the total is unknown."""
    return human_bytes(done) if total is None else f"{human_bytes(done)}/{human_bytes(total)}"


def human_duration(seconds: float, *, precise: bool = True) -> str:
    """``0.4 s``, ``12.3 s``, ``2 min 05 s`` (``precise=False``: whole seconds, as a live counter shows them)."""
    if seconds < 60:
        return f"{seconds:.1f} s" if precise else f"{int(seconds)} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def byte_progress_columns() -> tuple[Any, ...]:
    """Rich progress columns for a byte count and a rate in the units above (imports rich.progress only when called)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class BytesColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(transferred(task.completed, task.total), style="progress.download")

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(human_rate(task.finished_speed or task.speed), style="progress.data.speed")

    return BytesColumn(), RateColumn()
