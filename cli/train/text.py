"""``retriever train contriever`` (unsupervised, from a corpus) and ``retriever train finetune`` (supervised, from
pairs): the text objectives with MoCo keys, mined hard negatives and query-side training."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import user_errors
from cli.train.launch import train
from cli.train.options import (DEFAULT_LR, SCRATCH_LR, EvalOptions, FreezeOptions, KeyOptions, NegativeOptions,
                               OptimOptions, RunOptions, ScratchOptions)
from cli.train.shared import shared_options
from training.config import SCRATCH, CropConfig, SentenceConfig


@user_errors
@shared_options(queue_size=typer.Option(4096, "--queue-size", help="MoCo queue of past keys as negatives (0 = in-batch negatives only)."))
def contriever(
    corpus: list[Path] = typer.Argument(..., help="Corpus files or folders (JSONL, TSV, CSV, Parquet, BEIR, .txt/.md)."),
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder, hub id) or 'scratch'."),
    chunk_tokens: int = typer.Option(256, "--chunk-tokens", help="Documents are cut into chunks of this many tokens; both crops come from one chunk."),
    crop_min: float = typer.Option(0.1, "--crop-min", help="Smallest crop, as a fraction of the chunk."),
    crop_max: float = typer.Option(0.5, "--crop-max", help="Largest crop, as a fraction of the chunk."),
    delete: float = typer.Option(0.1, "--delete", help="Per-token deletion probability."),
    replace: float = typer.Option(0.0, "--replace", help="Per-token random replacement probability."),
    mask: float = typer.Option(0.0, "--mask", help="Per-token masking probability."),
    anchor: str = typer.Option("crop", "--anchor", help="Pairs from 'crop' (two independent crops of a chunk, Contriever), 'sentence' (a sentence vs the rest of its document, inverse cloze), 'title' (a title vs its body), 'conclusion' (an abstract's concluding sentence, as a finding, vs the rest), 'title+sentence' or 'title+conclusion' (both kinds), 'cited' (a sentence asked of the other documents, the --teacher hybrid's best one its positive), 'title+conclusion+cited'."),
    sentences_per_doc: int = typer.Option(4, "--sentences-per-doc", help="--anchor sentence: pairs drawn per document."),
    min_sentence_words: int = typer.Option(6, "--min-sentence-words", help="--anchor sentence/title: shortest sentence or title used as a query."),
    keep_sentence: float = typer.Option(0.1, "--keep-sentence", help="--anchor sentence: probability the sentence stays in its positive."),
    untitled_keys: bool = typer.Option(False, "--untitled-keys", help="--query-only with title/sentence anchors: keys are document bodies without their titles, a sentence's positive also without the sentence (a pseudo-query never meets itself verbatim)."),
    *, run: RunOptions, optim: OptimOptions, keys: KeyOptions, negatives: NegativeOptions, scratch: ScratchOptions,
    freeze: FreezeOptions, evaluation: EvalOptions,
) -> None:
    """Unsupervised contrastive training (Contriever): two independent random crops of a chunk are a positive pair.

    With --anchor sentence, a sentence and the rest of its document are the pair (inverse cloze task); with
    --anchor title, a document's title and its body. Either way
    --negatives-from INDEX adds hard negatives mined from an index of the corpus (the source document skipped).
    """
    sizes = scratch.config(base)
    crop = CropConfig(ratio_min=crop_min, ratio_max=crop_max, chunk_tokens=chunk_tokens, delete=delete, replace=replace, mask=mask)
    train("contriever", corpus, base=base, run=run, optim=optim, freeze=freeze,
          default_lr=SCRATCH_LR if base == SCRATCH else DEFAULT_LR, **keys.settings(), crop=crop, scratch=sizes,
          anchor=anchor, sentence=SentenceConfig(per_document=sentences_per_doc, min_words=min_sentence_words,
                                                 keep_sentence=keep_sentence),
          negatives=negatives.config(), eval=evaluation.config(), query_only=negatives.query_only,
          untitled_keys=untitled_keys)


@user_errors
@shared_options()
def finetune(
    pairs: Path = typer.Argument(..., help="JSONL of query, positive (and negative/negatives) records, or a BEIR folder with qrels/<split>.tsv."),
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder or hub id)."),
    split: str = typer.Option("train", "--split", help="For a BEIR folder: the qrels split of the training pairs."),
    *, run: RunOptions, optim: OptimOptions, keys: KeyOptions, negatives: NegativeOptions, freeze: FreezeOptions,
    evaluation: EvalOptions,
) -> None:
    """Supervised contrastive fine-tuning on query/positive pairs, with in-batch and mined hard negatives."""
    mined = negatives.config()
    train("finetune", [pairs], base=base, run=run, optim=optim, freeze=freeze, default_lr=DEFAULT_LR,
          **keys.settings(), split=split, negatives=mined, query_only=negatives.query_only, eval=evaluation.config())
