"""``retriever train ...``: contriever (unsupervised, from a corpus), finetune (supervised, from pairs), url,
crosslingual (transliteration contrast, from multilingual text), code (self-supervised code search, from source trees)
and sql (demonstration retrieval, from a pool of measured SQL rewrites); merge averages trained models' weights.

Both run under ``torchrun --nproc_per_node N`` unchanged (DDP; only rank 0 writes and draws progress).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import typer

from cli.common import console, print_json, user_errors
from indexing.errors import RetrieverError

app = typer.Typer(help="Train retrieval models (output: a sentence-transformers folder).", no_args_is_help=True)

DEFAULT_LR = 2e-5
SCRATCH_LR = 1e-4

# Options shared by both commands (typer accepts the same OptionInfo in several signatures).
OUT = typer.Option(..., "--out", "-o", help="Output model folder (sentence-transformers; checkpoints in OUT/checkpoints).")
STEPS = typer.Option(1000, "--steps", help="Optimizer steps.")
BATCH = typer.Option(32, "--batch-size", help="Pairs per forward pass, over all processes together.")
ACCUMULATE = typer.Option(1, "--accumulate", help="Forward passes per optimizer step (gradient accumulation).")
LR = typer.Option(None, "--lr", help=f"Peak AdamW learning rate (default: {DEFAULT_LR:g}; {SCRATCH_LR:g} with --base scratch).")
WEIGHT_DECAY = typer.Option(0.01, "--weight-decay", help="AdamW weight decay (not on biases and norms).")
WARMUP = typer.Option(None, "--warmup", help="Linear warmup steps, then linear decay to 0 (default: 10% of --steps).")
TEMPERATURE = typer.Option(0.05, "--temperature", help="InfoNCE temperature (on cosine similarity).")
MOMENTUM = typer.Option(0.999, "--momentum", help="MoCo key encoder momentum (with --queue-size > 0).")
MAX_TOKENS = typer.Option(128, "--max-tokens", help="Truncation length of every input, special tokens included.")
MAX_GRAD_NORM = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping norm (0 = off).")
EMA = typer.Option(0.0, "--ema", help="Decay of a moving average of the weights (e.g. 0.98); the average is evaluated and exported (0 = off).")
SEED = typer.Option(0, "--seed", help="Seeds data order, crops, negatives and initialization.")
PRECISION = typer.Option("auto", "--precision", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16 or fp16 (GPU only).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda[:N] (a GPU asked for and missing is an error).")
FREEZE = typer.Option(False, "--freeze-embeddings", help="Keep the input token embeddings fixed.")
FREEZE_LAYERS = typer.Option(0, "--freeze-layers", help="Keep the embeddings and the first N transformer layers fixed "
                             "(partial fine-tuning: fewer weights move, faster steps; 0 = train all).")
EVAL = typer.Option(None, "--eval", help="BEIR folder to evaluate on with exact search; the best step becomes the output model.")
EVAL_SPLIT = typer.Option("train", "--eval-split", help="Qrels split used to select (train or dev; never select on test).")
EVAL_EVERY = typer.Option(0, "--eval-every", help="Evaluate every N steps (also at step 0 and at the end).")
EVAL_METRIC = typer.Option("nDCG@10", "--eval-metric", help="Metric that picks the best step (any ir_measures name).")
EVAL_BATCH = typer.Option(64, "--eval-batch-size", help="Encoding batch size of the evaluation.")
SAVE_EVERY = typer.Option(0, "--save-every", help="Checkpoint every N steps (0 = only at the end / on Ctrl-C).")
KEEP = typer.Option(1, "--keep-checkpoints", help="Checkpoints kept on disk.")
RESUME = typer.Option(False, "--resume", help="Continue the run in OUT from its latest checkpoint.")
OVERWRITE = typer.Option(False, "--overwrite", help="Discard the checkpoints of an earlier run in OUT.")
STOP_AFTER = typer.Option(None, "--stop-after", help="Stop after N steps of this invocation (checkpointed; continue with --resume).")
MAX_MINUTES = typer.Option(None, "--max-minutes", help="Wall-clock budget of this invocation: the step that crosses it is the last; "
                           "it is evaluated, checkpointed and exported (continue with --resume).")
AS_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
NEGATIVES_FROM = typer.Option(None, "--negatives-from", help="Index (from `retriever index build`) to mine hard negatives from.")
NEGATIVE_RANKS = typer.Option("10-50", "--negative-ranks", help="Hit ranks LO-HI (1-based, inclusive) that negatives are sampled from.")
TEACHER = typer.Option("none", "--teacher", help="'hybrid': negatives ranked by BM25 + dense fusion, whose scores are distilled as soft labels (listwise KL); needs --negatives-from.")
DISTILL_WEIGHT = typer.Option(1.0, "--distill-weight", help="--teacher hybrid: weight of the distillation loss next to in-batch InfoNCE.")
TEACHER_INDEX = typer.Option(None, "--teacher-index", help="--teacher hybrid: another dense index of the same corpus (another model) whose scores join the fusion; repeatable; needs --teacher-weights.")
TEACHER_WEIGHTS = typer.Option(None, "--teacher-weights", help="With --teacher-index: comma-separated fusion weights: the --negatives-from index's dense scores, each --teacher-index, then BM25 (e.g. 0.3,0.3,0.4).")
TEACHER_TEMPERATURE = typer.Option(0.05, "--teacher-temperature", help="--teacher hybrid: softmax temperature of the teacher's fused scores (in [0, 1]).")
QUERY_ONLY = typer.Option(
    False, "--query-only",
    help="Train the query side only: documents keep the base model's embeddings (indexes built with the base stay "
         "valid) and the output routes queries through the trained encoder, documents through the base.")
NEGATIVES_PER_QUERY = typer.Option(None, "--negatives-per-query", help="Hard negatives per pair (default: 1 with --negatives-from, else 0).")


@app.command()
@user_errors
def contriever(
    corpus: list[Path] = typer.Argument(..., help="Corpus files or folders (JSONL, TSV, CSV, Parquet, BEIR, .txt/.md)."),
    out: Path = OUT,
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder, hub id) or 'scratch'."),
    steps: int = STEPS,
    batch_size: int = BATCH,
    accumulate: int = ACCUMULATE,
    lr: Optional[float] = LR,
    weight_decay: float = WEIGHT_DECAY,
    warmup: Optional[int] = WARMUP,
    temperature: float = TEMPERATURE,
    queue_size: int = typer.Option(4096, "--queue-size", help="MoCo queue of past keys as negatives (0 = in-batch negatives only)."),
    momentum: float = MOMENTUM,
    max_tokens: int = MAX_TOKENS,
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
    negatives_from: Optional[Path] = NEGATIVES_FROM,
    negative_ranks: str = NEGATIVE_RANKS,
    negatives_per_query: Optional[int] = NEGATIVES_PER_QUERY,
    teacher: str = TEACHER,
    distill_weight: float = DISTILL_WEIGHT,
    teacher_temperature: float = TEACHER_TEMPERATURE,
    teacher_index: Optional[list[Path]] = TEACHER_INDEX,
    teacher_weights: Optional[str] = TEACHER_WEIGHTS,
    query_only: bool = QUERY_ONLY,
    untitled_keys: bool = typer.Option(False, "--untitled-keys", help="--query-only with title/sentence anchors: keys are document bodies without their titles, a sentence's positive also without the sentence (a pseudo-query never meets itself verbatim)."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Scratch model: layers (default: 6)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="Scratch model: hidden size (default: 384)."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Scratch model: attention heads (default: 12)."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="Scratch model: WordPiece vocabulary (default: 16384)."),
    max_grad_norm: float = MAX_GRAD_NORM,
    ema: float = EMA,
    seed: int = SEED,
    precision: str = PRECISION,
    device: str = DEVICE,
    freeze_embeddings: bool = FREEZE,
    freeze_layers: int = FREEZE_LAYERS,
    eval_dataset: Optional[Path] = EVAL,
    eval_split: str = EVAL_SPLIT,
    eval_every: int = EVAL_EVERY,
    eval_metric: str = EVAL_METRIC,
    eval_batch_size: int = EVAL_BATCH,
    save_every: int = SAVE_EVERY,
    keep_checkpoints: int = KEEP,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    stop_after: Optional[int] = STOP_AFTER,
    max_minutes: Optional[float] = MAX_MINUTES,
    as_json: bool = AS_JSON,
) -> None:
    """Unsupervised contrastive training (Contriever): two independent random crops of a chunk are a positive pair.

    With --anchor sentence, a sentence and the rest of its document are the pair (inverse cloze task); with
    --anchor title, a document's title and its body. Either way
    --negatives-from INDEX adds hard negatives mined from an index of the corpus (the source document skipped).
    """
    from training.config import SCRATCH, CropConfig, ScratchConfig, SentenceConfig

    sizes = {"layers": layers, "hidden": hidden, "heads": heads, "vocab_size": vocab_size}
    given = {k: v for k, v in sizes.items() if v is not None}
    if given and base != SCRATCH:
        raise RetrieverError(f"--{', --'.join(k.replace('_', '-') for k in given)} only apply with --base scratch")
    scratch = ScratchConfig(**given) if base == SCRATCH else None
    crop = CropConfig(ratio_min=crop_min, ratio_max=crop_max, chunk_tokens=chunk_tokens, delete=delete, replace=replace, mask=mask)
    config = _config(
        "contriever", tuple(str(p) for p in corpus), base=base, steps=steps, batch_size=batch_size, accumulate=accumulate,
        lr=lr if lr is not None else (SCRATCH_LR if base == SCRATCH else DEFAULT_LR), weight_decay=weight_decay,
        warmup=warmup, temperature=temperature, queue_size=queue_size, momentum=momentum, max_tokens=max_tokens,
        max_grad_norm=max_grad_norm, ema=ema, seed=seed, precision=precision, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers,
        save_every=save_every, keep_checkpoints=keep_checkpoints, crop=crop, scratch=scratch, anchor=anchor,
        sentence=SentenceConfig(per_document=sentences_per_doc, min_words=min_sentence_words, keep_sentence=keep_sentence),
        negatives=_negatives(negatives_from, negative_ranks, negatives_per_query, teacher, distill_weight, teacher_temperature,
                           teacher_index, teacher_weights),
        eval=_eval(eval_dataset, eval_split, eval_every, eval_metric, eval_batch_size), query_only=query_only,
        untitled_keys=untitled_keys,
    )
    _run(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after, max_minutes=max_minutes, as_json=as_json)


@app.command()
@user_errors
def finetune(
    pairs: Path = typer.Argument(..., help="JSONL of query, positive (and negative/negatives) records, or a BEIR folder with qrels/<split>.tsv."),
    out: Path = OUT,
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder or hub id)."),
    split: str = typer.Option("train", "--split", help="For a BEIR folder: the qrels split of the training pairs."),
    negatives_from: Optional[Path] = NEGATIVES_FROM,
    negative_ranks: str = NEGATIVE_RANKS,
    negatives_per_query: Optional[int] = NEGATIVES_PER_QUERY,
    teacher: str = TEACHER,
    distill_weight: float = DISTILL_WEIGHT,
    teacher_temperature: float = TEACHER_TEMPERATURE,
    teacher_index: Optional[list[Path]] = TEACHER_INDEX,
    teacher_weights: Optional[str] = TEACHER_WEIGHTS,
    query_only: bool = QUERY_ONLY,
    steps: int = STEPS,
    batch_size: int = BATCH,
    accumulate: int = ACCUMULATE,
    lr: Optional[float] = LR,
    weight_decay: float = WEIGHT_DECAY,
    warmup: Optional[int] = WARMUP,
    temperature: float = TEMPERATURE,
    queue_size: int = typer.Option(0, "--queue-size", help="MoCo queue of past keys as negatives (0 = in-batch negatives only)."),
    momentum: float = MOMENTUM,
    max_tokens: int = MAX_TOKENS,
    max_grad_norm: float = MAX_GRAD_NORM,
    ema: float = EMA,
    seed: int = SEED,
    precision: str = PRECISION,
    device: str = DEVICE,
    freeze_embeddings: bool = FREEZE,
    freeze_layers: int = FREEZE_LAYERS,
    eval_dataset: Optional[Path] = EVAL,
    eval_split: str = EVAL_SPLIT,
    eval_every: int = EVAL_EVERY,
    eval_metric: str = EVAL_METRIC,
    eval_batch_size: int = EVAL_BATCH,
    save_every: int = SAVE_EVERY,
    keep_checkpoints: int = KEEP,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    stop_after: Optional[int] = STOP_AFTER,
    max_minutes: Optional[float] = MAX_MINUTES,
    as_json: bool = AS_JSON,
) -> None:
    """Supervised contrastive fine-tuning on query/positive pairs, with in-batch and mined hard negatives."""
    negatives = _negatives(negatives_from, negative_ranks, negatives_per_query, teacher, distill_weight, teacher_temperature,
                           teacher_index, teacher_weights)
    config = _config(
        "finetune", (str(pairs),), base=base, steps=steps, batch_size=batch_size, accumulate=accumulate,
        lr=lr if lr is not None else DEFAULT_LR, weight_decay=weight_decay, warmup=warmup, temperature=temperature,
        queue_size=queue_size, momentum=momentum, max_tokens=max_tokens, max_grad_norm=max_grad_norm, ema=ema, seed=seed,
        precision=precision, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers, split=split, save_every=save_every,
        keep_checkpoints=keep_checkpoints, negatives=negatives, query_only=query_only,
        eval=_eval(eval_dataset, eval_split, eval_every, eval_metric, eval_batch_size),
    )
    _run(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after, max_minutes=max_minutes, as_json=as_json)


URL_SIZES = {"layers": 4, "hidden": 128, "heads": 4, "vocab_size": 8192}  # ~1.7 CPU-s per step of 64 URLs


@app.command()
@user_errors
def url(
    urls: list[Path] = typer.Argument(..., help="URL files: one URL per line, or TSV/CSV/JSONL records with a 'url' field."),
    out: Path = OUT,
    base: str = typer.Option("scratch", "--base", help="'scratch' (a URL WordPiece tokenizer and a small BERT) or a model to continue from."),
    steps: int = typer.Option(1000, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size", help="URLs per forward pass, over all processes together."),
    accumulate: int = ACCUMULATE,
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Peak AdamW learning rate (default: {SCRATCH_LR * 5:g} from scratch, {DEFAULT_LR:g} otherwise)."),
    weight_decay: float = WEIGHT_DECAY,
    warmup: Optional[int] = WARMUP,
    temperature: float = TEMPERATURE,
    max_tokens: int = typer.Option(64, "--max-tokens", help="Truncation length of every URL, special tokens included."),
    mlm_probability: float = typer.Option(0.15, "--mlm-probability", help="Share of tokens masked and predicted (MLM)."),
    mlm_weight: float = typer.Option(1.0, "--mlm-weight", help="Weight of the MLM loss beside the contrastive one (0 = SimCSE only)."),
    adversarial: float = typer.Option(0.0, "--adversarial", help="Norm of the adversarial perturbation of input embeddings (FGM, doubles the cost; 0 = off)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Supervised: the field of the URL records holding each URL's class (e.g. label); URLs of one class become positives of each other."),
    layers: Optional[int] = typer.Option(None, "--layers", help=f"Scratch model: layers (default: {URL_SIZES['layers']})."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help=f"Scratch model: hidden size (default: {URL_SIZES['hidden']})."),
    heads: Optional[int] = typer.Option(None, "--heads", help=f"Scratch model: attention heads (default: {URL_SIZES['heads']})."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help=f"Scratch model: URL WordPiece vocabulary (default: {URL_SIZES['vocab_size']})."),
    max_grad_norm: float = MAX_GRAD_NORM,
    ema: float = EMA,
    seed: int = SEED,
    precision: str = PRECISION,
    device: str = DEVICE,
    save_every: int = SAVE_EVERY,
    keep_checkpoints: int = KEEP,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    stop_after: Optional[int] = STOP_AFTER,
    max_minutes: Optional[float] = MAX_MINUTES,
    as_json: bool = AS_JSON,
) -> None:
    """URL encoder (URLBERT-style): masked-language modelling + SimCSE (two dropout views), optionally adversarial;
    with --label-field, supervised contrastive on labelled URLs (same class = positives)."""
    from training.config import SCRATCH, MlmConfig, ScratchConfig

    sizes = {"layers": layers, "hidden": hidden, "heads": heads, "vocab_size": vocab_size}
    given = {k: v for k, v in sizes.items() if v is not None}
    if given and base != SCRATCH:
        raise RetrieverError(f"--{', --'.join(k.replace('_', '-') for k in given)} only apply with --base scratch")
    scratch = ScratchConfig(**(URL_SIZES | given)) if base == SCRATCH else None
    config = _config(
        "url", tuple(str(p) for p in urls), base=base, steps=steps, batch_size=batch_size, accumulate=accumulate,
        lr=lr if lr is not None else (SCRATCH_LR * 5 if base == SCRATCH else DEFAULT_LR), weight_decay=weight_decay,
        warmup=warmup, temperature=temperature, queue_size=0, max_tokens=max_tokens, max_grad_norm=max_grad_norm, ema=ema,
        seed=seed, precision=precision, save_every=save_every, keep_checkpoints=keep_checkpoints, scratch=scratch,
        adversarial=adversarial, mlm=MlmConfig(mlm_probability, mlm_weight) if mlm_weight > 0 else None,
        label_field=label_field,
    )
    _run(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after, max_minutes=max_minutes, as_json=as_json)


@app.command()
@user_errors
def crosslingual(
    corpus: list[Path] = typer.Argument(..., help="Corpus files or folders (JSONL, TSV, CSV, Parquet, BEIR, .txt/.md); records sharing a --group-field value are translations."),
    out: Path = OUT,
    base: str = typer.Option("multilingual-e5-small", "--base", help="Multilingual model to start from (alias, folder or hub id)."),
    translation_ratio: float = typer.Option(0.0, "--translation-ratio", help="Probability that a text with linked translations is paired with one instead of its romanization (0 = transliteration only)."),
    group_field: str = typer.Option("group", "--group-field", help="Field whose equal values link translations (parallel text)."),
    max_chars: int = typer.Option(200, "--max-chars", help="Documents are cut into sentence units whose romanization has at most this many characters."),
    teacher_keys: bool = typer.Option(
        False, "--teacher-keys/--no-teacher-keys",
        help="Keys are embedded by a frozen copy of the base model: romanizations (and translations) are pulled to where "
             "the base model puts the original text, which stays put (distillation)."),
    anchor_ratio: float = typer.Option(0.0, "--anchor-ratio", help="Probability that an example pairs a text with itself (with --teacher-keys: keeps native-script embeddings where the base model had them)."),
    steps: int = STEPS,
    batch_size: int = BATCH,
    accumulate: int = ACCUMULATE,
    lr: Optional[float] = LR,
    weight_decay: float = WEIGHT_DECAY,
    warmup: Optional[int] = WARMUP,
    temperature: float = TEMPERATURE,
    max_tokens: int = typer.Option(64, "--max-tokens", help="Truncation length of every input, special tokens included (sentences: keep it short on a CPU)."),
    max_grad_norm: float = MAX_GRAD_NORM,
    ema: float = EMA,
    seed: int = SEED,
    precision: str = PRECISION,
    device: str = DEVICE,
    freeze_embeddings: bool = typer.Option(
        True, "--freeze-embeddings/--train-embeddings",
        help="Keep the input token embedding matrix fixed (default: frozen; in multilingual-e5-small it is 96M of the 118M "
             "parameters, so freezing makes CPU training practical and keeps every language's vocabulary where it was)."),
    freeze_layers: int = FREEZE_LAYERS,
    eval_dataset: Optional[Path] = EVAL,
    eval_split: str = EVAL_SPLIT,
    eval_every: int = EVAL_EVERY,
    eval_metric: str = EVAL_METRIC,
    eval_batch_size: int = EVAL_BATCH,
    save_every: int = SAVE_EVERY,
    keep_checkpoints: int = KEEP,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    stop_after: Optional[int] = STOP_AFTER,
    max_minutes: Optional[float] = MAX_MINUTES,
    as_json: bool = AS_JSON,
) -> None:
    """Transliteration contrast (TransliCo): each sentence vs its uroman romanization, in-batch InfoNCE on mean-pooled
    states, optionally vs a translation. The input embedding matrix is frozen by default (--train-embeddings to train it).
    The output model is recorded with the crosslingual preset."""
    from training.config import TransliterationConfig

    config = _config(
        "crosslingual", tuple(str(p) for p in corpus), base=base, steps=steps, batch_size=batch_size, accumulate=accumulate,
        lr=lr if lr is not None else DEFAULT_LR, weight_decay=weight_decay, warmup=warmup, temperature=temperature,
        queue_size=0, teacher_keys=teacher_keys, max_tokens=max_tokens, max_grad_norm=max_grad_norm, ema=ema, seed=seed,
        precision=precision, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers, save_every=save_every, keep_checkpoints=keep_checkpoints,
        transliteration=TransliterationConfig(translation_ratio=translation_ratio, group_field=group_field, max_chars=max_chars,
                                              anchor_ratio=anchor_ratio),
        eval=_eval(eval_dataset, eval_split, eval_every, eval_metric, eval_batch_size),
    )
    _run(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after, max_minutes=max_minutes, as_json=as_json)


@app.command()
@user_errors
def code(
    sources: list[Path] = typer.Argument(..., help="Source trees (folders or .py files) to learn from."),
    out: Path = OUT,
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder or hub id)."),
    exclude: list[Path] = typer.Option([], "--exclude", help="Corpus (e.g. an evaluation set) whose functions are removed from training, by normalized hash (repeatable)."),
    doc_ratio: float = typer.Option(0.5, "--doc-ratio", help="Share of docstring->code pairs (the rest: code vs augmented code)."),
    augment: float = typer.Option(0.5, "--augment", help="Probability of each program augmentation (renaming, dead code, swaps, comment removal) per view."),
    token_delete: float = typer.Option(0.1, "--token-delete", help="Per-token deletion probability on the docstring side."),
    token_replace: float = typer.Option(0.05, "--token-replace", help="Per-token replacement probability on the docstring side."),
    token_swap: float = typer.Option(0.3, "--token-swap", help="Probability of swapping two docstring tokens."),
    validation: int = typer.Option(500, "--validation", help="Functions with docstrings held out to select the best step (0 = none)."),
    min_lines: int = typer.Option(3, "--min-lines", help="Shortest function used, in lines."),
    steps: int = STEPS,
    batch_size: int = BATCH,
    accumulate: int = ACCUMULATE,
    lr: Optional[float] = LR,
    weight_decay: float = WEIGHT_DECAY,
    warmup: Optional[int] = WARMUP,
    temperature: float = TEMPERATURE,
    max_tokens: int = MAX_TOKENS,
    max_grad_norm: float = MAX_GRAD_NORM,
    ema: float = EMA,
    seed: int = SEED,
    precision: str = PRECISION,
    device: str = DEVICE,
    freeze_embeddings: bool = FREEZE,
    freeze_layers: int = FREEZE_LAYERS,
    eval_dataset: Optional[Path] = typer.Option(None, "--eval", help="A BEIR folder of code search (e.g. CoSQA) whose --eval-split queries pick the best step, instead of the held-out docstrings; texts get the code preprocessing."),
    eval_split: str = EVAL_SPLIT,
    eval_every: int = EVAL_EVERY,
    eval_metric: str = typer.Option("MRR@10", "--eval-metric", help="Metric on the validation slice that picks the best step."),
    eval_batch_size: int = EVAL_BATCH,
    save_every: int = SAVE_EVERY,
    keep_checkpoints: int = KEEP,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    stop_after: Optional[int] = STOP_AFTER,
    max_minutes: Optional[float] = MAX_MINUTES,
    as_json: bool = AS_JSON,
) -> None:
    """Contrastive code-search training (ContraBERT-style): docstring vs code and code vs augmented code, from source trees."""
    from training.config import CodeConfig, EvalConfig

    settings = CodeConfig(exclude=tuple(str(p) for p in exclude), doc_ratio=doc_ratio, augment=augment,
                          token_delete=token_delete, token_replace=token_replace, token_swap=token_swap,
                          validation=validation, min_lines=min_lines)
    if eval_every and not validation and eval_dataset is None:
        raise RetrieverError("--eval-every needs --validation > 0 or --eval")
    config = _config(
        "code", tuple(str(p) for p in sources), base=base, steps=steps, batch_size=batch_size, accumulate=accumulate,
        lr=lr if lr is not None else DEFAULT_LR, weight_decay=weight_decay, warmup=warmup, temperature=temperature,
        max_tokens=max_tokens, max_grad_norm=max_grad_norm, ema=ema, seed=seed, precision=precision,
        freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers, save_every=save_every, keep_checkpoints=keep_checkpoints, code=settings,
        eval=EvalConfig(dataset=str(eval_dataset) if eval_dataset is not None else None, every=eval_every, metric=eval_metric,
                        batch_size=eval_batch_size, split=eval_split if eval_dataset is not None else "dev"),
    )
    _run(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after, max_minutes=max_minutes, as_json=as_json)


@app.command("code-pairs")
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
    as_json: bool = AS_JSON,
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


@app.command()
@user_errors
def sql(
    pool: Path = typer.Argument(..., help="Pool folder from `retriever sql build-pool` (or its pool.jsonl)."),
    out: Path = OUT,
    base: str = typer.Option("minilm", "--base", help="Model to start from (alias, folder or hub id)."),
    curriculum: float = typer.Option(0.5, "--curriculum", help="Fraction of the run over which hard positives/negatives phase in (0 = hard from the start)."),
    negatives: int = typer.Option(1, "--negatives", help="Negatives per example: other-label queries, easy (random) early, similar-looking later."),
    hard_pool: int = typer.Option(5, "--hard-pool", help="The most similar-looking other-label queries that count as hard negatives."),
    anchors: str = typer.Option("all", "--anchors", help="all: every query is an anchor; helped: only queries some rule set sped up (`none` ones are negatives only)."),
    label_groups: bool = typer.Option(True, "--label-groups/--no-label-groups", help="Same-label keys of a batch count as positives (supervised contrastive), not negatives."),
    steps: int = typer.Option(150, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(16, "--batch-size", help="Anchors per forward pass, over all processes together."),
    accumulate: int = ACCUMULATE,
    lr: Optional[float] = LR,
    weight_decay: float = WEIGHT_DECAY,
    warmup: Optional[int] = WARMUP,
    temperature: float = TEMPERATURE,
    max_tokens: int = typer.Option(256, "--max-tokens", help="Truncation length (structure words come first, then the query text)."),
    max_grad_norm: float = MAX_GRAD_NORM,
    ema: float = EMA,
    seed: int = SEED,
    precision: str = PRECISION,
    device: str = DEVICE,
    freeze_embeddings: bool = FREEZE,
    freeze_layers: int = FREEZE_LAYERS,
    save_every: int = SAVE_EVERY,
    keep_checkpoints: int = KEEP,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    stop_after: Optional[int] = STOP_AFTER,
    max_minutes: Optional[float] = MAX_MINUTES,
    as_json: bool = AS_JSON,
) -> None:
    """SQL demonstration encoder (LLM-R2-style): queries helped by the same rewrite rules are positives, similar-looking
    queries that were not are hard negatives, scheduled easy to hard. The output model is recorded with the sql preset."""
    from training.config import SqlConfig

    config = _config(
        "sql", (str(pool),), base=base, steps=steps, batch_size=batch_size, accumulate=accumulate,
        lr=lr if lr is not None else DEFAULT_LR, weight_decay=weight_decay, warmup=warmup, temperature=temperature,
        max_tokens=max_tokens, max_grad_norm=max_grad_norm, ema=ema, seed=seed, precision=precision,
        freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers, save_every=save_every, keep_checkpoints=keep_checkpoints,
        sql=SqlConfig(curriculum=curriculum, negatives=negatives, hard_pool=hard_pool, anchors=anchors, label_groups=label_groups),
    )
    _run(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after, max_minutes=max_minutes, as_json=as_json)


# --- helpers --------------------------------------------------------------------------------------------
def _ranks(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        return int(low), int(high if sep else low)
    except ValueError:
        raise RetrieverError(f"--negative-ranks {text!r}: expected LO-HI, e.g. 10-50") from None


def _negatives(index: Optional[Path], ranks: str, per_query: Optional[int], teacher: str, distill_weight: float,
               teacher_temperature: float, teacher_indexes: Optional[list[Path]] = None,
               teacher_weights: Optional[str] = None):
    from training.config import NegativesConfig, parse_weights

    low, high = _ranks(ranks)
    count = per_query if per_query is not None else (1 if index else 0)
    return NegativesConfig(index=str(index) if index else None, rank_min=low, rank_max=high, per_query=count,
                           teacher=teacher, distill_weight=distill_weight, teacher_temperature=teacher_temperature,
                           teacher_indexes=tuple(str(p) for p in teacher_indexes or ()),
                           teacher_weights=parse_weights(teacher_weights, "--teacher-weights"))


def _eval(dataset: Optional[Path], split: str, every: int, metric: str, batch_size: int):
    from training.config import EvalConfig

    if dataset is None and every:
        raise RetrieverError("--eval-every needs --eval DATASET")
    return EvalConfig(dataset=str(dataset) if dataset else None, split=split, every=every, metric=metric, batch_size=batch_size)


@app.command()
@user_errors
def merge(
    models: list[str] = typer.Argument(..., help="Two or more models of one architecture (aliases, folders or hub ids), e.g. two fine-tunings of one base; or one --query-only model with --query-route."),
    out: Path = typer.Option(..., "--out", "-o", help="Output model folder (sentence-transformers)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weight per model, summing to 1 (default: equal)."),
    query_route: Optional[float] = typer.Option(None, "--query-route", min=0.0, max=1.0,
                                                help="One --query-only model: the weight of its trained query route against its document route (the base); the documents keep their embeddings."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    as_json: bool = AS_JSON,
) -> None:
    """Average the parameters of fine-tuned models (WiSE-FT / model soup), with no training: the merged model's
    skills usually lie between those of its parts, often above the line that joins them."""
    from transformers.utils import logging as hf_logging

    from training.merge import merge_models, merge_query_route

    hf_logging.disable_progress_bar()
    if query_route is not None:
        if len(models) != 1 or weights is not None:
            raise RetrieverError("--query-route takes exactly one (query-only) model and no --weights")
        result = merge_query_route(models[0], out, weight=query_route, overwrite=overwrite)
    else:
        parsed = None
        if weights is not None:
            try:
                parsed = [float(w) for w in weights.split(",")]
            except ValueError:
                raise RetrieverError(f"--weights: not a comma-separated list of numbers: {weights!r}") from None
        result = merge_models(models, out, weights=parsed, overwrite=overwrite)
    if as_json:
        record = {"out": str(result.out), "models": result.models, "weights": result.weights, "tensors": result.tensors}
        print_json(record if query_route is None else {**record, "query_route_weight": query_route})
        return
    parts = ", ".join(f"{w:g} x {m}" for m, w in zip(result.models, result.weights))
    console.print(f"merged [bold]{result.out}[/]: {parts} ({result.tensors} tensors)", highlight=False)


def _config(objective: str, data: tuple[str, ...], *, warmup: Optional[int], steps: int, **values: Any):
    from training.config import TrainConfig

    if warmup is None:
        warmup = max(0, round(0.1 * steps))
    return TrainConfig(objective=objective, data=data, steps=steps, warmup=warmup, **values).validate()  # type: ignore[arg-type]


def _run(config, out: Path, *, device: str, resume: bool, overwrite: bool, stop_after: Optional[int],
         max_minutes: Optional[float], as_json: bool) -> None:
    from transformers.utils import logging as hf_logging

    from training.run import run_training

    hf_logging.disable_progress_bar()  # the CLI draws its own bar
    if stop_after is not None and stop_after < 1:
        raise RetrieverError(f"--stop-after must be >= 1 (got {stop_after})")
    if max_minutes is not None and not max_minutes > 0:
        raise RetrieverError(f"--max-minutes must be > 0 (got {max_minutes})")
    time_limit_s = max_minutes * 60 if max_minutes is not None else None
    main = int(os.environ.get("RANK", "0")) == 0
    with TrainProgress(config.steps, enabled=main and not as_json) as progress:
        result = run_training(config, out, device=device, resume=resume, overwrite=overwrite, stop_after=stop_after,
                              time_limit_s=time_limit_s, callback=progress)
    if not main:
        return
    if as_json:
        record = asdict(result)
        record["out"] = str(result.out)
        print_json(record)
        return
    loss = f"{result.last_loss:.4f}" if result.last_loss is not None else "-"
    if not result.finished and not result.timed_out:
        console.print(f"stopped at step {result.steps_done}/{config.steps} (loss {loss}); continue with --resume", highlight=False)
        return
    line = f"trained [bold]{out}[/]: {result.steps_done} steps, last loss {loss}"
    if result.timed_out:
        line += f" (time limit: {result.steps_done} of {config.steps} steps; continue with --resume)"
    if result.best_step is not None and result.best_metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
        line += f"; output = step {result.best_step} ({shown} on {config.eval.split})"
    console.print(line, highlight=False)


class TrainProgress:
    """A rich progress bar (loss, lr, examples/s, tokens/s) fed by the trainer's events; evaluations print a line."""

    def __init__(self, total: int, *, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not enabled,
        )
        self.enabled = enabled
        self.task = self.progress.add_task("train", total=total, stats="")
        # No terminal (a redirected log, a batch job): the bar is not drawn, so a plain line every 5% of the run
        self.every = max(1, total // 20) if enabled and not console.is_terminal else 0
        self.total = total

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, event) -> None:
        if event.kind == "start":  # drawn only once loading is over, so errors before it stay one line
            self.progress.start()
        if event.kind in ("start", "step"):
            stats = ""
            if event.kind == "step":
                stats = (f"loss {event.loss:.4f}  lr {event.lr:.2e}  {event.examples_per_s:,.1f} ex/s  "
                         f"{event.tokens_per_s:,.0f} tok/s")
            self.progress.update(self.task, completed=event.step, stats=stats)
            if self.every and event.kind == "step" and (event.step % self.every == 0 or event.step == self.total):
                console.print(f"step {event.step}/{self.total}: {stats}", highlight=False, markup=False)
        elif event.kind == "eval" and self.enabled:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in (event.metrics or {}).items())
            self.progress.console.print(f"step {event.step}: {shown}" + ("  [green](best)[/]" if event.improved else ""), highlight=False)
