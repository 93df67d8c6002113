"""Acceptance tests of the distributed set service (``retriever serve SET``: Ray Serve, one deployment per shard),
all marked slow. Run niced on a shared machine:

    nice -n 19 .venv/bin/python -m pytest -m slow tests/test_distributed_acceptance.py -x -q -s

One local 3-node Ray cluster (``ray.cluster_utils.Cluster``, module scope) serves every test. Custom node resources
pin the shards: the head declares ``shard-000`` and ``shard-003``, node 2 ``shard-001``, node 3 ``shard-002``
(``--shard-resources '{"shard-{number}": 0.01}'``). Each test deploys its set as the one Serve application.

The SciFact set is a subset: the first 1,000 of SciFact's 5,183 documents (../shared/data/scifact;
``RETRIEVER_ACCEPT_DOCS`` changes the count). All of them take ~10 min to encode with MiniLM on this loaded 2-core
machine, niced; 1,000 take ~2 min. 4 shards, model ``minilm``, Flat, precision fp32, one passage per document
(``chunk_tokens=0``), metadata ``group`` g0/g1/g2 for filters. The reference Flat index is built from the set's
own vectors (``indexing.from_vectors``), not encoded again; ``RETRIEVER_ACCEPT_CACHE=DIR`` keeps both in DIR
between runs. Queries: the first 1,000 SciFact query texts with test or train judgments (1,109 exist).

1. test_4_shards_on_3_nodes_answer_as_one_flat_index: 1,000 queries, dense and filtered, top-10 ids identical
   to the Flat index's and scores within 1e-5; the shards run on 3 nodes as pinned.
2. test_set_add_and_delete_are_picked_up_while_serving: ``retriever index add SET``, ``set delete``, ``index
   delete SET`` while served, each new set version served and answering as the set does in-process; ``set delete``
   SIGKILLed before its commit point (the old version stays, served) and after it (the new version, with shard
   manifests lagging, is picked up); a watcher's every answer meanwhile is 200 and one committed version's whole
   answer. SIGKILL at 3 named and 5 seeded random points of a set update (``set add --upsert`` in a subprocess:
   the old or the new version, verified, documents and search results compared) is tests/test_index_set_search.py::
   test_sigkill_during_a_set_update_leaves_the_old_or_the_new_set_version, not duplicated here.
3. test_killing_a_shard_replica_under_load[5.0|1.0]: SIGKILL of shard-001's replica process (pid from the GCS actor
   table) 5 s into 30 s of 16 client threads (every 4th request with ``allow_partial``), with the default shard
   timeout of 5 s (which the replica's restart here fits in: few or no 503s) and with 1 s (503s expected).
4. test_single_index_service_contract[...]: tests/test_service.py's HTTP tests against the served set (answers
   equal to one index's, filters, health/info, the 24 bad requests, unbounded bodies, 404/405, OpenAPI limits,
   schemathesis fuzzing, API key, ``retriever serve SET --ray-address`` as a subprocess), plus bm25 without BM25.
5. test_throughput_distributed_vs_single_process: 32 clients for 60 s each, the ratio printed (no bar).

tests/test_service.py tests that do not apply to the distributed service, and why:
- test_concurrent_requests_share_batches, test_overload_is_a_503_with_retry_after, test_batcher_groups_jobs_and_
  isolates_failures, test_a_batch_starts_as_soon_as_the_searcher_is_free: they build their own in-process app or
  MicroBatcher (the set's ingress uses the same class).
- test_reload_after_add_and_delete, test_a_broken_commit_keeps_the_served_version, test_an_unchanged_manifest_is_
  not_reloaded: single-index reloads (IndexState); a set's are test 2 here and tests/test_distributed_fanout.py.
- test_bm25_and_hybrid_modes: needs Java and pyserini; a set's BM25 statistics are per shard, so its scores differ
  from one index's by design (tests/test_index_set_bm25.py compares the distributed fan-out with IndexSet instead).
  test_bm25_requests_without_a_bm25_index_get_a_409_naming_the_command applies in its set form (the 409 names
  ``retriever set bm25 SET``): case ``bm25_without_a_bm25_index_is_a_409_naming_the_set_command``.
- test_server_timing_only_when_asked, test_noop_endpoint_validates_like_search_and_stays_out_of_the_schema,
  test_answers_are_the_json_the_standard_library_writes: the single-index fast path (the set's ingress has no
  Server-Timing header nor /noop).
- test_serve_bm25_refuses_an_index_without_bm25_in_one_line: in its set form in tests/test_index_set_search.py::
  test_index_info_verify_and_serve_take_a_set; test_serve_refuses_a_missing_index: no set involved.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the dist extra with ray[serve] is not installed")
pytest.importorskip("httpx", reason="the serve extra is not installed")

from tests import test_service as single  # noqa: E402
from tests.cli_helpers import run_cli  # noqa: E402
from tests.conftest import shared_dataset  # noqa: E402
from tests.distributed_helpers import flat_from_set, free_port, get_json, local_cluster, post, replicas  # noqa: E402

pytestmark = pytest.mark.slow

DOCS = int(os.environ.get("RETRIEVER_ACCEPT_DOCS", "1000"))
QUERIES = 1000
EXTRA = 8
"""SciFact documents after the first DOCS, added by test 2."""
NODES = [{"shard-000": 1, "shard-003": 1}, {"shard-001": 1}, {"shard-002": 1}]
FILTER = {"group": "g0"}

model = single.model  # the tiny BERT-like model of the single-index service tests (a fixture)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(NODES, modules=(__name__,)) as (ray_cluster, nodes):
        yield {"cluster": ray_cluster, "nodes": nodes, "port": free_port(), "deployed": None}


def _deploy(cluster: dict, root: Path, **options) -> str:
    """Serve the set at ``root`` (unless it is already what is served); returns the URL once a search answers."""
    from retriever.apps.service.distributed import ServeOptions, deploy_set

    url = f"http://127.0.0.1:{cluster['port']}"
    key = (str(root), repr(sorted(options.items())))
    if cluster["deployed"] != key:
        started = time.perf_counter()
        deploy_set(root, ServeOptions(port=cluster["port"], shard_cpus=0.5, shard_resources={"shard-{number}": 0.01},
                                      proxy_location="HeadOnly", **options))
        cluster["deployed"] = key
        headers = {"X-API-Key": options["api_key"]} if options.get("api_key") else None
        status, _, answer = post(url, {"query": "warm up", "k": 1}, timeout=300, headers=headers)
        assert status == 200, answer
        print(f"deployed {root.name} in {time.perf_counter() - started:.1f}s")
    return url


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    """The SciFact set (4 shards), the Flat index made from its vectors, the queries and the Flat index's answers."""
    from retriever.index_set import IndexSet
    from retriever.search.searcher import Searcher

    data = shared_dataset("scifact")
    cache = os.environ.get("RETRIEVER_ACCEPT_CACHE")  # a folder kept between runs: the set is encoded once
    folder = Path(cache) / f"scifact-{DOCS}" if cache else tmp_path_factory.mktemp("scifact")
    folder.mkdir(parents=True, exist_ok=True)
    with open(data / "corpus.jsonl", encoding="utf-8") as fh:
        records = [{**json.loads(line), "group": f"g{i % 3}"} for i, line in enumerate(itertools.islice(fh, DOCS + EXTRA))]
    corpus, extra = folder / "corpus.jsonl", folder / "extra.jsonl"
    for path, part in ((corpus, records[:DOCS]), (extra, records[DOCS:])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    started = time.perf_counter()
    if not (folder / "set" / "set.json").is_file():
        IndexSet.build(corpus, folder / "set", shards=4, model="minilm", device="cpu", index="Flat", chunk_tokens=0,
                       precision="fp32")
    built = time.perf_counter()
    flat = folder / "flat" if (folder / "flat" / "manifest.json").is_file() else flat_from_set(folder / "set", folder / "flat")
    print(f"SciFact set: {DOCS} documents encoded into 4 shards in {built - started:.0f}s; "
          f"Flat index from its vectors in {time.perf_counter() - built:.1f}s")
    queries = _scifact_queries(data, records[:DOCS])
    searcher = Searcher.load(flat, device="cpu")
    try:
        vectors = searcher.encoder.encode_queries(queries, batch_size=64)
        dense = searcher.search_vectors(vectors, 10)
        filtered = searcher.search_vectors(vectors, 10, filters=FILTER)
    finally:
        searcher.close()
    return {"folder": folder, "set": folder / "set", "flat": flat, "extra": extra, "extra_records": records[DOCS:],
            "queries": queries, "dense": dense, "filtered": filtered}


def _scifact_queries(data: Path, records: list[dict]) -> list[str]:
    """The first QUERIES SciFact query texts with test or train judgments; corpus sentences if there are fewer."""
    judged = {line.split("\t")[0] for split in ("test", "train") if (data / "qrels" / f"{split}.tsv").is_file()
              for line in (data / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]}
    texts = [q["text"] for q in map(json.loads, (data / "queries.jsonl").read_text(encoding="utf-8").splitlines())
             if q["_id"] in judged][:QUERIES]
    found = len(texts)
    sentences = (s.strip() for r in records for s in r["text"].split(". ") if len(s.split()) > 4)
    texts += list(itertools.islice(sentences, QUERIES - len(texts)))
    print(f"queries: {found} SciFact test+train query texts" + (f" + {len(texts) - found} corpus sentences" if len(texts) > found else ""))
    return texts


def _compare(results: list[dict], expected: list[list]) -> tuple[int, float]:
    """(queries whose top-10 ids differ, largest score difference)."""
    differ, worst = 0, 0.0
    for result, hits in zip(results, expected, strict=True):
        got = result["hits"]
        if [h["id"] for h in got] != [h.id for h in hits]:
            differ += 1
            continue
        if hits:
            worst = max(worst, float(np.max(np.abs(np.array([h["score"] for h in got]) - [h.score for h in hits]))))
    return differ, worst


# --- 1. a 4-shard set on 3 nodes answers as one Flat index --------------------------------------------------------
def test_4_shards_on_3_nodes_answer_as_one_flat_index(cluster, scifact):
    started = time.perf_counter()
    url = _deploy(cluster, scifact["set"])
    placed = {n: replicas(f"shard-{n:03d}") for n in range(4)}
    assert all(len(r) == 1 for r in placed.values()), placed
    nodes = [placed[n][0]["node"] for n in range(4)]
    assert nodes[0] == nodes[3] == cluster["nodes"][0].node_id and len(set(nodes)) == 3, nodes
    queries = scifact["queries"]
    for name, filters, expected in (("dense", None, scifact["dense"]), ("filtered", FILTER, scifact["filtered"])):
        results = []
        for at in range(0, len(queries), 50):
            status, _, answer = post(url, {"queries": queries[at:at + 50], "k": 10, **({"filters": filters} if filters else {})})
            assert status == 200, answer
            results += answer["results"]
        differ, worst = _compare(results, expected)
        if filters:
            assert all(h["metadata"]["group"] == "g0" for r in results for h in r["hits"])
        print(f"{name}: {len(results)} queries, {differ} with top-10 ids unlike the Flat index's, "
              f"largest score difference {worst:.2e}")
        assert differ == 0 and worst <= 1e-5
    print(f"test 1: {time.perf_counter() - started:.0f}s")


# --- 2. updates while serving ---------------------------------------------------------------------------------------
class Watcher:
    """Asks the service the same batch over and over from a thread; keeps every answer's top-10 ids."""

    def __init__(self, url: str, queries: list[str]):
        self.url, self.queries = url, queries
        self.answers: list[tuple[int, list[list[str]]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            status, _, answer = post(self.url, {"queries": self.queries, "k": 10})
            ids = [[h["id"] for h in r["hits"]] for r in answer["results"]] if status == 200 else []
            self.answers.append((status, ids))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(120)


def _local_ids(root: Path, queries: list[str]) -> list[list[str]]:
    from retriever.index_set import IndexSet

    with IndexSet.open(root) as index_set:
        return [[h.id for h in hits] for hits in index_set.search(queries, k=10, device="cpu")]


def _picked_up(url: str, version: int, seconds: float = 90) -> float:
    started = time.monotonic()
    while get_json(url, "/health")["version"] != version:
        assert time.monotonic() - started < seconds, f"set version {version} not served after {seconds}s"
        time.sleep(0.2)
    return time.monotonic() - started


def _documents(root: Path) -> set[str]:
    from indexing.set_open import open_set

    opened = open_set(root, verify=True)
    try:
        return {d.id for shard in opened.shards for d in shard.docstore.iter_documents()}
    finally:
        opened.close()


def test_set_add_and_delete_are_picked_up_while_serving(cluster, scifact, tmp_path):
    from indexing.set_manifest import read_set_manifest
    from retriever.index_set import IndexSet

    root = tmp_path / "set"
    shutil.copytree(scifact["set"], root)
    url = _deploy(cluster, root)
    probe = scifact["queries"][:8]
    expected = {1: _local_ids(root, probe)}
    documents = _documents(root)
    extra = [r["_id"] for r in scifact["extra_records"]]
    old = sorted({i for row in expected[1] for i in row[:2]})[:3]  # documents the probe queries find
    steps = [  # (command, environment, documents after it, killed)
        (["index", "add", root, scifact["extra"], "--device", "cpu"], None, documents | set(extra), False),
        (["set", "delete", root, "--ids", ",".join(extra[:2] + old[:1])], None, (documents | set(extra[2:])) - {old[0]}, False),
        (["set", "delete", root, "--ids", extra[2]], "before-set-rename", None, True),
        (["set", "delete", root, "--ids", extra[3]], "after-set-rename", (documents | {extra[2]} | set(extra[4:])) - {old[0]}, True),
        (["index", "delete", root, "--ids", old[1]], None, (documents | {extra[2]} | set(extra[4:])) - set(old[:2]), False),
    ]
    documents_now = documents
    watcher = Watcher(url, probe)
    try:
        for command, fault, after, killed in steps:
            before = read_set_manifest(root).version
            proc = run_cli(*command, env={"RETRIEVER_TEST_FAULT": fault} if fault else None)
            assert proc.returncode == (-signal.SIGKILL if killed else 0), proc.stderr
            IndexSet.open(root).verify()
            version = read_set_manifest(root).version
            if after is None:  # killed before the commit point: the old version, whole, still served
                assert version == before and _documents(root) == documents_now
                time.sleep(3)
                assert get_json(url, "/health")["version"] == before
                print(f"{' '.join(map(str, command[:2]))} killed at {fault}: the set stays at version {before}, served")
                continue
            assert version == before + 1 and _documents(root) == after
            documents_now = after
            expected[version] = _local_ids(root, probe)
            waited = _picked_up(url, version)
            status, _, answer = post(url, {"queries": probe, "k": 10})
            assert status == 200 and [[h["id"] for h in r["hits"]] for r in answer["results"]] == expected[version]
            print(f"{' '.join(map(str, command[:2]))}{' killed at ' + fault if fault else ''}: version {version} "
                  f"served {waited:.1f}s after the command returned")
        found = post(url, {"queries": [r["title"] for r in scifact["extra_records"][4:]], "k": 10})[2]["results"]
        assert all(i in [h["id"] for h in r["hits"]] for r, i in zip(found, extra[4:]))  # added titles find their documents
    finally:
        watcher.close()
    seen = {}
    for status, ids in watcher.answers:
        assert status == 200, status
        match = "/".join(str(v) for v, e in expected.items() if e == ids)  # versions whose answers are alike: "3/4"
        assert match, "an answer that is no committed version's whole answer"
        seen[match] = seen.get(match, 0) + 1
    print(f"watcher: {len(watcher.answers)} answers while updating, all 200, each one committed version's whole answer; "
          f"answers per set version: {seen}")


# --- 3. a shard replica killed under load ---------------------------------------------------------------------------
def _client(url: str, pool: list[str], expected: list[list[str]], first: int, step: int, stop: threading.Event,
            log: list) -> None:
    import httpx

    with httpx.Client(timeout=60) as http:
        for i in itertools.count(first, step):
            if stop.is_set():
                return
            partial = i % 4 == 3
            body = {"query": pool[i % len(pool)], "k": 10, **({"allow_partial": True} if partial else {})}
            sent = time.monotonic()
            try:
                response = http.post(f"{url}/search", json=body)
                status, retry = response.status_code, response.headers.get("retry-after")
                answer = response.json() if response.headers.get("content-type") == "application/json" else {}
            except Exception as exc:  # noqa: BLE001 - counted as "other"
                status, answer, retry = type(exc).__name__, {}, None
            log.append((sent, time.monotonic(), _verdict(status, answer, retry, partial, expected[i % len(pool)])))


def _verdict(status, answer: dict, retry, partial: bool, expected: list[str]) -> str:
    """whole (200, the full answer), partial (200 naming missing shards, asked for), 503 (with Retry-After),
    or a violation: unasked-partial (200 not the full answer, or naming missing shards, when not asked), 503-no-retry,
    other (any other status or a transport error)."""
    if status == 200:
        ids = [h["id"] for h in answer["hits"]]
        if partial and answer["missing_shards"]:
            return "partial"
        if ids != expected or (not partial and "missing_shards" in answer):
            return "unasked-partial"
        return "whole"
    if status == 503:
        return "503" if retry else "503-no-retry"
    return "other"


@pytest.mark.parametrize("shard_timeout", [5.0, 1.0])
def test_killing_a_shard_replica_under_load(cluster, scifact, shard_timeout):
    """The default --shard-timeout (5 s) and 1 s, shorter than a replica's restart here, so that requests meet it."""
    url = _deploy(cluster, scifact["set"], **({} if shard_timeout == 5.0 else {"shard_timeout": shard_timeout}))
    pool = scifact["queries"][:64]
    expected = [[h.id for h in hits] for hits in scifact["dense"][:64]]
    victim = replicas("shard-001")
    assert len(victim) == 1
    log: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=_client, args=(url, pool, expected, n, 16, stop, log), daemon=True) for n in range(16)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(5)
    os.kill(victim[0]["pid"], signal.SIGKILL)
    killed = time.monotonic()
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        failed = [done for _, done, verdict in list(log) if verdict != "whole" and done >= killed]
        settled = now - (max(failed) if failed else killed) >= 5  # 5 s of whole answers since the last failure
        if (now - began >= 30 and settled) or now - killed > 65:
            break
    stop.set()
    for thread in threads:
        thread.join(90)
    counts = {v: sum(1 for *_, verdict in log if verdict == v) for v in
              ("whole", "partial", "503", "503-no-retry", "unasked-partial", "other")}
    failed = [done for _, done, verdict in log if verdict != "whole" and done >= killed]
    recovery = (max(failed) - killed) if failed else 0.0
    after = replicas("shard-001")
    print(f"--shard-timeout {shard_timeout:g}: shard-001 replica (pid {victim[0]['pid']}) SIGKILLed {killed - began:.1f}s into the load, "
          f"{time.monotonic() - began:.0f}s of 16 clients: {len(log)} requests; 200: {counts['whole'] + counts['partial']} "
          f"({counts['whole']} whole, {counts['partial']} partial as asked by allow_partial); 503: "
          f"{counts['503'] + counts['503-no-retry']} ({counts['503-no-retry']} without Retry-After); partial without "
          f"asking: {counts['unasked-partial']}; others: {counts['other']}; every request succeeded again "
          f"{recovery:.1f}s after the kill; new replica pid {[r['pid'] for r in after]}")
    assert counts["unasked-partial"] == 0 and counts["503-no-retry"] == 0 and counts["other"] == 0
    assert recovery <= 60 and len(after) == 1 and after[0]["pid"] != victim[0]["pid"]
    assert any(done >= killed + recovery + 1 for _, done, verdict in log if verdict == "whole")


# --- 4. the single-index service tests against the served set -------------------------------------------------------
@pytest.fixture(scope="module")
def docs_service(tmp_path_factory, model):
    """tests/test_service.py's 10 documents as one Flat index and as a 2-shard set, both encoded in fp32."""
    from retriever.encoders.base import load_encoder
    from retriever.index_set import IndexSet

    folder = tmp_path_factory.mktemp("service-set")
    encoder = load_encoder(str(model), device="cpu", precision="fp32")
    index = single._build(folder, encoder)
    IndexSet.build(folder / "corpus.jsonl", folder / "set", shards=2, model=str(model), device="cpu", index="Flat",
                   chunk_tokens=0, precision="fp32")
    return SimpleNamespace(index=index, encoder=encoder, root=folder / "set")


LIMITS = {"max_k": 50, "max_queries": 8, "max_query_chars": 200, "max_body_bytes": 4096}
_BAD = next(m for m in single.test_bad_requests_get_a_4xx_with_a_message.pytestmark if m.name == "parametrize").args[1]
CASES = {
    "single_query_matches_the_library_search": lambda c, s: single.test_single_query_matches_the_library_search(c, s.index, s.encoder),
    "batch_answers_in_order_and_defaults_to_k10": lambda c, s: single.test_batch_answers_in_order_and_defaults_to_k10(c, s.index, s.encoder),
    "filters_apply_before_top_k": lambda c, s: single.test_filters_apply_before_top_k(c),
    "health_and_info": lambda c, s: single.test_health_and_info(c, SimpleNamespace(version=1)),
    **{f"bad_request_{n}": (lambda c, s, case=case: single.test_bad_requests_get_a_4xx_with_a_message(c, *case))
       for n, case in enumerate(_BAD)},
    "a_body_without_content_length_is_limited_too": lambda c, s: single.test_a_body_without_content_length_is_limited_too(c),
    "wrong_method_and_path": lambda c, s: single.test_wrong_method_and_path(c),
    "openapi_schema_states_the_limits": lambda c, s: single.test_openapi_schema_states_the_limits(c),
    "bm25_without_a_bm25_index_is_a_409_naming_the_set_command": lambda c, s: _bm25_409(c, s.root),
    "schemathesis_finds_no_server_error": lambda c, s: _fuzz(c),
    "api_key": None,  # deployed with an API key: below
    "retriever_serve_command": None,  # `retriever serve SET --ray-address` in a subprocess: below
}


def _bm25_409(client, root: Path) -> None:
    for mode in ("bm25", "hybrid"):
        response = client.post("/search", json={"query": "magma lava", "k": 3, "mode": mode})
        assert response.status_code == 409, response.text
        assert set(response.json()) == {"error"} and f"retriever set bm25 {root}" in response.json()["error"]
        assert "\n" not in response.json()["error"]
    assert client.post("/search", json={"query": "magma lava", "k": 3}).status_code == 200


def _fuzz(client) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    single.test_schemathesis_finds_no_server_error(schemathesis.openapi.from_url(f"{client.base_url}/openapi.json"))


@pytest.mark.parametrize("case", list(CASES))
def test_single_index_service_contract(cluster, docs_service, case):
    import httpx

    if case == "retriever_serve_command":
        return _serve_command(cluster, docs_service.root)
    keyed = case == "api_key"
    url = _deploy(cluster, docs_service.root, limits=LIMITS, **({"api_key": "s3cret"} if keyed else {}))
    with httpx.Client(base_url=url, timeout=120) as client:
        if keyed:
            single.check_api_key(client)
        else:
            CASES[case](client, docs_service)


def _status(url: str, headers: dict) -> int | None:
    import httpx

    try:
        return httpx.post(url, json={"query": "lava"}, headers=headers, timeout=120).status_code
    except httpx.TransportError:  # nothing listens yet
        return None


def _serve_command(cluster: dict, root: Path) -> None:
    """tests/test_service.py::test_retriever_serve_command for a set: ``retriever serve SET --ray-address ADDR`` (key
    from RETRIEVER_API_KEY) deploys onto the running cluster; its answers, 401 and 400; it serves until stopped."""
    import subprocess
    import sys

    import httpx

    cluster["deployed"] = None  # whatever the command leaves deployed, the next test deploys its own
    url = f"http://127.0.0.1:{cluster['port']}"
    log = open(root.parent / "serve.log", "w+")
    env = {**os.environ, "PYTHONPATH": str(single.REPO), "RETRIEVER_API_KEY": "k3y", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "cli", "serve", str(root), "--ray-address", cluster["cluster"].address,
                                "--port", str(cluster["port"]), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=single.REPO)
    try:
        headers = {"Authorization": "Bearer k3y"}
        deadline = time.monotonic() + 300
        while _status(f"{url}/search", headers) != 200:  # the command's app (its key is k3y) answers
            assert process.poll() is None, (root.parent / "serve.log").read_text()
            assert time.monotonic() < deadline, "retriever serve SET did not deploy in 300 s"
            time.sleep(0.5)
        assert _status(f"{url}/search", {}) == 401
        response = httpx.post(f"{url}/search", json={"queries": single.QUERIES[:2], "k": 2}, headers=headers, timeout=120)
        assert response.status_code == 200, response.text
        assert [len(r["hits"]) for r in response.json()["results"]] == [2, 2]
        bad = httpx.post(f"{url}/search", content=b"{nope", headers={**headers, "content-type": "application/json"}, timeout=120)
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
        assert process.poll() is None  # serving until stopped
    finally:
        process.terminate()
        process.wait(60)
        log.close()
    assert f"serving set {root}" in " ".join((root.parent / "serve.log").read_text().split())


# --- 5. throughput, reported ----------------------------------------------------------------------------------------
def test_throughput_distributed_vs_single_process(cluster, scifact):
    """32 clients for 60 s against each service, in the order distributed, single, single, distributed (the load of
    the machine drifts: each service gets an early and a late turn); the ratio of their summed throughputs."""
    from benchmarks.serve_load import Server, generator, run_load

    seconds, clients = float(os.environ.get("RETRIEVER_ACCEPT_LOAD_SECONDS", "60")), 32
    bodies = [json.dumps({"query": q, "k": 10}).encode() for q in scifact["queries"][:256]]
    kind = generator("auto")
    _deploy(cluster, scifact["set"])
    server = Server(scifact["flat"], "--device", "cpu", "--query-backend", "torch")
    runs: dict[str, list[dict]] = {"distributed": [], "single": []}
    try:
        assert post(server.url, {"query": "warm up", "k": 1}, timeout=300)[0] == 200
        for name in ("distributed", "single", "single", "distributed"):
            port = cluster["port"] if name == "distributed" else server.port
            runs[name].append(run_load(kind, port, "/search", bodies, clients, seconds))
    finally:
        server.stop()
    rate = {name: sum(r["throughput_rps"] * r["seconds"] for r in rs) / sum(r["seconds"] for r in rs) for name, rs in runs.items()}
    for name, rs in runs.items():
        print(f"{name}: " + "; ".join(f"{r['throughput_rps']} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                                      f"errors {r['errors']}" for r in rs))
    print(f"{clients} clients x {seconds:.0f}s x 2 turns each ({kind}), {DOCS} SciFact documents, MiniLM torch query "
          f"encoder, k=10: distributed (4 shards, 3 local Ray nodes on one 2-core machine) {rate['distributed']:.1f} req/s, "
          f"single-process retriever serve {rate['single']:.1f} req/s; ratio distributed/single "
          f"{rate['distributed'] / rate['single']:.2f}x")
    assert all(r["errors"] == 0 for rs in runs.values() for r in rs), runs
