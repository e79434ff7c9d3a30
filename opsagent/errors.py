"""One exception family, one exit-status enum.

The library raises ``OpsagentError`` subclasses; the CLI maps them to exit codes
in exactly one place (``opsagent.cli.base``).  Messages are one line, meant for
an operator, and never contain secrets.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes of every task."""

    OK = 0  # success, or nothing to do
    FAILURE = 1  # migration error, refused plan, lock timeout, remote failure
    USAGE = 2  # bad arguments or configuration (inventory, files)
    DRIFT = 3  # diff/check found structural drift
    HAZARDS = 4  # lint found findings at warning or above
    INTERRUPTED = 130  # Ctrl-C


class OpsagentError(Exception):
    """Base of every error the CLI turns into a one-line message."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(OpsagentError):
    """Bad command-line arguments or local files."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """Inventory or project configuration is invalid."""


class RemoteError(OpsagentError):
    """Connecting to, or running a command on, a host failed."""


class HostKeyError(RemoteError):
    """The host key is unknown or changed: refuse to talk to the host."""


class CommandFailed(RemoteError):
    """A remote command exited non-zero."""

    def __init__(self, message: str, *, exit_status: int, stderr: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_status = exit_status
        self.stderr = stderr


class MigrationError(OpsagentError):
    """A migration failed to apply, or the plan was refused."""


class InvalidMigration(MigrationError, UsageError):
    """A migration file the tool refuses before running anything (COMMIT inside, CONCURRENTLY without the
    no-transaction marker...): fix the file, exit 2.  Still a MigrationError for callers that catch those."""

    exit_code = ExitCode.USAGE


class SandboxError(OpsagentError):
    """The local sandbox host could not be brought up or down."""


class PlanNotVerified(OpsagentError):
    """Applying a generated plan to a scratch copy did not reach the desired structure."""

    exit_code = ExitCode.DRIFT
