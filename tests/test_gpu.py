"""GPU paths (run with ``pytest -m gpu`` on a machine with CUDA; faiss-gpu for the FAISS tests)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def test_faiss_gpu_transform_matches_cpu():
    faiss = pytest.importorskip("faiss")
    from indexing.faiss_index import Metric, VectorIndex
    from indexing.gpu import faiss_gpu_count, to_device

    if faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support here (faiss-cpu)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 64)).astype(np.float32)
    for factory in ("Flat", "IVF64,Flat"):
        index = VectorIndex.create(64, factory, Metric.IP)
        index.train(x)
        index.add(np.arange(5000), x)
        index.set_nprobe(64)
        cpu = index.search(x[:50], 10)
        index.index = to_device(index.index, "cuda:0")
        gpu = index.search(x[:50], 10)
        assert np.mean(cpu[1] == gpu[1]) > 0.98


def test_encoder_half_precision_on_gpu_matches_fp32():
    _cuda()
    from retriever.encoders.base import load_encoder

    texts = ["dense retrieval on a GPU", "mixed precision encoding", "a third sentence"]
    fp32 = load_encoder("minilm", device="cuda", precision="fp32").encode_documents(texts)
    fp16 = load_encoder("minilm", device="cuda", precision="fp16").encode_documents(texts)
    assert np.min(np.sum(fp32 * fp16, axis=1)) > 0.999
