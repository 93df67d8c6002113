"""The HTTP query service (``retriever serve``): search, batching, limits, reload, API key, OpenAPI fuzzing.

Runs the real FastAPI application over a tiny index (tiny model built in the test) through Starlette's
TestClient (lifespan included), one real ``retriever serve`` process on a free port, and schemathesis
against the OpenAPI schema. BM25/hybrid tests need Java and pyserini (skipped otherwise).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from importlib import util
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'retriever[serve]')")
pytest.importorskip("httpx", reason="the serve extra is not installed (pip install 'retriever[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from indexing.builder import BuildConfig, build_index  # noqa: E402
from indexing.documents import Document  # noqa: E402
from indexing.errors import RetrieverError  # noqa: E402
from indexing.readers import read_corpus  # noqa: E402
from indexing.updates import add_documents, delete_documents  # noqa: E402
from retriever.search.hybrid import HybridSearcher  # noqa: E402
from retriever.apps.service.app import create_app  # noqa: E402
from retriever.apps.service.batcher import MicroBatcher, Overloaded  # noqa: E402
from retriever.apps.service.schemas import Limits  # noqa: E402
from retriever.apps.service.state import IndexState  # noqa: E402
from retriever.search.bm25_index import bm25_for_update, build_bm25  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

DOCS = [
    ("d0", "Photosynthesis", "Chlorophyll in plant leaves turns sunlight into sugar and oxygen.", "en"),
    ("d1", "Volcanoes", "Magma rises through the crust and erupts as lava from the volcano.", "en"),
    ("d2", "Black holes", "Gravity of a black hole bends light near the event horizon.", "fr"),
    ("d3", "Vaccines", "Vaccines train the immune system with antigens and antibodies.", "en"),
    ("d4", "Hash tables", "A hash table maps keys to values in constant time.", "fr"),
    ("d5", "Bees", "Honey bees pollinate flowers; the hive suffers colony collapse.", "en"),
    ("d6", "Revolution", "The French revolution ended the monarchy and the king fell.", "fr"),
    ("d7", "Glaciers", "Glaciers melt as ocean temperature and sea level rise.", "en"),
    ("d8", "Jazz", "Saxophone solos improvise over swing rhythm in jazz clubs.", "fr"),
    ("d9", "Bread", "Wild yeast ferments sourdough bread overnight before baking.", "en"),
]
QUERIES = ["lava from a volcano", "immune system antibodies", "sourdough bread", "jazz saxophone"]


def _has_bm25() -> bool:
    if util.find_spec("pyserini") is None:
        return False
    from retriever.search.java import find_java_home

    try:
        find_java_home(os.environ)
    except RetrieverError:
        return False
    return True


needs_bm25 = pytest.mark.skipif(not _has_bm25(), reason="BM25 needs pyserini and Java 21+ (pip install 'retriever[bm25]')")


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a tokenizer that adds [CLS] ... [SEP], as every BERT tokenizer does.

    (The shared fixture's tokenizer adds none, so a query of control characters becomes zero tokens,
    which no real model produces and the model cannot encode; schemathesis generates such queries.)
    """
    import shutil

    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    folder = tmp_path_factory.mktemp("bert-like") / "st"
    shutil.copytree(tiny_model, folder)
    for path in folder.rglob("tokenizer.json"):
        tokenizer = Tokenizer.from_file(str(path))
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        tokenizer.save(str(path))
    return folder


@pytest.fixture(scope="module")
def encoder(model):
    from retriever.encoders.base import load_encoder

    loaded = load_encoder(str(model), device="cpu")
    assert loaded.tokenizer("\x07")["input_ids"] == [loaded.tokenizer.cls_token_id, loaded.tokenizer.sep_token_id]
    return loaded


def _build(folder: Path, encoder) -> Path:
    corpus = folder / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for doc_id, title, text, lang in DOCS:
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text, "lang": lang}) + "\n")
    out = folder / "idx"
    build_index(out, lambda: read_corpus([corpus]), encoder, BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=0))
    return out


