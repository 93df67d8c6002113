"""``retriever index ...``: build, merge, add, delete, compact, info, verify, from-vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import BuildProgress, console, count_records, out, print_json, user_errors
from indexing.errors import RetrieverError

app = typer.Typer(help="Build and update indexes.", no_args_is_help=True)

WAIT_HELP = "Seconds to wait for another process writing this index (default: fail at once, naming it)."

PRECISION_HELP = ("Document encoding precision: auto (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), fp32, "
                  "bf16 or fp16 (CUDA only). Queries are always encoded in fp32. Recorded in the manifest.")

CORPUS_HELP = ("Corpus files or folders: JSONL, TSV, CSV, Parquet (gzip ok), a BEIR folder, a folder of .txt/.md; "
               "with --encoder code, source trees (one document per function).")


def _fields(id_field: Optional[str], title_field: Optional[str], text_field: Optional[str]):
    from indexing.readers import FieldNames

    return FieldNames(id=id_field, title=title_field, text=text_field)


@app.command()
@user_errors
def build(
    corpus: list[Path] = typer.Argument(..., help=CORPUS_HELP),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Index directory to create."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model alias (minilm, multilingual-e5-small), folder or hub id."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder preset (text, crosslingual, url, code); picks its default model. url reads URL lists, code source trees."),
    index: str = typer.Option("auto", "--index", help="FAISS factory string (Flat, IVF4096,Flat, HNSW32, IVF4096,PQ48) or auto."),
    metric: str = typer.Option("ip", "--metric", help="ip (cosine on normalized vectors) or l2."),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", help="Passage window in tokens; 0 = no chunking (model truncates). Default: half the model's max length."),
    chunk_overlap: Optional[int] = typer.Option(None, "--chunk-overlap", help="Tokens shared by consecutive windows (default: a quarter of the window)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoder batch size."),
    docs_per_shard: int = typer.Option(4096, "--shard-docs", help="Documents per resumable shard."),
    nprobe: int = typer.Option(16, "--nprobe", help="Default IVF lists visited per query."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    document_backend: str = typer.Option("auto", "--document-backend", help="What encodes bf16 documents on the CPU: auto (OpenVINO where installed, else torch), torch or openvino. Recorded in the manifest."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index or unfinished build."),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    title_field: Optional[str] = typer.Option(None, "--title-field"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    bm25: bool = typer.Option(False, "--bm25", help="Also build the BM25 index (kept current by index add/delete) for --mode bm25/hybrid; needs Java."),
    transliterate: bool = typer.Option(False, "--transliterate", help="Romanize documents (uroman) before encoding, and every query at search time; recorded in the manifest. Stored texts stay as written."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data workers, one model copy each)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local one)."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", help="Ray worker actors (default: one per GPU, else per CPU)."),
    num_shards: int = typer.Option(1, "--num-shards", help="Index only every N-th document (with --shard-id); merge with `index merge`."),
    shard_id: int = typer.Option(0, "--shard-id", help="Which slice (0..N-1): documents at positions I, I+N, I+2N, ..."),
    index_shards: int = typer.Option(1, "--index-shards", help="Split the FAISS index into K shards searched in parallel."),
    on_disk: bool = typer.Option(False, "--on-disk", help="IVF only: keep inverted lists in a memory-mapped file (indexes larger than RAM)."),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Encode a corpus and build an index (streaming, resumable, committed atomically)."""
    from retriever.index import Index

    if engine == "ray":
        _quiet_ray_data()
    records = count_records(corpus)
    if records is not None and num_shards > 1:
        records = len(range(shard_id, records, num_shards))
    with BuildProgress(records, enabled=not as_json) as progress:
        built = Index.build(
            corpus, out_dir, model=model, preset=encoder, fields=_fields(id_field, title_field, text_field),
            device=device, transliterate=transliterate, bm25=bm25, resume=resume, overwrite=overwrite, wait=wait,
            progress=progress, index=index, metric=metric, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
            batch_size=batch_size, docs_per_shard=docs_per_shard, nprobe=nprobe, engine=engine,
            ray_address=ray_address, ray_workers=ray_workers, num_shards=num_shards, shard_id=shard_id,
            index_shards=index_shards, on_disk=on_disk, precision=precision,
            document_backend=document_backend, announce=None if as_json else lambda note: console.print(note, highlight=False, markup=False, soft_wrap=True),
        )
    manifest = built.info()
    if as_json:
        print_json(json.loads(manifest.to_json()))
        return
    console.print(
        f"built [bold]{out_dir}[/]: {manifest.counts['documents']:,} documents, {manifest.counts['passages']:,} passages, "
        f"index {manifest.factory}" + (" (chosen by auto)" if index == "auto" else "") + f", model {manifest.encoder['model']}"
        + (", with its BM25 index" if bm25 else ""),
        highlight=False,
    )


