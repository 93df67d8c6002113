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


import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RETRIEVER_DATA", REPO.parent / "shared" / "data"))
DEMO_DATA = REPO / "data" / "xquad-en"


def shared_dataset(name: str) -> Path:
    """A collection from ../shared/data, or skip the test when this clone has none."""
    path = SHARED_DATA / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"{path} not available (shared evaluation data is only on CI and dev machines)")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer, 32-wide BERT sentence-transformers folder (mean pooling + normalize), built in the test."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    raw = folder / "hf"
    BertModel(config).save_pretrained(raw)
    tiny_tokenizer.model_max_length = 128
    tiny_tokenizer.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean"), Normalize()], device="cpu")
    out = folder / "st"
    model.save(str(out))
    return out


@pytest.fixture()
def small_corpus(tmp_path) -> Path:
    """A 60-document JSONL corpus with a metadata field ``lang`` and some long documents."""
    words = "dense retrieval vector index query passage document search encoder model token window".split()
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(60):
            body = " ".join(words[(i * 7 + j) % len(words)] for j in range(10 + (i % 5) * 40))
            record = {"_id": f"d{i}", "title": f"doc {i}", "text": body, "lang": "en" if i % 3 else "fr"}
            fh.write(json.dumps(record) + "\n")
    return path
