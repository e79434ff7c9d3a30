"""Command-line parse errors, the same under ``opsagent`` and ``inv``: one line, a "did you mean", the usage line,
exit 2.

Invoke's own ``Program`` prints ``No idea what '--dryrun' is!`` and exits 1, and a
flag that is not a number (``--parallel x``) escapes as a ``ValueError`` traceback.
``ParseManners`` fixes both in ``parse_core``/``parse_tasks``/``parse_cleanup``.
The ``opsagent`` script runs a Program with it mixed in; ``inv`` runs Invoke's own
Program, which imports ``tasks.py`` while it loads the collection, *before* it parses
the task arguments: ``tasks.py`` calls ``adopt_invoke_program`` then, which gives that
running Program the same manners, so ``inv X`` and ``opsagent X`` answer alike.  Both
create the run's ``Environment`` (``environment.py``) the same way, in ``update_config``.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from invoke.exceptions import Exit, ParseError
from invoke.parser import ParserContext
from invoke.program import Program

from ..errors import ExitCode
from .environment import Environment, install

_UNKNOWN = re.compile(r"No idea what '(?P<token>.*)' is!")
_MISSING = re.compile(r"'(?P<task>[^']+)' did not receive required positional arguments: (?P<names>.*)")
_NEEDS_VALUE = re.compile(r"Flag <Argument: (?P<name>[^ >(]+).*needed value and was not given one!")
_NO_VALUE = re.compile(r"Flag <Argument: (?P<name>[^ >(]+).*doesn't take any value!")


def program_name() -> str:
    """``inv`` or ``opsagent``, as the user typed it (``python -m opsagent`` counts as ``opsagent``)."""
    if sys.argv and not sys.argv[0].endswith("__main__.py"):
        return os.path.basename(sys.argv[0]) or "opsagent"
    return "opsagent"


def usage_line(context: ParserContext | None) -> str:
    """``usage: inv sync [--options]``, or the program's usage when no task is known yet."""
    name = program_name()
    if context is None or not context.name:
        return f"usage: {name} <task> [--options]  ('{name} --list' shows the tasks)"
    positional = " ".join(f"<{a.name}>" for a in context.positional_args)
    flags = " [--options]" if context.flags else ""
    return (
        f"usage: {name} {context.name}{flags} {positional}".rstrip()
        + f"  ('{name} --help {context.name}' for the options)"
    )


def _close(word: str, candidates: Iterable[str]) -> str | None:
    import difflib  # only a mistyped command line pays for it

    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _task_context(program: Program, context: ParserContext | None) -> ParserContext | None:
    """The task's context (with its positional arguments), or None for Invoke's initial (core) context."""
    if context is None or not context.name:
        return None
    parser = getattr(program, "parser", None)
    contexts = getattr(parser, "contexts", {}) if parser is not None else {}
    return contexts.get(context.name, context)


def _task_names(program: Program) -> list[str]:
    collection = getattr(program, "collection", None)
    if collection is None:
        return []
    return [str(name) for name in collection.to_contexts() for name in (name.name, *name.aliases)]


def explain_parse_error(program: Program, exc: ParseError) -> str:
    """The one-line error, a "did you mean" when a name is close to a real one, and the task's usage line."""
    text = str(exc)
    context = _task_context(program, exc.context)
    hint = ""
    unknown = _UNKNOWN.fullmatch(text)
    if unknown:
        token = unknown.group("token")
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            where = f" for '{context.name}'" if context is not None else ""
            text = f"unknown flag '{token}'{where}"
            candidates = [*(context.flags if context else ()), *(context.inverse_flags if context else ())]
            if context is None:
                candidates += list(program.initial_context.flags)
            guess = _close(flag, candidates)
        else:
            guess = _close(token, _task_names(program))
            text = f"unknown task '{token}'"
            if context is not None and guess is None:
                text = f"unexpected '{token}' after '{context.name}' (neither one of its flags nor a task)"
            elif context is not None:
                text += f" (after '{context.name}')"
        hint = f"; did you mean '{guess}'?" if guess else ""
    elif (missing := _MISSING.fullmatch(text)) is not None:
        names = ", ".join(f"<{n.strip()}>" for n in missing.group("names").replace("'", "").split(","))
        text = f"'{missing.group('task')}' is missing {names}"
    elif (needs := _NEEDS_VALUE.search(text)) is not None:
        text = f"--{needs.group('name').replace('_', '-')} needs a value"
    elif (takes_none := _NO_VALUE.search(text)) is not None:
        text = f"--{takes_none.group('name').replace('_', '-')} takes no value"
    return f"error: {text}{hint}\n{usage_line(context)}"


def _parse_machine(exc: BaseException) -> Any:
    """Invoke's ParseMachine that was setting a flag when ``exc`` was raised (its ``flag`` and ``context``), if any."""
    tb = exc.__traceback__
    machine = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if (
            candidate is not None
            and hasattr(candidate, "flag")
            and hasattr(candidate, "context")
            and hasattr(candidate, "contexts")
        ):
            machine = candidate
        tb = tb.tb_next
    return machine


