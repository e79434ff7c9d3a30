"""Values shown to people, one way everywhere: sizes, transfer rates and paths.

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

from pathlib import Path
from typing import Any

BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")
STEP = 1024


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
