"""The URL workflow as a user runs it: train url -> index build (preset from the model) -> url classify."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()

LABELLED = [
    ("https://www.paypal.com/signin?country=us", "benign"),
    ("http://paypal.com.verify-account.xyz/login.php", "phishing"),
    ("https://thenextweb.com/apps/2015/01/01/article-title/", "benign"),
    ("http://secure.000webhostapp.com/wp/update/login.html", "phishing"),
    ("https://twitter.com/someone/status/12345", "benign"),
    ("http://login-microsoft.online-verify.top/office365/", "phishing"),
    ("https://github.com/org/repo/issues/7", "benign"),
    ("http://apple.id-locked.info/unlock?session=abc", "phishing"),
    ("https://docs.python.org/3/library/urllib.html", "benign"),
    ("http://bankofamerica.secure-update.ru/login", "phishing"),
    ("https://en.wikipedia.org/wiki/Phishing", "benign"),
    ("http://xn--pypal-4ve.com/webscr?cmd=_login", "phishing"),
]


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments: str) -> None:
    message = result.stderr if hasattr(result, "stderr") else result.output
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message.strip().startswith("error:"), message
    for fragment in fragments:
        assert fragment in " ".join(message.split()), message


@pytest.fixture(scope="module")
def url_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("urls")
    (folder / "urls.txt").write_text("\n".join(u for u, _ in LABELLED) + "\n", encoding="utf-8")
    with open(folder / "labelled.tsv", "w", encoding="utf-8") as fh:
        fh.write("url\tlabel\n")
        fh.writelines(f"{u}\t{label}\n" for u, label in LABELLED)
    return folder


@pytest.fixture(scope="module")
def url_model(url_files):
    out = url_files / "model"
    result = run("train", "url", url_files / "urls.txt", "--out", out, "--steps", "3", "--batch-size", "4", "--layers", "1",
                 "--hidden", "32", "--heads", "2", "--vocab-size", "200", "--max-tokens", "32", "--adversarial", "0.5",
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["finished"] and record["steps_done"] == 3
    return out


@pytest.fixture(scope="module")
def url_index(url_files, url_model):
    index = url_files / "index"
    built = run("index", "build", url_files / "labelled.tsv", "--out", index, "--model", url_model, "--index", "Flat",
                "--device", "cpu", "--json")
    assert built.exit_code == 0, built.output
    manifest = json.loads(built.stdout.strip().splitlines()[-1])
    assert manifest["encoder"]["preset"] == "url"  # recorded by `train url`, so --model alone is enough
    assert manifest["chunking"]["chunk_tokens"] == 0 and manifest["counts"]["documents"] == len(LABELLED)
    return index


def test_trained_model_folder(url_model):
    from sentence_transformers import SentenceTransformer

    card = json.loads((url_model / "retriever.json").read_text())
    config = json.loads((url_model / "train_config.json").read_text())
    assert card["preset"] == "url" and card["base"] == "scratch"
    assert config["objective"] == "url" and config["mlm"]["probability"] == 0.15 and config["adversarial"] == 0.5
    model = SentenceTransformer(str(url_model), device="cpu")  # loads without our code (no preprocessing then)
    assert model.encode(["http://a.com/x"]).shape == (1, 32)


def test_classify_json_shows_the_deciding_neighbours(url_index):
    known, label = LABELLED[1]
    result = run("url", "classify", url_index, known, "http://paypa1.com.secure-login.xyz/", "-k", "3", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [v["url"] for v in verdicts] == [known, "http://paypa1.com.secure-login.xyz/"]
    exact = verdicts[0]
    assert exact["neighbours"][0]["url"] == known and exact["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert exact["label"] == label and exact["confidence"] > 0.99  # an exact duplicate outweighs the rest
    for verdict in verdicts:
        assert len(verdict["neighbours"]) == 3 and verdict["label"] in ("benign", "phishing")
        assert sum(verdict["votes"].values()) == pytest.approx(sum(n["weight"] for n in verdict["neighbours"]))
        assert all(n["label"] in ("benign", "phishing") for n in verdict["neighbours"])


def test_classify_threshold_on_the_positive_label(url_index):
    url = "http://paypa1.com.secure-login.xyz/"

    everyone = str(len(LABELLED))  # every indexed URL votes: the phishing share is the index's, whatever the model

    def verdict(*flags):
        result = run("url", "classify", url_index, url, "-k", everyone, "--weights", "uniform", "--json", "--device", "cpu", *flags)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip())

    plain = verdict()
    assert all(n["weight"] == 1.0 for n in plain["neighbours"])
    share = plain["votes"].get("phishing", 0.0) / len(LABELLED)
    assert share == sum(label == "phishing" for _, label in LABELLED) / len(LABELLED)
    assert 0 < share < 1, plain  # both labels in the fixture
    assert verdict("--positive", "phishing", "--threshold", str(share))["label"] == "phishing"
    assert verdict("--positive", "phishing", "--threshold", str(min(1.0, share + 0.01)))["label"] == "benign"
    assert_user_error(run("url", "classify", url_index, url, "--threshold", "0.5"), "--threshold needs --positive")
    assert_user_error(run("url", "classify", url_index, url, "--weights", "rank"), "--weights 'rank'")


def test_classify_table(url_index):
    result = run("url", "classify", url_index, LABELLED[0][0], "-k", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "benign" in result.stdout and "paypal.com/signin" in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")


def test_url_errors(url_files, url_index, tmp_path, tiny_model):
    assert_user_error(run("index", "build", url_files / "urls.txt", "--out", tmp_path / "x", "--encoder", "url"),
                      "no built-in model")
    bad = tmp_path / "bad.tsv"
    bad.write_text("link\tlabel\nhttp://a.com\tbenign\n", encoding="utf-8")
    assert_user_error(run("index", "build", bad, "--out", tmp_path / "y", "--encoder", "url", "--model", url_files / "model"),
                      "bad.tsv:1", "no 'url' column")
    assert_user_error(run("url", "classify", url_index), "give URLs")
    assert_user_error(run("url", "classify", url_index, "http://a.com", "-k", "0"), "-k must be >= 1")
    unlabelled = tmp_path / "unlabelled"
    built = run("index", "build", url_files / "urls.txt", "--out", unlabelled, "--model", url_files / "model", "--device", "cpu")
    assert built.exit_code == 0, built.output
    assert_user_error(run("url", "classify", unlabelled, "http://a.com", "--device", "cpu"), "no neighbour has a 'label' field")
    text_index = tmp_path / "text"
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "1", "text": "dense retrieval"}) + "\n", encoding="utf-8")
    assert run("index", "build", corpus, "--out", text_index, "--model", tiny_model, "--device", "cpu").exit_code == 0
    assert_user_error(run("url", "classify", text_index, "http://a.com", "--device", "cpu"), "--encoder url")
    assert_user_error(run("train", "url", url_files / "missing.txt", "--out", tmp_path / "m"), "missing.txt", "no such file")


def test_supervised_url_training_from_labels(url_files, url_model, tmp_path):
    out = tmp_path / "supervised"
    result = run("train", "url", url_files / "labelled.tsv", "--label-field", "label", "--base", url_model, "--out", out,
                 "--steps", "2", "--batch-size", "6", "--max-tokens", "32", "--mlm-weight", "0", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train_config.json").read_text())["label_field"] == "label"
    built = run("index", "build", url_files / "labelled.tsv", "--out", tmp_path / "index", "--model", out, "--device", "cpu")
    assert built.exit_code == 0, built.output
    # the field must exist in every record; the url objective only
    assert_user_error(run("train", "url", url_files / "labelled.tsv", "--label-field", "kind", "--base", url_model,
                          "--out", tmp_path / "m", "--steps", "1", "--device", "cpu"), "labelled.tsv:2", "'kind'")
    assert_user_error(run("train", "url", url_files / "urls.txt", "--label-field", "label", "--base", url_model,
                          "--out", tmp_path / "m2", "--steps", "1", "--device", "cpu"), "'label'")