@pytest.fixture(scope="module")
def index(tmp_path_factory, encoder) -> Path:
    """A read-mostly index shared by the tests that do not change it."""
    return _build(tmp_path_factory.mktemp("service"), encoder)


@pytest.fixture(scope="module")
def state(index, encoder):
    served = IndexState(index, device="cpu", encoder=encoder)
    yield served
    served.close()


@pytest.fixture(scope="module")
def client(state):
    with TestClient(create_app(state, limits=Limits(max_k=50, max_queries=8, max_query_chars=200, max_body_bytes=4096))) as c:
        yield c


def _reference(index: Path, encoder, queries: list[str], k: int, mode: str = "dense") -> list[list[dict]]:
    """What ``retriever search --json`` prints for these queries (the same library call), as dicts."""
    searcher = HybridSearcher.load(index, device="cpu", encoder=encoder)
    try:
        return [[h.to_dict() for h in hits] for hits in searcher.search(queries, k, mode=mode)]
    finally:
        searcher.close()


def _same_hits(got: list[dict], want: list[dict]) -> None:
    assert [h["id"] for h in got] == [h["id"] for h in want]
    for g, w in zip(got, want):
        assert set(g) == {"id", "score", "title", "text", "passage", "metadata"}
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        assert (g["title"], g["text"], g["passage"], g["metadata"]) == (w["title"], w["text"], w["passage"], w["metadata"])


