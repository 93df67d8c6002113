"""Every benchmark script runs end to end at a reduced size (``python -m benchmarks.NAME`` in a subprocess).

Sizes come from the scripts' own options (``--quick``, ``--steps``, ``--sizes``, ...), a tiny model where a script
takes one (the ``tiny_model`` fixture), and small BEIR collections cut from ../shared/data into a temp folder handed
over as ``RETRIEVER_DATA``. Results go to a temp folder (``RETRIEVER_BENCH_RESULTS``) and caches to another
(``RETRIEVER_BENCH_CACHE``): the committed ``benchmarks/results`` files are never touched. The numbers mean nothing;
each test checks that the script finishes and that its JSON has the keys the results pages read.

Not here: peers and precision, whose smoke tests live in their own files (tests/test_bench_peers.py,
tests/test_bench_precision.py); build_memory, memory, cold_start, serve and set_scaling, in
tests/test_bench_smoke_more.py (with this file's helpers); report.py is tested by tests/test_report.py.
Helpers (common, train_common, peers_engine, peers_runner, precision_parts, serve_load) run inside the scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import DATA, REPO

pytestmark = pytest.mark.slow


# --- helpers -------------------------------------------------------------------------------------------------
def subset(name: str, out: Path, *, queries: int, docs: int) -> Path:
    """``out/name``: the first ``queries`` judged queries (sorted ids) of each qrels split of the shared collection,
    every document they judge and the first ``docs`` other documents (corpus order). Skips when it is absent."""
    from indexing.formats.trec import read_qrels

    source = DATA / name
    if not (source / "corpus.jsonl").is_file():
        pytest.skip(f"{source} not available (shared evaluation data)")
    target = out / name
    if (target / "corpus.jsonl").is_file():
        return target
    (target / "qrels").mkdir(parents=True)
    splits = {path.stem: read_qrels(path) for path in sorted((source / "qrels").glob("*.tsv"))}
    kept = {split: {q: qrels[q] for q in sorted(qrels)[:queries]} for split, qrels in splits.items()}
    judged = {d for qrels in kept.values() for judgements in qrels.values() for d in judgements}
    lines, others = [], 0
    with open(source / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc_id = str(json.loads(line)["_id"])
            if doc_id in judged or others < docs:
                others += doc_id not in judged
                lines.append(line)
    (target / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    wanted = {q for qrels in kept.values() for q in qrels}
    with open(source / "queries.jsonl", encoding="utf-8") as fh:
        (target / "queries.jsonl").write_text("".join(l for l in fh if str(json.loads(l)["_id"]) in wanted), encoding="utf-8")
    for split, qrels in kept.items():
        rows = [f"{q}\t{d}\t{r}" for q in sorted(qrels) for d, r in sorted(qrels[q].items())]
        (target / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return target


def bench(module: str, *args: str, results: Path, cache: Path | None = None, data: Path | None = None,
          timeout: int = 1200) -> str:
    """Run ``python -m benchmarks.MODULE ARGS`` offline, results written to ``results``; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RETRIEVER_BENCH_RESULTS": str(results)}
    if cache is not None:
        env["RETRIEVER_BENCH_CACHE"] = str(cache)
    if data is not None:
        env["RETRIEVER_DATA"] = str(data)
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"benchmarks.{module} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def results_of(folder: Path, name: str) -> dict:
    """``name.json`` of a results folder, after checking its ``.md`` beside it (every script writes both)."""
    assert (folder / f"{name}.md").read_text(encoding="utf-8").strip(), name
    data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    assert {"machine", "written"} <= set(data)
    return data


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One benchmark cache for this module (the quick embedding cache serves overhead and speed alike)."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture()
def out(tmp_path) -> Path:
    return tmp_path / "results"


