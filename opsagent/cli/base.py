"""What every task shares: the task decorator, error → exit-code mapping, project and inventory lookups.

This is the ONE place where library exceptions become exit codes and one-line
messages; tasks themselves only parse arguments, call the library and render, on the
consoles of the run's ``Environment`` (``environment.py``).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task
from rich.console import Console

from ..errors import ExitCode, OpsagentError, UsageError
from ..inventory import DEFAULT_INVENTORY, HostConfig, Inventory, current_inventory, find_project_root
from ..remote.transport import Remote, open_remote
from .environment import Environment, environment
from .program import program_name, silence_stdout, with_value_placeholders

F = TypeVar("F", bound=Callable[..., Any])

HOST_HELP = "inventory host name (a group, a comma list or 'all' where the task supports several)"
JSON_HELP = "print a machine-readable JSON document instead of tables"
ACCEPT_HELP = "record an unknown host key in known_hosts (once, after checking its fingerprint)"


def fail(code: ExitCode) -> Exit:
    """An Exit carrying a documented exit code and no further message."""
    return Exit(code=int(code))


def report_error(exc: OpsagentError, err: Console) -> None:
    err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
    if exc.hint:
        err.print(f"[dim]hint:[/] {exc.hint}", soft_wrap=True)


def _guard(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        err = environment(c).err
        try:
            return body(c, *args, **kwargs)
        except OpsagentError as exc:
            report_error(exc, err)
            raise fail(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]")
            raise fail(ExitCode.INTERRUPTED) from None
        except Exit:
            raise
        except BrokenPipeError:  # the reader went away (| head): nothing to report to anyone
            silence_stdout()
            raise fail(ExitCode.FAILURE) from None
        except Exception as exc:  # a bug: one line unless debugging
            if os.environ.get("OPSAGENT_DEBUG"):
                traceback.print_exc()
            err.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set OPSAGENT_DEBUG=1 for a traceback)",
                soft_wrap=True,
            )
            raise fail(ExitCode.FAILURE) from None

    return wrapper


class OpsagentTask(Task):  # type: ignore[misc]
    """Invoke's Task, with a parameter's annotation deciding its kind where its default cannot.

    Invoke takes a flag's type from its default: ``timeout: float = 0`` became an int
    flag and ``--timeout 2.5`` was refused.
    """

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        parameter = inspect.signature(self.body).parameters.get(name)
        if parameter is not None and parameter.annotation in ("float", float) and opts.get("kind") is int:
            opts["kind"] = float
        return opts


def command(help: dict[str, str] | None = None, *, needs_project: bool = False, **options: Any) -> Callable[[F], Any]:
    """``@task`` with per-parameter help, no auto short flags (``-h`` stays help) and error mapping.

    ``needs_project``: the task reads or writes the project's files (migrations, schema,
    snapshots): refused outside any project instead of working on the current folder.
    """

    def decorate(body: F) -> Any:
        made: list[Any] = []
        guarded = _guard(_in_project(body) if needs_project else body)
        made.append(
            task(
                _help_first(guarded, made, dict(help or {})),
                help=help or {},
                auto_shortflags=False,
                klass=OpsagentTask,
                **options,
            )
        )
        return made[0]

    return decorate


def _in_project(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        require_project()
        return body(c, *args, **kwargs)

    return wrapper


_HELP_WORDS = frozenset({"--help", "-h"})


def _help_first(body: Callable[..., Any], made: list[Any], helps: dict[str, str]) -> Callable[..., Any]:
    """``inv describe --help``: Invoke hands ``--help`` to the positional argument; show the task's help instead
    (rather than, say, creating a migration called "help")."""

    @functools.wraps(body)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(v, str) and v in _HELP_WORDS for v in (*args, *kwargs.values())):
            print_task_help(made[0], helps, environment(c))
            raise Exit(code=int(ExitCode.OK))
        return body(c, *args, **kwargs)

    return wrapper


def print_task_help(command_task: Any, helps: dict[str, str], env: Environment) -> None:
    """The task's help as ``inv --help TASK`` prints it: usage, docstring, options (Invoke consumed its own
    help texts)."""
    from invoke.parser import ParserContext

    arguments = command_task.get_arguments()
    for argument in arguments:
        argument.help = helps.get(argument.name, argument.help)
    context = ParserContext(name=command_task.name, args=arguments)
    program = program_name()
    positional = " ".join(f"<{a.name}>" for a in context.positional_args)
    name = next(
        (a for a in sys.argv[1:] if a == command_task.name or a.endswith("." + command_task.name)), command_task.name
    )
    lines = [
        f"Usage: {program} {name} [--options] {positional}".rstrip(),
        "",
        "Docstring:",
        f"  {(command_task.__doc__ or '').strip()}",
        "",
        "Options:",
    ]
    tuples = with_value_placeholders(context, context.help_tuples())
    width = max((len(flag) for flag, _ in tuples), default=0)
    lines += [f"  {flag.ljust(width)}  {text}" for flag, text in tuples]
    env.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- project and inventory


def inventory() -> Inventory:
    """The inventory every task reads (``$OPSAGENT_INVENTORY``, else the project's, found upwards from here)."""
    return current_inventory()


def outside_project_error() -> UsageError:
    return UsageError(
        f"not inside an opsagent project: no {DEFAULT_INVENTORY} here or in any folder above {Path.cwd()}",
        hint=f"cd into the project, or set OPSAGENT_INVENTORY=/path/to/{DEFAULT_INVENTORY}",
    )


def project_inventory() -> Inventory:
    """The inventory of the project we are in; refuses (exit 2) outside any project.

    For tasks that read or write the project's files (``new`` would otherwise create
    ``./sql/migrations`` wherever it is run).
    """
    require_project()
    inv = inventory()
    if inv.source is None:
        raise outside_project_error()
    return inv


def require_project() -> None:
    """Refuse (exit 2, one line and a hint) unless ``$OPSAGENT_INVENTORY`` is set or a project folder is found upwards.

    Cheap (no YAML is read): ``@command(needs_project=True)`` runs it before the task body.
    """
    if not os.environ.get("OPSAGENT_INVENTORY") and find_project_root() is None:
        raise outside_project_error()


def hosts_named(spec: str, *, project: bool = False) -> tuple[list[HostConfig], Inventory]:
    """The hosts ``--host`` names (a host, a group, a comma list or ``all``) and the inventory they come from.

    ``project``: the project's inventory, refused (exit 2, with a hint) outside any project.
    """
    if not spec:
        raise UsageError("--host is required (see 'inv hosts' for the inventory)")
    inv = project_inventory() if project else inventory()
    return inv.resolve(spec), inv


def check_against(against: str, against_host: str, towards: str) -> None:
    """``--against schema|snapshot`` and ``--against-host`` (diff, plan, new --from-diff): valid, and not both."""
    if against not in ("", "schema", "snapshot"):
        raise UsageError(f"--against {against!r}: expected 'schema' or 'snapshot'")
    if against and against_host:
        raise UsageError(f"--against and --against-host exclude each other: {towards} a file or {towards} a host")


def single_host(spec: str | None) -> tuple[HostConfig, Inventory]:
    """Resolve ``--host`` that must name exactly one host."""
    inv = inventory()
    if not spec:
        raise UsageError("--host is required (see 'inv hosts' for the inventory)")
    if inv.source is None and not inv.hosts:
        raise outside_project_error()
    hosts = inv.resolve(spec)
    if len(hosts) != 1:
        raise UsageError(f"--host {spec!r} names {len(hosts)} hosts; this task takes one")
    return hosts[0], inv


@contextmanager
def connect(spec: str | None, accept_new_host_key: bool = False) -> Iterator[Remote]:
    host, inv = single_host(spec)
    with open_remote(host, inv, accept_new_host_key=accept_new_host_key) as remote:
        yield remote
