"""``retriever search``: one query as a table or JSON, or a queries file to a TREC run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from cli.common import console, out, parse_filters, print_json, user_errors
from indexing.errors import RetrieverError


@user_errors
def search(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    query: Optional[str] = typer.Argument(None, help="Query text (or use --queries)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of documents per query."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Queries file: JSONL (_id/id, text) or TSV (id<TAB>text), optionally .gz."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write a TREC run file (with --queries)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per query: {query, hits}."),
    filters: list[str] = typer.Option([], "--filter", help="Metadata filter FIELD=VALUE (repeatable), applied before top-k."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF lists to visit."),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="HNSW search beam width."),
    device: str = typer.Option("auto", "--device", help="Query encoder device: auto, cpu or cuda[:N]."),
    index_device: Optional[str] = typer.Option(None, "--index-device", help="FAISS index device (default: GPU if faiss-gpu is installed and --device is not cpu)."),
    mode: Literal["dense", "bm25", "hybrid"] = typer.Option("dense", "--mode", help="dense (vectors), bm25 (the index's BM25 index, built by `retriever index bm25 INDEX`; needs Java) or hybrid (both, fused)."),
    fusion: Optional[Literal["rrf", "score"]] = typer.Option(None, "--fusion", help="Hybrid fusion: rrf or score (min-max normalised scores, weighted by --alpha). Default: score."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Weight of the dense scores in score fusion, 0..1 (default 0.45, chosen on SciFact train)."),
    query_model: Optional[str] = typer.Option(None, "--query-model", help="Encode the queries with this model instead of the index's (e.g. one from `retriever train ... --query-only` on the model the index was built with: its documents embed as the index's do)."),
    query_backend: str = typer.Option("auto", "--query-backend", help="auto (the index's ONNX query encoder when it has one: no torch, fast start; else torch), onnx or torch."),
    transliterate: bool = typer.Option(False, "--transliterate", help="Romanize the queries (uroman) before encoding, e.g. for a crosslingual model trained on romanizations (--mode dense)."),
) -> None:
    """Search an index (dense, BM25 or hybrid)."""
    if k < 1:
        raise RetrieverError(f"-k must be >= 1 (got {k})")
    if (query is None) == (queries is None):
        raise RetrieverError("give either a query or --queries FILE")
    if query is not None:
        from retriever.search.searcher import check_queries

        check_queries([query])  # before the index loads: a blank query is refused at once
        ids, texts = ["q"], [query]
    else:
        from indexing.formats.queries import read_queries

        read = read_queries(queries)  # blank queries and duplicated ids are refused, naming file and line
        ids, texts = list(read), list(read.values())
    if output is not None and queries is None:
        raise RetrieverError("--output needs --queries")
    if mode != "hybrid" and (fusion is not None or alpha is not None):
        raise RetrieverError("--fusion and --alpha apply to --mode hybrid")
    if transliterate and mode != "dense":
        raise RetrieverError("--transliterate applies to --mode dense")
    options = {"filters": parse_filters(filters) or None, "nprobe": nprobe, "ef_search": ef_search}
    # one query from a fresh process: open only what it needs (no doc-store preload, sizes checked, not checksums)
    loading = {"query_backend": query_backend, "announce": lambda note: console.print(note, highlight=False, markup=False, soft_wrap=True),
               "preload": None if queries is not None else False, "verify": None if queries is not None else False}
    encoder = None
    if query_model is not None:
        if transliterate:
            raise RetrieverError("--query-model and --transliterate do not combine")
        encoder = _query_encoder(index_dir, query_model, device)
    if mode != "dense":
        from retriever.scale.open import load_hybrid  # an index, or an index set (retriever set build)
        from retriever.search.hybrid import DEFAULT_FUSION, check_options

        fusion = fusion or DEFAULT_FUSION
        check_options(mode, fusion, alpha)
        searcher = load_hybrid(index_dir, device=device, index_device=index_device, encoder=encoder, bm25=True,
                               **loading)
        options.update(mode=mode, fusion=fusion, alpha=alpha)
    else:
        from retriever.scale.open import load_searcher  # an index, or an index set (retriever set build)

        searcher = load_searcher(index_dir, device=device, index_device=index_device, transliterate=transliterate,
                                 encoder=encoder, **loading)
    results = searcher.search(texts, k, **options)
    if output is not None:
        _write_run(output, ids, results)
        console.print(f"wrote {len(ids):,} queries x top-{k} to {output}", highlight=False)
    if as_json:
        for qid, text, hits in zip(ids, texts, results):
            record = {"query": text, "hits": [h.to_dict() for h in hits]}
            if queries is not None:
                record["query_id"] = qid
            print_json(record)
    elif output is None:
        for text, hits in zip(texts, results):
            _table(text, hits)


def _query_encoder(index_dir: Path, model: str, device: str):
    """The ``--query-model`` encoder, with the index's preset (its preprocessing must match the documents')."""
    from retriever.encoders.base import load_encoder
    from retriever.scale.open import describe

    recorded = describe(index_dir).encoder
    return load_encoder(model, preset=recorded.get("preset"), device=device)


def _write_run(path: Path, ids: list[str], results) -> None:
    """The hits of each query as a TREC run (tag ``retriever``); an id the format cannot hold is a user error."""
    from indexing.formats.trec import write_run

    try:
        write_run(path, {qid: ([h.id for h in hits], [h.score for h in hits]) for qid, hits in zip(ids, results)},
                  tag="retriever")
    except ValueError as exc:
        raise RetrieverError(f"--output {path}: {exc}") from None


def _table(query: str, hits) -> None:
    from rich.table import Table

    table = Table(title=f"[bold]{query}[/]", title_justify="left", show_lines=False)
    table.add_column("rank", justify="right", min_width=4, no_wrap=True)
    table.add_column("location" if any(code_location(h.metadata) for h in hits) else "id", no_wrap=True, min_width=6)
    table.add_column("score", justify="right", min_width=6, no_wrap=True)
    titled = any(hit.title for hit in hits)
    if titled:
        table.add_column("title", max_width=24, overflow="ellipsis", no_wrap=True)
    table.add_column("passage", min_width=30, ratio=1, overflow="fold")
    for rank, hit in enumerate(hits, 1):
        location = code_location(hit.metadata)
        if location is not None:  # a function from a source tree: where it is, and its first lines as written
            lines = hit.passage.strip("\n").splitlines()
            snippet = "\n".join(lines[:CODE_SNIPPET_LINES]) + ("\n…" if len(lines) > CODE_SNIPPET_LINES else "")
        else:
            snippet = " ".join(hit.passage.split())
            snippet = snippet[:240] + ("…" if len(snippet) > 240 else "")
        table.add_row(str(rank), location or hit.id, f"{hit.score:.4f}", *([hit.title] if titled else []), snippet)
    out.print(table)


CODE_SNIPPET_LINES = 8


def code_location(metadata: dict) -> str | None:
    """``path:line`` of a document read from a source tree (metadata ``path`` and ``start_line``), else None."""
    path, line = metadata.get("path"), metadata.get("start_line")
    if isinstance(path, str) and isinstance(line, int) and "language" in metadata:
        return f"{path}:{line}"
    return None
