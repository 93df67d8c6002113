"""Peak RSS of ``retriever index build`` on SciFact, beside the floor: the same passages encoded by a bare
``SentenceTransformer.encode`` in the same batch size, and nothing else.

Every run is a fresh process; its peak is ``ru_maxrss`` (the driver that forks it stays small), and RSS is
sampled every 5 ms inside it to split the peak by phase (model load, reading + chunking, encoding, finalize,
the ONNX query-encoder export). Builds run through the CLI's own entry point, as::

    retriever index build SCIFACT --out X --device cpu --chunk-tokens 0|default [--batch-size 64]

``--variants before,after``: ``before`` turns this build's memory fixes off inside the child (the chunking
groups of :data:`indexing.builder.CHUNK_GROUP` and the native heap trimmed after each batch,
:mod:`indexing.native_memory`), so both are
measured on the same machine in one run, interleaved; the two indexes are compared (FAISS file bytes, every
document and passage of the doc store) and must be identical.

    python -m benchmarks.build_memory [--chunking 0,default] [--precision fp32] [--repeats 1] [--limit N] [--model M]

``--model``: another encoder (alias or folder) for both the builds (``--model`` of the CLI) and the floor; by
default the text preset's model, which the builds pick themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, require_data, write_results

MIB = 2**20


# --- inside a child process ------------------------------------------------------------------------------
class PhaseRss:
    """Samples RSS every 5 ms; each sample counts for the phase current at the time (set by wrapped calls)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.005)

    def sample(self) -> None:
        rss = self.process.memory_info().rss
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)

    def during(self, owner: Any, name: str, phase: str) -> None:
        """Count the time inside ``owner.name(...)`` as ``phase`` (nested calls keep the outer phase)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            outer = self.phase
            if outer in ("start", "other"):
                self.sample()
                self.phase = phase
            try:
                return original(*args, **kwargs)
            finally:
                self.sample()
                self.phase = outer if outer not in ("start",) else "other"

        setattr(owner, name, wrapped)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {k: round(v / MIB) for k, v in self.peaks.items()}


def _cli_has_precision() -> bool:
    done = subprocess.run([sys.executable, "-m", "cli", "index", "build", "--help"], capture_output=True, text=True, cwd=REPO)
    return "--precision" in done.stdout


def child_build(args: argparse.Namespace) -> dict[str, Any]:
    rss = PhaseRss()
    import indexing.builder as builder
    import indexing.workspace as workspace
    import retriever.encoders.base as encoders
    import retriever.index as api

    if args.variant == "before":  # the build as it was: one tokenizer call per shard, glibc's dynamic threshold
        builder.CHUNK_GROUP = 1 << 30
        encoders.trimmed_between_batches = lambda model: contextlib.nullcontext(False)
    if args.precision and not args.cli_precision:  # the CLI has no --precision yet: set it where the encoder loads
        load = encoders.load_encoder
        encoders.load_encoder = lambda *a, **k: load(*a, **{**k, "precision": args.precision})
    rss.during(encoders, "load_encoder", "model load")
    rss.during(builder, "_chunk", "read + chunk")
    rss.during(encoders.SentenceTransformerEncoder, "encode_documents", "encode")
    rss.during(builder, "finalize", "finalize")
    rss.during(workspace, "file_facts", "finalize")
    rss.during(api, "_export_query_encoder", "ONNX export")
    argv = ["retriever", "index", "build", args.corpus, "--out", args.out, "--device", "cpu", "--batch-size", str(args.batch_size)]
    if args.chunk != "default":
        argv += ["--chunk-tokens", args.chunk]
    if args.precision and args.cli_precision:
        argv += ["--precision", args.precision]
    if args.model:
        argv += ["--model", args.model]
    sys.argv = argv
    from cli.main import run

    start = time.perf_counter()
    try:
        run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    seconds = time.perf_counter() - start
    phases = rss.stop()
    return {"seconds": round(seconds, 1), "phases": phases, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def child_floor(args: argparse.Namespace) -> dict[str, Any]:
    """The floor: load the model, read the passages, ``SentenceTransformer.encode`` them; nothing else."""
    rss = PhaseRss()
    from sentence_transformers import SentenceTransformer

    from indexing.native_memory import trimmed_between_batches
    from retriever.devices import resolve_precision
    from retriever.encoders.half_documents import half_copy

    rss.phase = "model load"
    model = SentenceTransformer(args.model, device="cpu")
    rss.phase = "read"
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    rss.phase = "encode"
    precision, _ = resolve_precision(args.precision or "auto", "cpu")  # what the build resolves it to
    # "trimmed": the build's allocator step (the native heap trimmed after every batch)
    if precision == "bf16":  # the build's document model: the Transformer's weights in bf16
        model = half_copy(model, precision)
    trimming = trimmed_between_batches(model) if args.variant == "trimmed" else contextlib.nullcontext()
    start = time.perf_counter()
    with trimming:
        vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    seconds = time.perf_counter() - start
    phases = rss.stop()
    return {"seconds": round(seconds, 1), "phases": phases, "passages": len(vectors),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


# --- the driver -----------------------------------------------------------------------------------------
def passages_of(index: Path) -> list[str]:
    """The texts the build encoded (as :func:`indexing.builder.passage_inputs` makes them), from its doc store."""
    from indexing.builder import passage_inputs
    from indexing.docstore import DocStore
    from indexing.documents import Document, Passage
    from indexing.manifest import read_manifest

    manifest = read_manifest(index)
    store = DocStore(index / manifest.files["docstore"], readonly=True)
    try:
        rows = store.passage_texts(0, manifest.counts["passages"])
    finally:
        store.close()
    return [passage_inputs(Document(doc_id, title, text), [Passage(doc_id, 0, 0, len(text), text)])[0] for _, doc_id, title, text in rows]


def digest(index: Path) -> str:
    """sha256 over the FAISS file(s) and every document and passage row of the doc store (not the manifest's times)."""
    from indexing.docstore import DocStore
    from indexing.manifest import read_manifest

    manifest = read_manifest(index)
    h = hashlib.sha256()
    for role in sorted(manifest.files):
        if role == "index" or role.startswith(("shard.", "ivfdata")):  # the vectors (the ONNX files vary by export)
            h.update((index / manifest.files[role]).read_bytes())
    store = DocStore(index / manifest.files["docstore"], readonly=True)
    try:
        for doc in store.iter_documents():
            h.update(repr((doc.id, doc.title, doc.text, doc.metadata)).encode())
        for row in store.passage_rows(-1, 1 << 40):
            h.update(repr(row).encode())
    finally:
        store.close()
    return h.hexdigest()[:16]


def spawn(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.build_memory", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true")})
    if done.returncode != 0:
        raise RuntimeError(f"child {args[:3]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None, help="default: the SciFact corpus")
    parser.add_argument("--label", default="SciFact", help="the corpus's name in the report")
    parser.add_argument("--limit", type=int, default=0, help="only the first N documents (0: all)")
    parser.add_argument("--chunking", default="0,default")
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or '' (the build's default, auto)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="build_memory")
    parser.add_argument("--child", choices=("build", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="after", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="encoder alias or folder (default: the text preset's, minilm)")
    parser.add_argument("--cli-precision", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_build(args) if args.child == "build" else child_floor(args)
        print(json.dumps(result))
        return

    from retriever.models.resolve import resolve_model

    model = resolve_model(args.model, preset="text")
    corpus = Path(args.corpus) if args.corpus else require_data("scifact") / "corpus.jsonl"
    cli_precision = bool(args.precision) and _cli_has_precision()
    common = ["--batch-size", str(args.batch_size), "--precision", args.precision] + (["--cli-precision"] if cli_precision else [])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="build-memory-") as tmp:
        work = Path(tmp)
        if args.limit:
            with open(corpus, encoding="utf-8") as fh, open(work / "corpus.jsonl", "w", encoding="utf-8") as out:
                out.writelines(line for _, line in zip(range(args.limit), fh))
            corpus = work / "corpus.jsonl"
        for chunk in args.chunking.split(","):
            runs: dict[str, list[dict[str, Any]]] = {}
            digests: dict[str, str] = {}
            texts = None
            for repeat in range(args.repeats):
                for variant in args.variants.split(","):
                    out = work / f"{variant}-{chunk}"
                    result = spawn(["--child", "build", "--variant", variant, "--chunk", chunk, "--corpus", str(corpus), "--out", str(out),
                                    *common, *(["--model", args.model] if args.model else [])])
                    digests[variant] = digest(out)
                    if texts is None:
                        texts = work / f"texts-{chunk}.json"
                        texts.write_text(json.dumps(passages_of(out)), encoding="utf-8")
                    runs.setdefault(variant, []).append(result)
                    print(f"chunking {chunk} {variant} #{repeat}: {result}", flush=True)
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                for floor in ("floor", "floor, trimmed"):
                    variant = "trimmed" if floor != "floor" else "plain"
                    result = spawn(["--child", "floor", "--variant", variant, "--texts", str(texts), "--model", model.path, *common])
                    runs.setdefault(floor, []).append(result)
                    print(f"chunking {chunk} {floor} #{repeat}: {result}", flush=True)
            passages = runs["floor"][0]["passages"]
            for name, results in runs.items():
                rows.append({
                    "chunking": chunk, "run": name, "passages": passages,
                    "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results),
                    "seconds": statistics.median(r["seconds"] for r in results),
                    "phases": results[0]["phases"], "all": results,
                    **({"index_digest": digests[name]} if name in digests else {}),
                })
            if len(set(digests.values())) > 1:
                raise SystemExit(f"chunking {chunk}: the variants built different indexes: {digests}")
    markdown = report(rows, args, corpus)
    write_results(args.name, {"corpus": str(corpus), "model": model.name, "limit": args.limit, "precision": args.precision or "auto",
                              "batch_size": args.batch_size, "repeats": args.repeats, "runs": rows}, markdown)
    print(markdown)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, corpus: Path) -> str:
    phases = ["model load", "read + chunk", "encode", "finalize", "ONNX export"]
    lines = [
        f"# Peak RSS of `retriever index build` ({args.label}{f', first {args.limit} documents' if args.limit else ''}) "
        f"vs the encoding floor",
        "",
        f"Encoder precision {args.precision or 'auto'}, batch size {args.batch_size}, CPU; each run a fresh process "
        f"(median of {args.repeats}). *floor*: a process that only loads the model and encodes the same passages with "
        "`SentenceTransformer.encode` (same batch size and precision); *floor, trimmed*: the same with the build's "
        "allocator step (the native heap trimmed after every batch, `indexing.native_memory`). *before*: the build "
        "without its memory fixes (one tokenizer call per 4,096-document shard; no trimming); *after*: as shipped. The indexes built before and "
        "after are identical (FAISS bytes and every doc-store row).",
        "",
        "| chunking | run | passages | peak RSS | vs floor | " + " | ".join(f"peak in {p}" for p in phases) + " | seconds |",
        "|---|---|---|---|---|" + "---|" * len(phases) + "---|",
    ]
    floors = {r["chunking"]: r["peak_rss_mib"] for r in rows if r["run"] == "floor"}
    for r in rows:
        cells = [f"{r['phases'][p]:,}" if p in r["phases"] else "" for p in phases]
        if r["run"] == "floor":
            cells[0] = f"{r['phases'].get('model load', 0):,}"  # torch imported before: see "start"
        ratio = r["peak_rss_mib"] / floors[r["chunking"]]
        lines.append(f"| {r['chunking']} | {r['run']} | {r['passages']:,} | {r['peak_rss_mib']:,.0f} MiB | {ratio:.2f}x | "
                     + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    lines += ["", "Phase columns: the highest RSS (MiB) sampled during that phase (sampling every 5 ms may miss the very top; "
              "the peak column is the kernel's ru_maxrss)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