# --- retrieval quality -----------------------------------------------------------------------------------------
def test_quality(tmp_path, out):
    data = tmp_path / "data"
    subset("scifact", data, queries=5, docs=30)
    subset("adi", data, queries=10, docs=20)
    bench("quality", "--collections", "scifact,adi", results=out, cache=tmp_path / "cache", data=data)
    result = results_of(out, "quality")
    assert [row["collection"] for row in result["collections"]] == ["scifact", "adi"]
    for row in result["collections"]:
        assert {"bm25", "dense:minilm", "hybrid:minilm"} == set(row["systems"])
        assert {"nDCG@10", "R@100", "MRR@10"} <= set(row["systems"]["hybrid:minilm"])
        assert set(row["pvalues"]) == {"hybrid:minilm vs bm25", "hybrid:minilm vs dense:minilm"}
    assert {"nDCG@10", "chunk_tokens"} <= set(result["scifact_chunked"])


def test_engine_quality(tmp_path, out):
    data = tmp_path / "data"
    subset("npl", data, queries=8, docs=160)  # short documents; >= 156 passages for 4 IVF lists (39 each)
    # PQ8x4np: 16 codes per sub-quantizer train on a few vectors (PQ48's polysemous training alone takes minutes)
    bench("engine_quality", "--dataset", "npl", "--nlist", "4", "--pq", "PQ8x4np", "--work", tmp_path / "work", results=out, data=data)
    result = results_of(out, "engine_quality")
    for key in ("engine_flat_chunk0", "direct_sentence_transformers", "engine_flat_chunked_default"):
        assert {"nDCG@10", "R@100"} <= set(result[key]), key
    assert 0.0 <= result["top10_agreement_engine_vs_direct"] <= 1.0
    assert set(result["approximate"]) == {"auto", "IVF4,Flat", "HNSW32", "IVF4,PQ8x4np"}
    assert all("recall@10_vs_exact" in row for row in result["approximate"].values())


# --- speed and overhead ------------------------------------------------------------------------------------------
def test_overhead(shared_cache, out):
    if not (DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"no SciFact under {DATA}")
    bench("overhead", "--quick", results=out, cache=shared_cache)
    result = results_of(out, "overhead")
    assert set(result["search"]) == {"Flat", "IVF16,Flat nprobe 16", "IVF16,Flat nprobe 64"}
    for row in result["search"].values():
        assert row["raw_faiss_qps"] > 0 and row["searcher_qps"] > 0 and row["same_top10"]
    assert {"raw_docs_per_s", "build_docs_per_s", "ratio"} <= set(result["encoding"])


def test_speed(shared_cache, out):
    if not (DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"no SciFact under {DATA}")
    bench("speed", "--quick", results=out, cache=shared_cache)
    result = results_of(out, "speed")
    assert result["base_vectors"] == 700 and result["large_vectors"] == 3000 and result["queries"] == 50
    assert set(result["builds"]) == set(result["curves"]) and len(result["builds"]) == 6
    assert all({"build_seconds", "peak_rss_mib", "index_mib"} <= set(b) for b in result["builds"].values())
    assert result["curves"]["Flat"][0]["recall@10"] == 1.0
    assert {"raw_docs_per_s", "build_docs_per_s"} <= set(result["encoding"])
    assert (out / "speed.png").is_file()


def test_scale(tmp_path, out):
    from benchmarks.scale import own_memory_cgroup

    rng = np.random.default_rng(0)
    sharded = rng.normal(size=(33000, 32)).astype(np.float32)  # 4 index shards need 4 build shards of 8,192
    np.save(tmp_path / "sharded.npy", sharded / np.linalg.norm(sharded, axis=1, keepdims=True))
    sections = ["encode", "sharded"]
    args = ["--texts", "24", "--repeats", "1", "--sharded-vectors", tmp_path / "sharded.npy", "--work", tmp_path]
    if own_memory_cgroup() is not None:  # the out-of-core section needs a writable memory cgroup
        ooc = rng.normal(size=(20000, 384)).astype(np.float32)  # 29 MiB; the limit (30x that) only has to let Python run
        np.save(tmp_path / "ooc.npy", ooc / np.linalg.norm(ooc, axis=1, keepdims=True))
        sections.append("ooc")
        args += ["--ooc-vectors", tmp_path / "ooc.npy", "--ooc-factory", "IVF32,Flat", "--ooc-nprobe", "4",
                 "--ooc-ratio", "0.033", "--ooc-queries", "20"]
    bench("scale", "--sections", ",".join(sections), *args, results=out, cache=tmp_path / "cache")
    result = results_of(out, "scale")
    encode = result["encode"]
    assert encode["texts"] == 24 and len(encode["runs"]) == 3 and encode["ray_vs_single_same_ids"]
    assert result["sharded"]["identical_top10_ids"] and result["sharded"]["vectors"] == 33000
    if "ooc" in sections:
        ooc = result["ooc"]
        assert ooc["on_disk_build"]["exit"] == 0 and ooc["on_disk_search"]["exit"] == 0, ooc
        assert set(ooc["recall_at_10"]) == {"on_disk", "in_memory"}


