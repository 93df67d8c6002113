"""SQL rewrite benchmark: rules chosen via retrieved demonstrations, on held-out templates.

The pool's templates are split per workload (a seeded 30% held out, decided before anything is measured), by template
group: a TPC-H query is held out with its TPC-Havoc variants (:func:`retriever.apps.sql.workloads.template_group`); the
encoder is trained on the training templates' queries only (``retriever train sql`` on a pool of them), and every
held-out query retrieves its ``k`` demonstrations from the training queries. The demonstrations vote for a rule set
(:func:`retriever.apps.sql.demos.vote`, effects counted beyond the noise band only); with ``--planner-check`` the
database's planner then picks among the voted rule sets (:func:`retriever.apps.sql.demos.planner_checked`), with
``--timed-check`` a timed trial of them does (:func:`retriever.apps.sql.demos.timed_checked`). The decision is
the library's, as ``retriever sql rewrite`` makes it (:func:`retriever.apps.sql.rewrite.decide`).

Score = mean log speedup over the held-out queries of the chosen rule set, **measured again**: every rewrite any
system chose for a held-out query (the oracle's included) is run against the original once more on the pool's
database, interleaved, medians of ``--repeats`` runs (:func:`retriever.apps.sql.apply.remeasure`). A rewrite that is not
verified in the pool counts 0 (it would be refused, the original kept), a slower one counts negative. The oracle is
the candidate that measured best when the pool was built; scoring it on the same pool measurement would credit it
with the maximum of a dozen noisy draws (winner's curse), so it is re-timed like everyone else. The pool-measured
scores are reported next to it.

Systems: ours (the trained sql-preset encoder), the untrained sql preset (minilm over structure text; ablation),
SQL-text similarity (minilm on the raw query), random demonstrations (mean of 5 seeds), and the oracle. Every
demonstration system draws from the same training queries: with ``--demos helped`` (the default, as
``retriever sql demos``) only those some rule set helped, random demonstrations included.
Nothing here is tuned on the held-out queries: k, steps and the split are fixed up front.

    python -m benchmarks.sql POOL [--data-dir DIR | --db URL] [--model MODEL] [--steps 60] [--k 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, write_results
from indexing.errors import RetrieverError
from retriever.apps.sql.demos import DemoRetriever, Demonstration, demo_retriever, demonstration
from retriever.apps.sql.records import candidate_log_speedup, is_helped, label_of, oracle_key, read_manifest, read_pool
from retriever.apps.sql.rewrite import Check, check_server, choose_rules, server
from retriever.apps.sql.rewrite import decide as decide_rules
from retriever.apps.sql.rules import CANDIDATES, rule_key
from retriever.apps.sql.workloads import database_of, template_group

log = logging.getLogger("benchmarks.sql")
WORK = CACHE / "sql"
RANDOM_REPEATS = 5
RECIPE = "labels-as-groups, qualified"
"""Names the training recipe in the cache key of trained encoders (a changed recipe retrains)."""
PLANNER_NOTE = (" (**planner check**: PostgreSQL's planner picks the cheapest-estimated of the voted rule sets, "
                "applied only when estimated at most half the original's cost)")
TIMED_NOTE = (" (**timed check**: the voted rewrites are tried on the database against the original, interleaved, and "
              "the fastest is applied only when measured at least 2x faster; the scores come from a separate re-timing)")


def demos_note(data: Mapping[str, Any]) -> str:
    """Which training queries could be demonstrations (runs before ``demos_from`` existed used all of them)."""
    return ("helped training queries only" if data.get("demos_from", "all") == "helped"
            else "any training query, helped or not")


def heading(run_name: str | None, parts: Sequence[str]) -> str:
    """A results file's title: the run's name (unique among the results files) and what it measured."""
    run = f", run `{run_name}`" if run_name else ""
    return f"# SQL rewrite demonstrations{run}: " + ", ".join(parts)


def setting(data: Mapping[str, Any]) -> list[str]:
    """``k``, where the demonstrations came from and how the votes were checked, for a title."""
    return [f"k = {data['k']}", *(["helped demonstrations"] if data.get("demos_from") == "helped" else []),
            *(["planner check"] if data.get("planner") else ["timed check"] if data.get("timed") else [])]


def check_note(data: Mapping[str, Any]) -> str:
    """How the run's votes were checked on the database, for the tables' headers."""
    return PLANNER_NOTE if data.get("planner") else TIMED_NOTE if data.get("timed") else ""


Effect = Callable[[str, str], float]
"""``effect(query id, rule key) -> log speedup``."""


def _groups(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """``{workload of the group: {group: its templates}}`` (see :func:`retriever.apps.sql.workloads.template_group`)."""
    out: dict[str, dict[str, set[str]]] = {}
    for r in records:
        group = template_group(r["template"])
        out.setdefault(group.split("-", 1)[0], {}).setdefault(group, set()).add(r["template"])
    return out


def split_templates(records: Sequence[Mapping[str, Any]], *, held_out: float = 0.3, seed: int = 0) -> set[str]:
    """The held-out templates: a seeded ``held_out`` share of each workload's template groups (at least one), every
    template of a chosen group (a TPC-H query and its TPC-Havoc variants go together)."""
    chosen: set[str] = set()
    for workload, groups in sorted(_groups(records).items()):
        rng = random.Random(f"{seed}-{workload}")
        for group in rng.sample(sorted(groups), max(1, round(held_out * len(groups)))):
            chosen |= groups[group]
    return chosen


def template_folds(records: Sequence[Mapping[str, Any]], folds: int, *, seed: int = 0) -> list[set[str]]:
    """A partition of the templates into ``folds`` sets: each workload's template groups in a seeded shuffle, dealt
    round robin (cross-validation by template, every template held out exactly once, with its group)."""
    parts: list[set[str]] = [set() for _ in range(folds)]
    for workload, groups in sorted(_groups(records).items()):
        names = sorted(groups)
        random.Random(f"{seed}-{workload}-folds").shuffle(names)
        for i, group in enumerate(names):
            parts[i % folds] |= groups[group]
    return parts


def score(chosen: Mapping[str, str], effect: Effect) -> dict[str, Any]:
    """Mean log speedup (and geometric-mean speedup) of the chosen rule key per query id, with counts."""
    values = [effect(qid, key) for qid, key in chosen.items()]
    n = len(values)
    mean = sum(values) / n if n else 0.0
    return {"queries": n, "mean_log_speedup": round(mean, 4), "geomean_speedup": round(math.exp(mean), 4),
            "rewritten": sum(1 for k in chosen.values() if k != "none"),
            "improved": sum(1 for v in values if v > 0), "slowed": sum(1 for v in values if v < 0)}


def choose(retriever: DemoRetriever, test: Sequence[Mapping[str, Any]], by_id, k: int, *, one_per_template: bool = True,
           check: _DatabaseCheck | None = None) -> dict[str, str]:
    """The rule key each held-out query gets from its ``k`` retrieved demonstrations (see :func:`decide`)."""
    found = retriever.search([r["sql"] for r in test], k, one_per_template=one_per_template)
    return {r["id"]: decide(r, demos, by_id, check) for r, demos in zip(test, found)}


def decide(record: Mapping[str, Any], demos: Sequence[Any], by_id, check: _DatabaseCheck | None) -> str:
    """The rule key chosen for ``record``'s query from its demonstrations (:func:`retriever.apps.sql.rewrite.decide`:
    their vote, through the database check, planner or timed, when one is given)."""
    rules = check.decide(record, demos, by_id) if check is not None else decide_rules(record["sql"], demos, by_id, {}).rules
    return "+".join(rules) or "none"


class _DatabaseCheck:
    """A check on the pool's database, one connection per workload opened when first needed: the library's choice
    (:func:`retriever.apps.sql.rewrite.choose_rules`) with this check's ``kind`` and its planner cost or measurement.
    ``check(record, totals)`` returns the rules to apply to the record's query for vote ``totals``, ``check.decide``
    for its demonstrations. ``trials`` counts the rewrites each call measured or planned (its cost)."""

    kind: Check = "none"

    def __init__(self, conninfo: str, schemas: Mapping[str, Mapping[str, Mapping[str, str]]]):
        self.conninfo, self.schemas, self.connections = conninfo, schemas, {}
        self.trials: list[int] = []

    def connection(self, workload: str):
        from retriever.apps.sql.postgres import connect, with_dbname

        database = database_of(workload)  # one connection per database (TPC-H and its variants share one)
        if database not in self.connections:
            self.connections[database] = connect(with_dbname(self.conninfo, database))
        return self.connections[database]

    def probes(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The ``cost`` or ``measure`` callable the check runs on the record's query."""
        raise NotImplementedError

    def __call__(self, record: Mapping[str, Any], totals: Mapping[str, float]) -> list[str]:
        choice = choose_rules(record["sql"], totals, self.schemas[record["workload"]], check=self.kind,
                              **self.probes(record))
        self.trials.append(choice.tried)
        return choice.rules

    def decide(self, record: Mapping[str, Any], demos: Sequence[Any], by_id) -> list[str]:
        """The rules chosen for the record's query from its demonstrations (their vote, then this check)."""
        decision = decide_rules(record["sql"], demos, by_id, self.schemas[record["workload"]], check=self.kind,
                                **self.probes(record))
        self.trials.append(decision.tried)
        return decision.rules

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()


