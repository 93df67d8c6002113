"""Shared by the distributed-service tests (tests/test_distributed_set.py, tests/test_distributed_acceptance.py):
local Ray clusters, HTTP calls, small corpora, the pid of a Serve replica, and one Flat index made from a set's
own vectors (so the reference index is not encoded a second time)."""

from __future__ import annotations

import json
import random
import socket
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

WORDS = "dense retrieval vector index query passage document search encoder model token window".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, timeout: float = 60, headers: dict | None = None) -> tuple[int, dict, dict]:
    """``POST url/search``: (status, lower-cased headers, JSON body)."""
    request = urllib.request.Request(f"{url}/search", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def get_json(url: str, path: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(f"{url}{path}", timeout=timeout) as response:
        return json.loads(response.read())


def random_corpus(folder: Path, count: int = 40) -> Path:
    """``count`` documents of random words (no two alike, so no tied scores) with metadata ``lang`` (en/fr)."""
    path = folder / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            rng = random.Random(i)
            text = " ".join(rng.choice(WORDS) for _ in range(8 + i % 9))
            fh.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text, "lang": "en" if i % 3 else "fr"}) + "\n")
    return path


def shard_docs(root: Path, number: int) -> list:
    """The documents of shard ``number`` of the committed set version at ``root``."""
    from indexing.set_open import open_set

    opened = open_set(root)
    try:
        return list(opened.shards[number].docstore.iter_documents())
    finally:
        opened.close()


@contextmanager
def local_cluster(nodes: list[dict[str, float]], cpus: int = 2, modules: tuple[str, ...] = ()) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster`` of ``len(nodes)`` nodes (the first is the head), node i declaring the custom
    resources ``nodes[i]``, with this process connected as its driver; yields ``(cluster, [node, ...])``.
    ``modules`` are pickled by value (test modules the workers cannot import)."""
    import ray
    import ray.cloudpickle
    from ray.cluster_utils import Cluster

    for name in (__name__, *modules):
        ray.cloudpickle.register_pickle_by_value(sys.modules[name])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "resources": nodes[0]})
    added = [cluster.head_node] + [cluster.add_node(num_cpus=cpus, resources=resources) for resources in nodes[1:]]
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield cluster, added
    finally:  # the cluster's shutdown ends Serve's actors with it (serve.shutdown() alone takes ~20 s)
        ray.shutdown()
        cluster.shutdown()


def replicas(deployment: str, app: str = "retriever") -> list[dict[str, Any]]:
    """The live replica actors of a Serve deployment, from the GCS actor table (Ray's state, no dashboard needed):
    ``[{"pid", "node", "actor", "restarts"}]``."""
    from ray._private.state import actors

    wanted = f"ServeReplica:{app}:{deployment}"
    return [{"pid": a["Pid"], "node": a["Address"]["NodeID"], "actor": a["ActorID"], "restarts": a["NumRestarts"]}
            for a in actors().values() if a["ActorClassName"] == wanted and a["State"] == "ALIVE"]


def flat_from_set(root: Path, out: Path) -> Path:
    """One Flat index at ``out`` holding every passage vector of the set at ``root`` (as stored: FAISS
    reconstructs them), with the same ids, titles, texts, metadata and model record. For unchunked sets."""
    import numpy as np

    from indexing.builder import BuildConfig
    from indexing.from_vectors import build_from_vectors
    from indexing.set_open import open_set

    opened = open_set(root)
    try:
        ids, vectors, documents = [], [], {}
        for shard in opened.shards:
            assert shard.manifest.chunking["chunk_tokens"] == 0, "flat_from_set: unchunked sets only"
            rows = shard.docstore.passage_rows(-1, 1 << 40)
            pids = np.array([row[0] for row in rows], dtype=np.int64)
            vectors.append(shard.vectors.reconstruct(pids))
            ids += [row[1] for row in rows]
            documents.update(shard.docstore.documents([row[1] for row in rows]))
        record = dict(opened.shards[0].manifest.encoder)
        config = BuildConfig(corpus=(f"vectors of {root}",), factory="Flat", metric=opened.shards[0].manifest.metric)
    finally:
        opened.close()
    build_from_vectors(out, np.concatenate(vectors), ids, config, encoder_record=record, documents=documents.__getitem__)
    return out
