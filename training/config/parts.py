"""The parts a :class:`training.config.TrainConfig` is composed of: what is learned from, how it is optimised,
where keys come from, which weights move, the objective-specific settings and how the run is executed.

Each part is a frozen, keyword-only dataclass with defaults (usable and validated alone) whose ``validate`` checks
its own fields and raises RetrieverError naming the flag. ``TrainConfig`` inherits the fields of all of them, so a
config stays flat: ``config.lr``, ``TrainConfig(lr=...)``, ``replace(config, lr=...)`` and the keys of
``train_config.json`` are the field names, as they were before the parts existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from indexing.errors import RetrieverError
from training.config.objectives import (CodeConfig, CropConfig, MlmConfig, ScratchConfig, SentenceConfig, SqlConfig,
                                            TransliterationConfig)
from training.config.sources import EvalConfig, NegativesConfig

Objective = Literal["contriever", "finetune", "url", "crosslingual", "code", "sql"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
Anchor = Literal["crop", "sentence", "title", "title+sentence", "conclusion", "title+conclusion", "cited",
                 "title+conclusion+cited"]
ANCHORS: tuple[str, ...] = get_args(Anchor)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_all(checks: list[tuple[bool, str]]) -> None:
    """Raise RetrieverError with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise RetrieverError(message)


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """What a run learns from.

    Attributes:
        objective: ``contriever`` (two crops of one chunk), ``finetune`` (query/positive[/negatives] pairs),
            ``url`` (SimCSE: two dropout views of one URL, the first masked for ``mlm``),
            ``crosslingual`` (a sentence vs its romanization, optionally vs a translation),
            ``code`` (docstring/code and code/augmented-code pairs from source trees) or ``sql`` (demonstrations).
        data: corpus paths (contriever), the pairs file/BEIR folder (finetune) or source trees (code), as given.
        base: a model (alias, folder, hub id) or ``scratch``.
        split: for a BEIR folder as finetune data, the qrels split of the training pairs.
        max_tokens: truncation length of every input, special tokens included.
        anchor: contriever pairs from ``crop`` (two independent crops of a chunk), ``sentence`` (inverse cloze:
            a sentence against the rest of its document), ``title`` (a title against its body), ``conclusion`` (an
            abstract's concluding sentence, stated as a finding, against the rest: :func:`training.ict.conclusion_pairs`)
            or ``title+sentence`` / ``title+conclusion`` (both sets of pairs); all but ``crop`` with hard negatives when
            ``negatives.index`` is set. ``cited`` (``title+conclusion+cited`` with the other two): sentences asked of
            the *other* documents, the hybrid teacher's best one the positive (:func:`training.ict.cited_pairs`).
        label_field: ``url`` objective: a field of the URL records naming each URL's class; URLs of one class
            are then positives of each other (supervised contrastive). None = unsupervised (SimCSE).
    """

    objective: Objective
    data: tuple[str, ...]
    base: str = "minilm"
    split: str = "train"
    max_tokens: int = 128
    anchor: Anchor = "crop"
    label_field: str | None = None

    def validate(self) -> None:
        check_all([
            (self.objective in OBJECTIVES, f"unknown objective {self.objective!r}"),
            (bool(self.data), "no training data given"),
            (self.max_tokens >= 4, f"--max-tokens must be >= 4 (got {self.max_tokens})"),
            (self.anchor in ANCHORS, f"--anchor {self.anchor!r}: use one of {', '.join(ANCHORS)}"),
        ])


