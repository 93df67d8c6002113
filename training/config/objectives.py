"""Objective-specific settings of a training run, each a frozen dataclass with its own ``validate`` (raises
RetrieverError naming the flag): crops, sentence anchors, scratch model sizes, masked-language modelling,
transliteration, code and SQL pairs. JSON keys: the field names, nested under the :class:`TrainConfig` field."""

from __future__ import annotations

from dataclasses import dataclass

from indexing.errors import RetrieverError


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
