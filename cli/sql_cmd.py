"""``retriever sql ...``: a pool of measured SQL rewrites, demonstrations retrieved from it, and rewriting by them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import console, out, print_json, user_errors
from indexing.errors import RetrieverError

app = typer.Typer(help="SQL query rewriting with retrieved demonstrations (LLM-R2-style).", no_args_is_help=True)

MODEL = typer.Option("minilm", "--model", help="Encoder of the sql preset: a model from `retriever train sql`, or a base (default: minilm).")
AS_JSON = typer.Option(False, "--json", help="Print the result as one JSON document.")
K = typer.Option(3, "-k", "--k", help="Demonstrations to retrieve.")
DEMOS = typer.Option("helped", "--demos", help="Which pool queries may be demonstrations: helped (a rule set made them >= 2x "
                     "faster; LLM-R2's pool of effective rewrites) or all (\"nothing helped\" examples too).")


@app.command("build-pool")
@user_errors
def build_pool(
    workloads: list[str] = typer.Argument(..., help="Workloads: tpch, tpcds and/or tpchavoc (TPC-H syntax variants, on the TPC-H database)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Pool folder to write (pool.jsonl + manifest.json)."),
    db: Optional[str] = typer.Option(None, "--db", help="PostgreSQL server URL (postgresql://...); default: a private cluster started and stopped here."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Keep the private cluster's data here (reused later, e.g. by `sql rewrite --data-dir`)."),
    tpch_scale: float = typer.Option(0.02, "--tpch-scale", help="TPC-H scale factor (1 = 1 GB)."),
    tpcds_scale: float = typer.Option(0.02, "--tpcds-scale", help="TPC-DS scale factor."),
    per_template: int = typer.Option(3, "--per-template", help="Queries per template (parameters from seeds 0..N-1)."),
    repeats: int = typer.Option(3, "--repeats", help="Runs per query and rewrite; the median cost is kept."),
    timeout_ms: int = typer.Option(20_000, "--timeout-ms", help="Statement timeout of an original query (wall clock, ms)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes after which no new query is started; the pool is written from the queries done (the manifest says it stopped early)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build (OUT/pool.jsonl.partial), or extend the finished pool in OUT: "
                                "its queries are tried with the candidate rule sets they lack (rules added since)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing pool in OUT."),
    as_json: bool = AS_JSON,
) -> None:
    """Run every workload query and every candidate rule set on PostgreSQL; keep verified, timed rewrites."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from retriever.apps.sql.pool import PoolConfig
    from retriever.apps.sql.pool import build_pool as build

    import signal

    def interrupted(*_):  # a plain kill stops the build like Ctrl-C: the private cluster is shut down, the partial kept
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    config = PoolConfig(workloads=tuple(workloads), scales={"tpch": tpch_scale, "tpcds": tpcds_scale},
                        per_template=per_template, repeats=repeats, timeout_ms=timeout_ms).validate()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                  TimeElapsedColumn(), console=console, disable=as_json) as bar:
        task = bar.add_task("queries", total=None, last="")

        def progress(query_id: str, done: int, total: int) -> None:
            bar.update(task, description=query_id.split("-")[0], completed=done, total=total, last=query_id)

        result = build(config, out_dir, conninfo=db, data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress,
                       time_budget_s=time_budget * 60 if time_budget is not None else None)
    if as_json:
        print_json({"out": str(result.out), "summary": result.summary, "config": result.config})
        return
    from rich.table import Table

    table = Table(title=f"pool {out_dir}", title_justify="left")
    for column in ("workload", "queries", "templates", "ran", "verified rewrites", "helped (>=2x)", "wrong results refused", "timed out"):
        table.add_column(column, justify="right" if column != "workload" else "left")
    for workload, counts in result.summary.items():
        table.add_row(workload, *(str(counts[k]) for k in ("queries", "templates", "ran", "verified_rewrites", "helped",
                                                           "refused_wrong_result", "timed_out")))
    out.print(table)


