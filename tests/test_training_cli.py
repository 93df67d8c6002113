"""``retriever train`` as a user runs it: outputs the engine loads, scratch models, finetune, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.test_training_helpers import write_beir

runner = CliRunner()
TINY = ["--steps", "2", "--batch-size", "4", "--max-tokens", "32", "--device", "cpu"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", ["contriever", "finetune"])
def test_help(command):
    result = run("train", command, "--help")
    assert result.exit_code == 0 and "--out" in result.output


def test_contriever_output_is_indexable(tmp_path, small_corpus, tiny_model):
    out = tmp_path / "model"
    result = run("train", "contriever", small_corpus, "--out", out, "--base", tiny_model, "--queue-size", "8", *TINY, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["finished"] and record["steps_done"] == 2
    index = tmp_path / "idx"
    built = run("index", "build", small_corpus, "--out", index, "--model", out, "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu", "--json")
    assert built.exit_code == 0, built.output
    manifest = json.loads(built.stdout.strip().splitlines()[-1])
    assert manifest["encoder"]["preset"] == "text" and manifest["encoder"]["dim"] == 32
    hits = run("search", index, "dense retrieval", "-k", "3", "--json", "--device", "cpu")
    assert hits.exit_code == 0 and len(json.loads(hits.stdout)["hits"]) == 3


def test_scratch_model_trains(tmp_path, small_corpus):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "scratch"
    result = run("train", "contriever", small_corpus, "--out", out, "--base", "scratch", "--layers", "1", "--hidden", "16",
                 "--heads", "2", "--vocab-size", "120", "--queue-size", "0", "--mask", "0.1", *TINY)
    assert result.exit_code == 0, result.output
    # no terminal here, so no bar: plain progress lines (every 5% of the run; each step of a 2-step run)
    assert "step 1/2: loss " in result.output and "step 2/2: loss " in result.output
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["dense retrieval"]).shape == (1, 16)
    assert model.tokenizer("dense")["input_ids"][0] == model.tokenizer.cls_token_id
    assert json.loads((out / "retriever.json").read_text())["base"] == "scratch"


def test_finetune_from_jsonl_pairs_and_stop_resume(tmp_path, tiny_model):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"query": f"query {i} about vectors", "positive": f"passage {i} on dense vectors", "negative": f"cooking recipe {i}"}
            for i in range(8)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "ft"
    first = run("train", "finetune", pairs, "--out", out, "--base", tiny_model, "--negatives-per-query", "1", *TINY, "--stop-after", "1")
    assert first.exit_code == 0, first.output
    assert "continue with --resume" in first.output
    again = run_cli("train", "finetune", pairs, "--out", out, "--base", tiny_model, "--negatives-per-query", "1", *TINY)
    assert_one_line_error(again, "--resume")
    resumed = run("train", "finetune", pairs, "--out", out, "--base", tiny_model, "--negatives-per-query", "1", *TINY, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (out / "model.safetensors").is_file() and "trained" in resumed.output


def test_max_minutes_ends_with_an_exported_model(tmp_path, tiny_model):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"query": f"query {i} about vectors", "positive": f"passage {i} on vectors"})
                               for i in range(8)) + "\n")
    out = tmp_path / "ft"
    refused = run_cli("train", "finetune", pairs, "--out", out, "--base", tiny_model, *TINY, "--max-minutes", "0")
    assert_one_line_error(refused, "--max-minutes")
    timed = run("train", "finetune", pairs, "--out", out, "--base", tiny_model, *TINY, "--max-minutes", "0.000001")
    assert timed.exit_code == 0, timed.output
    assert "time limit: 1 of" in timed.output and (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["contriever", "{tmp}/missing.jsonl"], ["missing.jsonl", "no such file"]),
        (["contriever", "{corpus}", "--crop-min", "0.6", "--crop-max", "0.5"], ["crop-min"]),
        (["contriever", "{corpus}", "--steps", "0"], ["--steps"]),
        (["contriever", "{corpus}", "--ema", "1"], ["--ema", "[0, 1)"]),
        (["contriever", "{corpus}", "--layers", "2"], ["--layers", "--base scratch"]),
        (["contriever", "{corpus}", "--eval-every", "5"], ["--eval"]),
        (["contriever", "{corpus}", "--device", "cuda"], ["--device cuda", "CUDA"]),
        (["contriever", "{corpus}", "--precision", "fp16", "--device", "cpu"], ["fp16"]),
        (["contriever", "{corpus}", "--eval", "{tmp}"], ["--eval", "not a BEIR folder"]),
        (["contriever", "{corpus}", "--batch-size", "4", "--base", "{tmp}/nomodel"], ["nomodel", "does not exist"]),
        (["finetune", "{tmp}/pairs.jsonl"], ["pairs.jsonl", "no such file"]),
        (["finetune", "{corpus}", "--negatives-from", "{tmp}"], ["--negatives-from", "not an index"]),
        (["finetune", "{corpus}", "--negative-ranks", "ten"], ["--negative-ranks"]),
        (["finetune", "{corpus}", "--negative-ranks", "50-10"], ["negative ranks"]),
    ],
)
def test_errors_are_one_line(tmp_path, small_corpus, args, fragments):
    filled = [a.format(tmp=tmp_path, corpus=small_corpus) for a in args]
    if "cuda" in filled:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    result = run_cli("train", *filled, "--out", tmp_path / "out", *([] if "--device" in filled else ["--device", "cpu"]))
    assert_one_line_error(result, *fragments)


def test_bad_pairs_file_names_the_line(tmp_path, tiny_model):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n')
    result = run_cli("train", "finetune", pairs, "--out", tmp_path / "o", "--base", tiny_model, *TINY)
    assert_one_line_error(result, "pairs.jsonl:2", "positive")


def test_finetune_on_beir_train_split(tmp_path, small_corpus, tiny_model):
    beir = write_beir(tmp_path / "beir", small_corpus)
    result = run("train", "finetune", beir, "--out", tmp_path / "o", "--base", tiny_model, *TINY,
                 "--eval", beir, "--eval-split", "train", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["best_step"] in (0, 2) and "nDCG@10" in record["best_metrics"]
