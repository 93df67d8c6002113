"""Inverse cloze task pairs (Lee et al., 2019; an ablation of Contriever): a sentence of a document is the
query, the rest of the document is its positive. Title pairs: a document's title is the query, its body the
positive (the title-body pairs of E5's and GTR's weakly supervised pre-training data). Conclusion pairs: an
abstract's concluding sentence, stated as a finding (its lead-in such as "CONCLUSIONS" or "These results suggest
that" dropped), against the rest of the abstract: the kind of statement a fact-checking claim or a citing
sentence makes about a paper. Cited pairs: a sentence asked of the *other* documents (its own is excluded), the
hybrid teacher's best answer the positive: the way a citing sentence points at another paper.

Unsupervised: only corpus text is read. The pairs then go through the same hard-negative mining and
:class:`training.data.PairData` as supervised pairs (the source document is the known positive), so a
model adapted to a corpus sees hard, in-domain negatives rather than near-trivial in-batch ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from indexing.documents import Document
from training.config import SentenceConfig
from training.pairs import LabeledPair

# Hand-written: a regex splitter at ". ", "! ", "? " followed by an upper-case letter, digit or bracket, or at a
# free-standing " . " (tokenized, lower-cased corpora such as MEDLINE and CISI write sentences that way).
# Sentence splitters with models (nltk punkt, spaCy) need data downloads; this is enough to pick anchors.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])|(?<=\s[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (whitespace-trimmed, empty ones dropped), in order."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def sentence_pairs(docs: Iterable[Document], config: SentenceConfig, *, seed: int,
                   untitled: bool = False) -> list[LabeledPair]:
    """Up to ``config.per_document`` pairs per document: (sentence, document without that sentence).

    A sentence qualifies with at least ``config.min_words`` words; a document needs at least two sentences
    (one to ask, one to answer). With probability ``config.keep_sentence`` the sentence stays in the
    positive (as in ICT, so the model still learns lexical matching). The title stays, unless ``untitled``
    (then the positive is the body alone, like a title pair's). Deterministic in ``seed`` and the document order.

    Returns pairs whose ``positive_id`` and ``known_positive_ids`` are the source document's id.
    """
    rng = np.random.default_rng(seed)
    pairs: list[LabeledPair] = []
    for doc in docs:
        sentences = split_sentences(doc.text)
        if len(sentences) < 2:
            continue
        for index in _sampled(sentences, config, rng):
            keep = rng.random() < config.keep_sentence
            rest = sentences if keep else sentences[:index] + sentences[index + 1 :]
            positive = Document(doc.id, "" if untitled else doc.title, " ".join(rest)).full_text()
            pairs.append(LabeledPair(sentences[index], positive, query_id=f"{doc.id}#s{index}", positive_id=doc.id,
                                     known_positive_ids=frozenset([doc.id])))
    return pairs


def cited_pairs(docs: Iterable[Document], *, per_document: int, min_words: int) -> list[LabeledPair]:
    """The first ``per_document`` sentences of each document's body (of at least ``min_words`` words: an
    abstract's opening, where a paper states what is known from others), each a query whose positive the
    hybrid teacher picks among the *other* documents when negatives are mined (``teacher_positive``). Every
    document holding the sentence verbatim is a known positive, so it is skipped; a sentence found in several
    documents is one pair. Deterministic: no sampling.
    """
    owners: dict[str, set[str]] = {}
    drawn: list[tuple[str, str]] = []
    for doc in docs:
        sentences = split_sentences(doc.text)
        for sentence in sentences:
            owners.setdefault(sentence, set()).add(doc.id)
        opening = [s for s in sentences if len(s.split()) >= min_words][:per_document]
        drawn += [(doc.id, s) for s in opening]
    pairs: list[LabeledPair] = []
    for doc_id, sentence in drawn:
        if sentence in owners:
            pairs.append(LabeledPair(sentence, "", query_id=f"{doc_id}#cited{len(pairs)}",
                                     known_positive_ids=frozenset(owners.pop(sentence)), teacher_positive=True))
    return pairs


def _sampled(sentences: list[str], config: SentenceConfig, rng: np.random.Generator) -> list[int]:
    """Indices of up to ``config.per_document`` sentences of >= ``config.min_words`` words, drawn without
    replacement, in document order."""
    eligible = [i for i, s in enumerate(sentences) if len(s.split()) >= config.min_words]
    if not eligible:
        return []
    count = min(config.per_document, len(eligible))
    return sorted(rng.choice(eligible, size=count, replace=False).tolist())


def title_pairs(docs: Iterable[Document], *, min_words: int) -> list[LabeledPair]:
    """One pair per document: (title, body). A document qualifies with a title of at least ``min_words`` words and
    a non-empty body; the body is the positive without the title, so the pair cannot be solved by copying it.
    A document without such a title asks with its text's first sentence for the rest instead (when that sentence
    has ``min_words`` words and another follows): collections such as MEDLINE keep the title as the first sentence.

    Returns pairs whose ``positive_id`` and ``known_positive_ids`` are the document's id (deterministic: no sampling).
    """
    pairs: list[LabeledPair] = []
    for doc in docs:
        title, body = doc.title.strip(), doc.text.strip()
        if len(title.split()) < min_words:
            sentences = split_sentences(body)
            if len(sentences) < 2:
                continue
            title, body = sentences[0], " ".join(sentences[1:])
        if body and len(title.split()) >= min_words:
            pairs.append(LabeledPair(title, body, query_id=f"{doc.id}#title", positive_id=doc.id,
                                     known_positive_ids=frozenset([doc.id])))
    return pairs


# Hand-written: lead-ins that introduce an abstract's conclusion (section labels of structured abstracts, then
# hedges such as "These results suggest that"). A claim about a paper states the finding without them; no library
# strips rhetorical lead-ins, and a few patterns cover the usual wording of biomedical and scientific abstracts.
_SECTION_LABEL = re.compile(r"^(?:conclusions?|interpretations?|significance|implications?|summary)\b\s*[:.-]?\s*", re.I)
_CONCLUDING = r"in (?:conclusion|summary|sum)|taken together|collectively|altogether|overall"
"""Openers that introduce a conclusion on their own ("In conclusion, ..."); :data:`_LEAD_IN` allows a few more."""
_OPENER = rf"^(?:(?:{_CONCLUDING}|together|thus|therefore|hence|in this study|here|finally)\b,?\s*)?"
_VERBS = (r"(?:strongly |further |thus |therefore |also |now )?(?:suggest|indicate|show|demonstrate|reveal|support|imply|"
          r"conclude|propose|establish|confirm|identify|find|found|provide evidence|highlight|argue|report)(?:s|ed|d)?\b")
_LEAD_IN = re.compile(
    _OPENER + r"(?:(?:(?:these|our|the present|the|this|such) )?(?:results?|findings?|data|observations?|studies|study|"
    r"experiments?|analys[ie]s|work|evidence)(?: \w+){0,4} " + _VERBS + r"(?: that)?|we " + _VERBS + r" that),?\s*", re.I)
_SIMPLE_LEAD_IN = re.compile(rf"^(?:{_CONCLUDING})\b,?\s*", re.I)


def as_finding(sentence: str) -> str:
    """``sentence`` without the lead-in that introduces a conclusion (a section label such as ``CONCLUSIONS:``,
    then ``These results suggest that`` / ``In conclusion,`` / ``We show that``), first letter upper-cased.
    A sentence with no lead-in is returned as it is (trimmed)."""
    text = _SECTION_LABEL.sub("", sentence.strip(), count=1)
    stripped = _LEAD_IN.sub("", text, count=1)
    if stripped == text:
        stripped = _SIMPLE_LEAD_IN.sub("", text, count=1)
    stripped = stripped.strip() or text
    return stripped[:1].upper() + stripped[1:]


def _concluding_index(sentences: list[str]) -> int:
    """The sentence that opens the abstract's conclusion: the last one with a conclusion label or lead-in, else the
    last sentence (abstracts end on their conclusion)."""
    for index in range(len(sentences) - 1, -1, -1):
        if any(pattern.match(sentences[index]) for pattern in (_SECTION_LABEL, _LEAD_IN, _SIMPLE_LEAD_IN)):
            return index
    return len(sentences) - 1


def conclusion_pairs(docs: Iterable[Document], *, min_words: int, untitled: bool = False) -> list[LabeledPair]:
    """One pair per document: (its concluding sentence as a finding, the document without that sentence).

    A document needs at least three sentences (the conclusion must leave an abstract behind) and a finding of at
    least ``min_words`` words. The title stays in the positive unless ``untitled``. Deterministic (no sampling).

    Returns pairs whose ``positive_id`` and ``known_positive_ids`` are the document's id.
    """
    pairs: list[LabeledPair] = []
    for doc in docs:
        sentences = split_sentences(doc.text)
        if len(sentences) < 3:
            continue
        index = _concluding_index(sentences)
        finding = as_finding(sentences[index])
        if len(finding.split()) < min_words:
            continue
        rest = " ".join(sentences[:index] + sentences[index + 1 :])
        positive = Document(doc.id, "" if untitled else doc.title, rest).full_text()
        pairs.append(LabeledPair(finding, positive, query_id=f"{doc.id}#conclusion", positive_id=doc.id,
                                 known_positive_ids=frozenset([doc.id])))
    return pairs