def _quiet_ray_data() -> None:
    """Ray Data logs every scheduling step at INFO (its import sets that level); keep them for --verbose."""
    import logging

    try:
        import ray.data  # noqa: F401  (configures the "ray.data" logger)
    except ImportError:
        return  # the pool reports the missing extra
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("ray.data").setLevel(logging.WARNING)


@app.command()
@user_errors
def merge(
    inputs: list[Path] = typer.Argument(..., help="Indexes to merge (e.g. the outputs of --num-shards/--shard-id builds)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Merged index directory to create."),
    index: Optional[str] = typer.Option(None, "--index", help="FAISS factory of the merged index (default: the inputs')."),
    sharded: bool = typer.Option(False, "--sharded", help="Keep one FAISS index per input, searched in parallel."),
    on_disk: bool = typer.Option(False, "--on-disk", help="IVF only: inverted lists in a memory-mapped file."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="Default IVF lists visited per query."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index at --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Merge indexes built alike (same model, dim, metric, chunking) into one: same ids, vectors and documents."""
    from indexing.merge import merge_indexes

    manifest = merge_indexes(inputs, out_dir, factory=index, sharded=sharded, on_disk=on_disk, nprobe=nprobe, overwrite=overwrite, wait=wait)
    if as_json:
        print_json(json.loads(manifest.to_json()))
        return
    shards = sum(1 for role in manifest.files if role.startswith("shard."))
    console.print(
        f"merged {len(inputs)} indexes into [bold]{out_dir}[/]: {manifest.counts['documents']:,} documents, "
        f"{manifest.counts['passages']:,} passages, index {manifest.factory}" + (f" in {shards} shards" if shards else ""),
        highlight=False,
    )


@app.command("bm25")
@user_errors
def bm25_index(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    threads: int = typer.Option(2, "--threads", help="Lucene indexing threads."),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """(Re)build the BM25 index of an index's documents, for search/eval/serve --mode bm25|hybrid (commits a new
    version naming it; index add/delete keep it current afterwards)."""
    import time

    from retriever.search.bm25 import read_bm25_json
    from retriever.index import Index
    from retriever.search.bm25_index import bm25_dir

    started = time.perf_counter()
    manifest = Index.open(index_dir).bm25(threads=threads, wait=wait)
    folder = bm25_dir(index_dir, manifest)
    documents = (read_bm25_json(folder) or {}).get("documents", 0) if folder is not None else 0
    console.print(f"built BM25 index of {documents:,} documents in {folder} (index version {manifest.version}, "
                  f"{time.perf_counter() - started:.1f}s)", highlight=False)


@app.command("query-encoder")
@user_errors
def query_encoder(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Export the index's query encoder to ONNX into the index, so searches start without torch (index build does
    this already; use it for indexes built before)."""
    from retriever.index import Index

    manifest = Index.open(index_dir).add_query_encoder(wait=wait)
    console.print(f"{index_dir}: ONNX query encoder added (index version {manifest.version})", highlight=False)


@app.command("from-vectors")
@user_errors
def from_vectors(
    vectors: Path = typer.Argument(..., help=".npy file of (n, dim) float32 vectors."),
    ids_file: Path = typer.Option(..., "--ids", help="Text file with one id per line, aligned with the vectors."),
    out_dir: Path = typer.Option(..., "--out", "-o"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model that made the vectors (enables text queries)."),
    index: str = typer.Option("auto", "--index"),
    metric: str = typer.Option("ip", "--metric"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    resume: bool = typer.Option(False, "--resume"),
    index_shards: int = typer.Option(1, "--index-shards", help="Split the FAISS index into K shards searched in parallel."),
    on_disk: bool = typer.Option(False, "--on-disk", help="IVF only: keep inverted lists in a memory-mapped file."),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Build an index from vectors you already have (search them by vector, or by text with --model)."""
    from indexing.builder import BuildConfig
    from indexing.from_vectors import build_from_vectors
    from indexing.npy_file import NpyFile

    if not vectors.is_file():
        raise RetrieverError(f"{vectors}: no such file")
    array = NpyFile(vectors)  # read in blocks: memory stays flat in the number of vectors
    if not ids_file.is_file():
        raise RetrieverError(f"{ids_file}: no such file")
    record = None
    if model:
        from retriever.encoders.base import load_encoder

        record = load_encoder(model, device="cpu").describe()
        if record["dim"] != array.shape[1]:
            raise RetrieverError(f"model {model} gives {record['dim']}-d vectors, {vectors} holds {array.shape[1]}-d")
    config = BuildConfig(corpus=(str(vectors),), factory=index, metric=metric, docs_per_shard=65536,
                         index_shards=index_shards, on_disk=on_disk)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(ids_file, encoding="utf-8") as fh:  # ids are streamed, memory stays flat
        ids = (line.rstrip("\n") for line in fh if line.strip())
        manifest = build_from_vectors(out_dir, array, ids, config, encoder_record=record, overwrite=overwrite, resume=resume, wait=wait)
    console.print(f"built [bold]{out_dir}[/]: {manifest.counts['passages']:,} vectors, index {manifest.factory}", highlight=False)


@app.command()
@user_errors
def add(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    corpus: list[Path] = typer.Argument(..., help=CORPUS_HELP),
    upsert: bool = typer.Option(False, "--upsert", help="Replace documents whose id exists (when changed)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, bf16 or fp16 (CUDA): what the new documents are encoded in (default: the index's recorded precision)."),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    title_field: Optional[str] = typer.Option(None, "--title-field"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    as_json: bool = typer.Option(False, "--json"),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Add documents to an index, or to an index set (as `retriever set add`; a failed add leaves it as it was)."""
    from indexing.set_manifest import is_index_set
    from retriever.index import Index

    if is_index_set(index_dir):
        from cli.set_cmd import add as set_add

        if precision is not None:
            raise RetrieverError("--precision: an index set encodes new documents in its recorded precision (retriever set add)")
        return set_add(index_dir, corpus, upsert, batch_size, device, id_field, title_field, text_field, as_json, wait)
    report = Index.open(index_dir).add(corpus, upsert=upsert, fields=_fields(id_field, title_field, text_field),
                                       batch_size=batch_size, device=device, precision=precision, wait=wait)
    _report(report, as_json, f"added {report.added:,}, replaced {report.replaced:,}, unchanged {report.unchanged:,}")


@app.command()
@user_errors
def delete(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    ids: Optional[str] = typer.Option(None, "--ids", help="Comma-separated document ids."),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="File with one id per line."),
    as_json: bool = typer.Option(False, "--json"),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Delete documents by id (from an index, or from an index set as `retriever set delete`)."""
    from indexing.set_manifest import is_index_set
    from retriever.index import Index

    if is_index_set(index_dir):
        from cli.set_cmd import delete as set_delete

        return set_delete(index_dir, ids, ids_file, as_json, wait)
    wanted: list[str] = [i for i in (ids or "").split(",") if i]
    if ids_file is not None:
        if not ids_file.is_file():
            raise RetrieverError(f"{ids_file}: no such file")
        wanted += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise RetrieverError("give the ids to delete with --ids or --ids-file")
    report = Index.open(index_dir).delete(wanted, wait=wait)
    message = f"deleted {report.deleted:,} documents"
    if report.missing:
        message += f"; {len(report.missing)} id(s) not in the index: {', '.join(report.missing[:5])}"
    _report(report, as_json, message)


@app.command()
@user_errors
def compact(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    as_json: bool = typer.Option(False, "--json"),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Drop deleted vectors that an index type (HNSW) keeps until compaction (every shard of an index set)."""
    from indexing.set_manifest import is_index_set
    from retriever.index import Index

    if is_index_set(index_dir):
        from cli.set_cmd import compact as set_compact

        return set_compact(index_dir, as_json, wait)
    report = Index.open(index_dir).compact(wait=wait)
    _report(report, as_json, f"compacted: {report.deleted:,} deleted vectors dropped")


def _report(report, as_json: bool, message: str) -> None:
    from dataclasses import asdict

    if as_json:
        print_json(asdict(report))
    else:
        console.print(f"{message} (index version {report.version})", highlight=False)


@app.command()
@user_errors
def info(index_dir: Path = typer.Argument(..., help="Index directory."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show what an index (or an index set) holds (reads the manifest only)."""
    from indexing.manifest import read_manifest
    from indexing.set_manifest import is_index_set

    if is_index_set(index_dir):
        from cli.set_cmd import info as set_info

        return set_info(index_dir, as_json)
    manifest = read_manifest(index_dir)
    if as_json:
        print_json(json.loads(manifest.to_json()))
        return
    from rich.table import Table

    enc = manifest.encoder
    table = Table(show_header=False, box=None)
    rows = [
        ("index", str(index_dir)),
        ("version", str(manifest.version)),
        ("documents", f"{manifest.counts['documents']:,}"),
        ("passages", f"{manifest.counts['passages']:,}"),
        ("deleted, pending compaction", f"{manifest.counts.get('tombstones', 0):,}"),
        ("factory", manifest.factory + (f" (auto)" if manifest.factory_requested == "auto" else "")
         + _layout(manifest)),
        ("metric", manifest.metric),
        ("model", f"{enc.get('model')} ({enc.get('preset')}, {manifest.dim}-d, {enc.get('pooling')} pooling, normalized={enc.get('normalized')})"),
        ("transliteration", ", ".join(side for side in ("documents", "queries") if (enc.get("transliterate") or {}).get(side)) or "none"),
        ("chunking", f"{manifest.chunking['chunk_tokens']} tokens, overlap {manifest.chunking['overlap']}"),
        ("updated", manifest.updated),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    out.print(table)


def _layout(manifest) -> str:
    from indexing.layout import is_on_disk, shard_roles

    shards = len(shard_roles(manifest))
    return (f", {shards} shards" if shards else "") + (", on-disk IVF lists" if is_on_disk(manifest) else "")


@app.command()
@user_errors
def verify(index_dir: Path = typer.Argument(..., help="Index directory.")) -> None:
    """Check every file of an index (or of every shard of an index set) against the manifest's checksums."""
    from indexing.manifest import read_manifest, verify_files
    from indexing.set_manifest import is_index_set

    if is_index_set(index_dir):
        from cli.set_cmd import verify as set_verify

        return set_verify(index_dir)
    manifest = read_manifest(index_dir)
    verify_files(index_dir, manifest, checksums=True)
    console.print(f"{index_dir}: {len(manifest.checksums)} files match their checksums", highlight=False)
