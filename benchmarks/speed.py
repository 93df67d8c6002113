"""Issue 3 speed benchmark: recall@10 vs QPS, ours vs raw FAISS; build time and memory; encoding docs/s.

Side by side in one run:
  * Flat, IVF-Flat, HNSW and IVF-PQ over 120,000 real minilm embeddings of the shared data texts
    (1,000 held-out texts as queries, batches of 100, k=10), sweeping nprobe / efSearch;
  * IVF-Flat and IVF-PQ at 1,000,000 vectors, where the extra 880,000 are perturbed copies of the
    real ones (Gaussian noise of 0.1 x the mean coordinate spread, renormalized), not random noise;
  * each index built in its own process through ``build_from_vectors`` (time and peak RSS);
  * encoding docs/s, ours (``build_index``) vs raw ``SentenceTransformer.encode``.
Writes ``results/speed.json``, ``results/speed.md`` and ``results/speed.png``.

    python -m benchmarks.speed            # run python -m benchmarks.common once first (embedding cache)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, EMBED_TEXTS, RESULTS, PeakRss, real_embeddings, write_results
from benchmarks.memory import LazyIds

BASE = 120_000
QUERIES = 1_000


def perturbed(path: Path, real: np.ndarray, n: int, *, seed: int = 0) -> None:
    """``n`` vectors: the real ones, then perturbed copies of randomly chosen real ones (unit length)."""
    rng = np.random.default_rng(seed)
    scale = 0.1 * float(np.std(real[:10_000]))
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, real.shape[1]))
    out[: len(real)] = real
    for start in range(len(real), n, 100_000):
        m = min(100_000, n - start)
        block = real[rng.integers(0, len(real), m)] + scale * rng.normal(size=(m, real.shape[1])).astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)


def build_child(vectors: Path, factory: str, out: Path) -> None:
    from indexing.builder import BuildConfig
    from indexing.from_vectors import build_from_vectors

    from indexing.npy_file import NpyFile

    array = NpyFile(vectors)
    start = time.perf_counter()
    with PeakRss() as rss:
        manifest = build_from_vectors(out, array, LazyIds(len(array)), BuildConfig(corpus=(str(vectors),), factory=factory, docs_per_shard=65536), overwrite=True)
    print(json.dumps({
        "factory": manifest.factory, "vectors": len(array), "build_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(rss.peak / 2**20), "index_mib": round(manifest.sizes[manifest.files["index"]] / 2**20, 1),
    }))


def measure(index_dir: Path, queries: np.ndarray, truth: np.ndarray, knob: str | None, values: list, repeats: int) -> list[dict]:
    import faiss

    from indexing.manifest import read_manifest
    from retriever.search.searcher import Searcher

    manifest = read_manifest(index_dir)
    ours = Searcher.load(index_dir, device="cpu", mmap=False)
    raw = ours.opened.vectors.index  # the same FAISS object: only our overhead differs
    batches = [queries[i : i + 100] for i in range(0, len(queries), 100)]
    rows = []
    for value in values:
        if knob == "nprobe":
            faiss.extract_index_ivf(raw).nprobe = value
        elif knob == "ef_search":
            faiss.downcast_index(raw.index).hnsw.efSearch = value
        options = {knob: value} if knob else {}

        def run_raw():
            return np.vstack([raw.search(b, 10)[1] for b in batches])

        def run_ours():
            return [hit.id for b in batches for hits in ours.search_vectors(b, 10, **options) for hit in hits]

        raw_t, our_t = [], []
        for _ in range(repeats):
            for fn, bucket in ((run_raw, raw_t), (run_ours, our_t)):
                start = time.perf_counter()
                result = fn()
                bucket.append(time.perf_counter() - start)
                if fn is run_raw:
                    found = result
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        row = {"factory": manifest.factory, knob or "setting": value, "recall@10": round(recall, 4),
               "raw_qps": round(len(queries) / statistics.median(raw_t), 1), "ours_qps": round(len(queries) / statistics.median(our_t), 1)}
        row["ratio"] = round(row["ours_qps"] / row["raw_qps"], 3)
        rows.append(row)
        logging.info("%s", row)
    return rows


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, rows) in enumerate(curves.items()):
        color = f"C{i}"
        recalls = [r["recall@10"] for r in rows]
        ax.plot(recalls, [r["ours_qps"] for r in rows], "o-", color=color, label=f"{name} (retriever)")
        ax.plot(recalls, [r["raw_qps"] for r in rows], "x--", color=color, alpha=0.6, label=f"{name} (raw FAISS)")
    ax.set_xlabel("recall@10 vs exact search")
    ax.set_ylabel("queries per second (batches of 100, k=10)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Recall vs QPS on 2 CPU cores: retriever Searcher (full hits) vs raw FAISS")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--build-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, default=BASE, help="Real base vectors.")
    parser.add_argument("--queries", type=int, default=QUERIES, help="Held-out real query vectors.")
    parser.add_argument("--embed-texts", type=int, default=EMBED_TEXTS,
                        help="Texts in the embedding cache to draw from (>= --base + --queries; another count is another cache file).")
    parser.add_argument("--nlist", type=int, default=512, help="IVF lists of the indexes over the real base vectors.")
    parser.add_argument("--large-nlist", type=int, default=1024, help="IVF lists of the indexes over --large vectors.")
    parser.add_argument("--pq", default="PQ48", help="The product quantizer of the IVF-PQ indexes (a FAISS factory part; "
                        "PQ48's polysemous training alone takes minutes on 2 cores, whatever the vector count).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes, 1 repeat, a short encoding run (a smoke test).")
    args = parser.parse_args()
    if args.quick:  # the engine trains IVF on >= 39 vectors per list
        parser.set_defaults(base=700, queries=50, large=3000, repeats=1, embed_texts=750, nlist=16, large_nlist=64, pq="PQ8np")
        args = parser.parse_args()
    if args.build_child:
        build_child(Path(args.build_child[0]), args.build_child[1], Path(args.build_child[2]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    real = np.asarray(real_embeddings(count=args.embed_texts), dtype=np.float32)
    base, queries = real[: args.base], real[args.base : args.base + args.queries]
    small = CACHE / f"real-{args.base}.npy"
    if not small.is_file():
        np.save(small, base, allow_pickle=False)
    large = CACHE / f"perturbed-{args.large}.npy"
    if not large.is_file():
        perturbed(large, base, args.large)

    def exact(vectors: np.ndarray) -> np.ndarray:
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        for start in range(0, len(vectors), 100_000):
            index.add(np.asarray(vectors[start : start + 100_000]))
        return index.search(queries, 10)[1]

    truth_small = exact(base)
    truth_large = exact(np.load(large, mmap_mode="r"))
    work = Path(tempfile.mkdtemp(prefix="speed-"))
    plans = [
        ("Flat", small, "Flat", None, [None], truth_small),
        ("IVF-Flat 120k", small, f"IVF{args.nlist},Flat", "nprobe", [1, 2, 4, 8, 16, 32, 64], truth_small),
        ("HNSW 120k", small, "HNSW32", "ef_search", [16, 32, 64, 128, 256], truth_small),
        ("IVF-PQ 120k", small, f"IVF{args.nlist},{args.pq}", "nprobe", [1, 4, 16, 64], truth_small),
        ("IVF-Flat 1M", large, f"IVF{args.large_nlist},Flat", "nprobe", [1, 4, 16, 64], truth_large),
        ("IVF-PQ 1M", large, f"IVF{args.large_nlist},{args.pq}", "nprobe", [1, 4, 16, 64], truth_large),
    ]
    builds, curves = {}, {}
    for name, vectors, factory, knob, values, truth in plans:
        out = work / name.replace(" ", "_")
        done = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--build-child", str(vectors), factory, str(out)], check=True, capture_output=True, text=True)
        builds[name] = json.loads(done.stdout.strip().splitlines()[-1])
        logging.info("built %s: %s", name, builds[name])
        curves[name] = measure(out, queries, truth, knob, values, args.repeats)
    results = {"base_vectors": args.base, "large_vectors": args.large, "queries": args.queries, "builds": builds, "curves": curves}
    if not args.skip_encoding:
        from benchmarks.overhead import encoding_overhead

        results["encoding"] = encoding_overhead(work, *((16, 1, 16) if args.quick else (300, 3, 64)))
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(curves, RESULTS / "speed.png")
    lines = [
        f"# Speed: retriever vs raw FAISS ({args.base:,} real minilm embeddings; 1M = real + perturbed copies)",
        "",
        f"{args.queries} held-out real queries in batches of 100, k=10, medians of {args.repeats}; ours = `Searcher.search_vectors` (ids, text, metadata).",
        "",
        "| index | build | build s | peak RSS | index size |",
        "|---|---|---|---|---|",
    ]
    for name, b in builds.items():
        lines.append(f"| {name} | {b['factory']} ({b['vectors']:,} vectors) | {b['build_seconds']} | {b['peak_rss_mib']:,} MiB | {b['index_mib']} MiB |")
    lines += ["", "| index | knob | recall@10 | raw FAISS QPS | retriever QPS | ratio |", "|---|---|---|---|---|---|"]
    for name, rows in curves.items():
        for r in rows:
            knob = next((f"{k}={r[k]}" for k in ("nprobe", "ef_search") if k in r), "exact")
            lines.append(f"| {name} | {knob} | {r['recall@10']:.3f} | {r['raw_qps']:,.0f} | {r['ours_qps']:,.0f} | {r['ratio']:.2f} |")
    if "encoding" in results:
        e = results["encoding"]
        lines += ["", f"Encoding ({e['docs']} SciFact docs, batch {e['batch_size']}): raw {e['raw_docs_per_s']:.1f} docs/s, retriever build {e['build_docs_per_s']:.1f} docs/s, ratio {e['ratio']:.3f}."]
    lines += ["", f"Total run time: {results['total_seconds'] / 60:.1f} min.", "", "![recall vs QPS](speed.png)"]
    write_results("speed", results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