# --- search ---------------------------------------------------------------------------------------
def test_single_query_matches_the_library_search(client, index, encoder):
    response = client.post("/search", json={"query": QUERIES[0], "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"query", "hits"} and body["query"] == QUERIES[0]
    _same_hits(body["hits"], _reference(index, encoder, [QUERIES[0]], 3)[0])


def test_batch_answers_in_order_and_defaults_to_k10(client, index, encoder):
    response = client.post("/search", json={"queries": QUERIES})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["query"] for r in results] == QUERIES
    for got, want in zip(results, _reference(index, encoder, QUERIES, 10)):
        assert len(got["hits"]) == len(DOCS)  # k=10 by default, and the index holds 10 documents
        _same_hits(got["hits"], want)


def test_filters_apply_before_top_k(client):
    response = client.post("/search", json={"query": QUERIES[0], "k": 10, "filters": {"lang": "fr"}})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits and all(h["metadata"]["lang"] == "fr" for h in hits)
    assert len(hits) == sum(1 for d in DOCS if d[3] == "fr")


def test_concurrent_requests_share_batches(state, index, encoder):
    app = create_app(state, max_batch=64, max_wait_ms=200)  # a long window so the threads below meet in it
    want = _reference(index, encoder, QUERIES, 2)
    with TestClient(app) as c:
        before = app.state.batcher.batches
        replies: dict[int, dict] = {}

        def ask(i: int) -> None:
            replies[i] = c.post("/search", json={"query": QUERIES[i % len(QUERIES)], "k": 2}).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batches = app.state.batcher.batches - before
    assert len(replies) == 12
    for i, reply in replies.items():
        _same_hits(reply["hits"], want[i % len(QUERIES)])
    assert batches < 12  # some requests were searched together


def test_health_and_info(client, state):
    assert client.get("/health").json() == {"status": "ok", "version": state.version}
    info = client.get("/info").json()
    assert info["documents"] == len(DOCS) and info["version"] == state.version and info["factory"] == "Flat"
    assert info["limits"]["max_k"] == 50 and info["modes"] == ["dense", "bm25", "hybrid"]
    assert info["api_key_required"] is False
    assert set(info["stats"]) == {"batches", "queries", "reloads"} and info["stats"]["queries"] >= info["stats"]["batches"]


@needs_bm25
def test_bm25_and_hybrid_modes(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    build_bm25(index, threads=1)
    before = _listing(index)
    state = IndexState(index, device="cpu", encoder=encoder)  # BM25 opened by the first bm25 request
    try:
        with TestClient(create_app(state)) as client:
            for mode in ("bm25", "hybrid"):
                response = client.post("/search", json={"queries": QUERIES[:2], "k": 3, "mode": mode})
                assert response.status_code == 200, response.text
                for got, want in zip(response.json()["results"], _reference(index, encoder, QUERIES[:2], 3, mode)):
                    _same_hits(got["hits"], want)
            hits = client.post("/search", json={"query": "magma lava", "k": 3, "mode": "bm25"}).json()["hits"]
            assert hits[0]["id"] == "d1"
    finally:
        state.close()
    assert _listing(index) == before  # serving, BM25 included, writes nothing into the index


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


def test_bm25_requests_without_a_bm25_index_get_a_409_naming_the_command(client, index):
    before = _listing(index)
    for mode in ("bm25", "hybrid"):
        response = client.post("/search", json={"query": "magma lava", "k": 3, "mode": mode})
        assert response.status_code == 409, response.text
        assert set(response.json()) == {"error"} and f"retriever index bm25 {index}" in response.json()["error"]
    assert client.post("/search", json={"query": "magma lava", "k": 3}).status_code == 200  # dense still answers
    assert _listing(index) == before  # the service never builds BM25 (nor writes anything else)


# --- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ('{"query": "lava"', 400, "malformed JSON"),
        ("[1, 2", 400, "malformed JSON"),
        ({"query": "lava", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"query": "lava", "k": 10**6}, 422, "k: Input should be less than or equal to 50"),
        ({"query": "lava", "k": "ten"}, 422, "k: "),
        ({"query": "lava", "k": True}, 422, "k: Input should be a valid integer"),
        ({"query": "lava", "k": "10"}, 422, "k: Input should be a valid integer"),
        ({"query": "lava", "mode": "sparse"}, 422, "mode: Input should be 'dense', 'bm25' or 'hybrid'"),
        ({"query": "x" * 201}, 422, "query: String should have at most 200 characters"),
        ({"query": ""}, 422, "query: String should have at least 1 character"),
        ({"queries": ["lava", " \t"]}, 422, "queries.1: String should match pattern"),
        ({"query": "\u0085"}, 422, "query: String should match pattern"),  # whitespace to Python, not to ECMAScript
        ({"query": "\ufeff "}, 422, "query: String should match pattern"),  # whitespace to ECMAScript, not to Python
        ('{"query": "lava \\ud800"}', 422, "query: Input should be a valid string, unable to parse raw data as a unicode string"),
        ('{"query": "lava", "filters": {"lang": "\\udfff"}}', 422, "filters.lang: Input should be a valid string"),
        ({"queries": ["a"] * 9}, 422, "queries: List should have at most 8 items"),
        ({"queries": []}, 422, "queries: List should have at least 1 item"),
        ({"queries": "lava"}, 422, "queries: Input should be a valid list"),
        ({"query": "a", "queries": ["b"]}, 422, "exactly one"),
        ({"k": 3}, 422, "exactly one"),
        ({"query": "lava", "mdoe": "bm25"}, 422, "mdoe: Extra inputs are not permitted"),
        ({"query": "lava", "filters": {'la"ng': "en"}}, 422, "filters"),
        ([{"query": "lava"}], 422, "Input should be a valid dictionary"),
        ({"query": "x" * 5000}, 413, "request body larger than 4,096 bytes"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(client, body, status, words):
    if isinstance(body, str):
        response = client.post("/search", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert "x" * 200 not in response.text  # a huge query is never echoed back
    assert client.get("/health").status_code == 200  # and the service is still up


def test_a_body_without_content_length_is_limited_too(client):
    chunks = iter([b'{"query": "', b"x" * 3000, b"x" * 3000, b'"}'])
    response = client.post("/search", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "4,096 bytes" in response.json()["error"]


def test_wrong_method_and_path(client):
    assert client.get("/search").status_code == 405
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_overload_is_a_503_with_retry_after():
    async def scenario() -> tuple[list, list]:
        gate = threading.Event()

        def run(jobs):
            gate.wait(5)
            return [[q.upper() for q in queries] for _, queries in jobs]

        batcher = MicroBatcher(run, max_queries=2, max_wait=0, max_pending=3)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("k", ["a", "b"]))
        await asyncio.sleep(0.05)  # the first job is running, the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit("k", [q])) for q in "cde"]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.submit("k", ["f"])
        gate.set()
        results = [await first] + [await job for job in queued]
        await batcher.stop()
        return results, []

    results, _ = asyncio.run(scenario())
    assert results == [["A", "B"], ["C"], ["D"], ["E"]]


def test_batcher_groups_jobs_and_isolates_failures():
    seen: list[list[tuple]] = []

    def run(jobs):
        seen.append([(key, tuple(queries)) for key, queries in jobs])
        return [ValueError("bad") if key == "bad" else [f"{key}:{q}" for q in queries] for key, queries in jobs]

    async def scenario():
        batcher = MicroBatcher(run, max_queries=4, max_wait=0.05)
        await batcher.start()
        jobs = [batcher.submit("a", ["1"]), batcher.submit("bad", ["2"]), batcher.submit("a", ["3", "4"]),
                batcher.submit("b", ["5", "6"])]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results[0] == ["a:1"] and isinstance(results[1], ValueError) and results[2] == ["a:3", "a:4"]
    assert results[3] == ["b:5", "b:6"]
    assert [len(batch) for batch in seen] == [3, 1]  # 4 queries per batch at most, jobs kept whole



def test_a_batch_starts_as_soon_as_the_searcher_is_free():
    """No fixed wait: a lone job runs at once; the jobs queued while a batch runs make the next batch together."""
    sizes: list[int] = []
    gate = threading.Event()

    def run(jobs):
        sizes.append(sum(len(queries) for _, queries in jobs))
        if len(sizes) == 1:
            gate.wait(5)
        return [list(queries) for _, queries in jobs]

    async def scenario() -> list:
        batcher = MicroBatcher(run, max_queries=8)  # max_wait defaults to 0
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("k", ["a"]))
        while not sizes:  # the first batch started alone, without waiting for company
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit("k", [q])) for q in "bcd"]
        await asyncio.sleep(0.05)
        gate.set()
        results = [await first] + [await job for job in rest]
        assert await batcher.call(lambda: "between batches") == "between batches"
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [["a"], ["b"], ["c"], ["d"]]
    assert sizes == [1, 3]

# --- hot reload -------------------------------------------------------------------------------------
def test_reload_after_add_and_delete(tmp_path, encoder):
    """The next request after a commit sees it; with BM25 open, the new version's BM25 (updated by the same
    commit) is opened before the swap."""
    index = _build(tmp_path, encoder)
    bm25 = _has_bm25()
    if bm25:
        build_bm25(index, threads=1)
    state = IndexState(index, device="cpu", encoder=encoder, bm25=bm25)
    text = "Tardigrades survive the vacuum of outer space."
    try:
        with TestClient(create_app(state)) as c:
            first = c.post("/search", json={"query": text, "k": 1}).json()["hits"][0]["id"]
            assert first != "new"
            report = add_documents(index, [Document("new", "Water bears", text, {"lang": "en"})], encoder,
                                   before_commit=bm25_for_update(index) if bm25 else None)
            assert report.added == 1
            hits = c.post("/search", json={"query": text, "k": 3}).json()["hits"]
            assert hits[0]["id"] == "new" and hits[0]["title"] == "Water bears"
            if bm25:
                assert state.searcher.bm25_open  # opened before the swap, not by this request
                sparse = c.post("/search", json={"query": "tardigrades", "k": 3, "mode": "bm25"}).json()["hits"]
                assert [h["id"] for h in sparse] == ["new"]
            assert c.get("/health").json()["version"] == report.version
            info = c.get("/info").json()
            assert info["documents"] == len(DOCS) + 1 and info["version"] == report.version
            delete_documents(index, ["new", "d1"], before_commit=bm25_for_update(index) if bm25 else None)
            ids = [h["id"] for h in c.post("/search", json={"query": text, "k": 20}).json()["hits"]]
            assert "new" not in ids and "d1" not in ids and len(ids) == len(DOCS) - 1
            if bm25:
                assert c.post("/search", json={"query": "tardigrades", "k": 3, "mode": "bm25"}).json()["hits"] == []
            assert state.reloads == 2
            assert state.searcher.searcher.encoder is encoder  # the model is not loaded again
    finally:
        state.close()


def test_a_broken_commit_keeps_the_served_version(tmp_path, encoder):
    """A manifest naming missing files is not served (nor retried per request); the next good commit is."""
    index = _build(tmp_path, encoder)
    state = IndexState(index, device="cpu", encoder=encoder)
    original = json.loads((index / "manifest.json").read_text())
    try:
        with TestClient(create_app(state)) as c:
            want = c.post("/search", json={"query": QUERIES[0], "k": 3}).json()
            broken = {**original, "version": 2, "files": {**original["files"], "index": "index.v2.faiss"}}
            (index / "manifest.json").write_text(json.dumps(broken))
            assert c.post("/search", json={"query": QUERIES[0], "k": 3}).json() == want
            assert state.refresh() is False and state.version == 1 and state.reloads == 0
            (index / "manifest.json").write_text(json.dumps({**original, "version": 3}))
            assert c.post("/search", json={"query": QUERIES[0], "k": 3}).json() == want
            assert state.version == 3 and state.reloads == 1
    finally:
        state.close()


def test_an_unchanged_manifest_is_not_reloaded(state):
    assert state.refresh() is False
    assert state.reloads == 0


# --- API key ----------------------------------------------------------------------------------------
def test_api_key(state):
    with TestClient(create_app(state, api_key="s3cret")) as c:
        check_api_key(c)


def check_api_key(c) -> None:
    """The API-key contract, asked of a client of a service started with ``api_key="s3cret"`` (also run against
    the distributed set service by tests/test_distributed_acceptance.py)."""
    body = {"query": "lava", "k": 1}
    missing = c.post("/search", json=body)
    assert missing.status_code == 401 and "API key is required" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert c.post("/search", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/search", json=body, headers={"X-API-Key": "nope"}).status_code == 401
    assert c.get("/info").status_code == 401
    assert c.post("/search", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.post("/search", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/info", headers={"X-API-Key": "s3cret"}).json()["api_key_required"] is True
    assert c.get("/health").status_code == 200  # liveness stays open
    schema = c.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


# --- OpenAPI ----------------------------------------------------------------------------------------
def test_openapi_schema_states_the_limits(client):
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["SearchRequest"]
    assert request["properties"]["k"]["maximum"] == 50 and request["properties"]["k"]["minimum"] == 1
    assert request["additionalProperties"] is False
    assert request["oneOf"] == [{"required": ["query"]}, {"required": ["queries"]}]
    assert set(schema["paths"]["/search"]["post"]["responses"]) >= {"200", "400", "413", "422"}


@pytest.fixture(scope="module")
def openapi_schema(state):
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install 'retriever[serve]')")
    app = create_app(state, limits=Limits(max_k=20, max_queries=4, max_query_chars=100, max_body_bytes=8192))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schemathesis_finds_no_server_error(openapi_schema):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    cases = st.one_of(openapi_schema.as_strategy(GenerationMode.POSITIVE), openapi_schema.as_strategy(GenerationMode.NEGATIVE))
    statuses: list[int] = []

    @settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case) -> None:
        response = case.call(timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        if response.status_code == 413:  # a body over max_body_bytes, refused before parsing (schemathesis expects 4xx but not 413)
            assert "larger than" in response.json()["error"]
            return
        case.validate_response(response)  # status codes, content types and bodies as the schema declares

    check()
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)


# --- the command ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retriever_serve_command(index, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RETRIEVER_API_KEY": "k3y", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "serve.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", str(index), "--port", str(port), "--device", "cpu", "--no-access-log"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )
    import httpx

    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # a loaded CI machine can be slow to import torch
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 300 s"
            time.sleep(0.2)
        headers = {"Authorization": "Bearer k3y"}
        response = httpx.post(f"{url}/search", json={"queries": QUERIES[:2], "k": 2}, headers=headers, timeout=120)
        assert response.status_code == 200, response.text
        assert [len(r["hits"]) for r in response.json()["results"]] == [2, 2]
        assert httpx.post(f"{url}/search", json={"query": "lava"}, timeout=120).status_code == 401
        bad = httpx.post(f"{url}/search", content=b"{nope", headers={**headers, "content-type": "application/json"}, timeout=120)
        assert bad.status_code == 400
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    assert "version 1" in (tmp_path / "serve.log").read_text()


def test_serve_bm25_refuses_an_index_without_bm25_in_one_line(index):
    done = subprocess.run([sys.executable, "-m", "cli", "serve", str(index), "--bm25", "--device", "cpu"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                          timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert f"retriever index bm25 {index}" in " ".join(lines[0].split())


def test_serve_refuses_a_missing_index(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cli", "serve", str(tmp_path / "none")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


# --- the fast path: timing header, no-op endpoint, JSON --------------------------------------------------
def test_server_timing_only_when_asked(client):
    plain = client.post("/search", json={"query": QUERIES[0], "k": 2})
    assert plain.status_code == 200 and "server-timing" not in plain.headers
    timed = client.post("/search", json={"query": QUERIES[0], "k": 2}, headers={"X-Server-Timing": "1"})
    assert timed.status_code == 200 and timed.json() == plain.json()
    spans = dict(part.strip().split(";", 1) for part in timed.headers["server-timing"].split(","))
    assert set(spans) == {"parse", "wait", "encode", "search", "hits", "return", "json", "batch"}
    assert all(float(v.removeprefix("dur=")) >= 0 for n, v in spans.items() if n != "batch")
    assert spans["batch"] == 'desc="1"'


def test_noop_endpoint_validates_like_search_and_stays_out_of_the_schema(state):
    limits = Limits(max_k=50, max_queries=8, max_query_chars=200, max_body_bytes=4096)
    with TestClient(create_app(state, limits=limits, noop=True, api_key="s3cret")) as c:
        key = {"X-API-Key": "s3cret"}
        assert c.post("/noop", json={"query": "lava", "k": 3}, headers=key).json() == {"ok": True}
        assert c.post("/noop", json={"query": "lava"}).status_code == 401
        bad = c.post("/noop", json={"query": "lava", "k": 0}, headers=key)
        assert bad.status_code == 422 and "k: Input should be greater than or equal to 1" in bad.json()["error"]
        assert "/noop" not in c.get("/openapi.json").json()["paths"]
        assert c.app.state.batcher.batches == 0  # nothing was searched
    with TestClient(create_app(state)) as c:
        assert c.post("/noop", json={"query": "lava"}).status_code == 404  # only with noop=True


def test_answers_are_the_json_the_standard_library_writes():
    from retriever.apps.service.timing import dumps

    content = {"query": "é \u2028 \"x\"", "hits": [{"id": "1", "score": 0.1 + 0.2, "metadata": {"n": 10**30, "t": "\x01"}}]}
    assert json.loads(dumps(content)) == content  # 10**30: beyond orjson, written by the standard library
    small = {"query": "é", "hits": [{"id": "1", "score": 0.30000000000000004, "metadata": {}}]}
    assert dumps(small) == json.dumps(small, ensure_ascii=False, separators=(",", ":")).encode()
