"""Ctrl-C that Python would swallow: delivered again once the code it landed in has returned.

Python raises a Ctrl-C's KeyboardInterrupt in the main thread at whatever instruction runs when the signal is seen.
When that instruction belongs to a finalizer (an object's ``__del__``, a weakref callback, a garbage collection
pass that frees a Paramiko channel), the exception cannot propagate: the interpreter prints
"Exception ignored in: <function ...>" and goes on as if no key had been pressed.  A backup waiting behind a lock
then kept waiting until its ``lock_timeout`` failed it (exit 1, the CI run of ``f0576cb``), when the user had asked
it to stop (exit 130).

:func:`keep_interrupts` installs a ``sys.unraisablehook`` that recognises such a swallowed KeyboardInterrupt of the
main thread and delivers it again a few milliseconds later, through SIGALRM: the hook cannot raise it itself (the
finalizer's caller would swallow that too), and re-raising SIGINT at once would land in the hook.  The SIGALRM
handler raises it unless the main thread is still in the hook; when it lands in another finalizer, the same path
runs again.  Any other unraisable exception goes to the hook that was there before.

A fleet run passes Ctrl-C on to its worker threads as asynchronous KeyboardInterrupts (``remote.fleet``), which a
finalizer in a worker swallows the same way.  The code that sent it registers a resender
(:func:`on_swallowed_in_thread`): asked with the thread's id, it says whether that thread still wants it, and has
:func:`once_out_of_hook` send it again, from a timer thread, once the worker has left this hook (the same wait as
the main thread's).
"""

from __future__ import annotations

import signal
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

_REDELIVER_AFTER_S = 0.005  # long enough for the hook to return; far below what a person notices
_state: dict[str, Any] = {"pending": False, "previous": None}
_resenders: list[Callable[[int], bool]] = []


def keep_interrupts() -> None:
    """Install the hook (once; from the main thread, where the entry points run, since it sets a signal handler)."""
    if sys.unraisablehook is _redeliver_later or threading.current_thread() is not threading.main_thread():
        return
    _state["previous"] = sys.unraisablehook
    signal.signal(signal.SIGALRM, _deliver)
    sys.unraisablehook = _redeliver_later


def on_swallowed_in_thread(resend: Callable[[int], bool]) -> None:
    """Register ``resend(thread_id)``: True when it takes care of sending that thread its KeyboardInterrupt again."""
    if resend not in _resenders:
        _resenders.append(resend)


def once_out_of_hook(ident: int, action: Callable[[], None]) -> None:
    """Run ``action`` on a timer thread once the thread ``ident`` has left this module's hook (an exception sent to
    it before would be lost there): checked every few milliseconds."""

    def check() -> None:
        if _in_hook(sys._current_frames().get(ident)):
            once_out_of_hook(ident, action)
        else:
            action()

    timer = threading.Timer(_REDELIVER_AFTER_S, check)
    timer.daemon = True
    timer.start()


def _redeliver_later(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        if threading.current_thread() is threading.main_thread():
            _state["pending"] = True
            signal.setitimer(signal.ITIMER_REAL, _REDELIVER_AFTER_S)
            return
        if any(resend(threading.get_ident()) for resend in _resenders):
            return
    previous = _state["previous"] or sys.__unraisablehook__
    previous(unraisable)


def _deliver(signum: int, frame: types.FrameType | None) -> None:
    if not _state["pending"]:
        return
    if _in_hook(frame):
        signal.setitimer(signal.ITIMER_REAL, _REDELIVER_AFTER_S)
        return
    _state["pending"] = False
    raise KeyboardInterrupt


def _in_hook(frame: types.FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code is _redeliver_later.__code__:
            return True
        frame = frame.f_back
    return False


__all__ = ["keep_interrupts", "on_swallowed_in_thread", "once_out_of_hook"]
