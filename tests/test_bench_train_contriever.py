"""The merge options of the unsupervised adaptation benchmark (benchmarks/train_contriever.py)."""

from __future__ import annotations

import pytest

from benchmarks.train_contriever import merge_markdown, parse_merge_weights


def test_merge_weights_are_parsed_and_checked() -> None:
    assert parse_merge_weights("0.3, 0.5,0.7", select=True) == [0.3, 0.5, 0.7]
    assert parse_merge_weights("", select=False) == []
    assert parse_merge_weights("0.5", select=False) == [0.5]
    with pytest.raises(SystemExit, match="no train queries"):
        parse_merge_weights("0.3,0.5", select=False)
    with pytest.raises(SystemExit, match=r"in \(0, 1\]"):
        parse_merge_weights("0,0.5", select=True)
    with pytest.raises(SystemExit, match="numbers"):
        parse_merge_weights("half", select=True)


def test_merge_markdown_reports_the_selection() -> None:
    table = [{"weight": 0.5, "metrics": {"nDCG@10": 0.61, "R@100": 0.9}},
             {"weight": 1.0, "metrics": {"nDCG@10": 0.6, "R@100": 0.91}}]
    text = merge_markdown([0.5], 0.5, table, "minilm")
    assert "w = 0.5 kept" in text and "| 0.5 | 0.6100 | 0.9000 |" in text and "| 1 | 0.6000 | 0.9100 |" in text
    assert "fixed beforehand" in merge_markdown([0.5], 0.5, [], "minilm")
    assert merge_markdown([], 1.0, [], "minilm") == ""
    assert "Merge with minilm" in text and "The query route merged with its base route" in merge_markdown(
        [0.5], 0.5, table, "minilm", query_only=True)


def test_select_merge_scores_base_merges_and_trained_on_train_queries(tmp_path, tiny_model) -> None:
    import json

    from benchmarks.train_common import evaluate_split
    from benchmarks.train_contriever import select_merge

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    words = ["vectors", "queries", "indexes", "tokens", "models", "passages"]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": w, "text": f"all about {w} here"}) + "\n"
                                                 for i, w in enumerate(words)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"{w}?"}) + "\n" for i, w in enumerate(words)))
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(6)))
    base = evaluate_split(str(tiny_model), folder, tmp_path, split="test", device="cpu")
    chosen, weight, table = select_merge(str(tiny_model), str(tiny_model), [0.5], folder, tmp_path, device="cpu",
                                         select=True, base_index=base["index"])
    assert [row["weight"] for row in table] == [0.0, 0.5, 1.0]
    # the merge of a model with itself is that model: every candidate scores the same, and the first best wins
    assert {round(row["metrics"]["nDCG@10"], 6) for row in table} == {round(table[0]["metrics"]["nDCG@10"], 6)}
    assert weight == 0.0 and chosen == str(tiny_model)
    assert (tmp_path / "merged-0.5" / "merge.json").is_file()
    fixed, fixed_weight, no_table = select_merge(str(tiny_model), str(tiny_model), [0.5], folder, tmp_path, device="cpu",
                                                 select=False)
    assert fixed == str(tmp_path / "merged-0.5") and fixed_weight == 0.5 and no_table == []


def test_select_merge_of_a_query_only_model_searches_the_base_index(tmp_path, tiny_model) -> None:
    import json

    from sentence_transformers import SentenceTransformer

    from benchmarks.train_common import evaluate_split
    from benchmarks.train_contriever import select_merge
    from training.export import asymmetric_model

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    words = ["vectors", "queries", "indexes", "tokens"]
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": w, "text": f"all about {w} here"}) + "\n"
                                                 for i, w in enumerate(words)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"{w}?"}) + "\n" for i, w in enumerate(words)))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4)))
    encoder = SentenceTransformer(str(tiny_model), device="cpu")
    trained = tmp_path / "query-only"
    asymmetric_model(encoder, SentenceTransformer(str(tiny_model), device="cpu")).save(str(trained))
    base = evaluate_split(str(tiny_model), folder, tmp_path, split="train", device="cpu")
    chosen, weight, table = select_merge(str(trained), str(tiny_model), [0.5], folder, tmp_path, device="cpu", select=True,
                                         base_index=base["index"], trained_index=base["index"], query_only=True)
    assert [row["weight"] for row in table] == [0.0, 0.5, 1.0]
    assert {str(row["index"]) for row in table} == {str(base["index"])}  # no candidate re-encodes the documents
    assert json.loads((tmp_path / "merged-0.5" / "merge.json").read_text())["query_route_weight"] == 0.5
