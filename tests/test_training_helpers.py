"""Shared helpers of the training tests (no tests here): a dropout-free tiny model, a tiny BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_no_dropout(tmp_path_factory, tiny_tokenizer) -> Path:
    """Like conftest's ``tiny_model`` but without dropout, so runs that differ only in process layout or
    key encoder can be compared number for number."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-model-nodrop")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    raw = folder / "hf"
    BertModel(config).save_pretrained(raw)
    tiny_tokenizer.model_max_length = 128
    tiny_tokenizer.save_pretrained(raw)
    model = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=128), Pooling(32, pooling_mode="mean"), Normalize()], device="cpu")
    out = folder / "st"
    model.save(str(out), create_model_card=False)
    return out


def write_beir(folder: Path, corpus: Path, *, queries: int = 12) -> Path:
    """A BEIR folder over ``corpus`` (the ``small_corpus`` JSONL): query ``qi`` is doc ``d{3i}``'s title
    and first words, judged relevant to ``d{3i}`` and ``d{3i+1}``; the split is written as both train and test."""
    docs = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(corpus.read_text(encoding="utf-8"), encoding="utf-8")
    lines, qrels = [], ["query-id\tcorpus-id\tscore"]
    for i in range(queries):
        doc = docs[3 * i]
        lines.append(json.dumps({"_id": f"q{i}", "text": doc["title"] + " " + " ".join(doc["text"].split()[:4])}))
        qrels += [f"q{i}\t{doc['_id']}\t1", f"q{i}\t{docs[3 * i + 1]['_id']}\t1"]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


def weight_differences(a: Path, b: Path) -> torch.Tensor:
    """Absolute differences between the weights of two model folders, every tensor flattened into one vector."""
    import torch
    from safetensors.torch import load_file

    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert first.keys() == second.keys()
    return torch.cat([(first[k].float() - second[k].float()).abs().flatten() for k in sorted(first)])


def max_weight_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the weights of two model folders."""
    return float(weight_differences(a, b).max())
