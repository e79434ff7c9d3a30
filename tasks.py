"""Invoke front door: ``inv <task>`` from the repository root.

The tasks themselves live in ``opsagent.cli`` so that the installed ``opsagent``
console script offers exactly the same collection.  ``inv`` runs Invoke's own
Program, which imports this file before parsing the task arguments:
``adopt_invoke_program`` gives it opsagent's parse manners (exit 2, "did you mean",
the task's usage line), so ``inv X`` and ``opsagent X`` answer alike.
"""

import sys

from opsagent.interrupts import keep_interrupts
from opsagent.launch import start_early

keep_interrupts()  # a Ctrl-C that lands in a finalizer is delivered again, not swallowed (opsagent/interrupts.py)
start_early(sys.argv)  # inv sync --host H: H's connection opens while the CLI loads (opsagent/launch.py)

from opsagent.cli import adopt_invoke_program, ns  # noqa: E402

adopt_invoke_program()

__all__ = ["ns"]
