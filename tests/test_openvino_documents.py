"""OpenVINO bf16 document encoding: close to fp32, queries untouched, torch kept on request or without openvino."""

from __future__ import annotations

import numpy as np
import pytest

from retriever.devices import native_bf16_cpu
from retriever.encoders.openvino_documents import openvino_available

pytestmark = [
    pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bf16 (no amx_bf16/avx512_bf16 flag)"),
    pytest.mark.skipif(not openvino_available(), reason="openvino is not installed (pip install openvino)"),
]
TEXTS = ["Dense retrieval encodes queries and documents into vectors.",
         "FAISS searches the nearest neighbours of a query vector among millions of passages. " * 8,
         "café, naïve, résumé", "short"]


def test_documents_through_openvino_are_close_to_fp32_and_queries_identical(tiny_model):
    from retriever.encoders.base import load_encoder
    from retriever.encoders.openvino_documents import OpenVINODocuments

    fp32 = load_encoder(str(tiny_model), device="cpu", precision="fp32")
    bf16 = load_encoder(str(tiny_model), device="cpu", precision="bf16")
    documents = bf16.encode_documents(TEXTS, batch_size=2)
    assert isinstance(bf16._openvino, OpenVINODocuments)
    want = fp32.encode_documents(TEXTS, batch_size=2)
    assert documents.dtype == np.float32 and documents.shape == want.shape
    assert (documents * want).sum(axis=1).min() >= 0.999
    np.testing.assert_array_equal(bf16.encode_queries(TEXTS), fp32.encode_queries(TEXTS))


def test_the_torch_backend_is_kept_when_asked(tiny_model):
    from retriever.encoders.base import load_encoder

    bf16 = load_encoder(str(tiny_model), device="cpu", precision="bf16")
    bf16.document_backend = "torch"
    bf16.encode_documents(TEXTS)
    assert bf16._openvino is None and bf16._documents._half is not None
