"""Overhead: what the engine costs on top of raw FAISS and raw sentence-transformers.

Side by side in one process, alternating, medians of 5 runs:
  * search QPS of ``Searcher.search_vectors`` (id mapping + doc-store lookup included, full hits with text)
    vs ``faiss.Index.search`` on the same index file: 100k real embeddings of the shared data texts,
    Flat and IVF, k=10, batches of 100 pre-encoded queries;
  * corpus encoding docs/s of ``build_index`` (read, encode, shards, doc store, FAISS, commit)
    vs ``SentenceTransformer.encode`` on the same texts and batch size.

    python -m benchmarks.overhead        # needs the embedding cache: python -m benchmarks.common
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.common import EMBED_TEXTS, RESULTS, distinct_texts, real_embeddings, require_data, write_results
from indexing.builder import BuildConfig, build_index
from indexing.from_vectors import build_from_vectors
from indexing.documents import Document
from indexing.readers import read_corpus
from retriever.search.searcher import Searcher


def alternate(*functions, repeats: int) -> tuple[float, ...]:
    """Median seconds of each function, the functions run in turn ``repeats`` times each."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for fn, bucket in zip(functions, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return tuple(statistics.median(bucket) for bucket in times)


def search_overhead(work: Path, n: int, queries: int, repeats: int, flat_queries: int, *, nlist: int = 1024,
                    embed_texts: int = EMBED_TEXTS) -> dict:
    vectors = np.asarray(real_embeddings(count=embed_texts)[: n + queries], dtype=np.float32)
    texts = distinct_texts()[:n]
    base, query_vectors = vectors[:n], vectors[n : n + queries]
    ids = [f"t{i}" for i in range(n)]
    lookup = {f"t{i}": i for i in range(n)}
    results = {}
    for factory, nprobe in (("Flat", None), (f"IVF{nlist},Flat", 16), (f"IVF{nlist},Flat", 64)):
        out = work / factory.replace(",", "_")
        if not (out / "manifest.json").is_file():
            build_from_vectors(
                out, base, ids, BuildConfig(corpus=("embeddings",), factory=factory, docs_per_shard=16384),
                documents=lambda i: Document(i, "", texts[lookup[i]]), overwrite=True,
            )
        ours = Searcher.load(out, device="cpu", mmap=False)
        # raw FAISS = the very same index object the Searcher wraps (two loaded copies of a 150 MB index
        # differ by up to 25% in speed on this VM depending on where they land in memory)
        raw = ours.opened.vectors.index
        if nprobe:
            faiss.extract_index_ivf(raw).nprobe = nprobe
        count = flat_queries if factory == "Flat" else queries
        batches = [query_vectors[i : i + 100] for i in range(0, count, 100)]

        def run_raw() -> None:
            for batch in batches:
                raw.search(batch, 10)

        def run_ours() -> None:
            for batch in batches:
                ours.search_vectors(batch, 10, nprobe=nprobe)

        def run_ours_read() -> None:  # the same, then every field of every hit read (what a UI or JSON dump does)
            for batch in batches:
                for hits in ours.search_vectors(batch, 10, nprobe=nprobe):
                    for h in hits:
                        h.id, h.score, h.title, h.text, h.passage, h.metadata

        run_raw(), run_ours(), run_ours_read()  # warm up caches
        raw_seconds, our_seconds, read_seconds = alternate(run_raw, run_ours, run_ours_read, repeats=repeats)
        raw_qps, our_qps = count / raw_seconds, count / our_seconds
        same = [h.id for h in ours.search_vectors(batches[0][:1], 10, nprobe=nprobe)[0]] == [f"t{i}" for i in raw.search(batches[0][:1], 10)[1][0]]
        name = factory + (f" nprobe {nprobe}" if nprobe else "")
        results[name] = {"raw_faiss_qps": round(raw_qps, 1), "searcher_qps": round(our_qps, 1), "ratio": round(our_qps / raw_qps, 3),
                         "fields_read_qps": round(count / read_seconds, 1), "queries": count, "fields_read_ratio": round(raw_seconds / read_seconds, 3), "same_top10": same, "nprobe": nprobe}
        logging.info("%s: %s", name, results[name])
    return results


