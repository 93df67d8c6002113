"""The ``retriever`` command. Sub-commands live in one module each; torch loads only where needed.

``retriever search ...`` starts on a one-command app that imports only the search command (see :func:`run`):
a query from a fresh process should not pay for importing every other command.
"""

from __future__ import annotations

import logging
import sys

import typer

HELP = "Dense retrieval: build, update, search and evaluate vector indexes."


def _typer() -> typer.Typer:
    return typer.Typer(name="retriever", help=HELP, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False)


def run() -> None:
    """The console entry point: ``retriever search`` on the search command alone, anything else on :data:`app`."""
    if len(sys.argv) > 1 and sys.argv[1] == "search":
        from cli import search_cmd

        fast = _typer()
        fast.callback()(main)
        fast.command("search")(search_cmd.search)
        fast(prog_name="retriever")
    else:
        _full_app()(prog_name="retriever")


def _full_app() -> typer.Typer:
    """Every command group (built once, on first use)."""
    global _APP
    if _APP is None:
        from cli import eval_cmd, index_cmd, search_cmd, serve_cmd, sql_cmd, train, url_cmd

        full = _typer()
        full.callback()(main)
        full.add_typer(index_cmd.app, name="index")
        full.add_typer(__import__("cli.set_cmd", fromlist=["app"]).app, name="set")
        full.command("search")(search_cmd.search)
        full.command("eval")(eval_cmd.evaluate)
        full.add_typer(train.app, name="train")
        full.add_typer(url_cmd.app, name="url")
        full.add_typer(sql_cmd.app, name="sql")
        full.command("serve")(serve_cmd.serve)
        _APP = full
    return _APP


_APP: typer.Typer | None = None


def __getattr__(name: str):
    """``cli.main.app``: the full app, built when first asked for (tests and ``typer`` tooling use it)."""
    if name == "app":
        return _full_app()
    raise AttributeError(name)


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
