"""BM25 and hybrid search on an index set: one Lucene index per shard (statistics per shard), kept current by set
updates in the same set commit, merged by score; hybrid fuses the merged lists once. Needs Java 21+ and pyserini."""

from __future__ import annotations

import os
from importlib import util

import pytest

from indexing.errors import RetrieverError
from retriever.search.java import find_java_home

DOCS = [
    {"_id": "d0", "title": "Photosynthesis", "text": "Chlorophyll in plant leaves turns sunlight into sugar and oxygen.", "topic": "bio"},
    {"_id": "d1", "title": "Volcanoes", "text": "Magma rises through the crust and erupts as lava from the volcano.", "topic": "geo"},
    {"_id": "d2", "title": "Vaccines", "text": "Vaccines train the immune system with antigens and antibodies.", "topic": "bio"},
    {"_id": "d3", "title": "Bees", "text": "Honey bees pollinate flowers; the hive suffers colony collapse.", "topic": "bio"},
    {"_id": "d4", "title": "Glaciers", "text": "Glaciers carve valleys as the ice sheet slowly moves downhill.", "topic": "geo"},
    {"_id": "d5", "title": "Earthquakes", "text": "Tectonic plates slip along a fault and the crust shakes.", "topic": "geo"},
    {"_id": "d6", "title": "Enzymes", "text": "Enzymes speed up reactions in the cell by lowering activation energy.", "topic": "bio"},
    {"_id": "d7", "title": "Tides", "text": "The moon pulls the oceans and tides rise and fall twice a day.", "topic": "geo"},
]


@pytest.fixture(scope="module", autouse=True)
def _java() -> None:
    if util.find_spec("pyserini") is None:
        pytest.skip("pyserini not installed (pip install 'retriever[bm25]')")
    try:
        find_java_home(os.environ)
    except RetrieverError as exc:
        pytest.skip(str(exc))


def test_bm25_and_hybrid_on_a_set_kept_current_by_set_updates(tmp_path, tiny_model):
    from retriever.index_set import IndexSet
    from retriever.search.bm25_index import Bm25NotReadyError

    plain = IndexSet.build(DOCS, tmp_path / "plain", shards=2, model=str(tiny_model), device="cpu", index="Flat",
                           chunk_tokens=0)
    with pytest.raises(Bm25NotReadyError, match="retriever set bm25"):
        plain.search("volcano lava", k=3, mode="bm25", device="cpu")
    manifest = plain.bm25()
    assert manifest.version == 2 and all(manifest.shard_manifest(n).extras.get("bm25") for n in range(2))
    plain.close()

    built = IndexSet.build(DOCS, tmp_path / "set", shards=2, model=str(tiny_model), device="cpu", index="Flat",
                           chunk_tokens=0, bm25=True)
    hits = built.search("volcano lava magma", k=3, mode="bm25", device="cpu")
    assert hits[0].id == "d1" and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    bio = built.search("crust cell sunlight", k=8, mode="bm25", filters={"topic": "bio"}, device="cpu")
    assert bio and all(h.metadata["topic"] == "bio" for h in bio)
    fused = built.search(["volcano lava", "honey bees"], k=4, mode="hybrid", device="cpu")
    assert [len(row) for row in fused] == [4, 4] and fused[1][0].id == "d3"
    report = built.add([{"_id": "n1", "title": "Geysers", "text": "Geysers spout boiling water heated by magma."}], device="cpu")
    assert report.version == 2
    assert "n1" in {h.id for h in built.search("geysers boiling water", k=3, mode="bm25", device="cpu")}
    built.delete(["d1"])
    assert "d1" not in {h.id for h in built.search("volcano lava magma", k=5, mode="bm25", device="cpu")}
    built.close()


def test_the_distributed_service_answers_bm25_and_hybrid_as_the_set_does(tmp_path, tiny_model):
    """The ingress's fan-out (in-process handles standing in for Ray Serve's) ranks bm25 and hybrid as IndexSet."""
    pytest.importorskip("fastapi")
    from retriever.apps.service.fanout import FanoutState
    from retriever.apps.service.shard_server import ShardServer
    from retriever.index_set import IndexSet
    from tests.test_distributed_fanout import FakeHandle

    built = IndexSet.build(DOCS, tmp_path / "set", shards=2, model=str(tiny_model), device="cpu", index="Flat",
                           chunk_tokens=0, bm25=True)
    state = FanoutState(tmp_path / "set", [FakeHandle(ShardServer(str(tmp_path / "set"), n)) for n in range(2)], device="cpu")
    queries = ["volcano lava magma", "honey bees flowers"]
    for mode in ("bm25", "hybrid"):
        expected = built.search(queries, k=4, mode=mode, device="cpu")
        got = state.search(queries, 4, mode=mode).hits
        assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in expected]
    built.close()
