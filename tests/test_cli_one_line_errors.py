"""Broken manifests, truncated corpora and blank queries through the real ``retriever`` process:
exactly one ``error: ...`` line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexing.builder import BuildConfig, build_index
from indexing.readers import read_corpus
from retriever.encoders.base import load_encoder

REPO = Path(__file__).resolve().parents[1]


def retriever(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-errors") / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(40):
            fh.write(json.dumps({"_id": f"d{i}", "text": f"document {i} about dense retrieval and vector {i * 7}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def index(corpus, tiny_model) -> Path:
    out = corpus.parent / "idx"
    encoder = load_encoder(str(tiny_model), device="cpu")
    build_index(out, lambda: read_corpus([corpus]), encoder, BuildConfig(corpus=(str(corpus),), factory="Flat", docs_per_shard=16))
    return out


@pytest.fixture()
def broken(index, tmp_path) -> Path:
    """A copy of the index whose manifest says ``"metric": "cosine"``."""
    copy = tmp_path / "broken"
    shutil.copytree(index, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["metric"] = "cosine"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("command", [["search", "{idx}", "dense"], ["index", "info", "{idx}"], ["index", "verify", "{idx}"]])
def test_a_broken_manifest_is_one_line(broken, command):
    result = retriever(*(part.format(idx=broken) for part in command))
    assert_one_line_error(result, f"{broken / 'manifest.json'}: field 'metric': 'cosine' is not one of ip, l2")


def test_verify_refuses_empty_checksums(index, tmp_path):
    copy = tmp_path / "nosums"
    shutil.copytree(index, copy)
    assert retriever("index", "verify", copy).returncode == 0
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["checksums"] = {}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(retriever("index", "verify", copy), "no checksums")


def test_a_truncated_gzip_corpus_is_one_line(corpus, tiny_model, tmp_path):
    data = gzip.compress(corpus.read_bytes())
    truncated = tmp_path / "corpus.jsonl.gz"
    truncated.write_bytes(data[: len(data) // 2])
    result = retriever("index", "build", truncated, "--out", tmp_path / "out", "--model", tiny_model, "--device", "cpu")
    assert_one_line_error(result, str(truncated), "truncated gzip")


@pytest.mark.parametrize("query", ["", " \t "])
def test_a_blank_query_is_refused(index, query):
    assert_one_line_error(retriever("search", index, query, "--device", "cpu"), "blank")


def test_a_blank_query_in_a_queries_file_names_file_and_line(index, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "dense"}\n{"_id": "q2", "text": "  "}\n')
    assert_one_line_error(retriever("search", index, "--queries", queries, "--device", "cpu"), f"{queries}:2", "'q2'", "blank")
