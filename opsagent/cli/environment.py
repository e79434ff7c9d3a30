"""Where the CLI's output goes, decided once per run (HTTPie's ``Environment``).

stdin, stdout and stderr, whether each is a terminal, the width and the colours are
judged once, when ``inv``/``opsagent`` starts (``ParseManners.update_config`` puts the
``Environment`` into Invoke's config), and every task, renderer, progress display and
the error mapping reach them through ``environment(c)``; nothing prints on a module's
own console.  Tests build one over ``io.StringIO`` buffers instead of patching globals.

- A terminal gets a ``TerminalConsole``: Rich's colours, spinners and bars, its width
  followed as the window is resized (``COLUMNS`` fixes it, as Rich reads it).
- Anything else (a pipe, a file, a test buffer) gets a ``PipedConsole``: no colour, no
  ANSI code, no wrapping, cropping nor padding (``PIPE_WIDTH``: a backup name pastes whole).
- Rich's own judgement decides what a terminal is (``isatty``, ``FORCE_COLOR``,
  ``TTY_COMPATIBLE``) and ``NO_COLOR`` takes the colours away (bold and dim stay).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from invoke.context import Context
from rich.console import Console
from rich.control import Control
from rich.live import Live
from rich.measure import Measurement

PIPE_WIDTH = 100_000
"""Width of a console whose stream is not a terminal: nothing is ever wrapped or cut (a backup name must paste
whole)."""

CONFIG_KEY = "opsagent_environment"
"""The key of Invoke's config that carries the run's ``Environment`` to every task's context."""

_TRAILING_BLANKS = re.compile(r"[ \t]+(?=\n)")


# ---------------------------------------------------------------- the environment


@dataclass(frozen=True)
class Environment:
    """The run's streams and what they are, and the two consoles drawn on them (``out``: stdout, ``err``: stderr).

    ``width``: a terminal's width (None: the terminal's own, as it is when drawing); a stream
    that is not a terminal is always ``PIPE_WIDTH`` wide.  ``color_system``: Rich's name of the
    terminal's colours (None: no styles at all); pipes never get any.
    """

    stdout: TextIO
    stderr: TextIO
    stdin: TextIO = field(default_factory=io.StringIO)
    stdout_isatty: bool = False
    stderr_isatty: bool = False
    stdin_isatty: bool = False
    width: int | None = None
    color_system: str | None = "standard"
    no_color: bool = False
    ci: bool = False
    """``$CI`` is set: never ask a question, even with a terminal on stdin."""
    out: Console = field(init=False, repr=False, compare=False)
    err: Console = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", self._console(self.stdout, self.stdout_isatty, stderr=False))
        object.__setattr__(self, "err", self._console(self.stderr, self.stderr_isatty, stderr=True))

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The process's own streams, judged once (at the entry point; ``environ`` defaults to ``os.environ``)."""
        environ = os.environ if environ is None else environ
        stdout_terminal, stdout_colours = _judged(sys.stdout, environ)
        stderr_terminal, stderr_colours = _judged(sys.stderr, environ)
        columns = environ.get("COLUMNS", "")
        return cls(
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdin=sys.stdin,
            stdout_isatty=stdout_terminal,
            stderr_isatty=stderr_terminal,
            stdin_isatty=_isatty(sys.stdin),
            width=int(columns) if columns.isdigit() else None,
            color_system=stdout_colours or stderr_colours,
            no_color=environ.get("NO_COLOR", "") != "",
            ci=bool(environ.get("CI")),
        )

    def __copy__(self) -> Environment:
        return self  # immutable: Invoke copies its config into every task's context; they all share this one

    def __deepcopy__(self, memo: dict[int, Any]) -> Environment:
        return self

    def _console(self, stream: TextIO, terminal: bool, *, stderr: bool) -> Console:
        if terminal:
            return TerminalConsole(
                file=stream,
                stderr=stderr,
                force_terminal=True,
                width=self.width,
                color_system=self.color_system,
                no_color=self.no_color,
                highlight=False,
            )
        writer: Any = _PipeWriter(stream)  # duck-typed text stream (write/flush/isatty/encoding)
        return PipedConsole(
            file=writer,
            stderr=stderr,
            width=PIPE_WIDTH,
            soft_wrap=True,
            highlight=False,
            force_terminal=False,
            color_system=None,
            no_color=self.no_color,
        )

    # ------------------------------------------------------------ what tasks ask of it

    @property
    def interactive(self) -> bool:
        """A person can answer a question: stdin is a terminal and this is not a CI job."""
        return self.stdin_isatty and not self.ci

    def human(self, json_: bool) -> Console:
        """Where lines for people go: stdout, or stderr under ``--json`` (stdout then holds one JSON document only)."""
        return self.err if json_ else self.out

    def print_json(self, document: Any) -> None:
        """The ``--json`` document: the only thing written on stdout."""
        self.stdout.write(json.dumps(document, indent=2, default=str) + "\n")

    def write(self, text: str) -> None:
        """Raw text on stdout, as is (a psql script, a file name): no console markup, no width."""
        self.stdout.write(text)
        self.stdout.flush()

    def confirm(self, question: str) -> bool:
        """Rich's ``[y/n]`` question on stdout, answered on this environment's stdin."""
        from rich.prompt import Confirm

        answers: Any = _Answers(self.stdin)  # duck-typed: Rich only calls readline
        return bool(Confirm.ask(question, console=self.out, stream=answers))


