"""Peak RSS of streaming a Hugging Face ``datasets`` folder through the corpus reader (no encoding).

For each size a dataset of short synthetic documents (``_id``, ``title``, ``text`` of ~60 characters, a ``rank``
column as metadata) is written with ``Dataset.save_to_disk`` (cached under benchmarks/cache), then read to its end
by ``indexing.readers.read_corpus`` in a fresh process whose RSS is sampled every 20 ms (psutil, file-backed pages
included). Acceptance: peak RSS at the largest size <= 1.2 x peak RSS at the smallest.

    python -m benchmarks.hf_stream_memory [--sizes 250000,1000000]

``--object`` also reads each size as an in-memory ``datasets.load_from_disk`` object (``retriever.corpus``), for
information: that path reads through datasets' memory map, so file pages it touched count in its RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, PeakRss, write_results

WORDS = "dense retrieval vector index query passage document search encoder model token window shard".split()
BLOCK = 50_000
BAR = 1.2


def make_dataset(folder: Path, rows: int) -> Path:
    """A ``save_to_disk`` folder of ``rows`` short documents, written block by block; reused when present."""
    import datasets

    if (folder / "state.json").is_file():
        return folder

    def generate():
        for i in range(rows):
            words = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(6))
            yield {"_id": f"doc{i}", "title": f"title {i % 1000}", "text": f"{words} number {i}", "rank": i}

    features = datasets.Features({"_id": datasets.Value("string"), "title": datasets.Value("string"),
                                  "text": datasets.Value("string"), "rank": datasets.Value("int64")})
    cache = folder.parent / f".{folder.name}-build"
    dataset = datasets.Dataset.from_generator(generate, features=features, cache_dir=str(cache), writer_batch_size=BLOCK)
    tmp = folder.with_name(folder.name + ".tmp")
    dataset.save_to_disk(str(tmp))
    tmp.rename(folder)
    return folder


def child(folder: Path, mode: str) -> dict[str, Any]:
    """Read ``folder`` to its end in this process; the peak RSS while reading, and the RSS before it."""
    import psutil

    from indexing.readers import read_corpus
    from retriever.corpus import corpus_reader

    if mode == "object":
        import datasets

        corpus = datasets.load_from_disk(str(folder))
        read = corpus_reader(corpus)
    else:
        read = lambda: read_corpus([folder])  # noqa: E731
        import pyarrow  # noqa: F401  (the reader's import, counted in the baseline like the other imports)
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    docs = chars = 0
    with PeakRss() as rss:
        for doc in read():
            docs += 1
            chars += len(doc.text)
    seconds = time.perf_counter() - start
    return {"rows": docs, "mode": mode, "peak_rss_bytes": rss.peak, "rss_before_bytes": before,
            "seconds": round(seconds, 2), "rows_per_s": round(docs / seconds), "text_chars": chars}


def measure(sizes: list[int], work: Path, *, mode: str = "folder") -> list[dict[str, Any]]:
    """One fresh reading process per size (datasets written under ``work``); the child's report for each."""
    runs = []
    for rows in sizes:
        folder = make_dataset(work / f"hf-stream-{rows}", rows)
        cmd = [sys.executable, "-m", "benchmarks.hf_stream_memory", "--child", str(folder), "--mode", mode]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        run = json.loads(done.stdout.strip().splitlines()[-1])
        if run["rows"] != rows:
            raise RuntimeError(f"read {run['rows']} rows of {rows}")
        runs.append(run)
        print(run, flush=True)
    return runs


def markdown(runs: list[dict[str, Any]], objects: list[dict[str, Any]]) -> str:
    mib = 2**20
    first, last = runs[0], runs[-1]
    ratio = last["peak_rss_bytes"] / first["peak_rss_bytes"]
    lines = [
        "# Streaming a Hugging Face datasets folder: peak RSS of the corpus reader",
        "",
        "`read_corpus([save_to_disk folder])` read to its end (no encoding), each size in a fresh process; RSS "
        "sampled every 20 ms (psutil, file-backed pages included).",
        "",
        "| rows | mode | RSS before reading | peak RSS | rows/s |",
        "|---|---|---|---|---|",
    ]
    for r in runs + objects:
        lines.append(f"| {r['rows']:,} | {r['mode']} | {r['rss_before_bytes'] / mib:,.1f} MiB | "
                     f"{r['peak_rss_bytes'] / mib:,.1f} MiB | {r['rows_per_s']:,} |")
    verdict = "pass" if ratio <= BAR else "FAIL"
    lines += ["", f"Peak at {last['rows']:,} rows / peak at {first['rows']:,} rows: **{ratio:.3f}** "
              f"(bar: <= {BAR}; {verdict})."]
    if objects:
        lines.append("`object` rows read a `datasets.load_from_disk` object through `retriever.corpus`: datasets "
                     "memory-maps the Arrow files, so pages read stay in RSS as clean, reclaimable file pages.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--object", action="store_true", help="also measure in-memory Dataset objects")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="folder", choices=("folder", "object"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.mode)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    CACHE.mkdir(parents=True, exist_ok=True)
    runs = measure(sizes, CACHE)
    objects = measure(sizes, CACHE, mode="object") if args.object else []
    ratio = runs[-1]["peak_rss_bytes"] / runs[0]["peak_rss_bytes"]
    text = markdown(runs, objects)
    write_results("hf_stream_memory", {"sizes": sizes, "bar": BAR, "ratio": round(ratio, 4), "pass": ratio <= BAR,
                                       "runs": runs, "object_runs": objects}, text)
    print(text)


if __name__ == "__main__":
    main()
