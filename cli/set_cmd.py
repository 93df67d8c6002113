"""``retriever set ...``: build and update an index set (N shard indexes, documents routed by a hash of their id).

A separate command group rather than an option of ``retriever index build``: that command already has two
unrelated "shard" options (``--num-shards/--shard-id``: a positional slice of the corpus for ``index merge``;
``--index-shards``: one FAISS index split inside one process), and a set differs in kind: its own manifest
(``set.json``), its own lock and update path, and shards that must stay updatable (no ``--on-disk``).
``retriever search``/``eval``/``serve`` take a set wherever they take an index.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from cli.common import BuildProgress, console, count_records, out, print_json, user_errors
from cli.index_cmd import CORPUS_HELP, WAIT_HELP, _fields
from indexing.errors import RetrieverError

app = typer.Typer(help="Build and update index sets: one index split into shards by a hash of the document ids.",
                  no_args_is_help=True)


@app.command()
@user_errors
def build(
    corpus: list[Path] = typer.Argument(..., help=CORPUS_HELP),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Set folder to create."),
    shards: int = typer.Option(..., "--shards", help="Number of shard indexes; documents go to blake2b(id) mod N."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model alias, folder or hub id."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder preset (text, crosslingual, url, code)."),
    index: str = typer.Option("auto", "--index", help="FAISS factory of every shard (Flat, HNSW32, IVF1024,Flat) or auto (chosen by shard 0)."),
    metric: str = typer.Option("ip", "--metric", help="ip or l2."),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", help="Passage window in tokens; 0 = no chunking."),
    chunk_overlap: Optional[int] = typer.Option(None, "--chunk-overlap", help="Tokens shared by consecutive windows."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoder batch size."),
    docs_per_shard: int = typer.Option(4096, "--shard-docs", help="Documents per resumable build step."),
    nprobe: int = typer.Option(16, "--nprobe", help="Default IVF lists visited per query."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted set build."),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    title_field: Optional[str] = typer.Option(None, "--title-field"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    bm25: bool = typer.Option(False, "--bm25", help="Also build each shard's BM25 index (statistics per shard); needs Java."),
    engine: str = typer.Option("local", "--engine", help="local or ray (Ray Data workers encode)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster for --engine ray."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", help="Ray worker actors."),
    as_json: bool = typer.Option(False, "--json", help="Print set.json."),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Encode a corpus into a set of N shard indexes built alike (committed by writing set.json last)."""
    from retriever.index_set import IndexSet

    with BuildProgress(count_records(corpus), enabled=not as_json) as progress:
        built = IndexSet.build(
            corpus, out_dir, shards=shards, model=model, preset=encoder, fields=_fields(id_field, title_field, text_field),
            device=device, bm25=bm25, resume=resume, wait=wait, progress=progress, index=index, metric=metric,
            chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, batch_size=batch_size, docs_per_shard=docs_per_shard,
            nprobe=nprobe, engine=engine, ray_address=ray_address, ray_workers=ray_workers,
        )
    if as_json:
        print_json(json.loads(built.set_info().to_json()))
        return
    manifest = built.info()
    console.print(f"built set [bold]{out_dir}[/]: {shards} shards, {manifest.counts['documents']:,} documents, "
                  f"{manifest.counts['passages']:,} passages, index {manifest.factory}, model {manifest.encoder.get('model')}"
                  + (", with per-shard BM25" if bm25 else ""), highlight=False)