class PlannerCheck(_DatabaseCheck):
    """:func:`retriever.apps.sql.demos.planner_checked`: the planner's cheapest estimate among the voted rule sets."""

    kind: Check = "planner"

    def probes(self, record: Mapping[str, Any]) -> dict[str, Any]:
        from retriever.apps.sql.postgres import planned_cost

        conn = self.connection(record["workload"])
        return {"cost": lambda sql: planned_cost(conn, sql)}


class TimedCheck(_DatabaseCheck):
    """:func:`retriever.apps.sql.demos.timed_checked`: a timed trial of the voted rewrites (``repeats`` interleaved runs,
    medians), the fastest applied when measured >= 2x. The benchmark's scores come from a separate re-timing, so
    the trial's lucky draws are not what is scored.

    A rewrite text is tried once per held-out query and its trial shared by every system that proposes it (the
    systems then decide on the same measurement, and the benchmark does not pay for the same trial eight times);
    ``trials`` still counts every rewrite each call proposed, which is what the system would run on its own.
    """

    def __init__(self, conninfo: str, schemas: Mapping[str, Mapping[str, Mapping[str, str]]], *, repeats: int = 3,
                 timeout_ms: int = 20_000):
        super().__init__(conninfo, schemas)
        self.repeats, self.timeout_ms = repeats, timeout_ms
        self.tried: dict[tuple[str, str], Any] = {}  # (query id, rewrite text) -> its Remeasured trial

    kind: Check = "timed"

    def probes(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"measure": lambda texts: self.measure(record, texts)}

    def measure(self, record: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, Any]:
        """``{key: Remeasured}`` for ``texts`` (rule key -> rewrite of the record's query), running only the texts
        not yet tried on this query (:func:`retriever.apps.sql.apply.remeasure`, interleaved with the original)."""
        from retriever.apps.sql.apply import remeasure

        new = {key: text for key, text in texts.items() if (record["id"], text) not in self.tried}
        if new:
            measured = remeasure(self.connection(record["workload"]), record["sql"], new, repeats=self.repeats,
                                 timeout_ms=self.timeout_ms)
            for key, text in new.items():
                self.tried[(record["id"], text)] = measured[key]
        return {key: self.tried[(record["id"], text)] for key, text in texts.items()}


