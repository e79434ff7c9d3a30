"""A computation started ahead on a thread of its own, awaited where it is needed, or stopped when nobody needs it.

A plan builds schema.sql's dump-and-load form beside its rehearsal (``declarative.plan_against_sql``): work on the
server that pays off only if the rehearsal's findings ask for it.  ``abandon`` ends a load nobody will ask for at
once (its thread's scratch sessions go to the background drop, ``scratch.drop_active``) instead of waiting for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .scratch import drop_active

T = TypeVar("T")


class Ahead(Generic[T]):
    """A computation that may be started early on a thread of its own and is awaited where it is needed: it runs
    at most once, and its error is raised to whoever asks for the result."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._result: tuple[T] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.asked = False  # someone called for the result
        self.abandoned = threading.Event()  # nobody will: the computation may stop (see ``abandon``)

    def start(self, after: threading.Event | None = None) -> None:
        """Run it on a thread of its own, once ``after`` is set (unless abandoned meanwhile, or asked for first)."""
        self._thread = threading.Thread(target=self._run_after, args=(after,), daemon=True)
        self._thread.start()

    def _run_after(self, after: threading.Event | None) -> None:
        while after is not None and not after.wait(0.05):
            if self.abandoned.is_set():
                return
        if not self.abandoned.is_set():
            self._run()

    def _run(self) -> None:
        with self._lock:
            if self._result is None and self._error is None:
                try:
                    self._result = (self._compute(),)
                except BaseException as exc:  # re-raised where the result is asked for
                    self._error = exc

    def __call__(self) -> T:
        self.asked = True
        self._run()  # waits for a run already started, or runs it now
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result[0]

    def settle(self) -> None:
        """Wait for a run started ahead to end (what it made is kept, e.g. in the cache, even when nobody asked)."""
        if self._thread is not None:
            self._thread.join()

    def abandon(self) -> None:
        """Nobody will ask for the result: a run started ahead is stopped where it is (its thread's scratch sessions
        go to the background drop, which ends them) and its thread awaited; its error is nobody's."""
        self.abandoned.set()
        if self._thread is not None and self._thread.ident is not None and self._thread.is_alive():
            drop_active(thread=self._thread.ident)
        self.settle()
