"""The command-line layer: one Invoke task collection behind ``inv`` and ``opsagent``.

Tasks parse arguments, call the library and render; nothing else lives here.

Start-up imports only the task modules named on the command line (issue 14): ``inv status``
does not load pglast, the catalog, the planner or Rich's progress bars.  The other tasks
are present as light stand-ins (their names and aliases, from ``TASKS``), so "did you
mean" still knows every task; ``--list``, ``--complete``, no task at all, or a word that
names no task load everything.  ``ns`` (what ``tasks.py`` exports to ``inv``) follows the
command line of the running ``inv``/``opsagent``; anywhere else it is the full collection.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import Task

from .. import __version__
from ..launch import is_our_command_line
from ..remote.liblog import quiet_library_loggers
from .program import OpsagentProgram, adopt_invoke_program, program_name

__all__ = ["TASKS", "OpsagentProgram", "adopt_invoke_program", "collection_for", "main", "ns"]

quiet_library_loggers()  # CLI start, under both 'inv' and 'opsagent'


class TaskEntry(NamedTuple):
    """One name of the collection: where its task (or sub-collection) lives, its aliases, its sub-tasks."""

    name: str
    module: str  # under opsagent.cli
    attribute: str
    aliases: tuple[str, ...] = ()
    subtasks: tuple[str, ...] = ()  # a sub-collection (sandbox.up ...)


TASKS: tuple[TaskEntry, ...] = (
    TaskEntry("hosts", "core", "hosts"),
    TaskEntry("doctor", "core", "doctor"),
    TaskEntry("sandbox", "core", "sandbox", subtasks=("up", "down", "status")),
    TaskEntry("tables", "quickref", "tables"),
    TaskEntry("describe", "quickref", "describe"),
    TaskEntry("psql", "quickref", "psql_task"),
    TaskEntry("backup", "backup", "backup"),
    TaskEntry("backups", "backup", "backups", subtasks=("list", "get")),
    TaskEntry("restore", "backup", "restore"),
    TaskEntry("lint", "lint", "lint"),
    TaskEntry("extract", "schema", "extract_task"),
    TaskEntry("diff", "schema", "diff"),
    TaskEntry("check", "schema", "check"),
    TaskEntry("plan", "plan", "plan"),
    TaskEntry("sync", "sync", "sync"),
    TaskEntry("status", "sync", "status", aliases=("history",)),
    TaskEntry("baseline", "sync", "baseline_task"),
    TaskEntry("repair", "sync", "repair"),
    TaskEntry("rollback", "rollback", "rollback"),
    TaskEntry("new", "plan", "new"),
)
_LOAD_ALL_FLAGS = ("-l", "--list", "--complete", "--print-completion-script", "-d", "--debug")


def modules_for(argv: Sequence[str] | None) -> set[str] | None:
    """The task modules a command line names (None: load them all)."""
    if argv is None:
        return None
    words = list(argv[1:])
    if any(word.split("=", 1)[0] in _LOAD_ALL_FLAGS for word in words):
        return None
    by_name = {name: entry.module for entry in TASKS for name in (entry.name, *entry.aliases)}
    wanted = {
        by_name[head]
        for word in words
        if not word.startswith("-") and (head := word.split(".", 1)[0].replace("_", "-")) in by_name
    }
    return wanted or None


def _stand_in(name: str, aliases: Sequence[str] = ()) -> Task[Any]:
    """A task of the collection whose module was not loaded: its name (for "did you mean"); never run."""

    def not_loaded(c: Context) -> None:
        raise RuntimeError(f"task {name!r} was not loaded for this command line")

    not_loaded.__doc__ = f"(the '{name}' task: run '{program_name()} --help {name}')"
    return Task(not_loaded, name=name, aliases=tuple(aliases))


def collection_for(argv: Sequence[str] | None = None) -> Collection:
    """The task collection for a command line: its tasks' modules imported, the rest as stand-ins
    (``argv`` None: all)."""
    wanted = modules_for(argv)
    collection = Collection()
    for entry in TASKS:
        if wanted is None or entry.module in wanted:
            item = getattr(importlib.import_module(f"{__name__}.{entry.module}"), entry.attribute)
            if isinstance(item, Collection):
                collection.add_collection(item)
            else:
                collection.add_task(item)
        elif entry.subtasks:
            collection.add_collection(Collection(entry.name, *(_stand_in(sub) for sub in entry.subtasks)))
        else:
            collection.add_task(_stand_in(entry.name, entry.aliases))
    return collection


def _command_line() -> list[str] | None:
    """``sys.argv`` when this process is ``inv``/``opsagent`` (then ``ns`` follows it); None elsewhere
    (tests, imports)."""
    return list(sys.argv) if is_our_command_line(sys.argv) else None


def __getattr__(name: str) -> Any:
    if name == "ns":
        collection = collection_for(_command_line())
        globals()["ns"] = collection
        return collection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the ``opsagent`` console script."""
    OpsagentProgram(namespace=collection_for(sys.argv), version=__version__, name="opsagent", binary="opsagent").run()