@app.command()
@user_errors
def demos(
    pool: Path = typer.Argument(..., help="Pool folder from `retriever sql build-pool`."),
    query: str = typer.Argument(..., help="The SQL query to find demonstrations for."),
    k: int = K,
    model: str = MODEL,
    demos_from: str = DEMOS,
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    as_json: bool = AS_JSON,
) -> None:
    """Print the k most similar pool queries (query, rules, measured speedup), the rules they vote for, and a prompt."""
    from dataclasses import asdict

    from retriever.apps.sql.demos import pool_retriever, prompt, vote

    retriever, records_by_id = pool_retriever(pool, model, device=device, demos_from=demos_from)
    found = retriever.search([query], k)[0]
    rules, totals = vote(found, records_by_id)
    text = prompt(query, found)
    if as_json:
        print_json({"query": query, "demonstrations": [asdict(d) for d in found], "voted_rules": rules,
                    "votes": {key: round(v, 4) for key, v in totals.items()}, "prompt": text})
        return
    _demo_table(found)
    out.print(f"voted rules: [bold]{', '.join(rules) or 'none (keep the query)'}[/]", highlight=False)
    out.print("\n[bold]prompt[/]", highlight=False)
    out.print(text, markup=False, highlight=False)


@app.command()
@user_errors
def rewrite(
    pool: Path = typer.Argument(..., help="Pool folder from `retriever sql build-pool`."),
    query: str = typer.Argument(..., help="The SQL query to rewrite."),
    k: int = K,
    model: str = MODEL,
    demos_from: str = DEMOS,
    db: Optional[str] = typer.Option(None, "--db", help="PostgreSQL server URL holding the workload's tables."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="A cluster kept by `build-pool --data-dir` (started and stopped here)."),
    workload: Optional[str] = typer.Option(None, "--workload", help="Database to use (default: the pool workload whose tables the query reads)."),
    repeats: int = typer.Option(3, "--repeats", help="Runs of the original and the rewrite; medians are compared."),
    planner_check: bool = typer.Option(False, "--planner-check", help="Let PostgreSQL's planner pick among the voted rule sets "
                                       "(EXPLAIN only); apply one only when it is estimated at most half the original's cost."),
    timed_check: bool = typer.Option(False, "--timed-check", help="Try the voted rule sets on the database first (--repeats "
                                     "interleaved runs against the original); apply the fastest only when it measured at "
                                     "least 2x faster (then verified and timed afresh, so the reported speedup is not the trial's lucky draw)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    as_json: bool = AS_JSON,
) -> None:
    """Apply the rules voted by the retrieved demonstrations, verify the result on the database, report the speedup."""
    from dataclasses import asdict

    from retriever.apps.sql.apply import workload_of
    from retriever.apps.sql.demos import pool_retriever
    from retriever.apps.sql.records import read_manifest
    from retriever.apps.sql.postgres import connect, table_schema, with_dbname
    from retriever.apps.sql.rewrite import check_server, rewrite as rewrite_query, server

    if planner_check and timed_check:
        raise RetrieverError("choose one check: --planner-check or --timed-check")
    check_server(db, data_dir)
    manifest = read_manifest(pool)
    retriever, records_by_id = pool_retriever(pool, model, device=device, demos_from=demos_from)
    found = retriever.search([query], k)[0]
    name = workload or workload_of(query, manifest.get("schemas", {}))
    with server(db, data_dir) as conninfo:
        with connect(with_dbname(conninfo, name) if data_dir is not None or workload else conninfo) as conn:
            outcome = rewrite_query(conn, query, found, records_by_id, table_schema(conn), repeats=repeats,
                                    check="planner" if planner_check else "timed" if timed_check else "none").outcome
    if as_json:
        print_json({"query": query, "workload": name, "demonstrations": [asdict(d) for d in found], **outcome.to_dict()})
        return
    _demo_table(found)
    if outcome.status == "applied":
        out.print(f"applied [bold]{', '.join(outcome.rules)}[/]: result verified equal; {outcome.original_ms:.1f} ms -> "
                  f"{outcome.rewrite_ms:.1f} ms, speedup [bold]{outcome.speedup:.2f}x[/]", highlight=False)
        out.print(outcome.sql, markup=False, highlight=False)
    elif outcome.status == "refused":
        out.print(f"[bold red]refused[/] {', '.join(outcome.rules)}: {outcome.reason}; the original query is kept", highlight=False)
    else:
        out.print(f"no rewrite ({outcome.status}): the demonstrations vote for no rule that changes this query", highlight=False)


def _demo_table(found) -> None:
    from rich.table import Table

    table = Table(title="demonstrations", title_justify="left")
    for column in ("rank", "score", "id", "rules", "speedup", "query"):
        table.add_column(column, justify="right" if column in ("rank", "score", "speedup") else "left")
    for rank, demo in enumerate(found, start=1):
        table.add_row(str(rank), f"{demo.score:.3f}", demo.id, ", ".join(demo.rules) or "none",
                      f"{demo.speedup:.2f}x" if demo.speedup else "-", " ".join(demo.sql.split())[:90])
    out.print(table)