def encoding_overhead(work: Path, docs: int, repeats: int, batch_size: int) -> dict:
    from retriever.encoders.base import load_encoder

    corpus_src = require_data("scifact") / "corpus.jsonl"
    corpus = work / "encode-corpus.jsonl"
    with open(corpus_src, encoding="utf-8") as fh, open(corpus, "w", encoding="utf-8") as out:
        for _, line in zip(range(docs), fh):
            out.write(line)
    texts = [d.full_text() for d in read_corpus([corpus])]
    encoder = load_encoder("minilm", device="cpu")
    model = encoder.model

    def run_raw() -> None:
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)

    def run_ours() -> None:
        config = BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=0, batch_size=batch_size)
        build_index(work / "encode-index", lambda: read_corpus([corpus]), encoder, config, overwrite=True)

    raw_seconds, our_seconds = alternate(run_raw, run_ours, repeats=repeats)
    raw_rate, our_rate = docs / raw_seconds, docs / our_seconds
    return {"docs": docs, "batch_size": batch_size, "raw_docs_per_s": round(raw_rate, 2), "build_docs_per_s": round(our_rate, 2), "ratio": round(our_rate / raw_rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--flat-queries", type=int, default=1000,
                        help="Queries for the Flat index (each costs ~50x an IVF one; the ratio needs no more).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encode-docs", type=int, default=300)
    parser.add_argument("--encode-repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--nlist", type=int, default=1024, help="Inverted lists of the IVF index.")
    parser.add_argument("--embed-texts", type=int, default=EMBED_TEXTS,
                        help="Texts in the embedding cache to draw from (>= --vectors + --queries; another count is another cache file).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes, 1 repeat (a smoke test); explicit flags still win.")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(vectors=700, queries=50, flat_queries=50, repeats=1, encode_docs=16, encode_repeats=1,
                            batch_size=16, nlist=16, embed_texts=750)
        args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    results = {"search": search_overhead(work, args.vectors, args.queries, args.repeats, min(args.flat_queries, args.queries),
                                         nlist=args.nlist, embed_texts=args.embed_texts)}
    if not args.skip_encoding:
        results["encoding"] = encoding_overhead(work, args.encode_docs, args.encode_repeats, args.batch_size)
    else:  # keep the last measured encoding figures (say when they were measured)
        previous = RESULTS / "overhead.json"
        if previous.is_file():
            old = json.loads(previous.read_text(encoding="utf-8"))
            if "encoding" in old:
                results["encoding"] = {**old["encoding"], "measured": old.get("encoding", {}).get("measured", old.get("written"))}
    lines = [
        f"# Engine overhead (medians of {args.repeats} alternating runs, one process)",
        "",
        f"Search: {args.vectors:,} real minilm embeddings, {args.queries} pre-encoded queries in batches of 100 "
        f"({min(args.flat_queries, args.queries)} for Flat), k=10;",
        "ours = `Searcher.search_vectors` with id mapping and doc-store lookup: a list of `Hit` per query, each",
        "holding its passage's doc-store record (id, title, text, passage, metadata) and its score. The last",
        "column also reads every field of every hit (what printing or a JSON dump does).",
        "",
        "| index | raw FAISS QPS | Searcher QPS | ratio | ratio, every field read |",
        "|---|---|---|---|---|",
    ]
    for name, row in results["search"].items():
        lines.append(f"| {name} | {row['raw_faiss_qps']:,.0f} | {row['searcher_qps']:,.0f} | {row['ratio']:.3f} | {row['fields_read_ratio']:.3f} |")
    if "encoding" in results:
        e = results["encoding"]
        lines += [
            "",
            f"Encoding: {e['docs']} SciFact documents, batch size {e['batch_size']}, minilm on CPU, medians of {args.encode_repeats}"
            + (f" (measured {e['measured']})." if "measured" in e else "."),
            "",
            "| path | docs/s |",
            "|---|---|",
            f"| raw SentenceTransformer.encode | {e['raw_docs_per_s']:.1f} |",
            f"| retriever build (read, encode, shards, doc store, FAISS, commit) | {e['build_docs_per_s']:.1f} |",
            f"| ratio | {e['ratio']:.3f} |",
        ]
    write_results("overhead", results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