def verified_text(record: Mapping[str, Any], key: str) -> str | None:
    """The pool's verified rewrite text of rule set ``key`` on the record's query (None: not applicable/refused)."""
    index = record.get("candidates", {}).get(key)
    if key == "none" or index is None:
        return None
    rewrite = record["rewrites"][index]
    return rewrite["sql"] if rewrite["verified"] else None


def retime(test: Sequence[Mapping[str, Any]], picks: Mapping[str, set[str]], conninfo: str, *, repeats: int,
           timeout_ms: int) -> dict[str, dict[str, Any]]:
    """Measure every picked rule set of every held-out query again (see the module docstring).

    Returns ``{query id: {rule key: {"status", "log_speedup", "original_ms", "rewrite_ms"}}}``; keys without a
    verified rewrite are absent (their effect is 0).
    """
    from retriever.apps.sql.apply import remeasure
    from retriever.apps.sql.postgres import connect, with_dbname

    out: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(test, start=1):
        texts = {key: text for key in sorted(picks.get(record["id"], ())) if (text := verified_text(record, key))}
        distinct = {text: key for key, text in texts.items()}  # one run per distinct rewritten text
        with connect(with_dbname(conninfo, database_of(record["workload"]))) as conn:
            measured = remeasure(conn, record["sql"], {key: text for text, key in distinct.items()}, repeats=repeats,
                                 timeout_ms=timeout_ms)
        out[record["id"]] = {key: asdict(measured[distinct[text]]) for key, text in texts.items()}
        log.info("re-timed %s (%d/%d): %s", record["id"], number, len(test),
                 {k: round(v["log_speedup"], 2) for k, v in out[record["id"]].items()})
    return out


