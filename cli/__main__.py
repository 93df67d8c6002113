"""``python -m cli`` runs the ``retriever`` command."""

from cli.main import run

run()
