"""Feedback during long waits: a spinner (or a bar) on a terminal, two plain lines when piped.

The library reports progress through plain callbacks (``ProgressCallback`` in
``opsagent.backup``, sync events); the CLI renders them here, always on stderr so
stdout keeps only results (and ``--json`` stays one document).

- ``waiting(label)``: a Rich spinner with the elapsed time, shown only once the wait
  has lasted ``OPSAGENT_PROGRESS_DELAY`` seconds (default 0.5: short waits stay quiet);
- ``tracking(label, unit="bytes"|"count", total=None)``: the same with a bar and
  ``12.0 MB/289.2 MB`` (units from ``opsagent.units``) or ``3/12``; the object it yields
  is a ``ProgressCallback`` (``update(done, total)``).

Not on a terminal (a pipe, a log, cron) there is never an ANSI code nor a carriage
return: one ``label…`` line once the wait has lasted the same delay and one
``label: done in 1.2 s`` (or ``failed after``/``interrupted after``) when it ends; a
wait shorter than the delay (or a usage error raised at once) prints nothing.

A message printed while a spinner runs must not be glued to its text
(``⠦ rehearsed 011…warning:``): print it with ``Waiting.print`` (Rich draws it above
the live line), or on the run's other console (``Environment.out``/``err``), which takes
any live display off the screen while it prints (see ``TerminalConsole``).

The console is the run's stderr console (``environment(c).err``), passed in by the task:
whether it is a terminal was decided once, by the ``Environment``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from ..units import byte_progress_columns, human_bytes, human_duration
from .environment import paused_displays, put_back, take_off_screen

if TYPE_CHECKING:  # rich.progress loads with the first display shown, not with every command (start-up time)
    from rich.progress import Progress, Task, TaskID

DELAY_ENV = "OPSAGENT_PROGRESS_DELAY"
DEFAULT_DELAY = 0.5
"""Seconds before a spinner appears: a wait shorter than that shows nothing on a terminal."""

Unit = Literal["none", "bytes", "count"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def spinner_delay() -> float:
    """``$OPSAGENT_PROGRESS_DELAY`` (seconds, tests set 0), else ``DEFAULT_DELAY``."""
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, DEFAULT_DELAY)))
    except ValueError:
        return DEFAULT_DELAY


def _elapsed(task: Task) -> Text:
    """``12.3 s``, ``2 min 05 s``: the same words as the piped ``done in`` line."""
    return Text(human_duration(task.elapsed or 0.0), style="progress.elapsed")


def _columns(unit: Unit) -> tuple[Any, ...]:
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, SpinnerColumn, TextColumn

    class ElapsedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return _elapsed(task)

    label = TextColumn("{task.description}")
    if unit == "bytes":
        return SpinnerColumn(), label, BarColumn(), *byte_progress_columns(), ElapsedColumn()
    if unit == "count":
        return SpinnerColumn(), label, BarColumn(), MofNCompleteColumn(), ElapsedColumn()
    return SpinnerColumn(), label, ElapsedColumn()


_shown: list[Waiting] = []
"""Displays on the screen, innermost last: a new one takes the previous one off until it ends."""
_shown_lock = threading.RLock()


class Waiting:
    """One wait being shown. ``update`` is a ``ProgressCallback``; ``print``/``warn`` write above the live line."""

    def __init__(
        self,
        label: str,
        *,
        unit: Unit = "none",
        total: int | None = None,
        console: Console,
        delay: float | None = None,
    ) -> None:
        self.label = _CONTROL.sub("?", label)  # a hostile table name must not move the cursor nor split the line
        self.unit = unit
        self.console = console
        self.delay = spinner_delay() if delay is None else delay
        self.done = 0
        self.total = total
        self.started = time.monotonic()
        self.terminal = self.console.is_terminal
        self.silent = threading.current_thread() is not threading.main_thread()
        """A fleet run's worker: the fleet's own live table shows each host, one display per screen."""
        self._display: Progress | None = None
        self._task: TaskID | None = None
        self._timer: threading.Timer | None = None
        self._closed = False
        self._announced = False
        self._description = label
        self._foreign: list[
            Live
        ] = []  # other consoles' live displays (sync's spinner) kept off the screen while this one shows

    # ------------------------------------------------------------ reporting

    def update(self, done: int, total: int | None = None) -> None:
        """Bytes or items done so far (and the total, when known): a ``ProgressCallback``."""
        self.done = done
        if total is not None:
            self.total = total
        with _shown_lock:
            if self._display is not None and self._task is not None:
                self._display.update(self._task, completed=done, total=self.total)

    __call__ = update

    def phase(self, text: str) -> None:
        """The step now running (``restoring``, ``swapping``): one line (``label: text…``), and the live line's
        label."""
        if self.silent:
            return
        if not self.terminal:
            with _shown_lock:
                self._announce()
        text = _CONTROL.sub("?", text)
        self.console.print(
            f"{self.label}: {text}…", markup=False, highlight=False, style="dim" if self.terminal else None
        )
        with _shown_lock:
            self._description = f"{self.label}: {text}"
            if self._display is not None and self._task is not None:
                self._display.update(self._task, description=escape(self._description))

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print a line above the live display (never glued to the spinner's text)."""
        self.console.print(*objects, **kwargs)

    def warn(self, message: str) -> None:
        self.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True, highlight=False)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Off the screen for the block (a question asked on the terminal), back on after."""
        with _shown_lock:
            held, self._closed = self._closed, True
            if self._timer is not None:
                self._timer.cancel()
            shown = self._display is not None
            self._hide()
        try:
            yield
        finally:
            with _shown_lock:
                self._closed = held
                if shown:
                    self._resume()
                elif not held and not self.silent and not self._announced:
                    self._timer = threading.Timer(self.delay, self._show)
                    self._timer.daemon = True
                    self._timer.start()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # ------------------------------------------------------------ lifetime

    def open(self) -> None:
        if self.silent:
            return
        if self.delay <= 0:
            self._show()
            return
        self._timer = threading.Timer(self.delay, self._show)
        self._timer.daemon = True
        self._timer.start()

    def _show(self) -> None:
        with _shown_lock:
            if self._closed or self._display is not None or self._announced:
                return
            if not self.terminal:
                self._announce()
                return
            for outer in _shown:
                outer._hide()
            from rich.progress import Progress

            display = Progress(
                *_columns(self.unit),
                console=self.console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
                refresh_per_second=10,
            )
            self._task = display.add_task(
                escape(self._description), total=self.total if self.unit != "none" else None, completed=self.done
            )
            display.tasks[0].start_time = (
                display.get_time() - self.elapsed
            )  # the elapsed time counts from the start of the wait
            self._display = display
            _shown.append(self)
            self._foreign = take_off_screen(self.console)
            display.start()

    def _announce(self) -> None:
        """The piped start line (once): the wait has lasted the delay, or it has a phase to tell."""
        if not self._announced:
            self._announced = True
            self.console.print(f"{self.label}…", markup=False, highlight=False)

    def _hide(self) -> None:
        if self._display is not None:
            self._display.stop()

    def close(self, outcome: str = "done") -> None:
        with _shown_lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._display is not None:
                self._display.stop()
                self._display = None
                if self in _shown:
                    _shown.remove(self)
                if _shown:
                    _shown[-1]._resume()
                put_back(self._foreign)
        if self._announced:  # piped: a wait that said it started says how it ended (a short one said nothing)
            self.console.print(self._closing_line(outcome), markup=False, highlight=False)

    def _resume(self) -> None:
        if self._display is not None:
            self._display.start()

    def _closing_line(self, outcome: str) -> str:
        preposition = "in" if outcome == "done" else "after"
        line = f"{self.label}: {outcome} {preposition} {human_duration(self.elapsed)}"
        if self.unit == "bytes" and self.done:
            line += f" ({human_bytes(self.done)})"
        elif self.unit == "count" and (self.done or self.total):
            line += f" ({self.done}/{self.total})" if self.total is not None else f" ({self.done})"
        return line


@contextmanager
def waiting(label: str, *, console: Console, delay: float | None = None) -> Iterator[Waiting]:
    """Show that ``label`` is under way: a spinner with the elapsed time (terminal), or a start and an end line
    (piped)."""
    with _tracked(Waiting(label, console=console, delay=delay)) as shown:
        yield shown


@contextmanager
def tracking(
    label: str,
    *,
    unit: Literal["bytes", "count"] = "bytes",
    total: int | None = None,
    console: Console,
    delay: float | None = None,
) -> Iterator[Waiting]:
    """Like ``waiting``, with a bar: bytes (dumps, downloads) or ``N/M`` (databases, migrations); feed it with
    ``update``."""
    with _tracked(Waiting(label, unit=unit, total=total, console=console, delay=delay)) as shown:
        yield shown


@contextmanager
def _tracked(shown: Waiting) -> Iterator[Waiting]:
    shown.open()
    try:
        yield shown
    except KeyboardInterrupt:
        shown.close("interrupted")
        raise
    except BaseException:
        shown.close("failed")
        raise
    shown.close()


__all__ = ["DELAY_ENV", "Waiting", "paused_displays", "spinner_delay", "tracking", "waiting"]