def test_hf_stream_memory(tmp_path, out):
    pytest.importorskip("datasets")
    bench("hf_stream_memory", "--sizes", "2000,8000", "--object", results=out, cache=tmp_path / "cache")
    result = results_of(out, "hf_stream_memory")
    assert result["sizes"] == [2000, 8000] and {"ratio", "pass", "bar"} <= set(result)
    assert [run["rows"] for run in result["runs"]] == [2000, 8000]
    assert [run["mode"] for run in result["object_runs"]] == ["object", "object"]


# --- code search -------------------------------------------------------------------------------------------------
def test_code(tmp_path, out, tiny_model):
    data = tmp_path / "data"
    subset("cosqa", data, queries=10, docs=60)
    bench("code", "--trained", tiny_model, "--text-base", results=out, cache=tmp_path / "cache", data=data)
    result = results_of(out, "code_cosqa")
    assert set(result["systems"]) == {"bm25", "base", "base-text", "trained"}
    for row in result["systems"].values():
        assert {"MRR@10", "nDCG@10"} <= set(row["original"]) and {"MRR@10", "nDCG@10"} <= set(row["renamed"])
    assert result["renaming"]["functions"] == sum(1 for _ in open(data / "cosqa" / "corpus.jsonl", encoding="utf-8"))
    assert {"gain", "gain_ok", "robust_ok", "base_row"} <= set(result["acceptance"])


def test_code_teachers(tmp_path, out):
    data = tmp_path / "data"
    subset("cosqa", data, queries=10, docs=60)
    bench("code_teachers", results=out, cache=tmp_path / "cache", data=data)
    result = results_of(out, "code_teachers_dev")
    assert result["queries"] == 10 and {"minilm", "e5", "bm25"} <= set(result["systems"])
    assert len(result["systems"]) == 3 + 2 * 7 and result["best"] in result["systems"]


# --- cross-lingual -----------------------------------------------------------------------------------------------
def test_crosslingual(tmp_path, out, tiny_model):
    for name in ("xquad", "tatoeba"):
        if not (DATA / name).is_dir():
            pytest.skip(f"no {name} under {DATA}")
    pytest.importorskip("uroman")
    cache = tmp_path / "cache"
    stdout = bench("crosslingual", "--tatoeba", "rus,jpn", "prepare", "--out", tmp_path / "train.jsonl", results=out,
                   cache=cache)
    assert json.loads(stdout.strip().splitlines()[-1])["tatoeba"] == ["rus", "jpn"]
    assert (tmp_path / "train.jsonl").stat().st_size > 0
    bench("crosslingual", "--base", tiny_model, "--trained", tiny_model, "--tatoeba", "rus,jpn", "--tatoeba-pairs", "5",
          "--xquad-questions", "5", "--device", "cpu", results=out, cache=cache)
    result = results_of(out, "crosslingual")
    from benchmarks.crosslingual import DIRECTIONS

    assert set(result["summary"]["directions"]) == set(DIRECTIONS)
    assert set(result["base_figures"]["directions"]["tatoeba xx->en"]) == {"rus", "jpn"}
    assert {"romanized_to_native_acc1_gain_points", "xquad_xx_en_ndcg10_change_points", "passed"} <= set(
        result["summary"]["acceptance"])