def explain_bad_value(program: Program, exc: ValueError) -> str:
    """``--parallel x``: Invoke's int() cast failed inside its parser; name the flag and what it takes."""
    machine = _parse_machine(exc)
    flag = getattr(machine, "flag", None)
    context = _task_context(program, getattr(machine, "context", None))
    if flag is None:
        return f"error: invalid value on the command line: {exc}\n{usage_line(context)}"
    kind = {int: "a whole number", float: "a number"}.get(flag.kind, f"a {getattr(flag.kind, '__name__', 'value')}")
    return f"error: --{flag.name.replace('_', '-')} takes {kind}, got {flag.raw_value!r}\n{usage_line(context)}"


def with_value_placeholders(context: ParserContext, tuples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Invoke's help shows ``=STRING``/``=INT`` only; a float flag (``--timeout``) would read like a switch."""
    floats = {flag for flag, argument in context.flags.items() if argument.kind is float}
    return [(f"{spec}=NUMBER" if spec in floats else spec, text) for spec, text in tuples]


def silence_stdout() -> None:
    """The reader of our stdout went away (``inv backups | head -1``): stop writing there, without a traceback.

    Python's own advice: point stdout at /dev/null so the interpreter's final flush cannot fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _interrupted() -> Exit:
    """Ctrl-C outside a task's own guard: Invoke prints the message, then exits with the code."""
    return Exit("interrupted", code=int(ExitCode.INTERRUPTED))


def _interruptible(step: Any) -> None:
    try:
        step()
    except KeyboardInterrupt:
        raise _interrupted() from None


class ParseManners:
    """Mixed into an Invoke ``Program``: parse errors become ``Exit(message, code=2)``; Ctrl-C in any of its steps
    ``Exit("interrupted", code=130)`` (Invoke's own ``run`` turns it into a silent exit 1); the run's ``Environment``.
    """

    def create_config(self) -> None:
        _interruptible(lambda: super(ParseManners, self).create_config())  # type: ignore[misc]

    def parse_collection(self) -> None:
        _interruptible(lambda: super(ParseManners, self).parse_collection())  # type: ignore[misc]

    def update_config(self, merge: bool = True) -> None:
        """Invoke's last step before running the tasks: the streams are judged here, once, for every task of the run."""
        _interruptible(lambda: super(ParseManners, self).update_config(merge))  # type: ignore[misc]
        program: Any = self
        install(program.config, Environment.detect())

    def execute(self) -> None:
        """A task's own guard (``cli.base``) reports a Ctrl-C in its body; this one covers the moments around it."""
        _interruptible(lambda: super(ParseManners, self).execute())  # type: ignore[misc]

    def _guarded(self, step: Any) -> None:
        program: Program = self
        try:
            _interruptible(step)
        except ParseError as exc:
            raise Exit(explain_parse_error(program, exc), code=int(ExitCode.USAGE)) from None
        except ValueError as exc:
            raise Exit(explain_bad_value(program, exc), code=int(ExitCode.USAGE)) from None
        except BrokenPipeError:
            silence_stdout()
            raise Exit(code=int(ExitCode.FAILURE)) from None

    def print_task_help(self, name: str) -> None:
        program: Any = self
        context = program.parser.contexts[name]
        plain = program.print_columns
        program.print_columns = lambda tuples: plain(with_value_placeholders(context, tuples))
        try:
            super().print_task_help(name)  # type: ignore[misc]
        finally:
            del program.print_columns

    def parse_core(self, argv: list[str] | None) -> None:
        self._guarded(lambda: super(ParseManners, self).parse_core(argv))  # type: ignore[misc]

    def parse_tasks(self) -> None:
        self._guarded(lambda: super(ParseManners, self).parse_tasks())  # type: ignore[misc]

    def parse_cleanup(self) -> None:
        self._guarded(lambda: super(ParseManners, self).parse_cleanup())  # type: ignore[misc]


class OpsagentProgram(ParseManners, Program):  # type: ignore[misc]
    """Invoke's Program with opsagent's parse manners (the ``opsagent`` console script)."""


def adopt_invoke_program() -> bool:
    """Give the Invoke Program now importing ``tasks.py`` (``inv``) opsagent's parse manners; True if one was found.

    Invoke offers no hook between loading the collection and parsing the task
    arguments, so the running Program is found on the call stack and its class
    extended in place (a subclass of its own class with ``ParseManners`` first).
    """
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Program):
            if not isinstance(candidate, ParseManners):
                candidate.__class__ = type(
                    f"{type(candidate).__name__}WithOpsagentManners", (ParseManners, type(candidate)), {}
                )
            return True
        frame = frame.f_back
    return False
