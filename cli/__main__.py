"""``python -m cli`` runs the ``retriever`` command."""

from cli.main import app

app(prog_name="retriever")