def run(pool: Path, *, model: str | None, steps: int, k: int, seed: int, batch_size: int = 8, max_tokens: int = 128,
        conninfo: str | None = None, data_dir: Path | None = None, repeats: int = 3, timeout_ms: int = 20_000,
        dev: bool = False, dev_fold: int = 0, one_per_template: bool = True, sql: Any = None,
        held_out: set[str] | None = None, planner: bool = False, timed: bool = False,
        demos_from: str = "helped", merge_weight: float | None = None) -> dict[str, Any]:
    """The benchmark (see the module docstring); ``conninfo`` or ``data_dir`` name the pool's database.
    With ``planner`` every demonstration system's vote goes through the planner check (:class:`PlannerCheck`),
    and "planner alone" (the cheapest-estimated of every candidate rule set, no demonstrations) is reported too.
    With ``timed`` it goes through a timed trial instead (:class:`TimedCheck`); each system's mean number of
    rewrites tried per query is reported (``trials_per_query``). ``demos_from`` restricts the demonstrations (every
    system's, random's included) as :class:`retriever.apps.sql.demos.DemoRetriever` does; the encoder trains on every
    training query either way.

    With ``dev`` the held-out templates are set aside and the training templates are split again (seed + 1):
    design choices are made there, and the held-out templates are scored once. ``dev_fold`` picks another inner
    split (seed + 1 + dev_fold). ``held_out`` replaces the seeded split (a cross-validation fold). ``sql`` is the :class:`training.config.SqlConfig` of the trained encoder. With ``merge_weight`` w the trained
    encoder is replaced by its weight-space merge with its base, ``w * trained + (1 - w) * minilm``
    (:func:`merged_model`; WiSE-FT, as ``retriever train merge``).

    Raises:
        RetrieverError: both checks asked for, the pool's database unknown or not a kept cluster, a bad pool.
    """
    if planner and timed:
        raise RetrieverError("choose one check: planner or timed")
    records = [r for r in read_pool(pool) if r["original"]["status"] == "ok"]
    manifest = read_manifest(pool)
    if conninfo is None and data_dir is None:
        stored = manifest.get("data_dir")
        if not stored:
            raise RetrieverError(f"{pool}: the pool's database is unknown (built without --data-dir); pass --db or --data-dir")
        data_dir = Path(stored)
    if data_dir is not None:  # the kept cluster wins over a server named too
        conninfo = None
    check_server(conninfo, data_dir)
    held, records, train, test = _split(records, seed=seed, held_out=held_out, dev=dev, dev_fold=dev_fold)
    by_id = {r["id"]: r for r in records}
    timings: dict[str, float] = {}
    schemas = manifest.get("schemas") or {}
    if model is None:
        model = str(train_model(train, steps=steps, seed=seed, batch_size=batch_size, max_tokens=max_tokens, timings=timings,
                                schemas=schemas, sql=sql))
        if merge_weight is not None:
            model = str(merged_model(Path(model), merge_weight))
    with server(conninfo, data_dir) as url:
        check = PlannerCheck(url, schemas) if planner else TimedCheck(url, schemas, repeats=repeats,
                                                                       timeout_ms=timeout_ms) if timed else None
        try:
            systems, random_picks, trials = _choose_all(train, test, by_id, schemas, model=model, k=k, seed=seed,
                                                        one_per_template=one_per_template, demos_from=demos_from,
                                                        merge_weight=merge_weight, check=check, timings=timings)
            picks: dict[str, set[str]] = {}
            for chosen in list(systems.values()) + random_picks:
                for qid, key in chosen.items():
                    picks.setdefault(qid, set()).add(key)
            start = time.perf_counter()
            measured = retime(test, picks, url, repeats=repeats, timeout_ms=timeout_ms)
            timings["re-timing"] = round(time.perf_counter() - start, 1)
        finally:
            if check is not None:
                check.close()
    results = _results(systems, random_picks, test, measured, by_id, trials)
    per_workload = {}
    for workload in sorted({r["workload"] for r in test}):
        ids = {r["id"] for r in test if r["workload"] == workload}
        per_workload[workload] = {name: score({q: c for q, c in chosen.items() if q in ids}, _retimed(measured))["mean_log_speedup"]
                                  for name, chosen in systems.items()}
        per_workload[workload]["queries"] = len(ids)
    return {"pool": str(pool), "dev": dev, "planner": planner, "timed": timed, "dev_fold": dev_fold, "sql_config": asdict(sql) if sql is not None else None, "one_per_template": one_per_template, "demos_from": demos_from, "k": k, "seed": seed, "steps": steps, "batch_size": batch_size, "max_tokens": max_tokens,
            "model": model, "merge_weight": merge_weight, "repeats": repeats, "held_out_templates": sorted(held), "train_queries": len(train),
            "test_queries": len(test), "labels": dict(Counter(label_of(r) for r in records)),
            "held_out_labels": dict(Counter(label_of(r) for r in test)), "results": results,
            "per_workload": per_workload, "choices": {name: chosen for name, chosen in systems.items()},
            "retimed": measured, "timings_s": timings}


