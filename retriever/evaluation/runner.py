"""Evaluate an index on a BEIR-style dataset folder: load a split, retrieve in batches, score, tune alpha.

```python
from retriever.evaluation.runner import evaluate_index
from retriever.search.hybrid import HybridSearcher
report = evaluate_index(HybridSearcher.load("idx"), "data/scifact", mode="hybrid", tune_alpha=True)
print(report.metrics)   # {"nDCG@10": ..., "R@100": ..., "MRR@10": ...}
```

A dataset folder holds ``queries.jsonl`` and ``qrels/<split>.tsv``. Only judged queries are run. Judged
queries without a text and judged documents the index does not hold are counted in
:attr:`EvalReport.coverage` (and logged), never dropped silently: such queries score 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexing.errors import RetrieverError
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels
from retriever.evaluation.metrics import coverage_report, evaluate
from retriever.hits import Hits
from retriever.search.hybrid import (DEFAULT_ALPHA, DEFAULT_DEPTH, DEFAULT_FUSION, MODES, Fusion, HybridSearcher, Mode,
                              check_options, fuse)

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("nDCG@10", "R@100", "MRR@10")
TUNE_METRIC = "nDCG@10"
ALPHA_GRID = tuple(round(i * 0.05, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0
QUERY_BATCH = 256


@dataclass(frozen=True)
class Split:
    """One split of a dataset: ``qrels`` and the texts of the queries that have one (``queries``)."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    all_query_ids: frozenset[str]


def qrels_splits(dataset: Path) -> list[str]:
    """Names of the splits with a ``qrels/<split>.tsv`` file, sorted."""
    folder = Path(dataset) / "qrels"
    return sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []


def default_tune_split(dataset: Path) -> str:
    """``dev`` when the dataset has it, else ``train``."""
    return "dev" if "dev" in qrels_splits(dataset) else "train"


def load_split(dataset: Path, split: str) -> Split:
    """Read ``queries.jsonl`` and ``qrels/<split>.tsv`` of a dataset folder.

    Raises:
        RetrieverError: the folder, queries file or split is missing (names the available splits);
            CorpusError: a malformed file.
    """
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise RetrieverError(f"{dataset}: no such dataset folder (expected queries.jsonl and qrels/<split>.tsv)")
    path = dataset / "qrels" / f"{split}.tsv"
    if not path.is_file():
        known = qrels_splits(dataset)
        raise RetrieverError(f"{dataset}: no qrels for split {split!r} ({path} is missing; "
                             f"available: {', '.join(known) or 'none'})")
    queries = read_queries(dataset / "queries.jsonl")
    qrels = {q: docs for q, docs in read_qrels(path).items() if docs}
    judged = {q: queries[q] for q in qrels if q in queries}
    return Split(split, judged, qrels, frozenset(queries))


@dataclass(frozen=True)
class AlphaTuning:
    """The fusion weight chosen on ``split`` by ``metric`` over ``grid`` (``{alpha: value}``)."""

    split: str
    metric: str
    alpha: float
    value: float
    grid: dict[float, float]


