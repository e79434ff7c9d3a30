"""Fleet runs: one action over several hosts, in parallel, each with its own deadline.

One host failing does not stop the others (unless ``fail_fast``); a host that hangs
is reported as timed out instead of blocking the run.  Worker threads are daemons
so a hung SSH session can never keep the process alive after the summary.

Ctrl-C reaches only the main thread.  A fleet run passes it on to every host's run (the part of its work inside
:func:`interruptible`), which then ends as a one-host run does on Ctrl-C: its backend stopped, where its ledger stands
found out, its audit record written.  No further host starts.  The run waits for those ends (a second Ctrl-C stops
waiting: the hosts still running are reported with an unknown outcome) and raises :class:`FleetInterrupted` with
every host's outcome.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ExitCode, OpsagentError
from ..interrupts import on_swallowed_in_thread, once_out_of_hook
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


class FleetInterrupted(KeyboardInterrupt):
    """Ctrl-C during a fleet run, once every host's run has ended (or been given up on): each host's outcome."""

    def __init__(self, outcomes: list[HostOutcome]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


GRACE_S = 60.0  # how long an interrupted fleet run waits for its hosts to stop and find out where they stand

_interruptible_lock = threading.Lock()
_interruptible: set[int] = set()  # the threads inside ``interruptible()``
_interrupted = False  # this fleet run was interrupted: no thread enters ``interruptible()`` any more
_sent: set[int] = set()  # the threads sent a KeyboardInterrupt, still inside ``interruptible()``


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside, a Ctrl-C of the fleet run arrives in this worker thread as a KeyboardInterrupt, as it would in a
    one-host run (entering after it raises at once); outside (e.g. writing the audit record after the run),
    never.  One that arrives as the block ends is withdrawn, or surfaces at its end: the caller tells those apart
    by whether its result is in."""
    ident = threading.get_ident()
    with _interruptible_lock:
        if _interrupted:
            raise KeyboardInterrupt
        _interruptible.add(ident)
    try:
        yield
    finally:
        with _interruptible_lock:
            _interruptible.discard(ident)
            _sent.discard(ident)
            _raise_in(ident, None)  # a KeyboardInterrupt sent but not raised yet: withdrawn


def interrupt_running() -> None:
    """Raise KeyboardInterrupt in every thread inside ``interruptible()`` (once each), and in any that enters it."""
    global _interrupted
    with _interruptible_lock:
        _interrupted = True
        for ident in _interruptible:
            _raise_in(ident, KeyboardInterrupt)
        _sent.update(_interruptible)
        _interruptible.clear()


def _resend_swallowed(ident: int) -> bool:
    """A finalizer in the worker ``ident`` swallowed its KeyboardInterrupt (``opsagent.interrupts``): sent again from
    a timer thread once the worker has left the hook, unless its block has ended meanwhile (then it is not wanted)."""
    with _interruptible_lock:
        if ident not in _sent:
            return False
    once_out_of_hook(ident, lambda: _resend(ident))
    return True


def _resend(ident: int) -> None:
    with _interruptible_lock:
        if ident in _sent:
            _raise_in(ident, KeyboardInterrupt)


on_swallowed_in_thread(_resend_swallowed)


def _reset_interrupts() -> None:
    global _interrupted
    with _interruptible_lock:
        _interrupted = False
        _sent.clear()


