"""``retriever eval INDEX DATASET``: score an index on a BEIR-style folder (logic in retriever.evaluation.runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from cli.common import console, out, print_json, user_errors
from indexing.errors import RetrieverError


@user_errors
def evaluate(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    dataset: Path = typer.Argument(..., help="BEIR-style folder: queries.jsonl and qrels/<split>.tsv."),
    split: str = typer.Option("test", "--split", help="Qrels split to report."),
    metrics: str = typer.Option("nDCG@10,R@100,MRR@10", "--metrics", help="Comma-separated ir-measures names (nDCG@10, R@100, MRR@10, AP, P@5...)."),
    mode: Literal["dense", "bm25", "hybrid"] = typer.Option("dense", "--mode", help="dense, bm25 (the index's BM25 index, built by `retriever index bm25 INDEX`; needs Java) or hybrid."),
    fusion: Optional[Literal["rrf", "score"]] = typer.Option(None, "--fusion", help="Hybrid fusion (default: score; with --tune-alpha: score)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Dense weight in score fusion, 0..1 (default 0.45, chosen on SciFact train)."),
    tune_alpha: bool = typer.Option(False, "--tune-alpha", help="Choose alpha on --tune-split by nDCG@10 (grid 0.0..1.0, step 0.05)."),
    tune_split: Optional[str] = typer.Option(None, "--tune-split", help="Split to tune alpha on (default: dev if present, else train); never the reported split."),
    depth: int = typer.Option(100, "-k", "--depth", help="Results per query that are scored (and written with --run)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: metrics, coverage, settings."),
    per_query: Optional[Path] = typer.Option(None, "--per-query", help="Write per-query metrics: .jsonl for JSON lines, else TSV."),
    run_file: Optional[Path] = typer.Option(None, "--run", help="Write the run as a TREC run file."),
    device: str = typer.Option("auto", "--device", help="Query encoder device: auto, cpu or cuda[:N]."),
    query_backend: str = typer.Option("auto", "--query-backend", help="auto (the index's ONNX query encoder when it has one, else torch), onnx or torch."),
) -> None:
    """Evaluate an index on a dataset split (judged queries only) with ir-measures."""
    from indexing.formats.trec import write_run
    from retriever.evaluation.runner import evaluate_index, write_per_query
    from retriever.scale.open import load_hybrid

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise RetrieverError("--metrics: give at least one metric, e.g. nDCG@10,R@100")
    if tune_split is not None and not tune_alpha:
        raise RetrieverError("--tune-split needs --tune-alpha")
    searcher = load_hybrid(index_dir, device=device, bm25=mode != "dense", query_backend=query_backend,  # index or set
                           announce=lambda note: console.print(note, highlight=False, markup=False, soft_wrap=True))
    try:
        report = evaluate_index(searcher, dataset, split=split, metrics=names, mode=mode, fusion=fusion, alpha=alpha,
                                depth=depth, tune=tune_alpha, tune_split=tune_split)
    finally:
        searcher.close()
    _coverage(report.coverage)
    if per_query is not None:
        write_per_query(report, per_query)
    if run_file is not None:
        try:
            write_run(run_file, report.run, tag=f"retriever-{mode}")
        except ValueError as exc:
            raise RetrieverError(f"--run {run_file}: {exc}") from None
    if report.tuning is not None:
        t = report.tuning
        console.print(f"alpha {t.alpha:.2f} chosen on {t.split} ({t.metric} {t.value:.4f})", highlight=False)
    if as_json:
        print_json(report.to_dict())
        return
    _table(report)


def _coverage(coverage: dict) -> None:
    """Say on stderr which judged queries have no text and which judged documents the index lacks."""
    if coverage["queries_without_text"]:
        console.print(
            f"warning: {coverage['queries_without_text']:,} of {coverage['qrels_queries']:,} judged queries have no "
            f"text in queries.jsonl (they score 0), e.g. {', '.join(coverage['queries_without_text_examples'])}",
            highlight=False, soft_wrap=True,
        )
    if coverage["documents_not_in_index"]:
        console.print(
            f"warning: {coverage['documents_not_in_index']:,} of {coverage['qrels_documents']:,} judged documents "
            f"({coverage['judgments_to_missing_documents']:,} judgments) are not in the index, "
            f"e.g. {', '.join(coverage['documents_not_in_index_examples'])}",
            highlight=False, soft_wrap=True,
        )


def _table(report) -> None:
    from rich.table import Table

    setting = report.mode
    if report.fusion is not None:
        setting += f", {report.fusion} fusion" + (f", alpha {report.alpha:.2f}" if report.alpha is not None else "")
    out.print(f"[bold]{Path(report.dataset).name}[/] {report.split}: {report.queries:,} judged queries, {setting}, "
              f"top {report.depth}", highlight=False)
    table = Table()
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for name, value in report.metrics.items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