def environment(c: Context) -> Environment:
    """The run's environment, from the task's context (where the entry point put it).

    A context made elsewhere (a test calling a task, a script using Invoke's Executor)
    gets the process's own streams, judged on first use and kept in that context.
    """
    found = c.config.get(CONFIG_KEY)
    if isinstance(found, Environment):
        return found
    made = Environment.detect()
    install(c.config, made)
    return made


def install(config: Any, env: Environment) -> None:
    """Put ``env`` into an Invoke config (a Program's, before it runs its tasks, or a context's)."""
    config[CONFIG_KEY] = env


def task_context(env: Environment) -> Context:
    """An Invoke context carrying ``env``: for calling a task directly (tests)."""
    context = Context()
    install(context.config, env)
    return context


def _judged(stream: TextIO, environ: Mapping[str, str]) -> tuple[bool, str | None]:
    """What Rich makes of a stream: a terminal or not (``isatty``, ``FORCE_COLOR``, ``TTY_COMPATIBLE``), its colours."""
    probe = Console(file=stream, _environ=environ)
    return probe.is_terminal, probe.color_system


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except ValueError:  # closed
        return False


class _Answers:
    """stdin for Rich's prompts: ``readline``, with ``input()``'s end of file (EOFError, not an empty answer
    forever)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def readline(self) -> str:
        line = self._stream.readline()
        if not line:
            raise EOFError
        return line


# ---------------------------------------------------------------- consoles


class _PipeWriter:
    """The console's stream when it is not a terminal: writes through, minus the blanks Rich pads lines with."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        return int(self._stream.write(_TRAILING_BLANKS.sub("", text)))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False


class PipedConsole(Console):
    """A console writing to a pipe or a file: no wrapping, no cropping, no padding out to a terminal width.

    Text is never wrapped (``soft_wrap``, a width no line reaches); a renderable that fills
    whatever width it is given (a Panel, a padded block) is drawn at its natural width instead.
    """

    def print(self, *objects: Any, width: int | None = None, **kwargs: Any) -> None:
        if width is None and len(objects) == 1 and not isinstance(objects[0], str):
            natural = Measurement.get(self, self.options, objects[0]).maximum
            width = natural if 0 < natural < PIPE_WIDTH else None
        super().print(*objects, width=width, **kwargs)


_terminals: weakref.WeakSet[TerminalConsole] = weakref.WeakSet()
"""The terminal consoles of this process: stdout and stderr share one screen."""
_pausing = threading.local()


class TerminalConsole(Console):
    """Rich's console on a terminal, keeping what it prints off the live displays (spinners, bars) of the others.

    stdout and stderr share one screen: a warning printed on stderr while a spinner turns on
    stdout was glued to the spinner's text (``⠦ rehearsed 011…warning:``).  Rich moves a line
    printed on the spinner's own console above it; for another console's print, the live
    display is taken off the screen and put back after (``paused_displays``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live_displays: list[Live] = []
        _terminals.add(self)

    def set_live(self, live: Live) -> bool:
        top = bool(super().set_live(live))
        self.live_displays.append(live)
        return top

    def clear_live(self) -> None:
        super().clear_live()
        if self.live_displays:
            self.live_displays.pop()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if objects and all(isinstance(item, Control) for item in objects):  # a live display redrawing itself
            super().print(*objects, **kwargs)
            return
        with paused_displays(self):
            super().print(*objects, **kwargs)


def take_off_screen(printer: Console) -> list[Live]:
    """Stop the live displays of every terminal console but ``printer`` (they erase themselves); ``put_back``
    redraws them."""
    stopped: list[Live] = []
    for other in _terminals:
        if other is not printer and other.live_displays and other.live_displays[0].is_started:
            outer = other.live_displays[0]
            outer.stop()
            stopped.append(outer)
    return stopped


def put_back(stopped: list[Live]) -> None:
    for live in stopped:
        live.start()


@contextmanager
def paused_displays(printer: Console) -> Iterator[None]:
    """Take the live displays of every terminal console but ``printer`` off the screen for the block, then
    redraw them."""
    if getattr(_pausing, "active", False) or not printer.is_terminal:
        yield
        return
    _pausing.active = True
    stopped: list[Live] = []
    try:
        stopped = take_off_screen(printer)
        yield
    finally:
        try:
            put_back(stopped)
        finally:
            _pausing.active = False


__all__ = [
    "CONFIG_KEY",
    "PIPE_WIDTH",
    "Environment",
    "PipedConsole",
    "TerminalConsole",
    "environment",
    "install",
    "paused_displays",
    "put_back",
    "take_off_screen",
    "task_context",
]
