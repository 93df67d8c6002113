"""Split documents into overlapping windows of tokens; each window becomes a passage with its own vector."""

from __future__ import annotations

from typing import Any, Sequence

from indexing.documents import Document, Passage


def chunk_documents(docs: Sequence[Document], tokenizer: Any, *, chunk_tokens: int, overlap: int) -> list[list[Passage]]:
    """Return, for each document, its passages in order.

    tokenizer: a Hugging Face *fast* tokenizer (callable; supports return_offsets_mapping).
    chunk_tokens == 0: one passage per document with the whole text (the model truncates).
    Otherwise windows of ``chunk_tokens`` tokens of ``Document.text`` (no special tokens), stride
    ``chunk_tokens - overlap``; passage text = ``text[start:end]`` where start/end come from the token
    offsets, so passages are exact substrings. Windows cover every token; the last one may be shorter;
    a text shorter than a window gives one passage; a text without tokens (empty or whitespace)
    gives one passage spanning the whole text.

    Raises ValueError if chunk_tokens < 0, overlap < 0 or overlap >= chunk_tokens (when chunk_tokens > 0),
    or if the tokenizer cannot return offsets.
    """
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0, got {chunk_tokens}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if chunk_tokens > 0 and overlap >= chunk_tokens:
        raise ValueError(f"overlap ({overlap}) must be smaller than chunk_tokens ({chunk_tokens})")
    if chunk_tokens == 0:
        return [[Passage(d.id, 0, 0, len(d.text), d.text)] for d in docs]
    if not docs:
        return []
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("chunking needs a Hugging Face *fast* tokenizer (it returns character offsets)")

    encoded = tokenizer(
        [d.text for d in docs],
        add_special_tokens=False,
        truncation=False,
        padding=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "sequence longer than the model maximum" warning: we split it ourselves
    )
    stride = chunk_tokens - overlap
    return [
        _windows(doc, offsets, chunk_tokens, stride)
        for doc, offsets in zip(docs, encoded["offset_mapping"])
    ]


def _windows(doc: Document, offsets: Sequence[tuple[int, int]], size: int, stride: int) -> list[Passage]:
    n = len(offsets)
    if n == 0:
        return [Passage(doc.id, 0, 0, len(doc.text), doc.text)]
    passages = []
    for first in range(0, n, stride):
        last = min(first + size, n) - 1
        start, end = offsets[first][0], max(offsets[last][1], offsets[first][0])
        passages.append(Passage(doc.id, len(passages), start, end, doc.text[start:end]))
        if last == n - 1:
            break
    return passages
