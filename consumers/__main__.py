"""``python -m baldur_audit.consumers`` runs the CLI."""

from .cli import main

main()
