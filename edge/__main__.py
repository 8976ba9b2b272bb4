"""``python -m edge`` is the same as the ``edge`` command."""

from edge.cli import main

main()
