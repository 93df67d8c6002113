"""Scale-out: Ray encoding throughput, sharded vs single-index search, an index larger than its memory.

    python -m benchmarks.scale [--sections encode,sharded,ooc] [--texts 512] [--ooc-vectors PATH]

encode   the same corpus built with the single-process engine and with ``--engine ray`` (1 and 2 workers on a
         local Ray cluster started once); build wall time, passages/s, ratios; the stored vectors must agree.
sharded  exact (Flat) search of 120k real MiniLM vectors: one index vs 4 index shards (faiss.IndexShards);
         QPS ratio and whether the top-10 lists are identical.
ooc      an IVF index with on-disk inverted lists built and searched inside a cgroup (v1 or v2) whose memory
         limit is half the size of the vectors; recall@10 against exact search, compared with the same
         factory built and searched in memory (outside the cgroup).

Timings are medians of several runs, side by side; this machine has 2 CPU cores shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO, RESULTS, distinct_texts, write_results

SYNTHETIC = CACHE / "synthetic-2000000x384.npy"
REAL = CACHE / "real-120000.npy"


# --- encode -------------------------------------------------------------------------------------------
def bench_encode(texts: int, repeats: int, work: Path) -> dict:
    import ray
    import torch

    from indexing.builder import BuildConfig, build_index
    from indexing.formats.jsonl import write_jsonl
    from indexing.index_dir import open_index
    from indexing.readers import read_corpus
    from retriever.distributed import RayShardPool
    from retriever.encoders.base import load_encoder

    corpus = work / "corpus.jsonl"
    chosen = distinct_texts(texts)
    write_jsonl(corpus, ({"_id": f"t{i}", "text": text} for i, text in enumerate(chosen)))
    torch.set_num_threads(2)
    enc = load_encoder("minilm", device="cpu")
    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - started

    def build(engine: str, workers: int | None, name: str) -> float:
        config = BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=0, docs_per_shard=32,
                             encoder=enc.describe(), engine=engine)
        pool = RayShardPool(enc.describe(), workers=workers, batch_size=32) if engine == "ray" else None
        begin = time.perf_counter()
        build_index(work / name, lambda: read_corpus([corpus]), enc, config, overwrite=True, pool=pool)
        return time.perf_counter() - begin

    runs = {"single process (2 threads)": ("local", None), "ray, 1 worker (2 threads)": ("ray", 1), "ray, 2 workers (1 thread each)": ("ray", 2)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, so load from other jobs hits every variant alike
        for label, (engine, workers) in runs.items():
            times[label].append(build(engine, workers, label.split(",")[0].replace(" ", "-")))
            print(f"  {label}: {times[label][-1]:.1f}s", file=sys.stderr)
    ray.shutdown()
    ref = open_index(work / "single-process-(2-threads)")
    other = open_index(work / "ray")
    pids = np.arange(ref.vectors.ntotal)
    max_diff = float(np.abs(ref.vectors.reconstruct(pids) - other.vectors.reconstruct(pids)).max())
    ids_equal = ref.docstore.doc_ids(pids) == other.docstore.doc_ids(pids)
    base = statistics.median(times["single process (2 threads)"])
    rows = {
        label: {"seconds_median": round(statistics.median(t), 2), "seconds": [round(x, 2) for x in t],
                "passages_per_s": round(len(chosen) / statistics.median(t), 1), "speed_vs_single": round(base / statistics.median(t), 3)}
        for label, t in times.items()
    }
    return {"texts": len(chosen), "model": "minilm", "shard_docs": 32, "repeats": repeats, "ray_cluster_start_s": round(ray_start, 2),
            "runs": rows, "ray_vs_single_max_abs_diff": max_diff, "ray_vs_single_same_ids": ids_equal}


# --- sharded ------------------------------------------------------------------------------------------
def bench_sharded(work: Path, shards: int, repeats: int, source: Path = REAL) -> dict:
    from indexing.builder import BuildConfig
    from indexing.from_vectors import build_from_vectors
    from retriever.search.searcher import Searcher

    vectors = np.load(source, mmap_mode="r")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(vectors), 1000, replace=False)
    queries = np.asarray(vectors[pick], dtype=np.float32) + 0.05 * rng.normal(size=(1000, vectors.shape[1])).astype(np.float32)
    ids = [f"r{i}" for i in range(len(vectors))]
    for name, count in (("single", 1), ("sharded", shards)):
        config = BuildConfig(corpus=(str(source),), factory="Flat", docs_per_shard=8192, index_shards=count)
        build_from_vectors(work / name, vectors, iter(ids), config, overwrite=True)
    searchers = {name: Searcher.load(work / name, device="cpu") for name in ("single", "sharded")}
    results = {name: s.retrieve_vectors(queries, 10) for name, s in searchers.items()}
    same = [h.ids for h in results["single"]] == [h.ids for h in results["sharded"]]
    score_diff = float(np.abs(np.stack([h.scores for h in results["single"]]) - np.stack([h.scores for h in results["sharded"]])).max())
    times: dict[str, list[float]] = {"single": [], "sharded": []}
    for _ in range(repeats):
        for name, searcher in searchers.items():
            begin = time.perf_counter()
            searcher.retrieve_vectors(queries, 10)
            times[name].append(time.perf_counter() - begin)
    qps = {name: len(queries) / statistics.median(t) for name, t in times.items()}
    return {"vectors": int(len(vectors)), "dim": int(vectors.shape[1]), "queries": len(queries), "k": 10, "shards": shards,
            "factory": "Flat", "qps": {k: round(v, 1) for k, v in qps.items()}, "qps_ratio_sharded_vs_single": round(qps["sharded"] / qps["single"], 3),
            "identical_top10_ids": same, "max_score_diff": score_diff, "repeats": repeats}


# --- out of core --------------------------------------------------------------------------------------
def own_memory_cgroup() -> tuple[str, Path] | None:
    """("v1"|"v2", this process's memory cgroup folder) when it exists and we may create children in it."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if folder.is_dir() and os.access(folder, os.W_OK):
                return "v1", folder
        if number == "0" and controllers == "":
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            if (folder / "cgroup.controllers").is_file() and "memory" in (folder / "cgroup.subtree_control").read_text():
                return "v2", folder
    return None


class MemoryLimit:
    """A child memory cgroup with ``limit`` bytes; processes started with :meth:`preexec` run inside it."""

    def __init__(self, limit: int):
        found = own_memory_cgroup()
        if found is None:
            raise SystemExit("no writable memory cgroup (v1 memory controller or v2 with memory delegated) here")
        self.kind, parent = found
        self.path = parent / f"retriever-scale-{os.getpid()}"
        self.path.mkdir()
        self.limit = limit
        if self.kind == "v1":
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
        else:
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.swap.max").write_text("0")

    def preexec(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.kind == "v1" else "memory.peak"
        file = self.path / name
        return int(file.read_text()) if file.is_file() else None

    def reset_peak(self) -> None:
        if self.kind == "v1":
            (self.path / "memory.max_usage_in_bytes").write_text("0")

    def close(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def run_child(args: list[str], limit: MemoryLimit | None, log: Path) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    begin = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.run([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                              preexec_fn=limit.preexec if limit else None, cwd=REPO)
    return proc.returncode, time.perf_counter() - begin


def exact_top10(vectors_path: Path, queries: np.ndarray) -> np.ndarray:
    """Exact inner-product top-10 row numbers ``(q, 10)`` by blocks of the .npy file (memory flat)."""
    from indexing.npy_file import NpyFile

    data = NpyFile(vectors_path)
    best_s = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, len(data), 100_000):
        block = data[start : start + 100_000]
        scores = queries @ block.T
        cand_s = np.concatenate([best_s, scores], axis=1)
        cand_i = np.concatenate([best_i, np.arange(start, start + len(block))[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-cand_s, 10, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    return best_i


def search_main(index: str, queries: str, out: str, mmap: str, nprobe: int) -> None:
    """Child: load an index, search the queries, save the top-10 row numbers and the peak RSS."""
    import psutil

    from retriever.search.searcher import Searcher

    searcher = Searcher.load(index, device="cpu", preload=False, verify=False, mmap=mmap == "mmap")
    q = np.load(queries)
    begin = time.perf_counter()
    hits = searcher.retrieve_vectors(q, 10, nprobe=nprobe)
    seconds = time.perf_counter() - begin
    rows = np.array([[int(i[1:]) for i in h.ids] + [-1] * (10 - len(h.ids)) for h in hits], dtype=np.int64)
    np.save(out, rows)
    Path(out + ".json").write_text(json.dumps({"seconds": seconds, "rss": psutil.Process().memory_info().rss}))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())]))


def bench_ooc(vectors_path: Path, work: Path, factory: str, nprobe: int, ratio: float, rows: int | None, n_queries: int) -> dict:
    from indexing.npy_file import NpyFile

    source_name = f"{vectors_path.name}" + (f"[:{rows}]" if rows else "")
    if rows:  # the first `rows` vectors, copied block by block into the scratch folder
        source = NpyFile(vectors_path, rows=rows)
        sliced = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=np.float32, shape=source.shape)
        for start in range(0, rows, 100_000):
            sliced[start : start + 100_000] = source[start : start + 100_000]
        sliced.flush()
        del sliced
        vectors_path = work / "vectors.npy"
    data = NpyFile(vectors_path)
    vector_bytes = data.shape[0] * data.shape[1] * 4
    limit = MemoryLimit(int(vector_bytes / ratio))
    log = work / "ooc.log"
    result: dict = {"vectors": data.shape[0], "dim": data.shape[1], "vector_bytes": vector_bytes, "cgroup": limit.kind,
                    "memory_limit_bytes": limit.limit, "factory": factory, "nprobe": nprobe, "queries": n_queries, "source": source_name}
    try:
        ids = work / "ids.txt"
        ids.write_text("".join(f"v{i}\n" for i in range(data.shape[0])))
        rng = np.random.default_rng(1)
        pick = np.sort(rng.choice(data.shape[0], n_queries, replace=False))
        queries = np.vstack([data[int(i) : int(i) + 1] for i in pick]) + 0.1 * rng.normal(size=(n_queries, data.shape[1])).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        np.save(work / "queries.npy", queries.astype(np.float32))
        truth = exact_top10(vectors_path, queries.astype(np.float32))

        build = ["-m", "cli", "index", "from-vectors", str(vectors_path), "--ids", str(ids), "--index", factory, "--overwrite"]
        code, seconds = run_child([*build, "--out", str(work / "disk"), "--on-disk"], limit, log)
        result["on_disk_build"] = {"exit": code, "seconds": round(seconds, 1), "cgroup_peak_bytes": limit.peak()}
        if code:
            return result
        limit.reset_peak()
        search = ["-m", "benchmarks.scale", "_search", str(work / "disk"), str(work / "queries.npy"), str(work / "disk.npy"), "mmap", str(nprobe)]
        code, seconds = run_child(search, limit, log)
        stats = json.loads(Path(str(work / "disk.npy") + ".json").read_text()) if code == 0 else {}
        result["on_disk_search"] = {"exit": code, "cgroup_peak_bytes": limit.peak(), **stats}
        # control: the same limit kills a process that reads the whole index into memory
        code, _ = run_child(["-c", "import numpy as np; from indexing.npy_file import NpyFile; "
                             f"f = NpyFile({str(vectors_path)!r}); a = f[0:len(f)]; print(a.shape)"], limit, log)
        result["control_load_all_vectors_exit"] = code
        code, seconds = run_child([*build, "--out", str(work / "ram")], None, log)
        result["in_memory_build"] = {"exit": code, "seconds": round(seconds, 1)}
        search = ["-m", "benchmarks.scale", "_search", str(work / "ram"), str(work / "queries.npy"), str(work / "ram.npy"), "ram", str(nprobe)]
        code, _ = run_child(search, None, log)
        result["in_memory_search"] = {"exit": code, **json.loads(Path(str(work / "ram.npy") + ".json").read_text())}
        result["recall_at_10"] = {"on_disk": recall(np.load(work / "disk.npy"), truth), "in_memory": recall(np.load(work / "ram.npy"), truth)}
        result["recall_gap"] = result["recall_at_10"]["in_memory"] - result["recall_at_10"]["on_disk"]
        result["identical_results"] = bool((np.load(work / "disk.npy") == np.load(work / "ram.npy")).all())
        result["index_files_bytes"] = {p.name: p.stat().st_size for p in (work / "disk").iterdir() if p.is_file()}
    finally:
        limit.close()
    return result


# --- report -------------------------------------------------------------------------------------------
def markdown(data: dict) -> str:
    lines = ["# Scale-out", "",
             f"Machine: {data['machine'].get('cpus')} CPU cores **shared with other jobs** (load varies), "
             f"{data['machine'].get('memory_gb')} GB RAM, no GPU. Timings are medians, variants interleaved.", ""]
    if "encode" in data:
        e = data["encode"]
        lines += [f"## Encoding: single process vs Ray ({e['texts']} texts, {e['model']}, shards of {e['shard_docs']})", "",
                  "| engine | build s (median) | passages/s | speed vs single |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['seconds_median']} | {v['passages_per_s']} | {v['speed_vs_single']} |" for k, v in e["runs"].items()]
        lines += ["", f"Ray vs single-process vectors: max |diff| = {e['ray_vs_single_max_abs_diff']:.2e}, same ids: {e['ray_vs_single_same_ids']}. "
                  f"Local Ray cluster start: {e['ray_cluster_start_s']} s (not in the build times; worker start-up and model loading are).", ""]
    if "sharded" in data:
        s = data["sharded"]
        lines += [f"## Sharded vs single exact search ({s['vectors']:,} x {s['dim']} real vectors, {s['queries']} queries, k={s['k']})", "",
                  "| index | QPS |", "|---|---:|", f"| one Flat index | {s['qps']['single']} |", f"| {s['shards']} Flat shards (IndexShards) | {s['qps']['sharded']} |", "",
                  f"QPS ratio sharded/single: {s['qps_ratio_sharded_vs_single']}; identical top-10 ids: {s['identical_top10_ids']} "
                  f"(max score diff {s['max_score_diff']:.1e}).", ""]
    if "ooc" in data:
        o = data["ooc"]
        lines += [f"## IVF with on-disk lists under a memory limit ({o['vectors']:,} x {o['dim']} vectors, {o['factory']}, nprobe {o['nprobe']})", ""]
        lines += [f"- vectors ({o['source']}): {o['vector_bytes'] / 2**30:.2f} GiB; memory limit: {o['memory_limit_bytes'] / 2**30:.2f} GiB "
                  f"(ratio {o['vector_bytes'] / o['memory_limit_bytes']:.2f}x), a child cgroup ({o['cgroup']}) of this process's memory cgroup "
                  "(`systemd-run` does not work here: systemd is not PID 1)"]
        if "on_disk_build" in o:
            b = o["on_disk_build"]
            lines += [f"- on-disk build inside the cgroup: exit {b['exit']}, {b['seconds']} s, cgroup peak {(b['cgroup_peak_bytes'] or 0) / 2**30:.2f} GiB"]
        if "on_disk_search" in o:
            b = o["on_disk_search"]
            lines += [f"- on-disk search inside the cgroup: exit {b['exit']}, cgroup peak {(b['cgroup_peak_bytes'] or 0) / 2**30:.2f} GiB, "
                      f"process RSS {b.get('rss', 0) / 2**30:.2f} GiB, {b.get('seconds', 0):.1f} s for {o['queries']} queries"]
        if "in_memory_search" in o:
            b = o["in_memory_search"]
            lines += [f"- the same factory in memory, no limit: build {o['in_memory_build']['seconds']} s, search {b.get('seconds', 0):.2f} s "
                      f"for {o['queries']} queries, process RSS {b.get('rss', 0) / 2**30:.2f} GiB"]
        if "control_load_all_vectors_exit" in o:
            code = o["control_load_all_vectors_exit"]
            lines += [f"- control: a process reading all vectors into memory under the same limit exits with {code}"
                      + (" (SIGKILL from the cgroup's OOM killer): the limit is real" if code in (-9, 137) else "")]
        if "recall_at_10" in o:
            r = o["recall_at_10"]
            lines += [f"- recall@10 vs exact: on-disk {r['on_disk']:.4f}, in-memory {r['in_memory']:.4f} (gap {o['recall_gap']:.4f}); "
                      f"identical result lists: {o['identical_results']}"]
        lines += [""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_search":
        search_main(*sys.argv[2:6], int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="encode,sharded,ooc")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--sharded-vectors", type=Path, default=REAL, help="the sharded section's vectors (>= 1,000 rows)")
    parser.add_argument("--ooc-vectors", type=Path, default=SYNTHETIC)
    parser.add_argument("--ooc-factory", default="IVF1024,Flat")
    parser.add_argument("--ooc-nprobe", type=int, default=16)
    parser.add_argument("--ooc-ratio", type=float, default=2.0, help="vector bytes / memory limit")
    parser.add_argument("--ooc-rows", type=int, default=None, help="use only the first N vectors")
    parser.add_argument("--ooc-queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    sections = args.sections.split(",")
    previous = RESULTS / "scale.json"

    def save(name: str, section: dict) -> dict:
        """Merge one section into the results file as it is now (sections may be run separately)."""
        data = json.loads(previous.read_text()) if previous.is_file() else {}
        data = {k: v for k, v in data.items() if k not in ("machine", "written")}
        data[name] = section
        path = write_results("scale", data)
        data = json.loads(path.read_text())
        write_results("scale", {k: v for k, v in data.items() if k not in ("machine", "written")}, markdown(data))
        return data

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for name in sections:
            (work / name).mkdir()
            print(f"== {name}", file=sys.stderr)
            if name == "encode":
                data = save(name, bench_encode(args.texts, args.repeats, work / name))
            elif name == "sharded":
                data = save(name, bench_sharded(work / name, args.shards, max(5, args.repeats), args.sharded_vectors))
            elif name == "ooc":
                data = save(name, bench_ooc(args.ooc_vectors, work / name, args.ooc_factory, args.ooc_nprobe, args.ooc_ratio,
                                            args.ooc_rows, args.ooc_queries))
            print(markdown(data))


if __name__ == "__main__":
    main()
