"""Frozen training configuration, validated once and saved next to the trained model (``train_config.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from indexing.errors import RetrieverError

Objective = Literal["contriever", "finetune", "url", "crosslingual", "code", "sql"]
OBJECTIVES: tuple[str, ...] = ("contriever", "finetune", "url", "crosslingual", "code", "sql")
Anchor = Literal["crop", "sentence", "title", "title+sentence", "conclusion", "title+conclusion", "cited",
                 "title+conclusion+cited"]
ANCHORS: tuple[str, ...] = get_args(Anchor)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
SCRATCH = "scratch"
"""The ``--base`` value that trains a tokenizer and a BERT from nothing."""

CONFIG_FILE = "train_config.json"


@dataclass(frozen=True)
class CropConfig:
    """Contriever's independent cropping and token augmentations (unsupervised objective only).

    Attributes:
        ratio_min, ratio_max: each crop keeps a uniformly drawn fraction in ``[ratio_min, ratio_max]`` of a chunk.
        chunk_tokens: documents are cut into consecutive chunks of this many tokens; crops come from one chunk.
        delete, replace, mask: per-token probabilities of deletion, replacement by a random token, and
            replacement by the mask token (applied independently, in that order).
    """

    ratio_min: float = 0.1
    ratio_max: float = 0.5
    chunk_tokens: int = 256
    delete: float = 0.1
    replace: float = 0.0
    mask: float = 0.0

    def validate(self) -> None:
        if not 0.0 < self.ratio_min <= self.ratio_max <= 1.0:
            raise RetrieverError(f"crop ratios must satisfy 0 < crop-min <= crop-max <= 1 (got {self.ratio_min}, {self.ratio_max})")
        if self.chunk_tokens < 2:
            raise RetrieverError(f"--chunk-tokens must be >= 2 (got {self.chunk_tokens})")
        for name in ("delete", "replace", "mask"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise RetrieverError(f"--{name} probability must be in [0, 1) (got {value})")


@dataclass(frozen=True)
class SentenceConfig:
    """Inverse-cloze anchors (``--anchor sentence``): a sentence of a document against the rest of it.

    Attributes:
        per_document: pairs drawn per document (distinct sentences).
        min_words: shortest sentence used as a query.
        keep_sentence: probability that the sentence stays in its positive (ICT keeps it 10% of the time).
    """

    per_document: int = 4
    min_words: int = 6
    keep_sentence: float = 0.1

    def validate(self) -> None:
        if self.per_document < 1:
            raise RetrieverError(f"--sentences-per-doc must be >= 1 (got {self.per_document})")
        if self.min_words < 1:
            raise RetrieverError(f"--min-sentence-words must be >= 1 (got {self.min_words})")
        if not 0.0 <= self.keep_sentence <= 1.0:
            raise RetrieverError(f"--keep-sentence must be in [0, 1] (got {self.keep_sentence})")


@dataclass(frozen=True)
class ScratchConfig:
    """Size of a BERT trained from nothing (``--base scratch``), with a WordPiece tokenizer trained on the corpus."""

    layers: int = 6
    hidden: int = 384
    heads: int = 12
    vocab_size: int = 16384

    def validate(self) -> None:
        if min(self.layers, self.hidden, self.heads) < 1:
            raise RetrieverError("--layers, --hidden and --heads must be >= 1")
        if self.hidden % self.heads:
            raise RetrieverError(f"--hidden {self.hidden} must be a multiple of --heads {self.heads}")
        if self.vocab_size < 64:
            raise RetrieverError(f"--vocab-size must be >= 64 (got {self.vocab_size})")


@dataclass(frozen=True)
class MlmConfig:
    """Masked-language modelling as an auxiliary loss (``url`` objective): BERT masking of the query view.

    Attributes:
        probability: per-token chance of being predicted (80% masked, 10% random, 10% kept).
        weight: the loss is contrastive + ``weight`` * MLM.
    """

    probability: float = 0.15
    weight: float = 1.0

    def validate(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise RetrieverError(f"--mlm-probability must be in (0, 1) (got {self.probability})")
        if self.weight < 0:
            raise RetrieverError(f"--mlm-weight must be >= 0 (got {self.weight})")


def parse_weights(text: str | None, flag: str) -> tuple[float, ...]:
    """``"0.3,0.3,0.4"`` -> ``(0.3, 0.3, 0.4)``; None or empty -> ``()``. Raises RetrieverError naming ``flag``."""
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise RetrieverError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.3,0.3,0.4") from None


@dataclass(frozen=True)
class NegativesConfig:
    """Hard negatives mined from an index (supervised pairs and sentence anchors).

    Attributes:
        index: an index directory built by ``retriever index build``; None = no mining.
        rank_min, rank_max: negatives are sampled among the hits ranked ``rank_min..rank_max`` (1-based,
            inclusive), known positives skipped.
        per_query: hard negatives per training pair (0 = in-batch negatives only).
        teacher: ``none`` (negatives ranked by the index's dense encoder, all equally negative) or ``hybrid``
            (ranked by BM25 + dense score fusion, :mod:`retriever.search.hybrid`; its fused scores of the positive and
            the sampled negatives become soft labels, distilled with a listwise KL loss).
        distill_weight: weight of that KL term next to the in-batch InfoNCE (``teacher`` hybrid only).
        teacher_temperature: the teacher's fused scores (min-max normalised, in [0, 1]) are divided by this
            before the softmax.
        teacher_indexes: more dense indexes of the same corpus (built with other models) whose scores join the
            hybrid teacher's fusion (``teacher`` hybrid only).
        teacher_weights: with ``teacher_indexes``, the fusion weights: the index's dense scores, then each of
            ``teacher_indexes``, then BM25 (each list min-max normalised; see
            :func:`retriever.search.fusion.weighted_score_fusion`). Empty: the hybrid's default alpha, which needs no
            ``teacher_indexes``.
    """

    index: str | None = None
    rank_min: int = 10
    rank_max: int = 50
    per_query: int = 1
    teacher: Literal["none", "hybrid"] = "none"
    distill_weight: float = 1.0
    teacher_temperature: float = 0.05
    teacher_indexes: tuple[str, ...] = ()
    teacher_weights: tuple[float, ...] = ()

    def validate(self) -> None:
        if not 1 <= self.rank_min <= self.rank_max:
            raise RetrieverError(f"negative ranks must satisfy 1 <= min <= max (got {self.rank_min}:{self.rank_max})")
        if self.per_query < 0:
            raise RetrieverError(f"--negatives-per-query must be >= 0 (got {self.per_query})")
        if self.teacher not in ("none", "hybrid"):
            raise RetrieverError(f"--teacher must be 'none' or 'hybrid' (got {self.teacher!r})")
        if self.teacher == "hybrid" and (self.index is None or self.per_query < 1):
            raise RetrieverError("--teacher hybrid needs --negatives-from INDEX and --negatives-per-query >= 1")
        if self.distill_weight < 0 or self.teacher_temperature <= 0:
            raise RetrieverError("--distill-weight must be >= 0 and --teacher-temperature > 0")
        if (self.teacher_indexes or self.teacher_weights) and self.teacher != "hybrid":
            raise RetrieverError("--teacher-index and --teacher-weights need --teacher hybrid")
        if self.teacher_indexes and len(self.teacher_weights) != len(self.teacher_indexes) + 2:
            raise RetrieverError(
                f"--teacher-weights needs {len(self.teacher_indexes) + 2} weights with {len(self.teacher_indexes)} "
                f"--teacher-index (the index's dense scores, each teacher index, BM25); got {len(self.teacher_weights)}")
        if self.teacher_weights and not self.teacher_indexes:
            raise RetrieverError("--teacher-weights goes with --teacher-index (without it, the hybrid's alpha applies)")
        if any(not (w >= 0.0 and w != float("inf")) for w in self.teacher_weights) or (
                self.teacher_weights and sum(self.teacher_weights) <= 0.0):
            raise RetrieverError(f"--teacher-weights must be >= 0, finite, and not all 0 (got {list(self.teacher_weights)})")


@dataclass(frozen=True)
class TransliterationConfig:
    """The transliteration contrast (``crosslingual`` objective only; see :mod:`training.transliteration`).

    Attributes:
        translation_ratio: probability that an example whose text has linked translations pairs it with a
            translation instead of its romanization (0 = transliteration pairs only).
        group_field: the corpus field whose equal values link translations of one another.
        max_chars: sentence units are cut so that their romanization has at most this many characters.
        anchor_ratio: probability that an example pairs a text with itself (with ``teacher_keys``: holds the
            model's embedding of every text where the base model had it).
    """

    translation_ratio: float = 0.0
    group_field: str = "group"
    max_chars: int = 200
    anchor_ratio: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.translation_ratio <= 1.0:
            raise RetrieverError(f"--translation-ratio must be in [0, 1] (got {self.translation_ratio})")
        if not 0.0 <= self.anchor_ratio < 1.0:
            raise RetrieverError(f"--anchor-ratio must be in [0, 1) (got {self.anchor_ratio})")
        if self.max_chars < 8:
            raise RetrieverError(f"--max-chars must be >= 8 (got {self.max_chars})")


@dataclass(frozen=True)
class CodeConfig:
    """Self-supervised code-search pairs (``code`` objective; see :mod:`training.code_data`).

    Attributes:
        exclude: corpora whose functions are removed from training (by normalized hash), e.g. the CoSQA folder.
        doc_ratio: share of examples that pair a docstring summary with its code (the rest: code with code).
        augment: probability of each program-level augmentation per code view.
        token_delete, token_replace: per-token probabilities on the docstring side; token_swap: probability of
            one swap of two tokens.
        validation: functions with docstrings held out as the validation set (0 = none).
        min_lines: shortest function kept, in lines.
    """

    exclude: tuple[str, ...] = ()
    doc_ratio: float = 0.5
    augment: float = 0.5
    token_delete: float = 0.1
    token_replace: float = 0.05
    token_swap: float = 0.3
    validation: int = 500
    min_lines: int = 3

    def validate(self) -> None:
        for name in ("doc_ratio", "augment", "token_delete", "token_replace", "token_swap"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise RetrieverError(f"--{name.replace('_', '-')} must be in [0, 1] (got {value})")
        if self.validation < 0 or self.min_lines < 1:
            raise RetrieverError("--validation must be >= 0 and --min-lines >= 1")


@dataclass(frozen=True)
class SqlConfig:
    """Curriculum pairs from a SQL demonstration pool (``sql`` objective; see :mod:`training.sql_data`).

    Attributes:
        curriculum: fraction of the run over which the chance of hard positives/negatives grows from 0 to 1.
        negatives: negatives per example (besides in-batch ones).
        hard_pool: the most similar-looking other-label queries that count as hard negatives.
        anchors: ``all`` (every query is an anchor, ``none`` ones too: retrieval among helped demonstrations then
            also learns where a query that nothing helped sits; chosen on the dev splits, 78% of the oracle against
            65%, ``benchmarks/results/sql-design.md``) or ``helped`` (only queries some rule set helped
            are anchors; ``none`` queries serve as negatives only).
        label_groups: in-batch keys with the anchor's label count as positives (supervised contrastive), not as
            negatives.
    """

    curriculum: float = 0.5
    negatives: int = 1
    hard_pool: int = 5
    anchors: str = "all"
    label_groups: bool = True

    def validate(self) -> None:
        if not 0.0 <= self.curriculum <= 1.0:
            raise RetrieverError(f"--curriculum must be in [0, 1] (got {self.curriculum})")
        if self.negatives < 0 or self.hard_pool < 1:
            raise RetrieverError("--negatives must be >= 0 and --hard-pool >= 1")
        if self.anchors not in ("helped", "all"):
            raise RetrieverError(f"--anchors must be helped or all (got {self.anchors!r})")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation on a BEIR folder with exact in-memory search; the best step becomes the output model.

    Attributes:
        dataset: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); None = no evaluation.
        split: the qrels split to select on. Use ``train`` (or a dev split): selecting on test leaks.
        every: evaluate every this many optimizer steps (and at step 0 and at the end); 0 = start and end only.
        metric: the ir_measures metric that picks the best step.
        batch_size: encoding batch size.
    """

    dataset: str | None = None
    split: str = "train"
    every: int = 0
    metric: str = "nDCG@10"
    batch_size: int = 64

    def validate(self) -> None:
        if self.every < 0:
            raise RetrieverError(f"--eval-every must be >= 0 (got {self.every})")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved as ``train_config.json`` and checked on ``--resume``).

    Attributes:
        objective: ``contriever`` (two crops of one chunk), ``finetune`` (query/positive[/negatives] pairs),
            ``url`` (SimCSE: two dropout views of one URL, the first masked for ``mlm``),
            ``crosslingual`` (a sentence vs its romanization, optionally vs a translation) or
            ``code`` (docstring/code and code/augmented-code pairs from source trees).
        data: corpus paths (contriever), the pairs file/BEIR folder (finetune) or source trees (code), as given.
        base: a model (alias, folder, hub id) or ``scratch``.
        steps: optimizer steps.
        batch_size: pairs per forward pass over all processes together (each of N processes takes batch/N).
        accumulate: forward passes per optimizer step (gradient accumulation).
        lr, weight_decay, warmup: AdamW with linear warmup over ``warmup`` steps, then linear decay to 0.
        temperature: InfoNCE temperature on cosine similarities.
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
        max_tokens: truncation length of every input, special tokens included.
        max_grad_norm: gradient clipping (0 = off).
        ema: decay of an exponential moving average of the trained weights (0 = off). When on, the average is what
            is evaluated, kept as the best step and exported (Polyak averaging: steadier than any single step).
        seed: seeds data order, crops, negatives sampling and torch.
        precision: ``auto`` (bf16 on GPUs that have it, else fp16; fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
        freeze_embeddings: keep the input token embeddings fixed.
        freeze_layers: also keep the embeddings and the first this many transformer layers fixed (0 = none):
            fewer weights move away from the base and backward stops at the first trained layer (faster steps).
        split: for a BEIR folder as finetune data, the qrels split of the training pairs.
        save_every: checkpoint every this many steps (0 = only at the end and on interruption).
        keep_checkpoints: how many recent checkpoints stay on disk.
        anchor: contriever pairs from ``crop`` (two independent crops of a chunk), ``sentence`` (inverse cloze:
            a sentence against the rest of its document), ``title`` (a title against its body), ``conclusion`` (an
            abstract's concluding sentence, stated as a finding, against the rest: :func:`training.ict.conclusion_pairs`)
            or ``title+sentence`` / ``title+conclusion`` (both sets of pairs); all but ``crop`` with hard negatives when
            ``negatives.index`` is set. ``cited`` (``title+conclusion+cited`` with the other two): sentences asked of
            the *other* documents, the hybrid teacher's best one the positive (:func:`training.ict.cited_pairs`).
        adversarial: norm of the adversarial perturbation of each example's input embeddings (FGM); 0 = off.
        mlm: the masked-language-modelling auxiliary loss (``url`` objective only); None = off.
        label_field: ``url`` objective: a field of the URL records naming each URL's class; URLs of one class
            are then positives of each other (supervised contrastive). None = unsupervised (SimCSE).
    """

    objective: Objective
    data: tuple[str, ...]
    base: str = "minilm"
    steps: int = 1000
    batch_size: int = 32
    accumulate: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup: int = 100
    temperature: float = 0.05
    queue_size: int = 0
    momentum: float = 0.999
    teacher_keys: bool = False
    query_only: bool = False
    untitled_keys: bool = False
    max_tokens: int = 128
    max_grad_norm: float = 1.0
    ema: float = 0.0
    seed: int = 0
    precision: Precision = "auto"
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    split: str = "train"
    save_every: int = 0
    keep_checkpoints: int = 1
    anchor: Anchor = "crop"
    crop: CropConfig = field(default_factory=CropConfig)
    sentence: SentenceConfig = field(default_factory=SentenceConfig)
    scratch: ScratchConfig | None = None
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    adversarial: float = 0.0
    mlm: MlmConfig | None = None
    label_field: str | None = None
    transliteration: TransliterationConfig = field(default_factory=TransliterationConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    sql: SqlConfig = field(default_factory=SqlConfig)

    def validate(self) -> "TrainConfig":
        """Check every value; raises RetrieverError naming the flag. Returns self."""
        checks = [
            (self.objective in OBJECTIVES, f"unknown objective {self.objective!r}"),
            (bool(self.data), "no training data given"),
            (self.steps >= 1, f"--steps must be >= 1 (got {self.steps})"),
            (self.batch_size >= 1, f"--batch-size must be >= 1 (got {self.batch_size})"),
            (self.accumulate >= 1, f"--accumulate must be >= 1 (got {self.accumulate})"),
            (self.lr > 0, f"--lr must be > 0 (got {self.lr})"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (0 <= self.warmup <= self.steps, f"--warmup must be in [0, --steps] (got {self.warmup})"),
            (self.temperature > 0, f"--temperature must be > 0 (got {self.temperature})"),
            (self.queue_size >= 0, f"--queue-size must be >= 0 (got {self.queue_size})"),
            (0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1) (got {self.momentum})"),
            (self.max_tokens >= 4, f"--max-tokens must be >= 4 (got {self.max_tokens})"),
            (self.max_grad_norm >= 0, f"--max-grad-norm must be >= 0 (got {self.max_grad_norm})"),
            (0.0 <= self.ema < 1.0, f"--ema must be in [0, 1) (got {self.ema})"),
            (self.anchor in ANCHORS, f"--anchor {self.anchor!r}: use one of {', '.join(ANCHORS)}"),
            (self.anchor == "crop" or self.objective == "contriever", "--anchor applies to the contriever objective only"),
            ("cited" not in self.anchor or self.negatives.teacher == "hybrid",
             f"--anchor {self.anchor}: cited sentences need --teacher hybrid (the teacher picks their positive)"),
            (self.negatives.index is None or self.objective == "finetune" or self.anchor != "crop",
             "--negatives-from needs pairs: finetune, or contriever with --anchor sentence or title"),
            (self.precision in PRECISIONS, f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"),
            (self.save_every >= 0, f"--save-every must be >= 0 (got {self.save_every})"),
            (self.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1 (got {self.keep_checkpoints})"),
            ((self.base == SCRATCH) == (self.scratch is not None), "scratch sizes are given only with --base scratch"),
            (not (self.base == SCRATCH and self.objective not in ("contriever", "url")), f"{self.objective} needs a trained --base, not scratch"),
            (self.adversarial >= 0, f"--adversarial must be >= 0 (got {self.adversarial})"),
            (self.freeze_layers >= 0, f"--freeze-layers must be >= 0 (got {self.freeze_layers})"),
            (not (self.freeze_layers and self.base == SCRATCH), "--freeze-layers needs a trained --base, not scratch"),
            (self.mlm is None or self.objective == "url", "masked-language modelling is part of the url objective only"),
            (self.label_field is None or self.objective == "url", "--label-field applies to the url objective only"),
            (self.label_field is None or self.queue_size == 0, "--label-field needs in-batch negatives (the queue holds no classes)"),
            (not (self.teacher_keys and self.base == SCRATCH), "--teacher-keys needs a trained --base, not scratch"),
            (not (self.query_only and self.base == SCRATCH), "--query-only needs a trained --base, not scratch"),
            (not (self.query_only and self.objective not in ("contriever", "finetune")),
             "--query-only applies to the contriever and finetune objectives"),
            (not self.untitled_keys or (self.query_only and self.objective == "contriever" and self.anchor != "crop"),
             "--untitled-keys applies to --query-only contriever training with title or sentence anchors"),
        ]
        for ok, message in checks:
            if not ok:
                raise RetrieverError(message)
        self.crop.validate()
        self.sentence.validate()
        self.negatives.validate()
        self.eval.validate()
        self.transliteration.validate()
        self.code.validate()
        self.sql.validate()
        if self.scratch is not None:
            self.scratch.validate()
        if self.mlm is not None:
            self.mlm.validate()
        return self

    # --- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["data"] = list(self.data)
        record["code"]["exclude"] = list(self.code.exclude)
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values["data"] = tuple(values.get("data", ()))
        values["crop"] = CropConfig(**record.get("crop", {}))
        values["sentence"] = SentenceConfig(**record.get("sentence", {}))
        negatives = dict(record.get("negatives", {}))
        values["negatives"] = NegativesConfig(**{**negatives,
                                                 "teacher_indexes": tuple(negatives.get("teacher_indexes", ())),
                                                 "teacher_weights": tuple(negatives.get("teacher_weights", ()))})
        values["eval"] = EvalConfig(**record.get("eval", {}))
        values["transliteration"] = TransliterationConfig(**record.get("transliteration", {}))
        code = dict(record.get("code", {}))
        values["code"] = CodeConfig(**{**code, "exclude": tuple(code.get("exclude", ()))})
        values["sql"] = SqlConfig(**record.get("sql", {}))
        values["scratch"] = ScratchConfig(**record["scratch"]) if record.get("scratch") else None
        values["mlm"] = MlmConfig(**record["mlm"]) if record.get("mlm") else None
        return cls(**values)

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint (how often to save may change)."""
        return replace(self, save_every=0, keep_checkpoints=1).to_dict()

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path
