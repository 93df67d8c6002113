"""``retriever url ...``: what does this URL look like? (kNN labels from an index of labelled URLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import out, print_json, user_errors
from indexing.errors import RetrieverError

app = typer.Typer(help="URL tools over an index built with --encoder url.", no_args_is_help=True)


@app.command()
@user_errors
def classify(
    index_dir: Path = typer.Argument(..., help="Index of labelled URLs (retriever index build URLS --encoder url --model MODEL)."),
    urls: Optional[list[str]] = typer.Argument(None, help="URLs to classify."),
    urls_file: Optional[Path] = typer.Option(None, "--file", help="More URLs, one per line."),
    k: int = typer.Option(10, "-k", "--k", help="Neighbours that vote."),
    label_field: str = typer.Option("label", "--label-field", help="Metadata field holding the label."),
    weights: str = typer.Option("distance", "--weights", help="distance (inverse-distance votes) or uniform (one vote each)."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The label to detect (e.g. phishing); with --threshold."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="--positive wins when its share of the vote is at least this (0-1]; otherwise the largest other label."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per URL: url, label, confidence, votes, neighbours."),
) -> None:
    """Label URLs by a vote of their nearest labelled neighbours, showing the neighbours."""
    from retriever.search.searcher import Searcher
    from retriever.encoders.url.classify import check_vote
    from retriever.encoders.url.classify import classify as knn_classify

    wanted = list(urls or [])
    if urls_file is not None:
        if not urls_file.is_file():
            raise RetrieverError(f"{urls_file}: no such file")
        wanted += [line.strip() for line in urls_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise RetrieverError("give URLs to classify (arguments or --file)")
    check_vote(k, weights, positive, threshold)  # before the model loads
    searcher = Searcher.load(index_dir, device=device)
    if searcher.manifest.encoder.get("preset") != "url":
        raise RetrieverError(f"{index_dir} was built with the {searcher.manifest.encoder.get('preset')!r} preset; "
                             "classify needs an index built with --encoder url (or a model trained with `retriever train url`)")
    verdicts = knn_classify(searcher, wanted, k=k, label_field=label_field, weights=weights,  # type: ignore[arg-type]
                            positive=positive, threshold=threshold)
    for verdict in verdicts:
        if as_json:
            print_json(verdict.to_dict())
        else:
            _table(verdict)


def _table(verdict) -> None:
    from rich.markup import escape
    from rich.table import Table

    votes = ", ".join(f"{label} {weight:.1f}" for label, weight in sorted(verdict.votes.items(), key=lambda x: -x[1]))
    title = (f"[bold]{escape(verdict.url)}[/] -> [bold]{escape(str(verdict.label))}[/] "
             f"({verdict.confidence:.0%} of the vote: {escape(votes)})")
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("label", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("weight", justify="right", no_wrap=True)
    table.add_column("neighbour", overflow="fold", ratio=1)
    for rank, n in enumerate(verdict.neighbours, 1):
        table.add_row(str(rank), escape(str(n.label)), f"{n.score:.4f}", f"{n.weight:.1f}", escape(n.url))
    out.print(table)