@dataclass
class EvalReport:
    """What :func:`evaluate_index` measured.

    Attributes:
        metrics: ``{metric (the caller's spelling): value}`` over the judged queries of ``split``.
        per_query: ``{query_id: {metric: value}}``.
        coverage: :func:`retriever.evaluation.metrics.coverage_report` of the split against the queries and index.
        run: ``{query_id: Hits}`` (top ``depth``), for writing a TREC run.
        tuning: the alpha search, when asked for.
    """

    dataset: str
    split: str
    mode: str
    fusion: str | None
    alpha: float | None
    depth: int
    queries: int
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    coverage: dict[str, Any]
    missing_queries: int
    seconds: float
    tuning: AlphaTuning | None = None
    run: dict[str, Hits] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no run, no per-query values)."""
        out = {key: getattr(self, key) for key in
               ("dataset", "split", "mode", "fusion", "alpha", "depth", "queries", "metrics", "coverage",
                "missing_queries", "seconds")}
        if self.tuning is not None:
            t = self.tuning
            out["tuning"] = {"split": t.split, "metric": t.metric, "alpha": t.alpha, "value": t.value,
                             "grid": {f"{a:.2f}": v for a, v in t.grid.items()}}
        return out


def retrieve_split(
    searcher: HybridSearcher,
    queries: Mapping[str, str],
    depth: int,
    *,
    mode: Mode,
    fusion: Fusion,
    alpha: float | None,
    batch_size: int = QUERY_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Hits]:
    """``{query_id: top-depth Hits}`` for every query, retrieved ``batch_size`` queries at a time."""
    ids = list(queries)
    run: dict[str, Hits] = {}
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        hits = searcher.retrieve([queries[q] for q in chunk], depth, mode=mode, fusion=fusion, alpha=alpha)
        run.update(zip(chunk, hits))
        if progress is not None:
            progress(len(run), len(ids))
    return run


def candidates_split(
    searcher: HybridSearcher, queries: Mapping[str, str], depth: int, *, batch_size: int = QUERY_BATCH
) -> tuple[list[str], list[Hits], list[Hits]]:
    """Query ids with their dense and BM25 top-``depth`` lists (retrieved once, fused many times)."""
    ids, dense, sparse = list(queries), [], []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        d, s = searcher.candidates([queries[q] for q in chunk], depth)
        dense += d
        sparse += s
    return ids, dense, sparse


def tune_alpha(
    searcher: HybridSearcher,
    split: Split,
    depth: int,
    *,
    grid: Sequence[float] = ALPHA_GRID,
    metric: str = TUNE_METRIC,
) -> AlphaTuning:
    """Pick score fusion's alpha on ``split``: the grid value with the best ``metric`` (first one on ties).

    Raises RetrieverError when the split has no judged query with a text.
    """
    if not split.queries:
        raise RetrieverError(f"split {split.name!r} has no judged query with a text: cannot tune alpha on it")
    ids, dense, sparse = candidates_split(searcher, split.queries, max(depth, DEFAULT_DEPTH))
    values: dict[float, float] = {}
    for alpha in grid:
        run = {q: fuse(d, s, depth, fusion="score", alpha=alpha) for q, d, s in zip(ids, dense, sparse)}
        values[float(alpha)] = next(iter(evaluate(run, split.qrels, [metric]).aggregate.values()))
    best = max(values, key=lambda a: (values[a], -list(values).index(a)))
    logger.info("alpha %.2f gives %s %.4f on %s", best, metric, values[best], split.name)
    return AlphaTuning(split.name, metric, best, values[best], values)


def evaluate_index(
    searcher: HybridSearcher,
    dataset: Path,
    *,
    split: str = "test",
    metrics: Sequence[str] = DEFAULT_METRICS,
    mode: Mode = "dense",
    fusion: Fusion | None = None,
    alpha: float | None = None,
    depth: int = 100,
    tune: bool = False,
    tune_split: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Run the judged queries of ``split`` through ``searcher`` and score the top ``depth`` with ir-measures.

    Args:
        metrics: ir-measures names (``nDCG@10``, ``R@100``, ``MRR@10``, ``AP``...), reported as spelled.
        mode, fusion, alpha: see :meth:`HybridSearcher.search` (fusion None: the default; with ``tune``, score).
        depth: results per query in the run (and, at least 100, per list before fusion).
        tune: choose alpha on ``tune_split`` (default: dev if present, else train) by nDCG@10.
        progress: called with ``(queries done, total)`` while retrieving the evaluated split.

    Raises:
        RetrieverError: bad options (tuning without hybrid score fusion, tuning on the evaluated split,
            alpha with tuning), a missing split, or an unknown metric.
    """
    from retriever.evaluation.metrics import parse_metrics

    if depth < 1:
        raise RetrieverError(f"depth must be >= 1 (got {depth})")
    parse_metrics(list(metrics))  # unknown names fail before any retrieval
    fusion, alpha, tune_split = _resolve_fusion(dataset, split, mode, fusion, alpha, tune, tune_split)
    evaluated = load_split(dataset, split)
    started = time.perf_counter()
    tuning = None
    if tune_split is not None:
        tuning = tune_alpha(searcher, load_split(dataset, tune_split), depth)
        alpha = tuning.alpha
    docstore = searcher.searcher.opened.docstore
    coverage = coverage_report(evaluated.qrels, set(evaluated.all_query_ids),
                               lambda ids: docstore.existing(sorted(ids)))
    run = retrieve_split(searcher, evaluated.queries, depth, mode=mode, fusion=fusion or DEFAULT_FUSION,
                         alpha=alpha, progress=progress)
    result = evaluate(run, evaluated.qrels, list(metrics))
    metrics_out = {result.labels.get(m, m): v for m, v in result.aggregate.items()}
    per_query = {q: {result.labels.get(m, m): float(v) for m, v in values.items()}
                 for q, values in result.per_query.items()}
    return EvalReport(
        dataset=str(dataset), split=split, mode=mode, fusion=fusion, alpha=alpha, depth=depth,
        queries=len(evaluated.qrels), metrics=metrics_out, per_query=per_query, coverage=coverage,
        missing_queries=result.missing_queries, seconds=round(time.perf_counter() - started, 3),
        tuning=tuning, run=run,
    )


