"""OpenVINO bf16 document encoding: close to fp32, queries untouched, truncation as sentence-transformers does it,
torch kept on request, the choice validated and recorded."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.errors import ModelError
from retriever.devices import native_bf16_cpu
from retriever.encoders.openvino_documents import openvino_available

needs_bf16 = pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bf16 (no amx_bf16/avx512_bf16 flag)")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed (pip install openvino)")
TEXTS = ["Dense retrieval encodes queries and documents into vectors.",
         "FAISS searches the nearest neighbours of a query vector among millions of passages. " * 8,
         "café, naïve, résumé", "short"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _encoders(model, **bf16_options):
    from retriever.encoders.base import load_encoder

    return (load_encoder(str(model), device="cpu", precision="fp32"),
            load_encoder(str(model), device="cpu", precision="bf16", **bf16_options))


@needs_bf16
@needs_openvino
def test_documents_through_openvino_are_close_to_fp32_and_queries_identical(tiny_model):
    from retriever.encoders.openvino_documents import OpenVINODocuments

    fp32, bf16 = _encoders(tiny_model)
    assert bf16.document_runtime is None and "document_runtime" not in bf16.describe()
    documents = bf16.encode_documents(TEXTS, batch_size=2)
    assert isinstance(bf16._openvino, OpenVINODocuments)
    assert bf16.document_runtime == "openvino" and bf16.describe()["document_runtime"] == "openvino"
    want = fp32.encode_documents(TEXTS, batch_size=2)
    assert documents.dtype == np.float32 and documents.shape == want.shape
    assert _cosines(documents, want).min() >= 0.999
    np.testing.assert_array_equal(bf16.encode_queries(TEXTS), fp32.encode_queries(TEXTS))


@needs_bf16
@needs_openvino
def test_a_max_seq_length_changed_after_the_first_batch_truncates_as_torch_does(tiny_model):
    fp32, bf16 = _encoders(tiny_model, document_backend="openvino")
    bf16.encode_documents(TEXTS[:1])
    for encoder in (fp32, bf16):
        encoder.model.max_seq_length = 8
    shortened, want = bf16.encode_documents(TEXTS), fp32.encode_documents(TEXTS)
    assert _cosines(shortened, want).min() >= 0.999
    fp32.model.max_seq_length = 128
    assert _cosines(shortened, fp32.encode_documents(TEXTS))[1] < 0.99  # the long text was cut, as in torch


@needs_bf16
def test_the_torch_backend_is_kept_when_asked(tiny_model):
    _, bf16 = _encoders(tiny_model, document_backend="torch")
    bf16.encode_documents(TEXTS)
    assert bf16._openvino is None and bf16._documents._half is not None
    assert bf16.describe()["document_runtime"] == "torch"


def test_an_impossible_backend_is_a_one_line_error(tiny_model):
    from retriever.encoders.base import load_encoder

    with pytest.raises(ModelError, match="encodes bf16 on the CPU, not fp32 on cpu"):
        load_encoder(str(tiny_model), device="cpu", precision="fp32", document_backend="openvino")
    with pytest.raises(ModelError, match="use one of auto, torch, openvino"):
        load_encoder(str(tiny_model), device="cpu", precision="fp32", document_backend="tensorrt")
    fp32 = load_encoder(str(tiny_model), device="cpu", precision="fp32")
    assert fp32.document_runtime == "torch"  # fp32 documents never go through OpenVINO


@needs_bf16
@needs_openvino
def test_the_build_records_and_prints_what_encoded_the_documents(tiny_model, tmp_path, monkeypatch):
    import json

    import torch

    from retriever.index import Index

    exports: list[object] = []
    original = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **kw: (exports.append(a[2]), original(*a, **kw))[1])

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    said: list[str] = []
    index = Index.build(corpus, tmp_path / "idx", model=str(tiny_model), precision="bf16", announce=said.append)
    assert index.info().encoder["document_runtime"] == "openvino"
    assert any("bf16 by OpenVINO" in line for line in said), said
    assert len(exports) == 1  # OpenVINO's graph and the index's query encoder are one export
    assert index.info().files.get("query_encoder")


@needs_bf16
@pytest.mark.parametrize("backend", ["auto", "openvino"])
def test_without_openvino_auto_falls_back_to_torch_and_openvino_is_an_error(tiny_model, monkeypatch, caplog, backend):
    import retriever.encoders.openvino_documents as module

    def refuse(encoder):
        raise ModelError("OpenVINO cannot compile 'tiny': unsupported operation")

    monkeypatch.setattr(module, "OpenVINODocuments", refuse)
    monkeypatch.setattr(module, "openvino_available", lambda: True)  # installed, but the compile fails
    _, bf16 = _encoders(tiny_model, document_backend=backend)
    if backend == "openvino":
        with pytest.raises(ModelError, match="OpenVINO cannot compile"):
            bf16.encode_documents(TEXTS)
        return
    with caplog.at_level("INFO", logger="retriever.encoders.base"):
        bf16.encode_documents(TEXTS)
        bf16.encode_documents(TEXTS)
    said = [r.getMessage() for r in caplog.records if "encoded by torch" in r.getMessage()]
    assert said == ["OpenVINO cannot compile 'tiny': unsupported operation; documents are encoded by torch in bf16"]
    assert bf16.document_runtime == "torch" and bf16._documents._half is not None


@needs_bf16
def test_openvino_not_installed_is_said_once_and_torch_encodes(tiny_model, monkeypatch, caplog):
    import retriever.encoders.openvino_documents as module

    monkeypatch.setattr(module, "openvino_available", lambda: False)
    _, asked = _encoders(tiny_model, document_backend="openvino")
    with pytest.raises(ModelError, match="needs openvino: pip install openvino"):
        asked.encode_documents(TEXTS)
    _, bf16 = _encoders(tiny_model)
    with caplog.at_level("INFO", logger="retriever.encoders.base"):
        bf16.encode_documents(TEXTS)
        bf16.encode_documents(TEXTS)
    assert [r.getMessage() for r in caplog.records if "openvino" in r.getMessage()] == [
        "openvino is not installed: documents are encoded by torch in bf16"]
    assert bf16.document_runtime == "torch"
