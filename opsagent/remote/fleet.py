"""Fleet runs: one action over several hosts, in parallel, each with its own deadline.

One host failing does not stop the others (unless ``fail_fast``); a host that hangs
is reported as timed out instead of blocking the run.  Worker threads are daemons
so a hung SSH session can never keep the process alive after the summary.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ExitCode, OpsagentError
from ..inventory import HostConfig

HostAction = Callable[[HostConfig], "HostOutcome"]
UpdateCallback = Callable[[str, str], None]


@dataclasses.dataclass
class HostOutcome:
    """What one host's run produced; ``details`` is task-specific (applied, drift, backup...)."""

    host: str
    status: str = "ok"  # ok | failed | timed out | skipped
    exit_code: int = int(ExitCode.OK)
    message: str = ""
    duration: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_parallel(count: int, requested: int | None = None) -> int:
    return max(1, requested if requested else min(8, count))


def fleet_exit_code(outcomes: Sequence[HostOutcome]) -> int:
    """0 when every host succeeded, else the most specific non-zero code seen (1 for timeouts)."""
    codes = [o.exit_code for o in outcomes if o.exit_code != 0]
    if not codes:
        return 0
    return codes[0] if len(set(codes)) == 1 else int(ExitCode.FAILURE)


def run_fleet(
    hosts: Sequence[HostConfig],
    action: HostAction,
    *,
    parallel: int | None = None,
    fail_fast: bool = False,
    timeout: float | None = None,
    on_update: UpdateCallback | None = None,
) -> list[HostOutcome]:
    """Run ``action`` on every host; outcomes come back in inventory order."""
    notify = on_update or (lambda host, text: None)
    limit = default_parallel(len(hosts), parallel)
    outcomes: dict[str, HostOutcome] = {}
    lock = threading.Lock()
    pending = list(hosts)
    running: dict[str, tuple[threading.Thread, float]] = {}
    failed = False

    def work(host: HostConfig) -> None:
        started = time.monotonic()
        try:
            outcome = action(host)
        except OpsagentError as exc:
            outcome = HostOutcome(host.name, "failed", int(exc.exit_code), exc.message)
        except Exception as exc:  # a bug must not take the other hosts down
            outcome = HostOutcome(
                host.name, "failed", int(ExitCode.FAILURE), f"internal error: {type(exc).__name__}: {exc}"
            )
        outcome.duration = time.monotonic() - started
        with lock:
            outcomes.setdefault(host.name, outcome)

    while pending or running:
        while pending and len(running) < limit and not (fail_fast and failed):
            host = pending.pop(0)
            notify(host.name, "running")
            thread = threading.Thread(target=work, args=(host,), daemon=True, name=f"opsagent-{host.name}")
            running[host.name] = (thread, time.monotonic())
            thread.start()
        if fail_fast and failed:
            for host in pending:
                outcomes[host.name] = HostOutcome(
                    host.name, "skipped", int(ExitCode.FAILURE), "not started (--fail-fast)"
                )
                notify(host.name, "skipped")
            pending.clear()
        for name, (thread, started) in list(running.items()):
            if not thread.is_alive():
                del running[name]
                outcome = outcomes[name]
                failed = failed or not outcome.ok
                notify(name, "ok" if outcome.ok else f"{outcome.status}: {outcome.message}")
            elif timeout is not None and time.monotonic() - started > timeout:
                del running[name]  # the daemon thread is abandoned; its SSH timeouts end it eventually
                with lock:
                    outcomes[name] = HostOutcome(
                        name,
                        "timed out",
                        int(ExitCode.FAILURE),
                        f"no result within {timeout:g}s",
                        duration=time.monotonic() - started,
                    )
                failed = True
                notify(name, "timed out")
        time.sleep(0.02)
    return [outcomes[h.name] for h in hosts]


# ---------------------------------------------------------------- sync rows

WOULD_APPLY = ("would_apply", "not_rehearsed", "planned")
"""Step statuses of a dry run that mean "this version would be applied" (rehearsed, or shown with --no-rehearse)."""


def version_span(versions: Sequence[str]) -> str:
    """``001``, ``001, 002`` or ``001 … 115``: first and last, never the whole list (a summary cell is one line)."""
    if len(versions) <= 2:
        return ", ".join(versions)
    return f"{versions[0]} … {versions[-1]}"


def counted(verb: str, versions: Sequence[str]) -> str:
    """``applied 115 (001 … 115)``; ``applied 1 (007)``."""
    return f"{verb} {len(versions)} ({version_span(versions)})"


def sync_outcome(host: str, result: dict[str, Any]) -> HostOutcome:
    """One host's sync or dry run (``SyncResult.as_dict()``) as a summary row: counts and first/last version.

    ``details`` gains ``would_apply`` (the versions a dry run would apply) beside the
    result's own ``applied``, so a fleet dry run says how much it would do.
    """
    steps = result.get("steps") or []
    applied = [s["version"] for s in steps if s["status"] == "applied"]
    would = [s["version"] for s in steps if s["status"] in WOULD_APPLY] if result.get("action") == "dry-run" else []
    parts = [counted("applied", applied)] if applied else []
    if would:
        parts.append(counted("would apply", would))
    if result.get("error"):
        parts.append(str(result["error"]))
    if not parts:
        parts.append(str(result.get("outcome", "")).replace("_", " "))
    ok = bool(result.get("ok"))
    return HostOutcome(
        host,
        "ok" if ok else "failed",
        int(ExitCode.OK) if ok else int(ExitCode.FAILURE),
        "; ".join(parts),
        details={**result, "would_apply": would},
    )
