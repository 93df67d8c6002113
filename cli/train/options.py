"""The options several ``retriever train`` commands share, each declared once, in groups (see
:mod:`cli.train.shared`), and what each group contributes to a :class:`training.config.TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.train.shared import OptionGroup
from indexing.errors import RetrieverError
from training.config import SCRATCH, EvalConfig, NegativesConfig, ScratchConfig, parse_weights

DEFAULT_LR = 2e-5
SCRATCH_LR = 1e-4

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@dataclass(frozen=True)
class RunOptions(OptionGroup):
    """Where the model goes and how the run executes (every training command)."""

    out: Annotated[Path, typer.Option("--out", "-o", help="Output model folder (sentence-transformers; checkpoints in OUT/checkpoints).")]
    seed: Annotated[int, typer.Option("--seed", help="Seeds data order, crops, negatives and initialization.")] = 0
    precision: Annotated[str, typer.Option("--precision", help="auto (GPU: bf16 where supported, else fp16; CPU: bf16 where native (AMX/AVX512-BF16), else fp32), fp32, bf16 or fp16 (GPU only).")] = "auto"
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N] (a GPU asked for and missing is an error).")] = "auto"
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every N steps (0 = only at the end / on Ctrl-C).")] = 0
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help="Checkpoints kept on disk.")] = 1
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its latest checkpoint.")] = False
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard the checkpoints of an earlier run in OUT.")] = False
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", help="Stop after N steps of this invocation (checkpointed; continue with --resume).")] = None
    max_minutes: Annotated[Optional[float], typer.Option(
        "--max-minutes", help="Wall-clock budget of this invocation: the step that crosses it is the last; "
                              "it is evaluated, checkpointed and exported (continue with --resume).")] = None
    as_json: JsonFlag = False

    def settings(self) -> dict[str, Any]:
        """The TrainConfig fields of this group."""
        return {"seed": self.seed, "precision": self.precision, "save_every": self.save_every,
                "keep_checkpoints": self.keep_checkpoints}


@dataclass(frozen=True)
class OptimOptions(OptionGroup):
    """Optimisation (every training command)."""

    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 1000
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per forward pass, over all processes together.")] = 32
    accumulate: Annotated[int, typer.Option("--accumulate", help="Forward passes per optimizer step (gradient accumulation).")] = 1
    lr: Annotated[Optional[float], typer.Option("--lr", help=f"Peak AdamW learning rate (default: {DEFAULT_LR:g}; {SCRATCH_LR:g} with --base scratch).")] = None
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (not on biases and norms).")] = 0.01
    warmup: Annotated[Optional[int], typer.Option("--warmup", help="Linear warmup steps, then linear decay to 0 (default: 10% of --steps).")] = None
    temperature: Annotated[float, typer.Option("--temperature", help="InfoNCE temperature (on cosine similarity).")] = 0.05
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Truncation length of every input, special tokens included.")] = 128
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping norm (0 = off).")] = 1.0
    ema: Annotated[float, typer.Option("--ema", help="Decay of a moving average of the weights (e.g. 0.98); the average is evaluated and exported (0 = off).")] = 0.0

    def settings(self, default_lr: float) -> dict[str, Any]:
        """The TrainConfig fields of this group: ``lr`` defaults to ``default_lr`` (the command's, for its base),
        ``warmup`` to 10% of the steps."""
        warmup = self.warmup if self.warmup is not None else max(0, round(0.1 * self.steps))
        return {"steps": self.steps, "batch_size": self.batch_size, "accumulate": self.accumulate,
                "lr": self.lr if self.lr is not None else default_lr, "weight_decay": self.weight_decay,
                "warmup": warmup, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "max_grad_norm": self.max_grad_norm, "ema": self.ema}


@dataclass(frozen=True)
class FreezeOptions(OptionGroup):
    """Weights kept fixed (all but the url command)."""

    freeze_embeddings: Annotated[bool, typer.Option("--freeze-embeddings", help="Keep the input token embeddings fixed.")] = False
    freeze_layers: Annotated[int, typer.Option(
        "--freeze-layers", help="Keep the embeddings and the first N transformer layers fixed "
                                "(partial fine-tuning: fewer weights move, faster steps; 0 = train all).")] = 0

    def settings(self) -> dict[str, Any]:
        return {"freeze_embeddings": self.freeze_embeddings, "freeze_layers": self.freeze_layers}


@dataclass(frozen=True)
class EvalOptions(OptionGroup):
    """Evaluation during training, selecting the output step."""

    eval_dataset: Annotated[Optional[Path], typer.Option("--eval", help="BEIR folder to evaluate on with exact search; the best step becomes the output model.")] = None
    eval_split: Annotated[str, typer.Option("--eval-split", help="Qrels split used to select (train or dev; never select on test).")] = "train"
    eval_every: Annotated[int, typer.Option("--eval-every", help="Evaluate every N steps (also at step 0 and at the end).")] = 0
    eval_metric: Annotated[str, typer.Option("--eval-metric", help="Metric that picks the best step (any ir_measures name).")] = "nDCG@10"
    eval_batch_size: Annotated[int, typer.Option("--eval-batch-size", help="Encoding batch size of the evaluation.")] = 64

    def config(self) -> EvalConfig:
        """Raises RetrieverError for --eval-every without --eval."""
        if self.eval_dataset is None and self.eval_every:
            raise RetrieverError("--eval-every needs --eval DATASET")
        return EvalConfig(dataset=str(self.eval_dataset) if self.eval_dataset else None, split=self.eval_split,
                          every=self.eval_every, metric=self.eval_metric, batch_size=self.eval_batch_size)


@dataclass(frozen=True)
class KeyOptions(OptionGroup):
    """MoCo keys (contriever, finetune)."""

    queue_size: Annotated[int, typer.Option("--queue-size", help="MoCo queue of past keys as negatives (0 = in-batch negatives only).")] = 0
    momentum: Annotated[float, typer.Option("--momentum", help="MoCo key encoder momentum (with --queue-size > 0).")] = 0.999

    def settings(self) -> dict[str, Any]:
        return {"queue_size": self.queue_size, "momentum": self.momentum}


@dataclass(frozen=True)
class NegativeOptions(OptionGroup):
    """Hard negatives mined from an index, the hybrid teacher and query-side training (contriever, finetune)."""

    negatives_from: Annotated[Optional[Path], typer.Option("--negatives-from", help="Index (from `retriever index build`) to mine hard negatives from.")] = None
    negative_ranks: Annotated[str, typer.Option("--negative-ranks", help="Hit ranks LO-HI (1-based, inclusive) that negatives are sampled from.")] = "10-50"
    negatives_per_query: Annotated[Optional[int], typer.Option("--negatives-per-query", help="Hard negatives per pair (default: 1 with --negatives-from, else 0).")] = None
    teacher: Annotated[str, typer.Option("--teacher", help="'hybrid': negatives ranked by BM25 + dense fusion, whose scores are distilled as soft labels (listwise KL); needs --negatives-from.")] = "none"
    distill_weight: Annotated[float, typer.Option("--distill-weight", help="--teacher hybrid: weight of the distillation loss next to in-batch InfoNCE.")] = 1.0
    teacher_temperature: Annotated[float, typer.Option("--teacher-temperature", help="--teacher hybrid: softmax temperature of the teacher's fused scores (in [0, 1]).")] = 0.05
    teacher_index: Annotated[Optional[list[Path]], typer.Option("--teacher-index", help="--teacher hybrid: another dense index of the same corpus (another model) whose scores join the fusion; repeatable; needs --teacher-weights.")] = None
    teacher_weights: Annotated[Optional[str], typer.Option("--teacher-weights", help="With --teacher-index: comma-separated fusion weights: the --negatives-from index's dense scores, each --teacher-index, then BM25 (e.g. 0.3,0.3,0.4).")] = None
    query_only: Annotated[bool, typer.Option(
        "--query-only",
        help="Train the query side only: documents keep the base model's embeddings (indexes built with the base stay "
             "valid) and the output routes queries through the trained encoder, documents through the base.")] = False

    def config(self) -> NegativesConfig:
        """Raises RetrieverError for a malformed --negative-ranks or --teacher-weights."""
        low, sep, high = self.negative_ranks.partition("-")
        try:
            ranks = int(low), int(high if sep else low)
        except ValueError:
            raise RetrieverError(f"--negative-ranks {self.negative_ranks!r}: expected LO-HI, e.g. 10-50") from None
        index = self.negatives_from
        count = self.negatives_per_query if self.negatives_per_query is not None else (1 if index else 0)
        return NegativesConfig(index=str(index) if index else None, rank_min=ranks[0], rank_max=ranks[1], per_query=count,
                               teacher=self.teacher, distill_weight=self.distill_weight,  # type: ignore[arg-type]
                               teacher_temperature=self.teacher_temperature,
                               teacher_indexes=tuple(str(p) for p in self.teacher_index or ()),
                               teacher_weights=parse_weights(self.teacher_weights, "--teacher-weights"))


@dataclass(frozen=True)
class ScratchOptions(OptionGroup):
    """The size of a model trained from nothing (contriever, url)."""

    layers: Annotated[Optional[int], typer.Option("--layers", help=f"Scratch model: layers (default: {ScratchConfig.layers}).")] = None
    hidden: Annotated[Optional[int], typer.Option("--hidden", help=f"Scratch model: hidden size (default: {ScratchConfig.hidden}).")] = None
    heads: Annotated[Optional[int], typer.Option("--heads", help=f"Scratch model: attention heads (default: {ScratchConfig.heads}).")] = None
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help=f"Scratch model: WordPiece vocabulary (default: {ScratchConfig.vocab_size}).")] = None

    def config(self, base: str, defaults: dict[str, int] | None = None) -> ScratchConfig | None:
        """The scratch model's size (the given sizes over ``defaults``) with ``--base scratch``, else None.

        Raises RetrieverError for sizes given with another base."""
        sizes = {"layers": self.layers, "hidden": self.hidden, "heads": self.heads, "vocab_size": self.vocab_size}
        given = {k: v for k, v in sizes.items() if v is not None}
        if given and base != SCRATCH:
            raise RetrieverError(f"--{', --'.join(k.replace('_', '-') for k in given)} only apply with --base scratch")
        return ScratchConfig(**((defaults or {}) | given)) if base == SCRATCH else None