def _resolve_fusion(
    dataset: Path, split: str, mode: str, fusion: Fusion | None, alpha: float | None, tune: bool, tune_split: str | None
) -> tuple[Fusion | None, float | None, str | None]:
    """Check and complete the fusion options: ``(fusion, alpha, split to tune on)`` (None where not used).

    Hybrid without a fusion gets the default one; score fusion without an alpha gets the default alpha
    unless it is tuned. Raises RetrieverError on a combination that cannot be honoured.
    """
    if mode not in MODES:
        raise RetrieverError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if mode != "hybrid":
        if fusion is not None or alpha is not None or tune:
            raise RetrieverError("fusion, alpha and alpha tuning apply to the hybrid mode only")
        return None, None, None
    if not tune:
        if tune_split is not None:
            raise RetrieverError("a tune split needs alpha tuning")
        fusion = fusion or DEFAULT_FUSION
        check_options(mode, fusion, alpha)
        return fusion, (DEFAULT_ALPHA if fusion == "score" and alpha is None else alpha), None
    if fusion == "rrf":
        raise RetrieverError("alpha tuning needs score fusion (RRF has no weight)")
    if alpha is not None:
        raise RetrieverError("give either an alpha or ask to tune it, not both")
    tune_split = tune_split or default_tune_split(dataset)
    if tune_split == split:
        raise RetrieverError(f"cannot tune alpha on the split being reported ({split!r}): "
                             "tune on another split (train or dev)")
    return "score", None, tune_split


def write_per_query(report: EvalReport, path: Path) -> None:
    """Per-query metrics, written atomically: JSONL (``{"query_id", metric: value...}``) for ``.jsonl``/``.json``,
    else TSV (``query_id`` then one column per metric, with a header)."""
    from indexing.formats.jsonl import SUFFIXES, write_jsonl
    from indexing.formats.lines import write_lines

    path = Path(path)
    names = list(report.metrics)
    rows = sorted(report.per_query.items())
    if path.suffix in SUFFIXES:
        write_jsonl(path, ({"query_id": query_id, **{n: values.get(n) for n in names}} for query_id, values in rows))
        return
    lines = ["\t".join(["query_id", *names]) + "\n"]
    for query_id, values in rows:
        lines.append("\t".join([query_id, *(format(values[n], ".6f") if n in values else "" for n in names)]) + "\n")
    write_lines(path, lines)