# --- training benchmarks -----------------------------------------------------------------------------------------
TRAINING = ["--steps", "2", "--batch-size", "4", "--max-tokens", "32", "--device", "cpu"]


def test_train_contriever(tmp_path, out, tiny_model):
    data = tmp_path / "data"
    subset("scifact", data, queries=6, docs=40)
    bench("train_contriever", "--collection", "scifact", "--base", tiny_model, *TRAINING, "--queue-size", "8",
          "--chunk-tokens", "32", "--eval-every", "1", "--merge-weights", "0.5", "--work", tmp_path / "work",
          "--tag", "smoke", results=out, data=data)
    result = results_of(out, "train_contriever-smoke_scifact")
    assert {"nDCG@10", "R@100", "MRR@10"} <= set(result["test"]) and result["test_queries"] == 6
    assert result["selection_split"] == "train" and [h["step"] for h in result["train_history"]][-1] == 2
    assert [row["weight"] for row in result["merge"]["selection"]] == [0.0, 0.5, 1.0]


def test_train_finetune(tmp_path, out, tiny_model):
    data = tmp_path / "data"
    subset("scifact", data, queries=10, docs=40)
    bench("train_finetune", "--collection", "scifact", "--base", tiny_model, *TRAINING, "--eval-every", "1",
          "--negative-ranks", "2-10", "--work", tmp_path / "work", "--tag", "smoke", results=out, data=data)
    result = results_of(out, "train_finetune-smoke_scifact")
    assert {"nDCG@10", "R@100", "MRR@10"} <= set(result["test"]) and result["test_queries"] == 10
    assert result["recipe"]["train_queries"] == 8 and result["recipe"]["dev_queries"] == 2
    assert {"nDCG@10", "MRR@10"} <= set(result["hybrid"]["test"])


def test_train_scratch(tmp_path, out):
    data = tmp_path / "data"
    subset("adi", data, queries=10, docs=20)
    bench("train_scratch", "--collection", "adi", *TRAINING, "--layers", "1", "--hidden", "32", "--heads", "2",
          "--vocab-size", "400", "--queue-size", "8", "--chunk-tokens", "32", "--work", tmp_path / "work",
          "--tag", "smoke", results=out, data=data)
    result = results_of(out, "train_scratch-smoke_adi")
    assert len(result["systems"]) == 3 and result["test_queries"] == 10
    assert all({"nDCG@10", "R@100", "MRR@10"} <= set(row) for row in result["systems"].values())


# --- URLs -----------------------------------------------------------------------------------------------------------
def test_url(tmp_path, out):
    if not (DATA / "phishing-urls" / "urls.tsv").is_file():
        pytest.skip(f"no phishing-urls under {DATA}")
    pytest.importorskip("sklearn")
    pytest.importorskip("tldextract")
    bench("url", "--steps", "2", "--batch-size", "8", "--sample-train", "300", "--sample-test", "60",
          "--work", tmp_path / "work", "--tag", "smoke", results=out, cache=tmp_path / "cache")
    result = results_of(out, "url-smoke")
    assert set(result["results"]) == {"url model (kNN)", "minilm (kNN)", "char n-gram TF-IDF + LR"}
    assert all({"accuracy", "f1", "precision", "recall"} <= set(r) for r in result["results"].values())
    assert set(result["acceptance"]) == {"url_f1_ge_tfidf", "url_f1_ge_minilm"}
    assert result["split"]["sizes"]["test"]["urls"] == 60 and result["url_model"]["stages"]


