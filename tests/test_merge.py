"""``retriever train merge``: parameter averages of models of one architecture, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from indexing.errors import RetrieverError
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.test_training_cli import run
from training.merge import MERGE_FILE, merge_models, merge_weights

TEXTS = ["dense retrieval with a vector index", "a query finds the passage", "token window encoder model"]


def _perturbed_copy(source: Path, out: Path, seed: int) -> Path:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("merge")
    return _perturbed_copy(tiny_model, folder / "a", 1), _perturbed_copy(tiny_model, folder / "b", 2)


def _state(path: Path) -> dict[str, torch.Tensor]:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").state_dict()


def test_every_parameter_is_the_weighted_average(two_models, tmp_path):
    a, b = two_models
    result = merge_models([str(a), str(b)], tmp_path / "m", weights=[0.25, 0.75])
    merged, first, second = _state(result.out), _state(a), _state(b)
    floats = [name for name, t in first.items() if t.is_floating_point()]
    assert result.tensors == len(floats) > 0
    for name in floats:
        torch.testing.assert_close(merged[name], 0.25 * first[name] + 0.75 * second[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(merged[floats[0]], first[floats[0]])  # the merge moved the weights
    assert json.loads((result.out / MERGE_FILE).read_text())["weights"] == [0.25, 0.75]


def test_weight_one_reproduces_that_model_embeddings(two_models, tmp_path):
    from sentence_transformers import SentenceTransformer

    a, b = two_models
    out = merge_models([str(a), str(b)], tmp_path / "m", weights=[0.0, 1.0]).out
    expected = SentenceTransformer(str(b), device="cpu").encode(TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("count, weights, fragment", [
    (1, None, "at least two models"),
    (2, [0.5], "1 weights for 2 models"),
    (2, [0.5, 0.6], "sum to 1"),
    (2, [float("nan"), 1.0], "not finite"),
])
def test_bad_weights_are_refused(count, weights, fragment):
    with pytest.raises(RetrieverError, match=fragment):
        merge_weights(count, weights)


def test_equal_weights_by_default():
    assert merge_weights(4, None) == [0.25] * 4


def test_cli_merges_and_the_output_is_indexable(two_models, tmp_path, small_corpus):
    a, b = two_models
    out = tmp_path / "merged"
    result = run("train", "merge", a, b, "--out", out, "--weights", "0.5,0.5", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["weights"] == [0.5, 0.5] and record["out"] == str(out)
    built = run("index", "build", small_corpus, "--out", tmp_path / "index", "--model", out, "--index", "Flat", "--device", "cpu")
    assert built.exit_code == 0, built.output
    assert_one_line_error(run_cli("train", "merge", a, b, "--out", out), "exists", "--overwrite")


def test_cli_errors_are_one_line(two_models, tmp_path, tiny_tokenizer):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    a, b = two_models
    assert_one_line_error(run_cli("train", "merge", a, b, "--out", tmp_path / "x", "--weights", "0.7,0.7"), "sum to 1")
    assert_one_line_error(run_cli("train", "merge", a, b, "--out", tmp_path / "x", "--weights", "half,half"), "--weights")
    deeper = tmp_path / "deeper"
    BertModel(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(deeper / "hf")
    tiny_tokenizer.save_pretrained(deeper / "hf")
    SentenceTransformer(modules=[Transformer(str(deeper / "hf"), max_seq_length=128), Pooling(32), Normalize()],
                        device="cpu").save(str(deeper / "st"))
    assert_one_line_error(run_cli("train", "merge", a, deeper / "st", "--out", tmp_path / "x"), "not the architecture")


def _asymmetric(query: Path, document: Path, out: Path) -> Path:
    from sentence_transformers import SentenceTransformer

    from training.export import asymmetric_model

    asymmetric_model(SentenceTransformer(str(query), device="cpu"), SentenceTransformer(str(document), device="cpu")).save(str(out))
    return out


def test_query_route_merge_interpolates_queries_and_keeps_documents(two_models, tmp_path):
    from sentence_transformers import SentenceTransformer

    from training.merge import merge_query_route

    trained, base = two_models
    model = _asymmetric(trained, base, tmp_path / "query-only")
    out = merge_query_route(str(model), tmp_path / "m", weight=0.25).out
    merged = SentenceTransformer(str(out), device="cpu")
    routes = merged[0].sub_modules
    ours, first, second = routes["query"].state_dict(), _state(trained), _state(base)
    for name, tensor in ours.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, 0.25 * first[name] + 0.75 * second[name], rtol=1e-5, atol=1e-6)
    documents = SentenceTransformer(str(base), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(merged.encode_document(TEXTS), documents, atol=1e-6)  # the base's index still serves it
    whole = merge_query_route(str(model), tmp_path / "w1", weight=1.0).out
    np.testing.assert_allclose(SentenceTransformer(str(whole), device="cpu").encode_query(TEXTS),
                               SentenceTransformer(str(trained), device="cpu").encode(TEXTS), atol=1e-6)
    assert json.loads((out / MERGE_FILE).read_text())["query_route_weight"] == 0.25


def test_query_route_merge_refuses_a_plain_model_and_bad_weights(two_models, tmp_path):
    from training.merge import merge_query_route

    with pytest.raises(RetrieverError, match="not a query-only model"):
        merge_query_route(str(two_models[0]), tmp_path / "m", weight=0.5)
    with pytest.raises(RetrieverError, match=r"in \[0, 1\]"):
        merge_query_route(str(two_models[0]), tmp_path / "m", weight=1.5)


def test_cli_merges_a_query_route(two_models, tmp_path):
    trained, base = two_models
    model = _asymmetric(trained, base, tmp_path / "query-only")
    result = run("train", "merge", model, "--query-route", "0.5", "--out", tmp_path / "m", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["query_route_weight"] == 0.5
    assert_one_line_error(run_cli("train", "merge", model, base, "--query-route", "0.5", "--out", tmp_path / "x"), "exactly one")
    assert_one_line_error(run_cli("train", "merge", base, "--query-route", "0.5", "--out", tmp_path / "x"), "not a query-only model")


def test_sql_benchmark_merges_a_trained_encoder_with_its_minilm_base(tmp_path):
    from benchmarks.sql import merged_model
    from training.export import resolve_base

    base = resolve_base("minilm").path
    trained = _perturbed_copy(Path(base), tmp_path / "train" / "model", 3)
    assert merged_model(trained, 1.0) == trained
    out = merged_model(trained, 0.75)
    assert out == tmp_path / "train" / "merged-0.75"
    merged, ours, theirs = _state(out), _state(trained), _state(Path(base))
    name = next(n for n, t in ours.items() if t.is_floating_point() and t.ndim == 2)
    torch.testing.assert_close(merged[name], 0.75 * ours[name] + 0.25 * theirs[name], rtol=1e-5, atol=1e-6)
    stamp = (out / MERGE_FILE).stat().st_mtime_ns
    assert merged_model(trained, 0.75) == out and (out / MERGE_FILE).stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(RetrieverError, match="merge weight"):
        merged_model(trained, 1.5)
