"""Library log messages kept instead of printed: a light module, installed before anything connects.

The early connection (``opsagent/launch.py``) may fail on its own thread before the CLI's modules are loaded, so this
module imports nothing heavier than ``logging``.
"""

from __future__ import annotations

import logging
import os
from collections import deque


class _KeptMessages(logging.Handler):
    """Keeps a library's log messages (not its traceback lines) instead of printing them over the one-line error."""

    def __init__(self, keep: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.messages: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().rstrip()
        if text and not text[0].isspace() and not text.startswith(("Traceback", "During handling")):
            self.messages.append(text)


_library_log = _KeptMessages()


def quiet_library_loggers() -> None:
    """Paramiko logs "Exception (client): Error reading SSH protocol banner" and two tracebacks on stderr for a host
    that is down (its transport thread logs, then the connect raises what the CLI already reports in one line).
    Keep those messages (``library_messages``) instead; ``OPSAGENT_DEBUG=1`` shows them as before."""
    if os.environ.get("OPSAGENT_DEBUG"):
        return
    logger = logging.getLogger("paramiko")
    if _library_log not in logger.handlers:
        logger.addHandler(_library_log)
    logger.propagate = False


def library_messages() -> list[str]:
    """The newest messages paramiko logged in this process (e.g. to add the cause to a connection error)."""
    return list(_library_log.messages)
