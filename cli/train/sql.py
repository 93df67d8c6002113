"""``retriever train sql``: a SQL demonstration encoder from a pool of measured rewrites (LLM-R2-style)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import user_errors
from cli.train.launch import train
from cli.train.options import DEFAULT_LR, FreezeOptions, OptimOptions, RunOptions
from cli.train.shared import shared_options
from training.config import SqlConfig


@user_errors
@shared_options(
    steps=typer.Option(150, "--steps", help="Optimizer steps."),
    batch_size=typer.Option(16, "--batch-size", help="Anchors per forward pass, over all processes together."),
    max_tokens=typer.Option(256, "--max-tokens", help="Truncation length (structure words come first, then the query text)."),
)
def sql(
    pool: Path = typer.Argument(..., help="Pool folder from `retriever sql build-pool` (or its pool.jsonl)."),
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder or hub id)."),
    curriculum: float = typer.Option(0.5, "--curriculum", help="Fraction of the run over which hard positives/negatives phase in (0 = hard from the start)."),
    negatives: int = typer.Option(1, "--negatives", help="Negatives per example: other-label queries, easy (random) early, similar-looking later."),
    hard_pool: int = typer.Option(5, "--hard-pool", help="The most similar-looking other-label queries that count as hard negatives."),
    anchors: str = typer.Option("all", "--anchors", help="all: every query is an anchor; helped: only queries some rule set sped up (`none` ones are negatives only)."),
    label_groups: bool = typer.Option(True, "--label-groups/--no-label-groups", help="Same-label keys of a batch count as positives (supervised contrastive), not negatives."),
    *, run: RunOptions, optim: OptimOptions, freeze: FreezeOptions,
) -> None:
    """SQL demonstration encoder (LLM-R2-style): queries helped by the same rewrite rules are positives, similar-looking
    queries that were not are hard negatives, scheduled easy to hard. The output model is recorded with the sql preset."""
    train("sql", [pool], base=base, run=run, optim=optim, freeze=freeze, default_lr=DEFAULT_LR,
          sql=SqlConfig(curriculum=curriculum, negatives=negatives, hard_pool=hard_pool, anchors=anchors,
                        label_groups=label_groups))