@app.command()
@user_errors
def add(
    set_dir: Path = typer.Argument(..., help="Set folder."),
    corpus: list[Path] = typer.Argument(..., help=CORPUS_HELP),
    upsert: bool = typer.Option(False, "--upsert", help="Replace documents whose id exists (when changed)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    title_field: Optional[str] = typer.Option(None, "--title-field"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    as_json: bool = typer.Option(False, "--json"),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Add documents to a set, each to its hash shard, in one atomic set commit."""
    from retriever.index_set import IndexSet

    report = IndexSet.open(set_dir).add(corpus, upsert=upsert, fields=_fields(id_field, title_field, text_field),
                                        batch_size=batch_size, device=device, wait=wait)
    _report(report, as_json, f"added {report.added:,}, replaced {report.replaced:,}, unchanged {report.unchanged:,}")


@app.command()
@user_errors
def delete(
    set_dir: Path = typer.Argument(..., help="Set folder."),
    ids: Optional[str] = typer.Option(None, "--ids", help="Comma-separated document ids."),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="File with one id per line."),
    as_json: bool = typer.Option(False, "--json"),
    wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP),
) -> None:
    """Delete documents by id, in one atomic set commit."""
    from retriever.index_set import IndexSet

    wanted: list[str] = [i for i in (ids or "").split(",") if i]
    if ids_file is not None:
        if not ids_file.is_file():
            raise RetrieverError(f"{ids_file}: no such file")
        wanted += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise RetrieverError("give the ids to delete with --ids or --ids-file")
    report = IndexSet.open(set_dir).delete(wanted, wait=wait)
    message = f"deleted {report.deleted:,} documents"
    if report.missing:
        message += f"; {len(report.missing)} id(s) not in the set: {', '.join(report.missing[:5])}"
    _report(report, as_json, message)


@app.command()
@user_errors
def compact(set_dir: Path = typer.Argument(..., help="Set folder."), as_json: bool = typer.Option(False, "--json"),
            wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP)) -> None:
    """Drop deleted vectors (HNSW) in every shard, in one atomic set commit."""
    from retriever.index_set import IndexSet

    report = IndexSet.open(set_dir).compact(wait=wait)
    _report(report, as_json, f"compacted: {report.deleted:,} deleted vectors dropped")


@app.command("bm25")
@user_errors
def bm25_index(set_dir: Path = typer.Argument(..., help="Set folder."),
               threads: int = typer.Option(2, "--threads", help="Lucene indexing threads."),
               wait: float = typer.Option(0.0, "--wait", help=WAIT_HELP)) -> None:
    """(Re)build every shard's BM25 index (statistics per shard), in one atomic set commit; needs Java."""
    from retriever.index_set import IndexSet

    manifest = IndexSet.open(set_dir).bm25(threads=threads, wait=wait)
    console.print(f"built the BM25 index of {manifest.num_shards} shards (set version {manifest.version})", highlight=False)


