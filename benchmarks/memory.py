"""Memory stays flat in corpus size.

An IVF-PQ index is built from N synthetic 384-d vectors (a clustered Gaussian mixture, unit length)
through the same streaming path as every build (vector shards -> train on a sample -> add shard by
shard -> commit), each size in its own process; the peak RSS of that process is reported.

    python -m benchmarks.memory [--sizes 250000,500000,1000000,2000000] [--factory IVF1024,PQ48]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, PeakRss, write_results

DIM = 384


def synthetic(path: Path, n: int, *, seed: int = 0) -> None:
    """Write ``(n, 384)`` float32 unit vectors to a .npy file in 100k-row blocks (memory flat)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(1000, DIM)).astype(np.float32)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centers[rng.integers(0, 1000, m)] + 0.5 * rng.normal(size=(m, DIM)).astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)


class LazyIds:
    """``v0, v1, ...`` generated on demand: ids as a stream, like lines of an ids file."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        return (f"v{i}" for i in range(self.n))


def child(vectors: Path, n: int, factory: str, out: Path) -> None:
    from indexing.builder import BuildConfig
    from indexing.from_vectors import build_from_vectors

    from indexing.npy_file import NpyFile

    array = NpyFile(vectors, rows=n)  # what `retriever index from-vectors` reads: blocks, no memory map
    start = time.perf_counter()
    with PeakRss() as rss:
        manifest = build_from_vectors(out, array, LazyIds(n), BuildConfig(corpus=(str(vectors),), factory=factory, docs_per_shard=65536), overwrite=True)
    seconds = time.perf_counter() - start
    peak = rss.peak
    print(json.dumps({"vectors": n, "factory": manifest.factory, "peak_rss_bytes": peak, "seconds": round(seconds, 1),
                      "index_bytes": manifest.sizes[manifest.files["index"]], "docstore_bytes": manifest.sizes[manifest.files["docstore"]]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,500000,1000000,2000000")
    parser.add_argument("--factory", default="IVF1024,PQ48")
    parser.add_argument("--child", nargs=3, metavar=("VECTORS", "N", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.factory, Path(args.child[2]))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    CACHE.mkdir(parents=True, exist_ok=True)
    vectors = CACHE / f"synthetic-{max(sizes)}x{DIM}.npy"
    if not vectors.is_file():
        synthetic(vectors, max(sizes))
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="memory-") as work:
            cmd = [sys.executable, "-m", "benchmarks.memory", "--factory", args.factory, "--child", str(vectors), str(n), str(Path(work) / "idx")]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(row, flush=True)
    lines = [
        f"# Peak RSS of a streaming {args.factory} build from vector shards (384-d synthetic vectors)",
        "",
        "Each size builds in a fresh process; RSS (file-backed pages included) is sampled every 20 ms.",
        "",
        "| vectors | peak RSS | build time | index file | doc store |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['vectors']:,} | {r['peak_rss_bytes'] / 2**20:,.0f} MiB | {r['seconds']:.0f} s | {r['index_bytes'] / 2**20:,.0f} MiB | {r['docstore_bytes'] / 2**20:,.0f} MiB |")
    lines += ["", f"Raw vectors at the largest size: {max(sizes) * DIM * 4 / 2**30:.1f} GiB (read from the .npy in 65,536-row blocks, never loaded whole)."]
    write_results("memory", {"factory": args.factory, "runs": rows}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
