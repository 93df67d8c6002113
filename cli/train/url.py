"""``retriever train url``: a URL encoder (masked-language modelling + SimCSE, optionally adversarial or supervised
by a label field), by default a small BERT from scratch with a URL tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import user_errors
from cli.train.launch import train
from cli.train.options import DEFAULT_LR, SCRATCH_LR, OptimOptions, RunOptions, ScratchOptions
from cli.train.shared import shared_options
from training.config import SCRATCH, MlmConfig

URL_SIZES = {"layers": 4, "hidden": 128, "heads": 4, "vocab_size": 8192}  # ~1.7 CPU-s per step of 64 URLs


@user_errors
@shared_options(
    batch_size=typer.Option(64, "--batch-size", help="URLs per forward pass, over all processes together."),
    lr=typer.Option(None, "--lr", help=f"Peak AdamW learning rate (default: {SCRATCH_LR * 5:g} from scratch, {DEFAULT_LR:g} otherwise)."),
    max_tokens=typer.Option(64, "--max-tokens", help="Truncation length of every URL, special tokens included."),
    layers=typer.Option(None, "--layers", help=f"Scratch model: layers (default: {URL_SIZES['layers']})."),
    hidden=typer.Option(None, "--hidden", help=f"Scratch model: hidden size (default: {URL_SIZES['hidden']})."),
    heads=typer.Option(None, "--heads", help=f"Scratch model: attention heads (default: {URL_SIZES['heads']})."),
    vocab_size=typer.Option(None, "--vocab-size", help=f"Scratch model: URL WordPiece vocabulary (default: {URL_SIZES['vocab_size']})."),
)
def url(
    urls: list[Path] = typer.Argument(..., help="URL files: one URL per line, or TSV/CSV/JSONL records with a 'url' field."),
    base: str = typer.Option("scratch", "--base", help="'scratch' (a URL WordPiece tokenizer and a small BERT) or a model to continue from."),
    mlm_probability: float = typer.Option(0.15, "--mlm-probability", help="Share of tokens masked and predicted (MLM)."),
    mlm_weight: float = typer.Option(1.0, "--mlm-weight", help="Weight of the MLM loss beside the contrastive one (0 = SimCSE only)."),
    adversarial: float = typer.Option(0.0, "--adversarial", help="Norm of the adversarial perturbation of input embeddings (FGM, doubles the cost; 0 = off)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Supervised: the field of the URL records holding each URL's class (e.g. label); URLs of one class become positives of each other."),
    *, run: RunOptions, optim: OptimOptions, scratch: ScratchOptions,
) -> None:
    """URL encoder (URLBERT-style): masked-language modelling + SimCSE (two dropout views), optionally adversarial;
    with --label-field, supervised contrastive on labelled URLs (same class = positives)."""
    sizes = scratch.config(base, defaults=URL_SIZES)
    train("url", urls, base=base, run=run, optim=optim, default_lr=SCRATCH_LR * 5 if base == SCRATCH else DEFAULT_LR,
          queue_size=0, scratch=sizes, adversarial=adversarial, label_field=label_field,
          mlm=MlmConfig(mlm_probability, mlm_weight) if mlm_weight > 0 else None)