@dataclass(frozen=True, kw_only=True)
class OptimizationSettings:
    """How the weights are optimised.

    Attributes:
        steps: optimizer steps.
        batch_size: pairs per forward pass over all processes together (each of N processes takes batch/N).
        accumulate: forward passes per optimizer step (gradient accumulation).
        lr, weight_decay, warmup: AdamW with linear warmup over ``warmup`` steps, then linear decay to 0.
        temperature: InfoNCE temperature on cosine similarities.
        max_grad_norm: gradient clipping (0 = off).
    """

    steps: int = 1000
    batch_size: int = 32
    accumulate: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup: int = 100
    temperature: float = 0.05
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        check_all([
            (self.steps >= 1, f"--steps must be >= 1 (got {self.steps})"),
            (self.batch_size >= 1, f"--batch-size must be >= 1 (got {self.batch_size})"),
            (self.accumulate >= 1, f"--accumulate must be >= 1 (got {self.accumulate})"),
            (self.lr > 0, f"--lr must be > 0 (got {self.lr})"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (0 <= self.warmup <= self.steps, f"--warmup must be in [0, --steps] (got {self.warmup})"),
            (self.temperature > 0, f"--temperature must be > 0 (got {self.temperature})"),
            (self.max_grad_norm >= 0, f"--max-grad-norm must be >= 0 (got {self.max_grad_norm})"),
        ])


@dataclass(frozen=True, kw_only=True)
class KeySettings:
    """Where the keys (positives and negatives) and their embeddings come from.

    Attributes:
        queue_size: MoCo queue length (keys of past batches used as negatives); 0 = plain in-batch negatives,
            where keys come from the trained encoder with gradients.
        momentum: MoCo key encoder momentum (used when ``queue_size > 0`` and not ``teacher_keys``).
        teacher_keys: keys are embedded by a frozen copy of the base model in eval mode (a teacher: its
            embeddings are the targets, as in multilingual distillation); the queue, if any, holds teacher keys.
        query_only: train the query side only. Keys (documents) are embedded by the frozen base model, as an
            index built with the base embeds them, and the output is an asymmetric model (query route = the
            trained encoder, document route = the base), so indexes built with the base stay valid.
        untitled_keys: with ``query_only`` and title or sentence anchors, every key (the positive and the mined
            negatives) is a document body without its title (a sentence's positive also without that sentence,
            unless ``sentence.keep_sentence`` keeps it), so a pseudo-query never finds itself verbatim in its positive
            (the frozen base embeds each body once); otherwise keys are whole documents, as the base index holds them.
        negatives: hard negatives mined from an index (and the hybrid teacher).
    """

    queue_size: int = 0
    momentum: float = 0.999
    teacher_keys: bool = False
    query_only: bool = False
    untitled_keys: bool = False
    negatives: NegativesConfig = field(default_factory=NegativesConfig)

    def validate(self) -> None:
        check_all([
            (self.queue_size >= 0, f"--queue-size must be >= 0 (got {self.queue_size})"),
            (0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1) (got {self.momentum})"),
        ])
        self.negatives.validate()


@dataclass(frozen=True, kw_only=True)
class WeightSettings:
    """Which weights move, and what is made of them.

    Attributes:
        freeze_embeddings: keep the input token embeddings fixed.
        freeze_layers: also keep the embeddings and the first this many transformer layers fixed (0 = none):
            fewer weights move away from the base and backward stops at the first trained layer (faster steps).
        ema: decay of an exponential moving average of the trained weights (0 = off). When on, the average is what
            is evaluated, kept as the best step and exported (Polyak averaging: steadier than any single step).
        adversarial: norm of the adversarial perturbation of each example's input embeddings (FGM); 0 = off.
        scratch: the size of a model trained from nothing (``base`` ``scratch``); None otherwise.
    """

    freeze_embeddings: bool = False
    freeze_layers: int = 0
    ema: float = 0.0
    adversarial: float = 0.0
    scratch: ScratchConfig | None = None

    def validate(self) -> None:
        check_all([
            (0.0 <= self.ema < 1.0, f"--ema must be in [0, 1) (got {self.ema})"),
            (self.adversarial >= 0, f"--adversarial must be >= 0 (got {self.adversarial})"),
            (self.freeze_layers >= 0, f"--freeze-layers must be >= 0 (got {self.freeze_layers})"),
        ])
        if self.scratch is not None:
            self.scratch.validate()


@dataclass(frozen=True, kw_only=True)
class ObjectiveSettings:
    """The settings of one objective each (see :mod:`training.config.objectives`); the others keep defaults.

    Attributes:
        crop: contriever crops and token augmentations. sentence: sentence/title anchors.
        mlm: the masked-language-modelling auxiliary loss (``url`` objective only); None = off.
        transliteration: the crosslingual objective. code: the code objective. sql: the sql objective.
    """

    crop: CropConfig = field(default_factory=CropConfig)
    sentence: SentenceConfig = field(default_factory=SentenceConfig)
    mlm: MlmConfig | None = None
    transliteration: TransliterationConfig = field(default_factory=TransliterationConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    sql: SqlConfig = field(default_factory=SqlConfig)

    def validate(self) -> None:
        for part in (self.crop, self.sentence, self.transliteration, self.code, self.sql):
            part.validate()
        if self.mlm is not None:
            self.mlm.validate()


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """How the run executes, is checkpointed and selects its output.

    Attributes:
        seed: seeds data order, crops, negatives sampling and torch.
        precision: ``auto`` (bf16 on GPUs that have it, else fp16; on the CPU bf16 where native, else fp32),
            ``fp32``, ``bf16``, ``fp16`` (GPU only); see :func:`training.run.resolve_precision`.
        save_every: checkpoint every this many steps (0 = only at the end and on interruption).
        keep_checkpoints: how many recent checkpoints stay on disk.
        eval: periodic evaluation on a BEIR folder; the best step becomes the output model.
    """

    seed: int = 0
    precision: Precision = "auto"
    save_every: int = 0
    keep_checkpoints: int = 1
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_all([
            (self.precision in PRECISIONS, f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"),
            (self.save_every >= 0, f"--save-every must be >= 0 (got {self.save_every})"),
            (self.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1 (got {self.keep_checkpoints})"),
        ])
        self.eval.validate()