# --- SQL rewrites (PostgreSQL) ------------------------------------------------------------------------------------
SQL_TABLES = """
CREATE TABLE customer (c_id int PRIMARY KEY, c_name text, c_nation int);
CREATE TABLE orders (o_id int PRIMARY KEY, o_cust int, o_total numeric(10,2));
INSERT INTO customer SELECT i, 'cust' || i, i % 5 FROM generate_series(1, 300) AS i;
INSERT INTO orders SELECT i, 1 + i % 300, (i * 37 % 1000) / 10.0 FROM generate_series(1, 3000) AS i;
ANALYZE;
"""
SQL_TEMPLATES = {  # template: (SQL, its two parameters); correlated subqueries that unnesting speeds up, and plain ones
    "shop-q1": ("select c_name from customer where {x} < (select sum(o_total) from orders where o_cust = c_id) order by c_name", (400, 430)),
    "shop-q2": ("select c_name from customer where {x} < (select max(o_total) from orders where o_cust = c_id) order by c_name", (90, 95)),
    "shop-q3": ("select c_id from customer where {x} < (select sum(o_total) from orders where o_cust = c_id and o_total > 10) "
                "order by c_id", (300, 350)),
    "shop-q4": ("select c_name, c_nation from customer where {x} < (select avg(o_total) from orders where o_cust = c_id) "
                "order by c_name", (45, 50)),
    "shop-q5": ("select o_id from orders where o_total > {x} order by o_id", (40, 60)),
    "shop-q6": ("select c_nation, count(*) from customer where c_id > {x} group by c_nation order by c_nation", (100, 200)),
}


@pytest.fixture(scope="module")
def sql_pool(tmp_path_factory):
    """(pool folder, server conninfo): a private PostgreSQL cluster and a pool of 12 queries from 6 templates."""
    from retriever.apps.sql.postgres import PrivateCluster, connect, ensure_database, postgres_bin, table_schema, with_dbname

    if postgres_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("sqlglot")
    from retriever.apps.sql.pool import PoolConfig, process_query
    from retriever.apps.sql.workloads import Query

    cluster = PrivateCluster().start()
    try:
        ensure_database(cluster.conninfo(), "shop")
        conninfo = with_dbname(cluster.conninfo(), "shop")
        with connect(conninfo) as conn:
            for statement in SQL_TABLES.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
        queries = [Query(f"{template}-s{i}", "shop", template, sql.format(x=x))
                   for template, (sql, values) in SQL_TEMPLATES.items() for i, x in enumerate(values)]
        config = PoolConfig(workloads=("tpch",), candidates=(("unnest_subqueries",), ("simplify",)), repeats=1)
        pool = tmp_path_factory.mktemp("sql") / "pool"
        pool.mkdir()
        with connect(conninfo) as conn:
            schema = table_schema(conn)
            records = [process_query(conn, q, schema, config) for q in queries]
        (pool / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (pool / "manifest.json").write_text(json.dumps({"schemas": {"shop": schema}}))
        yield pool, cluster.conninfo()
    finally:
        cluster.stop()


def test_sql(sql_pool, out, tmp_path, tiny_model):
    pool, conninfo = sql_pool
    bench("sql", pool, "--db", conninfo, "--model", tiny_model, "--repeats", "1", "--demos", "all", "--timed-check",
          "--name", "sql-smoke", results=out, cache=tmp_path / "cache")
    result = results_of(out, "sql-smoke")
    assert result["test_queries"] + result["train_queries"] == 12 and result["held_out_templates"]
    assert "oracle (best candidate in the pool)" in result["results"]
    assert "random demonstrations (mean of 5)" in result["results"]
    assert all({"mean_log_speedup_retimed", "mean_log_speedup_pool"} <= set(v) for v in result["results"].values())


def test_sql_design(sql_pool, out, tmp_path):
    pool, _ = sql_pool
    bench("sql_design", pool, "--anchors", "all", "--dev-folds", "1", "--ks", "1", "--demos", "all", "--steps", "2",
          "--name", "sql-design-smoke", results=out, cache=tmp_path / "cache")
    result = results_of(out, "sql-design-smoke")
    assert result["steps"] == 2 and result["dev_folds"] == 1
    assert any(name.startswith("ours (anchors all)") for name in result["rows"])
    assert all("mean_share" in row for row in result["rows"].values())
