"""``python -m opscope`` runs the CLI."""

from opscope.cli import main

main()
