"""Shared test fixtures."""

from __future__ import annotations

import pytest

_TINY_CORPUS = [
    "Dense retrieval encodes queries and documents into vectors.",
    "FAISS searches the nearest neighbours of a query vector among millions of passages.",
    "Documents are split into overlapping windows of tokens before they are encoded.",
    "The quick brown fox jumps over the lazy dog; café, naïve, résumé and 数据 are words too.",
    "Scientific claims are verified against abstracts: evidence supports or refutes them.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small WordPiece tokenizer trained on the fly, wrapped as a transformers fast tokenizer.

    The vocabulary is tiny on purpose, so unseen words split into several ``##`` pieces.
    (In transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently ignores the file: don't use it.)
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(_TINY_CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
