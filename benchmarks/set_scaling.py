"""Index sets: search throughput of one shard, and the latency a Ray Serve fan-out adds (docs/scaling.md#index-sets).

    python -m benchmarks.set_scaling [--vectors 100000] [--dims 384,768] [--docs 2000] [--threads 1] [--port 8765] [--quick]

qps     QPS of one shard (one process, --threads FAISS threads, default 1) for Flat, IVF-Flat and IVF-PQ over ``--vectors`` random unit
        vectors per dimension (k=10, nprobe 16, batches of 64 queries; median of 3 runs). ``--quick`` (a smoke test):
        3,000 vectors, IVF64, PQ without polysemous training (whose cost is minutes per PQ whatever the count), 40 docs.
fanout  a 2-shard set of ``--docs`` SciFact documents (MiniLM, Flat) served by ``retriever set serve`` on a local
        Ray cluster: HTTP latency of one query (p50/p90 of 60 sequential requests) against the same query
        searched in-process by SetSearcher (encode + both shards + merge); the difference is what the HTTP proxy,
        the ingress and the shard RPCs add. Torch and FAISS use one thread on both sides (Ray's default for workers).

Writes benchmarks/results/set_scaling.json (``RETRIEVER_BENCH_RESULTS`` redirects it, as for every script; a run of
one section keeps the other's figures from the file there; SciFact is read from ``RETRIEVER_DATA``). This machine has
2 CPU cores shared with other jobs: figures are what was measured here, not what a dedicated node gives.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, require_data, write_results

FACTORIES = {384: ["Flat", "IVF1024,Flat", "IVF1024,PQ48"], 768: ["Flat", "IVF1024,Flat", "IVF1024,PQ96"]}


def factories(dim: int, nlist: int = 1024, polysemous: bool = True) -> list[str]:
    """``FACTORIES[dim]`` with ``nlist`` inverted lists, and PQ without polysemous training (``np``) unless asked."""
    return [f.replace("IVF1024", f"IVF{nlist}") + ("np" if "PQ" in f and not polysemous else "") for f in FACTORIES[dim]]


def shard_qps(vectors: int, dim: int, factory: str, queries: int = 256) -> dict:
    """Build one FAISS index of ``vectors`` random unit vectors and time batched top-10 searches."""
    from indexing.faiss_index import Metric, VectorIndex

    rng = np.random.default_rng(0)
    data = rng.normal(size=(vectors, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = VectorIndex.create(dim, factory, Metric.IP)
    if not index.is_trained:  # search speed, not recall, is measured: PQ codebooks train on a small sample
        index.train(data[: 4096 if "PQ" in factory else min(vectors, 40_000)])
    index.set_nprobe(16)
    index.add(np.arange(vectors, dtype=np.int64), data)
    asked = data[rng.integers(0, vectors, queries)] + 0.01 * rng.normal(size=(queries, dim)).astype(np.float32)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for at in range(0, queries, 64):
            index.search(asked[at: at + 64], 10)
        runs.append(queries / (time.perf_counter() - started))
    return {"dim": dim, "factory": factory, "vectors": vectors, "qps": round(statistics.median(runs), 1)}


def fanout(docs: int, port: int = 8765) -> dict:
    """p50/p90 latency of one query: in-process SetSearcher vs HTTP through Ray Serve (2 shards, one node)."""
    import ray

    from retriever.apps.service.distributed import ServeOptions, deploy_set
    from retriever.index_set import IndexSet
    from retriever.scale.set_searcher import SetSearcher

    corpus = require_data("scifact") / "corpus.jsonl"
    records = [json.loads(line) for _, line in zip(range(docs), corpus.open(encoding="utf-8"))]
    query = "vitamin D deficiency increases the risk of fractures"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        IndexSet.build(records, root, shards=2, model="minilm", device="cpu", index="Flat", chunk_tokens=0)
        import torch

        torch.set_num_threads(1)  # as in Ray workers (OMP_NUM_THREADS=1): the same encoder cost on both sides
        local = SetSearcher.load(root, device="cpu")
        local.search([query], 10)
        in_process = _timed(lambda: local.search([query], 10))
        local.close()
        # a cluster of its own: without address="local", ray.init joins one that another process started here
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            url = deploy_set(root, ServeOptions(port=port, shard_cpus=0.5, proxy_location="HeadOnly"))
            body = json.dumps({"query": query, "k": 10}).encode()

            def post() -> None:
                request = urllib.request.Request(f"{url}/search", data=body, headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=60).read()

            post()
            served = _timed(post)
        finally:
            ray.shutdown()
    return {"docs": docs, "shards": 2, "in_process_ms": in_process, "ray_http_ms": served,
            "added_p50_ms": round(served["p50"] - in_process["p50"], 1)}


def _timed(run, repeats: int = 60) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50": round(times[len(times) // 2], 1), "p90": round(times[int(len(times) * 0.9)], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dims", default="384,768")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--sections", default="qps,fanout", help="qps, fanout, or report (rewrite the page from the recorded figures)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads for the QPS section (1: per core)")
    parser.add_argument("--port", type=int, default=8765, help="Port of Ray Serve's HTTP proxy in the fanout section")
    parser.add_argument("--nlist", type=int, default=1024, help="Inverted lists of the IVF indexes in the QPS section")
    parser.add_argument("--quick", action="store_true", help="3,000 vectors, IVF64, PQ without polysemous training, "
                        "40 documents (a smoke test; figures mean nothing)")
    args = parser.parse_args()
    if args.quick:  # IVF trains on >= 39 vectors per list
        parser.set_defaults(vectors=3000, nlist=64, docs=40)
        args = parser.parse_args()
    sections = args.sections.split(",")
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out = RESULTS / "set_scaling.json"  # sections run separately update one file
    results: dict = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    for key in ("machine", "written"):  # write_results stamps them anew
        results.pop(key, None)
    if sections != ["report"]:  # ``--sections report`` rewrites the page from the recorded figures only
        results.update({"faiss_threads": args.threads, "cpu_cores": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 1)})
    if "qps" in sections:
        measured = {(r["dim"], r["factory"]): r for r in results.get("qps", [])}
        for dim in (int(d) for d in args.dims.split(",")):
            for factory in factories(dim, args.nlist, polysemous=not args.quick):
                measured[dim, factory] = shard_qps(args.vectors, dim, factory)
                print(json.dumps(measured[dim, factory]), flush=True)
                results["qps"] = list(measured.values())
                write_results("set_scaling", results, report(results))
    if "fanout" in sections:
        results["fanout"] = fanout(args.docs, args.port)
        print(json.dumps(results["fanout"]), flush=True)
    write_results("set_scaling", results, report(results))


def report(results: dict) -> str:
    """The markdown page of the recorded figures (either section may be missing)."""
    lines = ["# Index sets: one shard's QPS and the fan-out's added latency", "",
             f"{results.get('cpu_cores')} CPU cores, FAISS threads {results.get('faiss_threads')}, load average "
             f"{results.get('load_avg')} when measured (a shared machine: context, not a promise).", ""]
    if results.get("qps"):
        lines += ["One shard: queries/s of `index.search` on 256 queries (k=10), by factory and dimension.", "",
                  "| dim | factory | vectors | QPS |", "|---|---|---|---|"]
        lines += [f"| {r['dim']} | {r['factory']} | {r['vectors']:,} | {r['qps']:,.1f} |" for r in results["qps"]]
        lines.append("")
    fan = results.get("fanout")
    if fan:
        lines += [f"Fan-out: {fan['docs']:,} documents in {fan['shards']} shards, one query at a time; latency in ms.", "",
                  "| path | p50 | p90 |", "|---|---|---|",
                  f"| in process (SetSearcher) | {fan['in_process_ms']['p50']} | {fan['in_process_ms']['p90']} |",
                  f"| Ray Serve over HTTP | {fan['ray_http_ms']['p50']} | {fan['ray_http_ms']['p90']} |", "",
                  f"Added by the fan-out (p50): {fan['added_p50_ms']} ms."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
