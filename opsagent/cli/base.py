"""What every task shares: the task decorator, error → exit-code mapping, consoles.

This is the ONE place where library exceptions become exit codes and one-line
messages; tasks themselves only parse arguments, call the library and render.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console

from ..errors import ExitCode, OpsagentError
from ..inventory import HostConfig, Inventory, load_inventory
from ..transport import Remote, open_remote

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

HOST_HELP = "inventory host name (a group, a comma list or 'all' where the task supports several)"
JSON_HELP = "print a machine-readable JSON document instead of tables"
ACCEPT_HELP = "record an unknown host key in known_hosts (once, after checking its fingerprint)"


def fail(code: ExitCode) -> Exit:
    """An Exit carrying a documented exit code and no further message."""
    return Exit(code=int(code))


def report_error(exc: OpsagentError) -> None:
    err_console.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {exc.hint}", soft_wrap=True)


def _guard(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except OpsagentError as exc:
            report_error(exc)
            raise fail(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise fail(ExitCode.INTERRUPTED) from None
        except Exit:
            raise
        except Exception as exc:  # a bug: one line unless debugging
            if os.environ.get("OPSAGENT_DEBUG"):
                traceback.print_exc()
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set OPSAGENT_DEBUG=1 for a traceback)",
                              soft_wrap=True)
            raise fail(ExitCode.FAILURE) from None

    return wrapper


def command(help: dict[str, str] | None = None, **options: Any) -> Callable[[F], Any]:
    """``@task`` with per-parameter help, no auto short flags (``-h`` stays help) and error mapping."""

    def decorate(body: F) -> Any:
        made: list[Any] = []
        made.append(task(_help_first(_guard(body), made, dict(help or {})), help=help or {}, auto_shortflags=False, **options))
        return made[0]

    return decorate


_HELP_WORDS = frozenset({"--help", "-h"})


def _help_first(body: Callable[..., Any], made: list[Any], helps: dict[str, str]) -> Callable[..., Any]:
    """``inv describe --help``: Invoke hands ``--help`` to the positional argument; show the task's help instead
    (rather than, say, creating a migration called "help")."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(v, str) and v in _HELP_WORDS for v in (*args[1:], *kwargs.values())):
            print_task_help(made[0], helps)
            raise Exit(code=int(ExitCode.OK))
        return body(*args, **kwargs)

    return wrapper


def print_task_help(command_task: Any, helps: dict[str, str]) -> None:
    """The task's help as ``inv --help TASK`` prints it: usage, docstring, options (Invoke consumed its own help texts)."""
    from invoke.parser import ParserContext

    arguments = command_task.get_arguments()
    for argument in arguments:
        argument.help = helps.get(argument.name, argument.help)
    context = ParserContext(name=command_task.name, args=arguments)
    program = os.path.basename(sys.argv[0]) if not sys.argv[0].endswith("__main__.py") else "opsagent"
    positional = " ".join(f"<{a.name}>" for a in context.positional_args)
    name = next((a for a in sys.argv[1:] if a == command_task.name or a.endswith("." + command_task.name)), command_task.name)
    lines = [f"Usage: {program} {name} [--options] {positional}".rstrip(), "", "Docstring:",
             f"  {(command_task.__doc__ or '').strip()}", "", "Options:"]
    width = max((len(flag) for flag, _ in context.help_tuples()), default=0)
    lines += [f"  {flag.ljust(width)}  {text}" for flag, text in context.help_tuples()]
    sys.stdout.write("\n".join(lines) + "\n")


def inventory() -> Inventory:
    return load_inventory()


def single_host(spec: str | None) -> tuple[HostConfig, Inventory]:
    """Resolve ``--host`` that must name exactly one host."""
    from ..errors import UsageError

    inv = inventory()
    if not spec:
        raise UsageError("--host is required (see 'inv hosts' for the inventory)")
    hosts = inv.resolve(spec)
    if len(hosts) != 1:
        raise UsageError(f"--host {spec!r} names {len(hosts)} hosts; this task takes one")
    return hosts[0], inv


@contextmanager
def connect(spec: str | None, accept_new_host_key: bool = False) -> Iterator[Remote]:
    host, inv = single_host(spec)
    with open_remote(host, inv, accept_new_host_key=accept_new_host_key) as remote:
        yield remote


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def is_interactive() -> bool:
    return sys.stdin.isatty() and not os.environ.get("CI")
