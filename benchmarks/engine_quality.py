"""Quality: the engine loses nothing against exact search done directly with sentence-transformers.

SciFact test (300 queries), default model (minilm):
  * our Flat index with --chunk-tokens 0 vs SentenceTransformer.encode + numpy exact search (nDCG@10, R@100);
  * the default chunked index beside it;
  * recall@10 of auto / IVF / HNSW indexes against exact search (built from the same vectors).

    python -m benchmarks.engine_quality            # writes benchmarks/results/engine_quality.{json,md}
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import require_data, write_results
from indexing.builder import BuildConfig, build_index
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels
from indexing.from_vectors import build_from_vectors
from indexing.readers import read_corpus
from retriever.encoders.base import load_encoder
from retriever.evaluation.metrics import evaluate
from retriever.hits import Hits
from retriever.search.searcher import Searcher

METRICS = ["nDCG@10", "R@100"]


def engine_run(index: Path, queries: dict[str, str], k: int = 100, **options) -> dict[str, Hits]:
    searcher = Searcher.load(index, device="cpu")
    ids = list(queries)
    return dict(zip(ids, searcher.retrieve([queries[q] for q in ids], k, **options)))


def direct_run(encoder, corpus: Path, queries: dict[str, str], k: int = 100) -> dict[str, Hits]:
    """Exact search done directly with sentence-transformers and numpy (the reference)."""
    docs = list(read_corpus([corpus]))
    model = encoder.model
    doc_vectors = model.encode([d.full_text() for d in docs], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    ids = list(queries)
    query_vectors = model.encode([queries[q] for q in ids], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    scores = query_vectors @ doc_vectors.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return {q: Hits([docs[j].id for j in row], scores[i, row].astype(np.float32)) for i, (q, row) in enumerate(zip(ids, top))}


def recall_at(approx: dict[str, Hits], exact: dict[str, Hits], k: int = 10) -> float:
    return float(np.mean([len(set(approx[q].ids[:k]) & set(exact[q].ids[:k])) / k for q in exact]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the indexes (default: a temp folder).")
    parser.add_argument("--nlist", type=int, default=64, help="Inverted lists of the IVF indexes (the engine trains "
                        "them on >= 39 vectors per list: a small collection needs fewer).")
    parser.add_argument("--pq", default="PQ48", help="The product quantizer of the IVF-PQ index (a FAISS factory part).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = require_data(args.dataset)
    corpus, queries = data / "corpus.jsonl", read_queries(data / "queries.jsonl")
    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = {q: t for q, t in queries.items() if q in qrels}
    work = args.work or Path(tempfile.mkdtemp(prefix="engine-quality-"))
    encoder = load_encoder("minilm", device="cpu")
    results: dict = {"dataset": args.dataset, "queries": len(queries), "model": "minilm"}

    def build(name: str, **config) -> tuple[Path, float]:
        out = work / name
        start = time.perf_counter()
        build_index(out, lambda: read_corpus([corpus]), encoder, BuildConfig(corpus=(str(corpus),), **config), overwrite=True)
        return out, time.perf_counter() - start

    flat, flat_seconds = build("flat-nochunk", factory="Flat", chunk_tokens=0)
    exact = engine_run(flat, queries)
    direct = direct_run(encoder, corpus, queries)
    results["engine_flat_chunk0"] = evaluate(exact, qrels, METRICS).aggregate | {"build_seconds": round(flat_seconds, 1)}
    results["direct_sentence_transformers"] = evaluate(direct, qrels, METRICS).aggregate
    results["top10_agreement_engine_vs_direct"] = recall_at(exact, direct)

    window = encoder.max_seq_length // 2
    chunked, chunked_seconds = build("flat-chunked", factory="Flat", chunk_tokens=window, chunk_overlap=window // 4)
    results["engine_flat_chunked_default"] = evaluate(engine_run(chunked, queries), qrels, METRICS).aggregate | {
        "chunk_tokens": window, "overlap": window // 4, "build_seconds": round(chunked_seconds, 1)
    }

    searcher = Searcher.load(flat, device="cpu")
    pids = np.arange(searcher.opened.vectors.ntotal)
    vectors = searcher.opened.vectors.reconstruct(pids)
    doc_ids = searcher.opened.docstore.doc_ids(pids)
    approx = {}
    for factory, options in (("auto", {}), (f"IVF{args.nlist},Flat", {"nprobe": 8}), ("HNSW32", {"ef_search": 64}),
                             (f"IVF{args.nlist},{args.pq}", {"nprobe": 8})):
        out = work / f"approx-{factory.replace(',', '_')}"
        manifest = build_from_vectors(out, vectors, doc_ids, BuildConfig(corpus=("vectors",), factory=factory), encoder_record=encoder.describe(), overwrite=True)
        run = engine_run(out, queries, **options)
        approx[factory] = {"factory": manifest.factory, **options, "recall@10_vs_exact": recall_at(run, exact), **evaluate(run, qrels, METRICS).aggregate}
    results["approximate"] = approx

    e, d = results["engine_flat_chunk0"], results["direct_sentence_transformers"]
    lines = [
        f"# Engine vs direct sentence-transformers on {args.dataset} ({len(queries)} test queries, minilm)",
        "",
        "| system | nDCG@10 | R@100 |",
        "|---|---|---|",
        f"| direct: SentenceTransformer.encode + numpy exact search | {d['nDCG@10']:.4f} | {d['R@100']:.4f} |",
        f"| ours: Flat, --chunk-tokens 0 | {e['nDCG@10']:.4f} | {e['R@100']:.4f} |",
        f"| ours: Flat, default chunking ({window} tokens, overlap {window // 4}) | {results['engine_flat_chunked_default']['nDCG@10']:.4f} | {results['engine_flat_chunked_default']['R@100']:.4f} |",
        "",
        f"Difference ours - direct (chunk 0): {e['nDCG@10'] - d['nDCG@10']:+.4f} nDCG@10; top-10 agreement {results['top10_agreement_engine_vs_direct']:.4f}.",
        "",
        "| index | factory | recall@10 vs exact | nDCG@10 |",
        "|---|---|---|---|",
    ]
    for name, row in approx.items():
        lines.append(f"| {name} | {row['factory']} | {row['recall@10_vs_exact']:.4f} | {row['nDCG@10']:.4f} |")
    path = write_results("engine_quality", results, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
