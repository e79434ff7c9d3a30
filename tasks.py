"""Invoke front door: ``inv <task>`` from the repository root.

The tasks themselves live in ``opsagent.cli`` so that the installed ``opsagent``
console script offers exactly the same collection.
"""

from opsagent.cli import ns

__all__ = ["ns"]
