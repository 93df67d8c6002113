"""The ``retriever`` command. Sub-commands live in one module each; torch loads only where needed."""

from __future__ import annotations

import logging

import typer

from cli import eval_cmd, index_cmd, search_cmd, url_cmd

app = typer.Typer(
    name="retriever",
    help="Dense retrieval: build, update, search and evaluate vector indexes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(index_cmd.app, name="index")
app.add_typer(__import__("cli.set_cmd", fromlist=["app"]).app, name="set")
app.command("search")(search_cmd.search)
app.command("eval")(eval_cmd.evaluate)
app.add_typer(__import__("cli.train", fromlist=["app"]).app, name="train")
app.add_typer(url_cmd.app, name="url")
app.add_typer(__import__("cli.sql_cmd", fromlist=["app"]).app, name="sql")
app.command("serve")(__import__("cli.serve_cmd", fromlist=["serve"]).serve)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr.")) -> None:
    """Dense retrieval: build, update, search and evaluate vector indexes."""
    import os

    from rich.logging import RichHandler

    # The CLI draws its own progress bars; silence the hub/transformers ones (the app may configure this).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=__import__("cli.common", fromlist=["console"]).console)],
    )
    for noisy in ("sentence_transformers", "transformers", "faiss", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
