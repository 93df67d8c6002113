"""``retriever train crosslingual``: the transliteration contrast (TransliCo) on multilingual text."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import user_errors
from cli.train.launch import train
from cli.train.options import DEFAULT_LR, EvalOptions, FreezeOptions, OptimOptions, RunOptions
from cli.train.shared import shared_options
from training.config import TransliterationConfig


@user_errors
@shared_options(
    max_tokens=typer.Option(64, "--max-tokens", help="Truncation length of every input, special tokens included (sentences: keep it short on a CPU)."),
    freeze_embeddings=typer.Option(
        True, "--freeze-embeddings/--train-embeddings",
        help="Keep the input token embedding matrix fixed (default: frozen; in multilingual-e5-small it is 96M of the 118M "
             "parameters, so freezing makes CPU training practical and keeps every language's vocabulary where it was)."),
)
def crosslingual(
    corpus: list[Path] = typer.Argument(..., help="Corpus files or folders (JSONL, TSV, CSV, Parquet, BEIR, .txt/.md); records sharing a --group-field value are translations."),
    base: str = typer.Option("multilingual-e5-small", "--base", help="Multilingual model to start from (alias, folder or hub id)."),
    translation_ratio: float = typer.Option(0.0, "--translation-ratio", help="Probability that a text with linked translations is paired with one instead of its romanization (0 = transliteration only)."),
    group_field: str = typer.Option("group", "--group-field", help="Field whose equal values link translations (parallel text)."),
    max_chars: int = typer.Option(200, "--max-chars", help="Documents are cut into sentence units whose romanization has at most this many characters."),
    teacher_keys: bool = typer.Option(
        False, "--teacher-keys/--no-teacher-keys",
        help="Keys are embedded by a frozen copy of the base model: romanizations (and translations) are pulled to where "
             "the base model puts the original text, which stays put (distillation)."),
    anchor_ratio: float = typer.Option(0.0, "--anchor-ratio", help="Probability that an example pairs a text with itself (with --teacher-keys: keeps native-script embeddings where the base model had them)."),
    *, run: RunOptions, optim: OptimOptions, freeze: FreezeOptions, evaluation: EvalOptions,
) -> None:
    """Transliteration contrast (TransliCo): each sentence vs its uroman romanization, in-batch InfoNCE on mean-pooled
    states, optionally vs a translation. The input embedding matrix is frozen by default (--train-embeddings to train it).
    The output model is recorded with the crosslingual preset."""
    train("crosslingual", corpus, base=base, run=run, optim=optim, freeze=freeze, default_lr=DEFAULT_LR, queue_size=0,
          teacher_keys=teacher_keys,
          transliteration=TransliterationConfig(translation_ratio=translation_ratio, group_field=group_field,
                                                max_chars=max_chars, anchor_ratio=anchor_ratio),
          eval=evaluation.config())
