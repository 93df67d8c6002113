"""SQL demonstrations design probe: which demonstrations and which training recipe, decided on dev splits only.

Fast and offline (no database): the held-out templates of the seeded split are set aside, the training templates
are split again ``--dev-folds`` times (as ``benchmarks.sql --dev``), and each dev split's held-out queries are scored
with the effects **measured when the pool was built**. The timed trial is simulated by that measurement: every rule
set with a positive vote is "tried", and the best is applied when its pool effect is at least 2x. This is optimistic
(the pool's measurement is the one the oracle was picked on) and is only for choosing between designs; the
reported figures come from ``benchmarks.sql`` with a real trial and a separate re-timing.

For each system (the trained sql encoder per ``--anchors`` recipe, the untrained sql preset, text similarity,
random demonstrations), demonstrations from ``all`` or ``helped`` training queries, and k in ``--ks``: the share of
the oracle's pool score, per dev split and averaged, and the rewrites a trial would run per query. A last row is
the **retrieval ceiling**: every rule set that helped any helped training query is tried (as if every one of them
were a demonstration and each proposed what helped it), the most any choice of helped demonstrations, with any k,
can reach in this pool.

    python -m benchmarks.sql_design POOL [--anchors all helped] [--dev-folds 3] [--ks 1 2 3] [--held-out-folds 4]
        [--merge-weights 0.25 0.5 0.75] [--demos all helped]
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from benchmarks.sql import RANDOM_REPEATS, merged_model, random_demonstrations, split_templates, template_folds, train_model
from retriever.apps.sql.demos import DemoRetriever, Demonstration, vote
from retriever.apps.sql.records import (HELPFUL, candidate_log_speedup, gated_log_speedup, is_helped, oracle_log_speedup,
                                        read_manifest, read_pool)
from retriever.apps.sql.rules import CANDIDATES, rule_key

log = logging.getLogger("benchmarks.sql_design")
CEILING = "retrieval ceiling: every helped training query | helped | k=all"


def simulated_trial(record: Mapping[str, Any], demos: Sequence[Demonstration], by_id) -> tuple[float, int]:
    """The pool effect of what a timed trial of the demonstrations' vote would apply to ``record``'s query, and the
    number of rule sets it would try."""
    _, totals = vote(demos, by_id)
    effects = {key: candidate_log_speedup(record, key) for key, total in totals.items() if total > 0}
    best = max(effects.values(), default=0.0)
    return (best if best >= math.log(HELPFUL) else 0.0), len(effects)


def ceiling_keys(train: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every rule set that helped some helped training query beyond the noise band (what all of them, as
    demonstrations, would propose together)."""
    helped = [r for r in train if is_helped(r)]
    return {key for key in map(rule_key, CANDIDATES) if any(gated_log_speedup(r, key) > 0 for r in helped)}


def ceiling_trial(record: Mapping[str, Any], keys: set[str]) -> tuple[float, int]:
    """Like :func:`simulated_trial` with every rule set of :func:`ceiling_keys` tried at once: the best a trial fed
    by any helped demonstrations could apply to ``record``'s query, and the number of rule sets tried."""
    best = max((candidate_log_speedup(record, key) for key in keys), default=0.0)
    return (best if best >= math.log(HELPFUL) else 0.0), len(keys)


