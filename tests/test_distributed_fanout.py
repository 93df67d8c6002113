"""The distributed set service without Ray: the ingress state, the shard servers and the HTTP app, with in-process
handles standing in for Ray Serve's (same ``.remote(...).result(timeout_s=)`` shape)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from retriever.apps.service.fanout import FanoutState, ShardsUnavailable
from retriever.apps.service.shard_server import ShardServer

pytest.importorskip("fastapi")

QUERIES = ["dense retrieval of passages", "vector index search", "token window encoder"]


class _Call:
    def __init__(self, run, remote_errors=False):
        self.run, self.remote_errors = run, remote_errors

    def result(self, timeout_s=None):
        if not self.remote_errors:
            return self.run()
        try:
            return self.run()
        except Exception as exc:  # as Ray delivers a replica's exception: pickled, wrapped in a RayTaskError
            import pickle

            from ray.exceptions import RayTaskError

            cause = pickle.loads(pickle.dumps(exc))
            raise RayTaskError("search", "Traceback (most recent call last):\n  ...remote lines...", cause).as_instanceof_cause()


class _Method:
    def __init__(self, handle, name):
        self.handle, self.name = handle, name

    def remote(self, *args, **kwargs):
        if self.handle.down:
            def fail():
                raise TimeoutError("no replica")
            return _Call(fail)
        return _Call(lambda: getattr(self.handle.server, self.name)(*args, **kwargs), self.handle.remote_errors)


class FakeHandle:
    """A deployment handle calling a :class:`ShardServer` in this process; ``down`` makes every call time out."""

    def __init__(self, server):
        self.server = server
        self.down = False
        self.remote_errors = False
        self.search = _Method(self, "search")
        self.prepare = _Method(self, "prepare")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    import json
    import random

    from retriever.index import Index
    from retriever.index_set import IndexSet

    folder = tmp_path_factory.mktemp("fanout")
    words = "dense retrieval vector index query passage document search encoder model token window".split()
    corpus = folder / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(40):
            rng = random.Random(i)
            fh.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": " ".join(rng.choice(words) for _ in range(9 + i % 7)),
                                 "lang": "en" if i % 3 else "fr"}) + "\n")
    options = {"model": str(tiny_model), "device": "cpu", "index": "Flat", "chunk_tokens": 0,
               "precision": "fp32"}  # the set and the single index are compared for equality
    one = Index.build(corpus, folder / "one", **options)
    IndexSet.build(corpus, folder / "set", shards=2, **options)
    yield {"folder": folder, "one": one, "tiny_model": tiny_model}
    one.close()


def _state(root, **kw):
    handles = [FakeHandle(ShardServer(str(root), n)) for n in range(2)]
    return FanoutState(root, handles, device="cpu", **kw), handles


def test_fan_out_merges_exactly_and_names_missing_shards(served):
    state, handles = _state(served["folder"] / "set", shard_timeout=0.5)
    for filters in (None, {"lang": "fr"}):
        answer = state.search(QUERIES, 10, filters=filters)
        assert answer.missing == []
        for got, expected in zip(answer.hits, served["one"].search(QUERIES, k=10, filters=filters, device="cpu")):
            assert [h.id for h in got] == [h.id for h in expected]
            assert np.allclose([h.score for h in got], [h.score for h in expected], atol=1e-5)
    handles[1].down = True
    started = time.monotonic()
    with pytest.raises(ShardsUnavailable, match="shard-001"):
        state.search(QUERIES[:1], 5)
    assert 0.4 < time.monotonic() - started < 3  # retried for the shard timeout, then given up
    partial = state.search(QUERIES[:1], 5, allow_partial=True)
    assert partial.missing == [1] and len(partial.hits[0]) == 5


def test_a_new_set_version_is_loaded_by_every_shard_before_it_is_pinned(served, tmp_path):
    import shutil

    from retriever.index_set import IndexSet
    from tests.index_snapshots import corpus_records

    root = tmp_path / "set"
    shutil.copytree(served["folder"] / "set", root)
    state, handles = _state(root)
    old = state.pinned
    assert state.search(["n1 new document"], 50).hits[0] and state.version == 1
    IndexSet.open(root).add(corpus_records("n", 6), device="cpu")
    handles[0].down = True
    assert not state.refresh() and state.version == 1  # a shard cannot load it: keep serving version 1
    handles[0].down = False
    assert state.refresh() and state.version == 2 and state.reloads == 1
    assert all(len(h.server.loaded_versions()) == 2 for h in handles if h.server.loaded_versions() != [])
    ids = {h.id for h in state.search(["n1 new document"], 50).hits[0]}
    assert {f"n{i}" for i in range(6)} <= ids
    state.pinned = old  # a request pinned to the old version is still answered from it, whole
    assert not {f"n{i}" for i in range(6)} & {h.id for h in state.search(["n1 new document"], 50).hits[0]}


def test_http_api_503_retry_after_partial_and_auth(served):
    from fastapi.testclient import TestClient

    from retriever.apps.service.set_app import create_set_app

    state, handles = _state(served["folder"] / "set", shard_timeout=0.3)
    app = create_set_app(state, api_key="k3y")
    auth = {"X-API-Key": "k3y"}
    with TestClient(app) as client:
        assert client.post("/search", json={"query": "vector"}).status_code == 401
        ok = client.post("/search", json={"queries": QUERIES, "k": 4}, headers=auth)
        assert ok.status_code == 200 and len(ok.json()["results"]) == 3 and "missing_shards" not in ok.json()
        bad = client.post("/search", json={"query": " ", "k": 4}, headers=auth)
        assert bad.status_code == 422 and "error" in bad.json()
        handles[0].down = True
        down = client.post("/search", json={"query": "vector", "k": 4}, headers=auth)
        assert down.status_code == 503 and down.headers["Retry-After"] and "shard-000" in down.json()["error"]
        partial = client.post("/search", json={"query": "vector", "k": 4, "allow_partial": True}, headers=auth)
        assert partial.status_code == 200 and partial.json()["missing_shards"] == ["shard-000"]
        info = client.get("/info", headers=auth).json()
        assert info["shards"] == 2 and info["documents"] == 40 and info["version"] == 1
        assert client.get("/health").json()["version"] == 1


def test_errors_a_shard_raises_survive_pickling():
    """Ray pickles a replica's exception to the caller: an error class that cannot be rebuilt from its pickle arrived
    as an unpickling failure, which the ingress took for an outage (bm25 without BM25: a 503 after the shard timeout)."""
    import pickle

    from indexing.errors import CorpusError
    from retriever.search.bm25_index import Bm25NotReadyError

    bm25 = pickle.loads(pickle.dumps(Bm25NotReadyError("no BM25 index", "stale")))
    assert type(bm25) is Bm25NotReadyError and str(bm25) == "no BM25 index" and bm25.state == "stale"
    corpus = pickle.loads(pickle.dumps(CorpusError("c.jsonl", "missing", line=3, field="text")))
    assert str(corpus) == "c.jsonl:3: field 'text': missing" and (corpus.path, corpus.line, corpus.field) == ("c.jsonl", 3, "text")


def test_a_shard_refusal_through_ray_is_a_one_line_409_naming_the_set_command(served):
    pytest.importorskip("ray.exceptions")
    from fastapi.testclient import TestClient

    from retriever.apps.service.set_app import create_set_app

    root = served["folder"] / "set"
    state, handles = _state(root, shard_timeout=3)
    for handle in handles:
        handle.remote_errors = True
    with TestClient(create_set_app(state)) as client:
        for mode in ("bm25", "hybrid"):
            started = time.monotonic()
            response = client.post("/search", json={"query": "vector", "k": 3, "mode": mode})
            assert response.status_code == 409, response.text
            assert time.monotonic() - started < 2  # a refusal, not retried as a missing shard
            error = response.json()["error"]
            assert f"build it with `retriever set bm25 {root}`" in error and "\n" not in error
            assert "retriever index bm25" not in error  # a shard refuses direct writes
        assert client.post("/search", json={"query": "vector", "k": 3}).status_code == 200


def test_set_serve_refuses_bad_options_in_one_line(served):
    from tests.cli_helpers import assert_one_line_error, run_cli, run_cli_many

    root = served["folder"] / "set"
    port, resources, timeout = run_cli_many([
        ["set", "serve", root, "--port", "0"],
        ["set", "serve", root, "--shard-resources", "{not json"],
        ["set", "serve", root, "--shard-timeout", "0"],
    ])
    assert_one_line_error(port, "--port must be in 1..65535")
    assert_one_line_error(resources, "--shard-resources is not JSON")
    assert_one_line_error(timeout, "--shard-timeout must be > 0")
