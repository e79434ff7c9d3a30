"""``python -m opsagent`` = the ``opsagent`` console script."""

from .cli import main

main()
