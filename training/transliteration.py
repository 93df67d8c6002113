"""TransliCo-style training data: each sentence against its uroman romanization, and optionally a translation.

Liu et al. (TransliCo) contrast a sentence with its Latin transliteration so that the two scripts land in one
region of the embedding space (their Transliteration Contrastive Modeling). Here every example is an
(anchor, positive) pair for the shared trainer's in-batch InfoNCE on mean-pooled states:

- transliteration pair: a sentence unit and its romanization (units whose romanization is identical to them,
  plain ASCII, teach nothing and are skipped);
- translation pair (when the corpus links translations with a ``group`` field and ``translation_ratio > 0``):
  the unit and a random other member of its group, with probability ``translation_ratio``.

Either side is the query with probability 1/2, so both "romanized query -> native passage" and the reverse are
trained; the query side gets the model's query prefix and the other side its document prefix.

With ``teacher=True`` (the trainer's frozen teacher keys, ``--teacher-keys``) the examples are distillation
targets instead. The key is a target embedded by the frozen base model: the text itself or, for a non-Latin text
with translations, with probability ``translation_ratio`` a translation (as in Reimers and Gurevych's multilingual
distillation). The query is the text's romanization or, with probability ``anchor_ratio``, the text itself, so a
romanized text and its native original head for the same target, and native texts stay where the base model put
them (or move to their translation). Both sides get the same prefix (query or document, at random).
Documents are cut into sentence units whose romanization stays under ``max_chars`` characters (a romanized
sentence is the longer side: pinyin or Thai in Latin letters takes several letters per character).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexing.documents import Document
from indexing.errors import RetrieverError
from training.data import EpochOrder, Example, example_rng, tokenize_texts

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?。！？।॥؟])\s+|(?<=[。！？])")


def sentence_units(text: str, romanized_length, max_chars: int) -> list[str]:
    """Cut ``text`` at sentence ends, then halve (at the space nearest the middle, else mid-string) every piece
    whose romanization (``romanized_length(piece)`` characters) exceeds ``max_chars``. Empty pieces are dropped.
    """
    out: list[str] = []
    pending = [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]
    while pending:
        piece = pending.pop(0)
        if len(piece) < 2 or romanized_length(piece) <= max_chars:
            out.append(piece)
            continue
        middle = len(piece) // 2
        spaces = [m.start() for m in re.finditer(r"\s", piece)]
        cut = min(spaces, key=lambda i: abs(i - middle)) if spaces else middle
        left, right = piece[:cut].strip(), piece[cut:].strip()
        if not left or not right:
            left, right = piece[:middle], piece[middle:]
        pending[:0] = [left, right]
    return out


@dataclass(frozen=True)
class Unit:
    """A sentence unit, its romanization (None when identical) and its translation group (None when none)."""

    text: str
    roman: str | None
    group: str | None


def build_units(docs: Iterable[Document], *, max_chars: int, group_field: str = "group") -> list[Unit]:
    """Sentence units of every document, romanized with uroman.

    A document with a ``group_field`` value is one unit (translations are aligned as wholes: it is not cut);
    other documents are cut with :func:`sentence_units`.
    """
    from retriever.encoders.crosslingual.transliterate import romanize

    def roman_of(piece: str) -> str:
        return romanize([piece])[0]

    units = []
    for doc in docs:
        group = doc.metadata.get(group_field)
        group = None if group in (None, "") else str(group)
        pieces = [doc.full_text().strip()] if group is not None else sentence_units(doc.full_text(), lambda p: len(roman_of(p)), max_chars)
        for piece in pieces:
            if not piece:
                continue
            roman = roman_of(piece)
            units.append(Unit(piece, roman if roman.strip() and roman != piece else None, group))
    return units


class TransliterationData:
    """The shared trainer's :class:`training.data.TrainingData` for the ``crosslingual`` objective (no hard negatives).

    Args:
        units: sentence units (see :func:`build_units`).
        tokenizer: the model's tokenizer.
        translation_ratio: probability that an example with translations is a translation pair.
        max_tokens: truncation of every side (special tokens are added by the trainer's collate).
        seed: data order and per-example choices (see :mod:`training.data`).
        teacher: keys are distillation targets of a frozen teacher (see the module docstring).
        anchor_ratio: probability that an example pairs a text with itself (every unit then gives examples).

    Raises:
        RetrieverError: no unit gives a pair (nothing to romanize and no translations).
    """

    negatives_per_example = 0

    def __init__(self, units: Sequence[Unit], tokenizer: Any, *, translation_ratio: float, max_tokens: int, seed: int,
                 query_prefix: str = "", document_prefix: str = "", teacher: bool = False, anchor_ratio: float = 0.0):
        members: dict[str, list[int]] = {}
        for i, unit in enumerate(units):
            if unit.group is not None:
                members.setdefault(unit.group, []).append(i)
        self.partners = {g: idx for g, idx in members.items() if len(idx) > 1} if translation_ratio > 0 else {}
        self.units = list(units)
        self.items = [i for i, u in enumerate(units)
                      if u.roman is not None or (u.group in self.partners) or (anchor_ratio > 0 and u.text.strip())]
        if not self.items:
            raise RetrieverError("no training pair: no text changes when romanized and no translations are linked")
        self.tokenizer = tokenizer
        self.translation_ratio = translation_ratio
        self.max_tokens = max_tokens
        self.seed = seed
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.teacher = teacher
        self.anchor_ratio = anchor_ratio
        self.order = EpochOrder(len(self.items), seed)

    def __len__(self) -> int:
        return len(self.items)

    def pair(self, position: int) -> tuple[str, str, str]:
        """(query text, key text, kind) of example ``position``, prefixes not yet added; kind is ``transliteration``,
        ``translation`` or ``anchor``."""
        query, key, kind, _ = self._pair(position)
        return query, key, kind

    def _pair(self, position: int) -> tuple[str, str, str, bool]:
        """:meth:`pair` and whether the key side gets the query prefix too (teacher mode: same prefix both sides)."""
        unit = self.units[self.items[self.order(position)]]
        rng = example_rng(self.seed, position)
        others = [i for i in self.partners.get(unit.group, ()) if self.units[i] is not unit] if unit.group else []
        if self.teacher:
            return self._teacher_pair(unit, others, rng)
        anchor_only = unit.roman is None and not others
        if anchor_only or (self.anchor_ratio > 0 and rng.random() < self.anchor_ratio):
            partner, kind = unit.text, "anchor"
        elif others and (unit.roman is None or rng.random() < self.translation_ratio):
            partner = self.units[others[int(rng.integers(len(others)))]].text
            kind = "translation"
        else:
            partner, kind = unit.roman, "transliteration"
        assert partner is not None
        anchor = unit.text
        if rng.random() < 0.5:
            anchor, partner = partner, anchor
        return anchor, partner, kind, False

    def _teacher_pair(self, unit: Unit, others: list[int], rng: np.random.Generator) -> tuple[str, str, str, bool]:
        """Teacher mode: the key (target) is the text itself, or, for a non-Latin text with translations, with
        probability ``translation_ratio`` a translation (multilingual distillation); the query is the romanization
        (or, with probability ``anchor_ratio``, the text itself), so a romanized text and its native original head for
        the same target. Latin-script texts (nothing to romanize) are anchored to themselves."""
        target, kind = unit.text, "anchor"
        if unit.roman is not None and others and rng.random() < self.translation_ratio:
            target, kind = self.units[others[int(rng.integers(len(others)))]].text, "translation"
        query = unit.text
        if unit.roman is not None and not (self.anchor_ratio > 0 and rng.random() < self.anchor_ratio):
            query, kind = unit.roman, "transliteration"
        return query, target, kind, bool(rng.random() < 0.5)

    def examples(self, start: int, count: int) -> list[Example]:
        pairs = [self._pair(p) for p in range(start, start + count)]
        queries = [(self.query_prefix if not self.teacher or as_query else self.document_prefix) + q for q, _, _, as_query in pairs]
        keys = [(self.query_prefix if as_query else self.document_prefix) + k for _, k, _, as_query in pairs]
        queries_ids = tokenize_texts(self.tokenizer, queries, max_length=self.max_tokens)
        keys_ids = tokenize_texts(self.tokenizer, keys, max_length=self.max_tokens)
        return [Example(q, k) for q, k in zip(queries_ids, keys_ids)]

    def describe(self) -> dict[str, Any]:
        roman = sum(1 for i in self.items if self.units[i].roman is not None)
        return {"kind": "transliteration", "units": len(self.units), "items": len(self.items), "romanizable": roman,
                "translation_groups": len(self.partners), "translation_ratio": self.translation_ratio,
                "teacher": self.teacher, "anchor_ratio": self.anchor_ratio,
                "mean_unit_chars": round(float(np.mean([len(self.units[i].text) for i in self.items])), 1)}
