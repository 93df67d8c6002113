"""Tests of indexing.chunking: token windows over document text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexing.chunking import chunk_documents
from indexing.documents import Document, Passage

TEXT = (
    "Dense retrieval encodes queries and documents into vectors. FAISS searches the nearest "
    "neighbours of a query vector; documents are split into overlapping windows of tokens."
)


def offsets_of(tokenizer, text: str) -> list[tuple[int, int]]:
    return list(tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"])


def token_range(offsets, passage: Passage) -> tuple[int, int]:
    """Indices [first, last] of the tokens a passage spans."""
    inside = [i for i, (s, e) in enumerate(offsets) if s >= passage.start and e <= passage.end]
    assert inside == list(range(inside[0], inside[-1] + 1))
    return inside[0], inside[-1]


def check_windows(tokenizer, doc: Document, passages: list[Passage], chunk_tokens: int, overlap: int) -> None:
    offsets = offsets_of(tokenizer, doc.text)
    assert [p.index for p in passages] == list(range(len(passages)))
    assert all(p.doc_id == doc.id for p in passages)
    for p in passages:
        assert p.text == doc.text[p.start:p.end]
    if not offsets:
        assert passages == [Passage(doc.id, 0, 0, len(doc.text), doc.text)]
        return
    ranges = [token_range(offsets, p) for p in passages]
    stride = chunk_tokens - overlap
    assert ranges[0][0] == 0 and ranges[-1][1] == len(offsets) - 1
    for k, (first, last) in enumerate(ranges):
        assert first == k * stride
        assert last - first + 1 == min(chunk_tokens, len(offsets) - first)
    # every token lies inside some passage
    covered = set()
    for p in passages:
        covered.update(range(p.start, p.end))
    for s, e in offsets:
        assert set(range(s, e)) <= covered
    if overlap > 0:  # windows overlap, so every character between the first and last token is covered
        assert set(range(offsets[0][0], offsets[-1][1])) <= covered


def test_windows_cover_text_with_exact_overlap(tiny_tokenizer):
    doc = Document("d1", "title", TEXT)
    [passages] = chunk_documents([doc], tiny_tokenizer, chunk_tokens=8, overlap=3)
    assert len(passages) > 3
    check_windows(tiny_tokenizer, doc, passages, 8, 3)
    offsets = offsets_of(tiny_tokenizer, TEXT)
    for a, b in zip(passages, passages[1:]):
        (a_first, a_last), (b_first, _) = token_range(offsets, a), token_range(offsets, b)
        assert a_last - a_first + 1 == 8  # every window but the last is full
        assert a_last - b_first + 1 == 3  # exactly `overlap` tokens shared
        assert b.start < a.end  # overlapping character spans


def test_no_overlap_windows_are_disjoint(tiny_tokenizer):
    doc = Document("d1", "", TEXT)
    [passages] = chunk_documents([doc], tiny_tokenizer, chunk_tokens=10, overlap=0)
    check_windows(tiny_tokenizer, doc, passages, 10, 0)
    for a, b in zip(passages, passages[1:]):
        assert a.end <= b.start


def test_batch_keeps_document_order(tiny_tokenizer):
    docs = [Document("a", "", TEXT), Document("b", "", "short text"), Document("c", "", "")]
    result = chunk_documents(docs, tiny_tokenizer, chunk_tokens=16, overlap=4)
    assert [[p.doc_id for p in ps][0] for ps in result] == ["a", "b", "c"]
    assert len(result[0]) > 1
    assert result[1] == [Passage("b", 0, 0, 10, "short text")]  # shorter than a window: one passage
    assert result[2] == [Passage("c", 0, 0, 0, "")]  # empty text: one empty passage


def test_passages_are_exact_substrings_with_unicode_and_surrounding_space(tiny_tokenizer):
    text = "  Café naïve résumé 数据 — über  \n\n straße!  "
    doc = Document("u", "", text)
    [passages] = chunk_documents([doc], tiny_tokenizer, chunk_tokens=4, overlap=1)
    check_windows(tiny_tokenizer, doc, passages, 4, 1)
    assert passages[0].text.startswith("Ca")  # leading whitespace is not a token
    assert not passages[-1].text.endswith(" ")


def test_chunk_tokens_zero_gives_whole_text(tiny_tokenizer):
    docs = [Document("a", "t", TEXT), Document("b", "t", "")]
    result = chunk_documents(docs, tiny_tokenizer, chunk_tokens=0, overlap=0)
    assert result == [[Passage("a", 0, 0, len(TEXT), TEXT)], [Passage("b", 0, 0, 0, "")]]


def test_chunk_tokens_zero_needs_no_tokenizer():
    assert chunk_documents([Document("a", "", "x y")], None, chunk_tokens=0, overlap=0)[0][0].text == "x y"


def test_empty_input(tiny_tokenizer):
    assert chunk_documents([], tiny_tokenizer, chunk_tokens=8, overlap=2) == []


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap", "match"),
    [(-1, 0, "chunk_tokens"), (8, -1, "overlap"), (8, 8, "smaller"), (8, 9, "smaller"), (1, 1, "smaller")],
)
def test_bad_arguments(tiny_tokenizer, chunk_tokens, overlap, match):
    with pytest.raises(ValueError, match=match):
        chunk_documents([Document("a", "", "x")], tiny_tokenizer, chunk_tokens=chunk_tokens, overlap=overlap)


def test_slow_tokenizer_is_rejected():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        chunk_documents([Document("a", "", "x")], Slow(), chunk_tokens=4, overlap=0)


_ALPHABET = st.sampled_from(list("abcdefghij klmnopqrstuvwxyz  .,;!?-é数据\n\t") + ["über", "dense", "vector"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.lists(_ALPHABET, max_size=80).map("".join), min_size=1, max_size=4),
    chunk_tokens=st.integers(min_value=1, max_value=12),
    overlap_fraction=st.floats(min_value=0, max_value=0.99),
)
def test_windows_property(tiny_tokenizer, texts, chunk_tokens, overlap_fraction):
    overlap = int(overlap_fraction * chunk_tokens)
    docs = [Document(f"d{i}", "", t) for i, t in enumerate(texts)]
    result = chunk_documents(docs, tiny_tokenizer, chunk_tokens=chunk_tokens, overlap=overlap)
    assert len(result) == len(docs)
    for doc, passages in zip(docs, result):
        check_windows(tiny_tokenizer, doc, passages, chunk_tokens, overlap)
