"""``retriever train code`` (self-supervised code search from source trees) and ``retriever train code-pairs``
(the same pairs written as a BEIR folder, to index and fine-tune on)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import console, print_json, user_errors
from cli.train.launch import train
from cli.train.options import DEFAULT_LR, EvalOptions, FreezeOptions, JsonFlag, OptimOptions, RunOptions
from cli.train.shared import shared_options
from indexing.errors import RetrieverError
from training.config import CodeConfig, EvalConfig


@user_errors
@shared_options(
    eval_dataset=typer.Option(None, "--eval", help="A BEIR folder of code search (e.g. CoSQA) whose --eval-split queries pick the best step, instead of the held-out docstrings; texts get the code preprocessing."),
    eval_metric=typer.Option("MRR@10", "--eval-metric", help="Metric on the validation slice that picks the best step."),
)
def code(
    sources: list[Path] = typer.Argument(..., help="Source trees (folders or .py files) to learn from."),
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder or hub id)."),
    exclude: list[Path] = typer.Option([], "--exclude", help="Corpus (e.g. an evaluation set) whose functions are removed from training, by normalized hash (repeatable)."),
    doc_ratio: float = typer.Option(0.5, "--doc-ratio", help="Share of docstring->code pairs (the rest: code vs augmented code)."),
    augment: float = typer.Option(0.5, "--augment", help="Probability of each program augmentation (renaming, dead code, swaps, comment removal) per view."),
    token_delete: float = typer.Option(0.1, "--token-delete", help="Per-token deletion probability on the docstring side."),
    token_replace: float = typer.Option(0.05, "--token-replace", help="Per-token replacement probability on the docstring side."),
    token_swap: float = typer.Option(0.3, "--token-swap", help="Probability of swapping two docstring tokens."),
    validation: int = typer.Option(500, "--validation", help="Functions with docstrings held out to select the best step (0 = none)."),
    min_lines: int = typer.Option(3, "--min-lines", help="Shortest function used, in lines."),
    *, run: RunOptions, optim: OptimOptions, freeze: FreezeOptions, evaluation: EvalOptions,
) -> None:
    """Contrastive code-search training (ContraBERT-style): docstring vs code and code vs augmented code, from source trees."""
    settings = CodeConfig(exclude=tuple(str(p) for p in exclude), doc_ratio=doc_ratio, augment=augment,
                          token_delete=token_delete, token_replace=token_replace, token_swap=token_swap,
                          validation=validation, min_lines=min_lines)
    dataset = evaluation.eval_dataset
    if evaluation.eval_every and not validation and dataset is None:
        raise RetrieverError("--eval-every needs --validation > 0 or --eval")
    selection = EvalConfig(dataset=str(dataset) if dataset is not None else None, every=evaluation.eval_every,
                           metric=evaluation.eval_metric, batch_size=evaluation.eval_batch_size,
                           split=evaluation.eval_split if dataset is not None else "dev")
    train("code", sources, base=base, run=run, optim=optim, freeze=freeze, default_lr=DEFAULT_LR, code=settings,
          eval=selection)


@user_errors
def code_pairs(
    sources: list[Path] = typer.Argument(..., help="Source trees (folders or .py files) to read functions from."),
    out: Path = typer.Option(..., "--out", "-o", help="Output BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv)."),
    exclude: list[Path] = typer.Option([], "--exclude", help="Corpus (e.g. an evaluation set) whose functions are left out, by normalized hash (repeatable)."),
    keep_docstrings: bool = typer.Option(False, "--keep-docstrings", help="Keep docstrings in the documents (default: removed, as in CodeSearchNet)."),
    min_lines: int = typer.Option(3, "--min-lines", help="Shortest function kept, in lines."),
    max_query_words: int = typer.Option(16, "--max-query-words", help="Longest summary used as a query, in words (searches are short; 0 = no limit); longer ones leave their function a document only."),
    summaries_only: bool = typer.Option(False, "--summaries-only", help="Only functions with a docstring summary become documents (no distractors; a smaller index)."),
    queries: str = typer.Option("summaries", "--queries", help="Queries from 'summaries' (docstring summaries), 'names' (the function's name as a search, e.g. 'python read all lines', the function renamed in its document) or 'both'."),
    as_json: JsonFlag = False,
) -> None:
    """Self-supervised code-search pairs as a BEIR folder: each function is a document, its docstring summary
    or its name (written as a search) a query. Index it and train on it with `retriever train finetune OUT --negatives-from IDX`."""
    from training.code_data import QUERY_KINDS, collect_functions, corpus_hashes, write_search_folder

    if min_lines < 1 or max_query_words < 0:
        raise RetrieverError("--min-lines must be >= 1 and --max-query-words >= 0")
    if queries not in QUERY_KINDS:
        raise RetrieverError(f"--queries must be one of {', '.join(QUERY_KINDS)}, not {queries!r}")
    excluded = corpus_hashes(exclude) if exclude else set()
    functions, counts = collect_functions(sources, exclude=excluded, min_lines=min_lines)
    if not functions:
        raise RetrieverError("no function found (the sources hold none that parses and is long enough)")
    if summaries_only:
        functions = [fn for fn in functions if fn.summary]
    written = write_search_folder(out, functions, split="train", keep_docstrings=keep_docstrings,
                                  max_query_words=max_query_words, queries=queries)
    result = {**counts, **written, "out": str(out)}
    if as_json:
        print_json(result)
    else:
        console.print(f"{written['queries']:,} queries over {written['documents']:,} functions "
                      f"({counts['excluded']} excluded, {counts['duplicates']} duplicates) -> {out}")