def _raise_in(ident: int, exception: type[BaseException] | None) -> None:
    """CPython's asynchronous exception: raised in that thread at its next Python instruction (None: withdrawn)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exception) if exception is not None else None
    )


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
    interrupts_itself: bool = False,
) -> list[HostOutcome]:
    """Run ``action`` on every host; outcomes come back in inventory order.  Ctrl-C: :class:`FleetInterrupted`
    once the running hosts have ended their runs (see the module docstring).  ``interrupts_itself``: the action
    marks its own :func:`interruptible` part (a change, whose audit record must not be cut); otherwise all of it
    is."""
    _reset_interrupts()
    limit = default_parallel(len(hosts), parallel)
    run = _FleetRun(hosts, action, limit, fail_fast, timeout, on_update, interrupts_itself)
    try:
        run.drive()
    except KeyboardInterrupt:
        run.wind_down()
        raise FleetInterrupted(run.in_order()) from None
    return run.in_order()


class _FleetRun:
    """The state of one fleet run: hosts waiting, running (a daemon thread each) and done."""

    def __init__(
        self,
        hosts: Sequence[HostConfig],
        action: HostAction,
        limit: int,
        fail_fast: bool,
        timeout: float | None,
        on_update: UpdateCallback | None,
        interrupts_itself: bool,
    ) -> None:
        self.hosts, self.action, self.limit, self.fail_fast, self.timeout = hosts, action, limit, fail_fast, timeout
        self.interrupts_itself = interrupts_itself
        self.notify = on_update or (lambda host, text: None)
        self.outcomes: dict[str, HostOutcome] = {}
        self.lock = threading.Lock()
        self.pending = list(hosts)
        self.running: dict[str, tuple[threading.Thread, float]] = {}
        self.failed = False

    def in_order(self) -> list[HostOutcome]:
        return [self.outcomes[h.name] for h in self.hosts]

    def work(self, host: HostConfig) -> None:
        started = time.monotonic()
        outcome: HostOutcome | None = None
        try:
            if self.interrupts_itself:
                outcome = self.action(host)
            else:
                with interruptible():
                    outcome = self.action(host)
        except KeyboardInterrupt:  # an action that does not report its own interruption (unless it had ended)
            outcome = outcome or HostOutcome(host.name, "interrupted", int(ExitCode.INTERRUPTED), "interrupted")
        except OpsagentError as exc:
            outcome = HostOutcome(host.name, "failed", int(exc.exit_code), exc.message)
        except Exception as exc:  # a bug must not take the other hosts down
            outcome = HostOutcome(
                host.name, "failed", int(ExitCode.FAILURE), f"internal error: {type(exc).__name__}: {exc}"
            )
        outcome.duration = time.monotonic() - started
        with self.lock:
            self.outcomes.setdefault(host.name, outcome)

    def drive(self) -> None:
        """Start hosts up to the limit, collect the ended ones, give up on the late ones, until none is left."""
        while self.pending or self.running:
            while self.pending and len(self.running) < self.limit and not (self.fail_fast and self.failed):
                host = self.pending.pop(0)
                self.notify(host.name, "running")
                thread = threading.Thread(target=self.work, args=(host,), daemon=True, name=f"opsagent-{host.name}")
                self.running[host.name] = (thread, time.monotonic())
                thread.start()
            if self.fail_fast and self.failed:
                self.skip_pending("not started (--fail-fast)", ExitCode.FAILURE)
            self.collect()
            time.sleep(0.02)

    def collect(self) -> None:
        for name, (thread, started) in list(self.running.items()):
            if not thread.is_alive():
                del self.running[name]
                outcome = self.outcomes[name]
                self.failed = self.failed or not outcome.ok
                self.notify(name, "ok" if outcome.ok else f"{outcome.status}: {outcome.message}")
            elif self.timeout is not None and time.monotonic() - started > self.timeout:
                self.give_up(name, "timed out", f"no result within {self.timeout:g}s", ExitCode.FAILURE)
                self.failed = True

    def give_up(self, name: str, status: str, message: str, code: ExitCode) -> None:
        """Report a host still running with ``status``: its daemon thread is abandoned (its SSH timeouts end it)."""
        _thread, started = self.running.pop(name)
        with self.lock:
            self.outcomes[name] = HostOutcome(name, status, int(code), message, duration=time.monotonic() - started)
        self.notify(name, status)

    def skip_pending(self, message: str, code: ExitCode) -> None:
        for host in self.pending:
            self.outcomes[host.name] = HostOutcome(host.name, "skipped", int(code), message)
            self.notify(host.name, "skipped")
        self.pending.clear()

    def wind_down(self) -> None:
        """After Ctrl-C: start no host, interrupt the running ones and wait for their ends (``GRACE_S`` at most;
        a second Ctrl-C stops waiting).  A host not done by then has an unknown outcome, said so."""
        self.skip_pending("not started (interrupted)", ExitCode.INTERRUPTED)
        interrupt_running()
        deadline = time.monotonic() + GRACE_S
        try:
            while self.running and time.monotonic() < deadline:
                self.collect()
                time.sleep(0.02)
        except KeyboardInterrupt:
            pass
        for name in list(self.running):
            self.give_up(
                name,
                "unknown",
                "interrupted while running; its outcome is unknown: see 'inv status' for that host",
                ExitCode.INTERRUPTED,
            )


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
