"""``retriever serve SET`` on a Ray cluster: shard deployments, an ingress that merges exactly, missing shards.

The default suite has one smoke test on a local 2-node cluster (``ray.cluster_utils.Cluster``): 2 shards, each
pinned to its own node by a custom resource; the HTTP answers equal one Flat index's (dense, and filtered);
removing the second node makes requests 503 with Retry-After naming ``shard-001`` (and ``allow_partial``
answers from ``shard-000``, naming the missing one). Longer tests are marked slow.
"""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the dist extra with ray[serve] is not installed")

from tests.distributed_helpers import free_port as _free_port  # noqa: E402
from tests.distributed_helpers import local_cluster  # noqa: E402
from tests.distributed_helpers import post as _post  # noqa: E402
from tests.distributed_helpers import random_corpus as _corpus  # noqa: E402
from tests.distributed_helpers import shard_docs as _shard_docs  # noqa: E402

QUERIES = ["dense retrieval of passages", "vector index search", "token window encoder"]


@pytest.fixture()
def two_node_cluster():
    with local_cluster([{"shard-000": 1}, {"shard-001": 1}], modules=(__name__,)) as (cluster, nodes):
        yield cluster, nodes[1]


def test_two_node_smoke_exact_merge_and_503_for_a_missing_shard(two_node_cluster, tmp_path, tiny_model):
    from retriever.apps.service.distributed import ServeOptions, deploy_set
    from retriever.index import Index
    from retriever.index_set import IndexSet

    started = time.perf_counter()
    cluster, second = two_node_cluster
    corpus = _corpus(tmp_path)
    options = {"model": str(tiny_model), "device": "cpu", "index": "Flat", "chunk_tokens": 0,
               "precision": "fp32"}  # the set and the single index are compared for equality
    one = Index.build(corpus, tmp_path / "one", **options)
    IndexSet.build(corpus, tmp_path / "set", shards=2, **options)
    serve_options = ServeOptions(port=_free_port(), shard_cpus=0.5, shard_resources={"shard-{number}": 0.01},
                                 shard_timeout=2.0, proxy_location="HeadOnly")
    url = deploy_set(tmp_path / "set", serve_options)

    for filters in (None, {"lang": "fr"}):
        body = {"queries": QUERIES, "k": 10, **({"filters": filters} if filters else {})}
        status, _, answer = _post(url, body)
        assert status == 200, answer
        expected = one.search(QUERIES, k=10, filters=filters, device="cpu")
        for result, hits in zip(answer["results"], expected):
            assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
            assert np.allclose([h["score"] for h in result["hits"]], [h.score for h in hits], atol=1e-5)
    status, _, answer = _post(url, {"query": QUERIES[0], "k": 3, "mode": "fuzzy"})
    assert status == 422 and "error" in answer  # the one-index service's validation and error shape

    cluster.remove_node(second)
    status, headers, answer = _post(url, {"query": QUERIES[0], "k": 5})
    assert status == 503, answer
    assert "shard-001" in answer["error"] and headers.get("retry-after")
    status, _, answer = _post(url, {"query": QUERIES[0], "k": 5, "allow_partial": True})
    assert status == 200 and answer["missing_shards"] == ["shard-001"]
    assert all(h["id"] in {d.id for d in _shard_docs(tmp_path / "set", 0)} for h in answer["hits"])
    one.close()
    print(f"distributed smoke test: {time.perf_counter() - started:.1f}s")


@pytest.mark.slow
def test_a_set_update_is_picked_up_while_serving(two_node_cluster, tmp_path, tiny_model):
    """After `set add`, /health reports the new set version and searches find the new documents; every answer
    meanwhile is whole (k hits)."""
    from retriever.apps.service.distributed import ServeOptions, deploy_set
    from retriever.index_set import IndexSet
    from tests.index_snapshots import corpus_records

    corpus = _corpus(tmp_path)
    built = IndexSet.build(corpus, tmp_path / "set", shards=2, model=str(tiny_model), device="cpu", index="Flat",
                           chunk_tokens=0)
    url = deploy_set(tmp_path / "set", ServeOptions(port=_free_port(), shard_cpus=0.5, proxy_location="HeadOnly"))
    built.add(corpus_records("n", 8), device="cpu")
    deadline = time.monotonic() + 60
    version = 1
    while time.monotonic() < deadline and version < 2:
        status, _, answer = _post(url, {"query": "n3 dense", "k": 5})
        assert status == 200 and len(answer["hits"]) == 5
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            version = json.loads(response.read())["version"]
    assert version == 2
    status, _, answer = _post(url, {"query": "n3 dense", "k": 48})
    assert status == 200 and {f"n{i}" for i in range(8)} <= {h["id"] for h in answer["hits"]}
