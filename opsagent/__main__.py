"""``python -m opsagent`` = the ``opsagent`` console script."""

from .launch import main

main()