def _split(records: Sequence[Mapping[str, Any]], *, seed: int, held_out: set[str] | None, dev: bool,
           dev_fold: int) -> tuple[set[str], list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The held-out templates, the queries in play (with ``dev``: the training templates' only), and the training
    and held-out queries among them (see :func:`run`)."""
    held = split_templates(records, seed=seed) if held_out is None else set(held_out)
    if dev:  # the same protocol inside the training templates only: held-out templates stay unseen
        records = [r for r in records if r["template"] not in held]
        held = split_templates(records, seed=seed + 1 + dev_fold)
    train = [r for r in records if r["template"] not in held]
    test = [r for r in records if r["template"] in held]
    log.info("%d training queries (%d templates), %d held-out queries (%d templates)", len(train),
             len({r["template"] for r in train}), len(test), len(held))
    return held, list(records), train, test


def _choose_all(train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], by_id, schemas: Mapping[str, Any], *,
                model: str, k: int, seed: int, one_per_template: bool, demos_from: str, merge_weight: float | None,
                check: _DatabaseCheck | None, timings: dict[str, float]
                ) -> tuple[dict[str, dict[str, str]], list[dict[str, str]], dict[str, float]]:
    """Every system's rule key per held-out query, the random demonstrations' picks (one per repeat) and, with a
    check, the rewrites each system tried per query; ``timings`` gets each system's retrieval time."""
    trials: dict[str, float] = {}
    systems: dict[str, dict[str, str]] = {}
    ours = "ours (trained sql encoder)" if merge_weight is None else f"ours (trained sql encoder, merged {merge_weight:g} with minilm)"
    for name, spec, preset in ((ours, model, "sql"), ("sql preset, untrained (minilm)", "minilm", "sql"),
                               ("text similarity (minilm, raw SQL)", "minilm", "text")):
        start = time.perf_counter()
        retriever = demo_retriever(train, spec, preset=preset, device="cpu", schemas=schemas, demos_from=demos_from)
        done = len(check.trials) if check is not None else 0
        systems[name] = choose(retriever, test, by_id, k, one_per_template=one_per_template, check=check)
        if check is not None:
            trials[name] = round(sum(check.trials[done:]) / len(test), 3)
        timings[f"retrieve: {name}"] = round(time.perf_counter() - start, 1)
    random_picks = []
    done = len(check.trials) if check is not None else 0
    for rep in range(RANDOM_REPEATS):
        drawn = random_demonstrations(train, len(test), k, demos_from=demos_from, seed=seed, rep=rep)
        random_picks.append({r["id"]: decide(r, demos, by_id, check) for r, demos in zip(test, drawn)})
    if check is not None:
        trials["random demonstrations (mean of 5)"] = round(sum(check.trials[done:]) / len(test) / RANDOM_REPEATS, 3)
    if isinstance(check, PlannerCheck):  # a reference: the planner's pick among every candidate, no demonstrations
        every = {rule_key(c): 1.0 for c in CANDIDATES}
        systems["planner alone (no demonstrations)"] = {r["id"]: "+".join(check(r, every)) or "none" for r in test}
    systems["oracle (best candidate in the pool)"] = {r["id"]: oracle_key(r) for r in test}
    return systems, random_picks, trials


def _retimed(measured: Mapping[str, Mapping[str, Any]]) -> Effect:
    """The re-timed effect: a picked rule key's measured log speedup (0 without a verified rewrite)."""
    def effect(qid: str, key: str) -> float:
        entry = measured[qid].get(key)
        return entry["log_speedup"] if entry else 0.0
    return effect


def _results(systems: Mapping[str, Mapping[str, str]], random_picks: Sequence[Mapping[str, str]],
             test: Sequence[Mapping[str, Any]], measured: Mapping[str, Mapping[str, Any]], by_id,
             trials: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Each system's scores, re-timed and as measured in the pool, with shares of the oracle's (the last system)."""
    results: dict[str, dict[str, Any]] = {}
    names = list(systems)
    pool_effect: Effect = lambda qid, key: candidate_log_speedup(by_id[qid], key)  # noqa: E731
    for name in names[:-1] + ["random demonstrations (mean of 5)", names[-1]]:
        runs = random_picks if name.startswith("random") else [systems[name]]
        views = {view: [score(chosen, effect) for chosen in runs]
                 for view, effect in (("retimed", _retimed(measured)), ("pool", pool_effect))}
        value = {"queries": len(test), "rewritten": sum(s["rewritten"] for s in views["retimed"]) / len(runs),
                 "improved": sum(s["improved"] for s in views["retimed"]) / len(runs),
                 "slowed": sum(s["slowed"] for s in views["retimed"]) / len(runs)}
        for view, scores in views.items():
            mean = sum(s["mean_log_speedup"] for s in scores) / len(scores)
            value[f"mean_log_speedup_{view}"] = round(mean, 4)
            value[f"geomean_speedup_{view}"] = round(math.exp(mean), 4)
        if len(runs) > 1:
            value["runs_retimed"] = [s["mean_log_speedup"] for s in views["retimed"]]
        results[name] = value
    oracle = results[names[-1]]
    for value in results.values():
        for view in ("retimed", "pool"):
            top = oracle[f"mean_log_speedup_{view}"]
            value[f"share_of_oracle_{view}"] = round(value[f"mean_log_speedup_{view}"] / top, 4) if top > 0 else None
    for name, value in results.items():
        if name in trials:
            value["trials_per_query"] = trials[name]
    return results


def random_demonstrations(train: Sequence[Mapping[str, Any]], queries: int, k: int, *, demos_from: str, seed: int,
                          rep: int) -> list[list[Demonstration]]:
    """Random demonstrations for ``queries`` held-out queries, as retrieval gives them: ``k`` different templates of
    the training queries (helped ones only when ``demos_from`` is ``helped``), one draw of each; seeded by
    ``(seed, rep)``."""
    by_template: dict[str, list[Mapping[str, Any]]] = {}
    for r in train:
        if demos_from == "all" or is_helped(r):
            by_template.setdefault(r["template"], []).append(r)
    rng = random.Random(f"random-{seed}-{rep}")
    return [[demonstration(rng.choice(by_template[t])) for t in rng.sample(sorted(by_template), min(k, len(by_template)))]
            for _ in range(queries)]


def train_model(train: Sequence[Mapping[str, Any]], *, steps: int, seed: int, batch_size: int, max_tokens: int,
                timings: dict[str, float], schemas: Mapping[str, Any] | None = None, sql: Any = None) -> Path:
    """Train the sql encoder on the training templates' queries (cached by their ids, labels and the settings)."""
    import hashlib

    from training.config import SqlConfig, TrainConfig
    from training.run import run_training

    recipe = [RECIPE, asdict(sql) if sql is not None else None]
    examples = sorted((r["id"], label_of(r)) for r in train)  # a pool extended with new rules relabels: retrain
    key = hashlib.sha1(json.dumps([recipe, examples, steps, seed, batch_size, max_tokens]).encode()).hexdigest()[:10]
    folder = WORK / f"train-{key}"
    model = folder / "model"
    if (model / "config.json").is_file():
        return model
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "pool.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in train)
    (folder / "manifest.json").write_text(json.dumps({"schemas": schemas or {}}), encoding="utf-8")
    config = TrainConfig(objective="sql", data=(str(folder / "pool.jsonl"),), base="minilm", steps=steps, batch_size=batch_size,
                         lr=2e-5, warmup=max(1, steps // 10), max_tokens=max_tokens, seed=seed, sql=sql or SqlConfig()).validate()
    start = time.perf_counter()
    run_training(config, model, device="cpu", overwrite=True)
    timings["train"] = round(time.perf_counter() - start, 1)
    return model


def merged_model(model: Path, weight: float) -> Path:
    """``weight * model + (1 - weight) * minilm``, parameter by parameter (the trained encoder's base; WiSE-FT),
    written next to ``model`` and reused when present. ``weight`` 1 is ``model`` itself.

    Raises:
        RetrieverError: ``weight`` outside [0, 1].
    """
    from training.merge import merge_models

    if not 0.0 <= weight <= 1.0:
        raise RetrieverError(f"merge weight must be in [0, 1] (got {weight})")
    if weight == 1.0:
        return model
    out = model.parent / f"merged-{weight:g}"
    if not (out / "config.json").is_file():
        merge_models([str(model), "minilm"], out, weights=[weight, 1.0 - weight], overwrite=True)
    return out


def markdown(data: Mapping[str, Any], run_name: str | None = None) -> str:
    split = ("a development split (inside the training templates)" if data.get("dev")
             else "one held-out split of the templates")
    lines = [heading(run_name, [split, *setting(data)]), "",
             f"Pool `{data['pool']}`: {data['train_queries']} training queries, {data['test_queries']} held-out queries from "
             f"{len(data['held_out_templates'])} held-out templates ({', '.join(data['held_out_templates'])}); k = {data['k']} "
             f"demonstrations ({demos_note(data)}) vote for one rule set per query{check_note(data)}. **Re-timed**: every chosen rewrite measured again against its "
             f"original on the pool's PostgreSQL (interleaved, median of {data['repeats']}); **pool**: the effect measured when "
             "the pool was built (the oracle's choice is the best of that measurement, so its pool score is inflated by noise).", "",
             "| system | queries | rewritten | mean log speedup (re-timed) | geomean | share of oracle | mean log speedup (pool) | share |",
             "|---|---|---|---|---|---|---|---|"]
    for name, value in data["results"].items():
        share = lambda v: f"{v:.0%}" if v is not None else "-"  # noqa: E731
        lines.append(f"| {name} | {value['queries']} | {value['rewritten']:g} | {value['mean_log_speedup_retimed']:.4f} "
                     f"| {value['geomean_speedup_retimed']:.3f}x | {share(value['share_of_oracle_retimed'])} "
                     f"| {value['mean_log_speedup_pool']:.4f} | {share(value['share_of_oracle_pool'])} |")
    first = next(iter(data["per_workload"].values()))
    lines += ["", "Per workload (mean log speedup, re-timed):", "", "| workload | queries | " + " | ".join(
        k for k in first if k != "queries") + " |", "|---|---|" + "---|" * (len(first) - 1)]
    for workload, value in data["per_workload"].items():
        lines.append(f"| {workload} | {value['queries']} | " + " | ".join(f"{v:.4f}" for k, v in value.items() if k != "queries") + " |")
    lines += ["", f"Pool labels (helpful rule set per query, `none` below 2x): {json.dumps(data['labels'])}",
              f"Held-out labels: {json.dumps(data['held_out_labels'])}", ""]
    return "\n".join(lines)


def pooled(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per system, the re-timed mean log speedup over every query of ``runs`` (each query scored once), with the
    query count and the share of the oracle's."""
    names = list(runs[0]["results"])
    total = sum(d["test_queries"] for d in runs)
    out = {}
    for name in names:
        mean = sum(d["results"][name]["mean_log_speedup_retimed"] * d["test_queries"] for d in runs) / total
        out[name] = {"queries": total, "mean_log_speedup_retimed": round(mean, 4),
                     "folds": [d["results"][name]["mean_log_speedup_retimed"] for d in runs]}
        if all("trials_per_query" in d["results"][name] for d in runs):
            out[name]["trials_per_query"] = round(sum(d["results"][name]["trials_per_query"] * d["test_queries"]
                                                      for d in runs) / total, 3)
    top = out[names[-1]]["mean_log_speedup_retimed"]
    for value in out.values():
        value["share_of_oracle_retimed"] = round(value["mean_log_speedup_retimed"] / top, 4) if top > 0 else None
    return out


def folds_markdown(runs: Sequence[Mapping[str, Any]], title: str, run_name: str | None = None) -> str:
    """The pooled table of several runs (folds), with each fold's held-out templates and labels."""
    rows = pooled(runs)
    first = runs[0]
    folds = f"{len(runs)} {title}" + (" (inside the training templates)" if first.get("dev") else "")
    lines = [heading(run_name, [folds, *setting(first)]), "",
             f"Pool `{first['pool']}`, {len(runs)} {title}: each fold's encoder is trained on the other templates' queries, "
             f"k = {first['k']} demonstrations (one per template, {demos_note(first)}) vote for one rule set per query{check_note(first)}, and every chosen rewrite "
             f"(the oracle's included) is re-timed against its original on the pool's PostgreSQL (interleaved, median of "
             f"{first['repeats']}). Score = mean log speedup over the held-out queries, each query scored once.", "",
             "| system | mean log speedup (re-timed) | geomean | share of oracle | per fold | rewrites tried per query |",
             "|---|---|---|---|---|---|"]
    for name, value in rows.items():
        share = f"{value['share_of_oracle_retimed']:.0%}" if value["share_of_oracle_retimed"] is not None else "-"
        tried = f"{value['trials_per_query']:.2f}" if "trials_per_query" in value else "-"
        lines.append(f"| {name} | {value['mean_log_speedup_retimed']:.4f} | {math.exp(value['mean_log_speedup_retimed']):.3f}x "
                     f"| {share} | {', '.join(f'{v:.3f}' for v in value['folds'])} | {tried} |")
    lines += ["", f"{next(iter(rows.values()))['queries']} queries. Per fold: held-out templates, queries and their labels:", ""]
    for number, data in enumerate(runs, start=1):
        lines.append(f"- fold {number}: {len(data['held_out_templates'])} templates, {data['test_queries']} queries, "
                     f"labels {json.dumps(data['held_out_labels'])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--model", default=None, help="A trained sql model (default: train one on the training templates).")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="sql")
    parser.add_argument("--db", default=None, help="The pool's PostgreSQL server (default: the pool's --data-dir cluster).")
    parser.add_argument("--data-dir", type=Path, default=None, help="The cluster kept by build-pool --data-dir.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per query and rewrite when re-timing.")
    parser.add_argument("--dev", action="store_true", help="Split the training templates again and score there (for design choices; "
                        "the held-out templates are not read). Results go to NAME-dev.")
    parser.add_argument("--repeat-templates", action="store_true", help="Ablation: let several draws of one template fill the k demonstrations.")
    parser.add_argument("--folds", type=int, default=1, help="Cross-validation by template: every template held out once, "
                        "in this many folds (each trains its own encoder); scores pooled over all queries.")
    parser.add_argument("--dev-folds", type=int, default=1, help="With --dev: inner splits to average over.")
    parser.add_argument("--demos", default="helped", choices=("helped", "all"), help="Which training queries may be "
                        "demonstrations (every system's, random's too): helped ones (default, as `retriever sql demos`) or all.")
    parser.add_argument("--anchors", default="all", choices=("helped", "all"), help="Training anchors (see retriever train sql).")
    parser.add_argument("--no-label-groups", action="store_true", help="Plain in-batch negatives in training (ablation).")
    parser.add_argument("--planner-check", action="store_true", help="Every system's vote goes through PostgreSQL's planner "
                        "(the cheapest-estimated voted rule set, applied when estimated at most half the original's cost); "
                        "adds 'planner alone' as a reference.")
    parser.add_argument("--timed-check", action="store_true", help="Every system's vote goes through a timed trial on the "
                        "database (the voted rewrites run against the original, --repeats interleaved runs; the fastest "
                        "applied when measured >= 2x); scores still come from a separate re-timing.")
    parser.add_argument("--merge-weight", type=float, default=None, help="Replace the trained encoder by its merge with its "
                        "base minilm: W * trained + (1 - W) * base (choose W on dev splits: benchmarks.sql_design --merge-weights).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from training.config import SqlConfig

    sql = SqlConfig(anchors=args.anchors, label_groups=not args.no_label_groups)
    common = dict(model=args.model, steps=args.steps, k=args.k, seed=args.seed, batch_size=args.batch_size, max_tokens=args.max_tokens,
                  conninfo=args.db, data_dir=args.data_dir, repeats=args.repeats, one_per_template=not args.repeat_templates, sql=sql,
                  planner=args.planner_check, timed=args.timed_check, demos_from=args.demos,
                  merge_weight=args.merge_weight)
    if args.folds > 1:
        records = [r for r in read_pool(args.pool) if r["original"]["status"] == "ok"]
        runs = [run(args.pool, held_out=fold, **common) for fold in template_folds(records, args.folds, seed=args.seed)]
    else:
        runs = [run(args.pool, dev=args.dev, dev_fold=fold, **common) for fold in range(args.dev_folds if args.dev else 1)]
    name = args.name + ("-dev" if args.dev else "")
    text = (markdown(runs[0], name) if len(runs) == 1 else
            folds_markdown(runs, "cross-validation folds by template" if args.folds > 1 else "dev folds", name))
    data = runs[0] if len(runs) == 1 else {"folds": runs, "pooled": pooled(runs)}
    path = write_results(name, data, text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