@app.command()
@user_errors
def info(set_dir: Path = typer.Argument(..., help="Set folder."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show what a set holds, in total and per shard (reads set.json only)."""
    from rich.table import Table

    from indexing.set_manifest import read_set_manifest
    from indexing.set_open import summary

    manifest = read_set_manifest(set_dir)
    if as_json:
        print_json(json.loads(manifest.to_json()))
        return
    total = summary(manifest)
    out.print(f"[bold]{set_dir}[/]: set version {manifest.version}, {manifest.num_shards} shards, "
              f"{total.counts['documents']:,} documents, {total.counts['passages']:,} passages, index {total.factory}, "
              f"{total.metric}, model {total.encoder.get('model')} ({total.dim}-d), routing {manifest.routing}",
              highlight=False)
    table = Table()
    for column in ("shard", "version", "documents", "passages", "deleted, pending compaction"):
        table.add_column(column, justify="right" if column != "shard" else "left")
    for number in range(manifest.num_shards):
        shard = manifest.shard_manifest(number)
        table.add_row(manifest.shards[number]["dir"], str(shard.version), f"{shard.counts['documents']:,}",
                      f"{shard.counts['passages']:,}", f"{shard.counts.get('tombstones', 0):,}")
    out.print(table)


@app.command()
@user_errors
def verify(set_dir: Path = typer.Argument(..., help="Set folder.")) -> None:
    """Check every file of every shard of the committed set version against its checksum."""
    from indexing.set_open import verify_set

    files = verify_set(set_dir)
    console.print(f"{set_dir}: {files} files in all shards match their checksums", highlight=False)


def _report(report, as_json: bool, message: str) -> None:
    if as_json:
        print_json(asdict(report))
    else:
        console.print(f"{message} (set version {report.version})", highlight=False)


@app.command("serve")
@user_errors
def serve_set(
    set_dir: Path = typer.Argument(..., help="Set folder (the same path on every Ray node: a shared filesystem)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster (default: RAY_ADDRESS, else a local one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address Ray Serve's HTTP proxy binds."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    shard_replicas: int = typer.Option(1, "--shard-replicas", help="Replicas of each shard deployment."),
    shard_cpus: float = typer.Option(1.0, "--shard-cpus", help="CPUs per shard replica."),
    shard_gpus: float = typer.Option(0.0, "--shard-gpus", help="GPUs per shard replica (FAISS on the GPU: with --index-device cuda)."),
    shard_resources: Optional[str] = typer.Option(None, "--shard-resources", help='Extra Ray resources per shard replica as JSON, e.g. \'{"shard-{number}": 0.01}\' pins shard N to nodes declaring shard-N.'),
    ingress_replicas: int = typer.Option(1, "--ingress-replicas", help="Replicas of the ingress (each holds the query encoder)."),
    ingress_gpus: float = typer.Option(0.0, "--ingress-gpus", help="GPUs per ingress replica (query encoding)."),
    shard_timeout: float = typer.Option(5.0, "--shard-timeout", help="Seconds a request waits for a missing shard before a 503 (or a partial answer when the request sets allow_partial)."),
    device: str = typer.Option("cpu", "--device", help="Query encoder device in the ingress."),
    index_device: Optional[str] = typer.Option(None, "--index-device", help="FAISS device in shard replicas (cpu or cuda)."),
    query_backend: str = typer.Option("auto", "--query-backend", help="auto, onnx or torch."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RETRIEVER_API_KEY", show_envvar=True, help="Require this key on /search and /info."),
    max_k: int = typer.Option(1000, "--max-k"),
    max_queries: int = typer.Option(128, "--max-queries"),
    max_query_chars: int = typer.Option(2048, "--max-query-chars"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes"),
) -> None:
    """Serve a set on a Ray cluster: one Ray Serve deployment per shard and an ingress that merges exactly
    (same HTTP API as `retriever serve`; a missing shard is a 503 with Retry-After)."""
    from retriever.apps.service.distributed import ServeOptions, deploy_set

    if not 0 < port < 65536:
        raise RetrieverError(f"--port must be in 1..65535 (got {port})")
    try:
        resources = json.loads(shard_resources) if shard_resources else {}
    except ValueError as exc:
        raise RetrieverError(f"--shard-resources is not JSON: {exc}") from None
    if not isinstance(resources, dict) or not all(isinstance(v, (int, float)) for v in resources.values()):
        raise RetrieverError('--shard-resources must be a JSON object of numbers, e.g. {"shard-{number}": 0.01}')
    limits = {"max_k": max_k, "max_queries": max_queries, "max_query_chars": max_query_chars, "max_body_bytes": max_body_bytes}
    from retriever.apps.service.schemas import Limits

    try:
        Limits(**limits)  # checked here: the ingress builds them on a Ray worker
    except ValueError as exc:
        raise RetrieverError(f"--{str(exc).replace('_', '-')}") from None
    options = ServeOptions(address=ray_address, host=host, port=port, shard_replicas=shard_replicas, shard_cpus=shard_cpus,
                           shard_gpus=shard_gpus, shard_resources=resources, ingress_replicas=ingress_replicas,
                           ingress_gpus=ingress_gpus, shard_timeout=shard_timeout, device=device, index_device=index_device,
                           query_backend=query_backend, limits=limits, api_key=api_key)
    console.print(f"serving set {set_dir} on Ray at http://{host}:{port} (Ctrl-C stops)", highlight=False)
    deploy_set(set_dir, options, blocking=True)