def run(pool: Path, *, anchors: Sequence[str], dev_folds: int, ks: Sequence[int], steps: int = 60, seed: int = 0,
        held_out_folds: int = 0, merge_weights: Sequence[float] = (), demo_sources: Sequence[str] = ("all", "helped")) -> dict[str, Any]:
    """Shares of the oracle per ``(system, demonstrations, k)`` over the dev splits (see the module docstring), or,
    with ``held_out_folds``, over the benchmark's cross-validation folds by template (a diagnostic of the benchmark's
    folds with the simulated trial, not a place to choose designs). Each weight w of ``merge_weights`` adds, per
    anchors recipe, the trained encoder merged with its base (``w * trained + (1 - w) * minilm``); ``demo_sources``
    lists which training queries may be demonstrations."""
    from retriever.encoders.base import load_encoder
    from training.config import SqlConfig

    records = [r for r in read_pool(pool) if r["original"]["status"] == "ok"]
    schemas = read_manifest(pool).get("schemas") or {}
    if held_out_folds:
        splits = [([r for r in records if r["template"] not in fold], [r for r in records if r["template"] in fold])
                  for fold in template_folds(records, held_out_folds, seed=seed)]
    else:
        held = split_templates(records, seed=seed)
        inside = [r for r in records if r["template"] not in held]
        splits = []
        for fold in range(dev_folds):
            dev_held = split_templates(inside, seed=seed + 1 + fold)
            splits.append(([r for r in inside if r["template"] not in dev_held], [r for r in inside if r["template"] in dev_held]))
    by_id = {r["id"]: r for r in records}
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, share: float, trials: float | None) -> None:
        row = rows.setdefault(name, {"shares": [], "trials": []})
        row["shares"].append(round(share, 4))
        if trials is not None:
            row["trials"].append(round(trials, 3))

    for fold, (train, test) in enumerate(splits):
        oracle = sum(oracle_log_speedup(r) for r in test) / len(test)
        log.info("split %d: %d training queries, %d held out, oracle %.4f", fold, len(train), len(test), oracle)
        systems = [(f"ours (anchors {a})", str(train_model(train, steps=steps, seed=seed, batch_size=8, max_tokens=128,
                                                           timings={}, schemas=schemas, sql=SqlConfig(anchors=a))), "sql")
                   for a in anchors]
        systems += [(f"{name}, merged {w:g}", str(merged_model(Path(spec), w)), preset)
                    for name, spec, preset in list(systems) for w in merge_weights]
        systems += [("sql preset, untrained", "minilm", "sql"), ("text similarity", "minilm", "text")]
        for name, spec, preset in systems:
            encoder = load_encoder(spec, preset=preset, device="cpu")
            for demos_from in demo_sources:
                retriever = DemoRetriever(train, encoder, schemas=schemas if preset == "sql" else None, demos_from=demos_from)
                for k in ks:
                    found = retriever.search([r["sql"] for r in test], k)
                    outcomes = [simulated_trial(r, demos, by_id) for r, demos in zip(test, found)]
                    add(f"{name} | {demos_from} | k={k}", sum(v for v, _ in outcomes) / len(test) / oracle,
                        sum(n for _, n in outcomes) / len(test))
        keys = ceiling_keys(train)
        outcomes = [ceiling_trial(r, keys) for r in test]
        add(CEILING, sum(v for v, _ in outcomes) / len(test) / oracle, sum(n for _, n in outcomes) / len(test))
        for demos_from in demo_sources:
            for k in ks:
                means = []
                for rep in range(RANDOM_REPEATS):
                    drawn = random_demonstrations(train, len(test), k, demos_from=demos_from, seed=seed, rep=rep)
                    outcomes = [simulated_trial(r, demos, by_id) for r, demos in zip(test, drawn)]
                    means.append(sum(v for v, _ in outcomes) / len(test))
                add(f"random demonstrations | {demos_from} | k={k}", sum(means) / len(means) / oracle, None)
    for row in rows.values():
        row["mean_share"] = round(sum(row["shares"]) / len(row["shares"]), 4)
        row["trials_per_query"] = round(sum(row["trials"]) / len(row["trials"]), 3) if row["trials"] else None
        del row["trials"]
    return {"pool": str(pool), "dev_folds": dev_folds, "held_out_folds": held_out_folds, "ks": list(ks), "anchors": list(anchors), "steps": steps,
            "merge_weights": list(merge_weights), "rows": rows}


def markdown(data: Mapping[str, Any], run_name: str | None = None) -> str:
    where = (f"the benchmark's {data['held_out_folds']} cross-validation folds by template (a diagnostic of the "
             "folds the benchmark scores on, not a design choice)" if data.get("held_out_folds") else
             f"{data['dev_folds']} dev splits inside the training templates (held-out templates unread)")
    splits = (f"{data['held_out_folds']} cross-validation folds by template" if data.get("held_out_folds") else
              f"{data['dev_folds']} dev splits")
    run = f", run `{run_name}`" if run_name else ""
    lines = [f"# SQL demonstrations design probe{run}: {splits}, k = {', '.join(map(str, data['ks']))}", "",
             f"Pool `{data['pool']}`, {where}. Share of the oracle's **pool-measured** score, the trial simulated by the pool's measurement "
             "(optimistic; for design choices only).", "",
             "| system | demonstrations | k | mean share | per split | rule sets tried per query |", "|---|---|---|---|---|---|"]
    for name, row in data["rows"].items():
        system, demos_from, k = name.split(" | ")
        tried = f"{row['trials_per_query']:.2f}" if row["trials_per_query"] is not None else "-"
        lines.append(f"| {system} | {demos_from} | {k[2:]} | {row['mean_share']:.0%} | "
                     f"{', '.join(f'{v:.0%}' for v in row['shares'])} | {tried} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--anchors", nargs="+", default=["all", "helped"], choices=("all", "helped"))
    parser.add_argument("--dev-folds", type=int, default=3)
    parser.add_argument("--held-out-folds", type=int, default=0,
                        help="score the benchmark's N folds by template instead of dev splits (a diagnostic; never choose designs on it)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--merge-weights", type=float, nargs="*", default=[],
                        help="also score each trained encoder merged with its base minilm at these weights of the trained one")
    parser.add_argument("--demos", nargs="+", default=["all", "helped"], choices=("all", "helped"))
    parser.add_argument("--steps", type=int, default=60, help="Training steps of each trained encoder.")
    parser.add_argument("--name", default="sql-design")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = run(args.pool, anchors=args.anchors, dev_folds=args.dev_folds, ks=args.ks, held_out_folds=args.held_out_folds,
               merge_weights=args.merge_weights, demo_sources=args.demos, steps=args.steps)
    text = markdown(data, args.name)
    path = write_results(args.name, data, text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
