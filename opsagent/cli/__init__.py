"""The command-line layer: one Invoke task collection behind ``inv`` and ``opsagent``.

Tasks parse arguments, call the library and render; nothing else lives here.
"""

from __future__ import annotations

from invoke.collection import Collection

from .. import __version__
from . import backup as backup_cli
from . import core, quickref
from . import lint as lint_cli
from . import plan as plan_cli
from . import rollback as rollback_cli
from . import schema as schema_cli
from . import sync as sync_cli
from .base import quiet_library_loggers
from .program import OpsagentProgram, adopt_invoke_program

__all__ = ["OpsagentProgram", "adopt_invoke_program", "main", "ns"]

quiet_library_loggers()  # CLI start, under both 'inv' and 'opsagent'

ns = Collection()
ns.add_task(core.hosts)
ns.add_task(core.doctor)
ns.add_collection(core.sandbox)
ns.add_task(quickref.tables)
ns.add_task(quickref.describe)
ns.add_task(quickref.psql_task)
ns.add_task(backup_cli.backup)
ns.add_collection(backup_cli.backups)
ns.add_task(backup_cli.restore)
ns.add_task(lint_cli.lint)
ns.add_task(schema_cli.extract_task)
ns.add_task(schema_cli.diff)
ns.add_task(schema_cli.check)
ns.add_task(plan_cli.plan)
ns.add_task(sync_cli.sync)
ns.add_task(sync_cli.status)
ns.add_task(sync_cli.baseline_task)
ns.add_task(sync_cli.repair)
ns.add_task(rollback_cli.rollback)
ns.add_task(plan_cli.new)


def main() -> None:
    """Entry point of the ``opsagent`` console script."""
    OpsagentProgram(namespace=ns, version=__version__, name="opsagent", binary="opsagent").run()
