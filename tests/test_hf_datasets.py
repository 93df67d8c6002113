"""Corpora from Hugging Face ``datasets`` (indexing.hf_datasets): saved folders, shard folders, objects, hub names.

A dataset and its JSONL export must give the same documents and the same index, through the CLI and Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
datasets = pytest.importorskip("datasets")

from indexing.errors import CorpusError  # noqa: E402
from indexing.readers import FieldNames, read_corpus  # noqa: E402
from retriever import Index  # noqa: E402
from retriever.corpus import corpus_reader  # noqa: E402
from tests.cli_helpers import REPO, assert_one_line_error, run_cli, run_cli_many  # noqa: E402
from tests.index_snapshots import corpus_records  # noqa: E402
from tests.test_index_api import _contents  # noqa: E402


def _records(prefix: str, count: int) -> list[dict]:
    """Corpus records with a metadata column of mixed values (ints, lists, nulls) beside id/title/text."""
    return [{**r, "rank": i, "tags": [prefix, str(i % 3)], "note": None if i % 2 else f"n{i}"}
            for i, r in enumerate(corpus_records(prefix, count))]


def _docs(corpus) -> list[tuple]:
    return [(d.id, d.title, d.text, d.metadata) for d in corpus_reader(corpus)()]


@pytest.fixture()
def saved(tmp_path) -> tuple[Path, Path, "datasets.Dataset"]:
    """(a save_to_disk folder, its JSONL export, the Dataset) of 30 records."""
    dataset = datasets.Dataset.from_list(_records("d", 30))
    folder, export = tmp_path / "saved", tmp_path / "export.jsonl"
    dataset.save_to_disk(str(folder), max_shard_size="2KB")  # several Arrow files: rows numbered across them
    dataset.to_json(str(export), lines=True)
    return folder, export, datasets.load_from_disk(str(folder))


def test_saved_dataset_builds_the_index_of_its_jsonl_export(tmp_path, tiny_model, saved):
    folder, export, dataset = saved
    assert len(list(folder.glob("*.arrow"))) > 1
    assert _docs(folder) == _docs(export) == _docs(dataset) == _docs(dataset.to_iterable_dataset(num_shards=1))
    common = ["--model", tiny_model, "--index", "Flat", "--precision", "fp32"]
    runs = run_cli_many([["index", "build", export, "--out", tmp_path / "cli-jsonl", *common],
                         ["index", "build", folder, "--out", tmp_path / "cli-saved", *common]])
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    Index.build(dataset, tmp_path / "py-object", model=str(tiny_model), index="Flat", precision="fp32")
    Index.build(str(folder), tmp_path / "py-folder", model=str(tiny_model), index="Flat", precision="fp32")
    reference = _contents(tmp_path / "cli-jsonl")
    assert reference[0]["d3"][2] == {"rank": 3, "tags": ["d", "0"], "note": None}
    for name in ("cli-saved", "py-object", "py-folder"):
        docs, vectors, described = _contents(tmp_path / name)
        assert docs == reference[0] and described == reference[2], name
        np.testing.assert_array_equal(vectors, reference[1])


def test_index_add_and_python_add_read_saved_folders(tmp_path, tiny_model, saved):
    folder, _, _ = saved
    extra = tmp_path / "extra"
    datasets.Dataset.from_list(_records("e", 4)).save_to_disk(str(extra))
    idx = Index.build(str(folder), tmp_path / "idx", model=str(tiny_model), index="Flat")
    done = run_cli("index", "add", tmp_path / "idx", extra)
    assert done.returncode == 0, done.stderr
    idx.add(datasets.Dataset.from_list(_records("f", 3)).to_iterable_dataset())
    assert idx.info().counts["documents"] == 37


def test_parquet_and_arrow_shard_folders(tmp_path, saved):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, export, dataset = saved
    shards = tmp_path / "shards"
    (shards / "data").mkdir(parents=True)
    (shards / "README.md").write_text("# a hub snapshot's card is not a document\n")
    table = dataset.data.table
    pq.write_table(table.slice(0, 12), shards / "data" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(12), shards / "data" / "train-00001-of-00002.parquet")
    assert _docs(shards) == _docs(export)
    arrows = tmp_path / "arrows"
    arrows.mkdir()
    with pa.OSFile(str(arrows / "a.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.slice(0, 20), max_chunksize=7)
    with pa.OSFile(str(arrows / "b.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.slice(20))  # the IPC file format is read too
    assert _docs(arrows) == _docs(export)
    assert [d.id for d in read_corpus([arrows / "b.arrow"])] == [f"d{i}" for i in range(20, 30)]


def test_dataset_dict_split_selection(tmp_path, tiny_model):
    train, test = datasets.Dataset.from_list(_records("t", 5)), datasets.Dataset.from_list(_records("q", 3))
    folder, single = tmp_path / "dict", tmp_path / "single"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))
    datasets.DatasetDict({"train": train}).save_to_disk(str(single))
    assert [d.id for d in read_corpus([f"{folder}:test"])] == ["q0", "q1", "q2"]
    assert [d.id for d in read_corpus([folder / "train"])] == [d.id for d in read_corpus([single])] == [f"t{i}" for i in range(5)]
    with pytest.raises(CorpusError, match="no split 'dev' \\(splits: train, test\\)"):
        read_corpus([f"{folder}:dev"])
    with pytest.raises(CorpusError, match="pass one split"):
        corpus_reader(datasets.DatasetDict({"train": train}))
    done = run_cli("index", "build", folder, "--out", tmp_path / "idx", "--model", tiny_model, "--index", "Flat")
    assert_one_line_error(done, str(folder), "splits train, test", f"{folder}:SPLIT")


def test_hub_name_offline_is_one_line_error(tmp_path, tiny_model):
    done = run_cli("index", "build", "hf:nonexistent/thing", "--out", tmp_path / "idx", "--model", tiny_model)
    assert_one_line_error(done, "hf:nonexistent/thing", "hub is offline")
    assert not (tmp_path / "idx").exists()


def test_bad_row_names_dataset_row_and_field(tmp_path, tiny_model):
    rows = _records("b", 5)
    rows[3]["text"] = None
    folder = tmp_path / "bad"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    with pytest.raises(CorpusError, match=f"^{folder} row 3: field 'text': missing"):
        list(read_corpus([folder]))
    with pytest.raises(CorpusError, match="^<Dataset> row 3: field 'text'"):
        list(corpus_reader(datasets.Dataset.from_list(rows))())
    with pytest.raises(CorpusError, match=f"{folder} row 0: field 'body': missing"):
        next(read_corpus([folder], fields=FieldNames(text="body")))
    done = run_cli("index", "build", folder, "--out", tmp_path / "idx", "--model", tiny_model, "--index", "Flat")
    assert_one_line_error(done, f"{folder} row 3", "field 'text'")


def test_contriever_training_reads_a_saved_dataset(tmp_path, small_corpus, tiny_model):
    """Training reads corpora through read_corpus: a saved dataset trains exactly as its JSONL source."""
    import json

    from training.config import TrainConfig
    from training.run import run_training

    folder = tmp_path / "saved"
    rows = [json.loads(line) for line in small_corpus.read_text(encoding="utf-8").splitlines()]
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    results = []
    for name, data in (("jsonl", small_corpus), ("saved", folder)):
        config = TrainConfig(objective="contriever", data=(str(data),), base=str(tiny_model), steps=2, batch_size=4,
                             warmup=1, lr=1e-3, queue_size=8, max_tokens=32).validate()
        results.append(run_training(config, tmp_path / name, device="cpu"))
    assert all(r.finished for r in results) and results[0].last_loss == pytest.approx(results[1].last_loss, abs=1e-6)


def test_saved_folder_reads_without_importing_datasets(saved):
    folder, _, _ = saved
    code = ("import sys; from indexing.readers import read_corpus; "
            f"n = sum(1 for _ in read_corpus([{str(folder)!r}])); "
            "assert 'datasets' not in sys.modules, 'datasets imported'; print(n)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "30", done.stderr


@pytest.mark.slow
def test_stream_memory_is_flat(tmp_path):
    """benchmarks.hf_stream_memory at a reduced size: peak RSS at 4x the rows stays within 1.2x."""
    from benchmarks.hf_stream_memory import measure

    runs = measure([50_000, 200_000], tmp_path)
    small, large = (run["peak_rss_bytes"] for run in runs)
    assert [run["rows"] for run in runs] == [50_000, 200_000]
    assert large <= 1.2 * small, runs
