"""TrainConfig composed of parts: each part validates alone, and configs saved before the split load unchanged."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from indexing.errors import RetrieverError
from training.config import (PARTS, DataSettings, KeySettings, NegativesConfig, ObjectiveSettings, OptimizationSettings,
                             RuntimeSettings, ScratchConfig, TrainConfig, WeightSettings)

FIXTURES = Path(__file__).parent / "fixtures"
SAVED = ["train_config_contriever_v1.json", "train_config_url_v1.json"]  # written by the flat TrainConfig (one class)


@pytest.mark.parametrize("name", SAVED)
def test_configs_saved_before_the_parts_load_and_save_byte_identical(name):
    text = (FIXTURES / name).read_text(encoding="utf-8")
    config = TrainConfig.from_dict(json.loads(text)).validate()
    assert config.to_json() == text
    assert config.resume_key() == TrainConfig.from_dict(json.loads(config.to_json())).resume_key()


def test_saved_values_are_read_into_their_parts():
    config = TrainConfig.from_dict(json.loads((FIXTURES / SAVED[0]).read_text(encoding="utf-8")))
    assert (config.lr, config.accumulate, config.warmup) == (3e-4, 2, 5)
    assert (config.query_only, config.untitled_keys, config.negatives.teacher_indexes) == (True, True, ("idx-e5",))
    assert (config.ema, config.freeze_layers, config.precision, config.keep_checkpoints) == (0.9, 1, "fp32", 3)
    url = TrainConfig.from_dict(json.loads((FIXTURES / SAVED[1]).read_text(encoding="utf-8")))
    assert url.scratch == ScratchConfig(4, 128, 4, 8192) and url.mlm is not None and url.mlm.weight == 0.5


def test_the_config_is_exactly_the_fields_of_its_parts():
    names = [f.name for part in PARTS for f in fields(part)]
    assert len(names) == len(set(names)), "no field in two parts"
    assert {f.name for f in fields(TrainConfig)} == set(names)


@pytest.mark.parametrize("part, change, message", [
    (OptimizationSettings, dict(steps=10, warmup=11), "--warmup must be in"),
    (OptimizationSettings, dict(max_grad_norm=-1.0), "--max-grad-norm"),
    (KeySettings, dict(momentum=1.0), "--momentum"),
    (KeySettings, dict(negatives=NegativesConfig(per_query=-1)), "--negatives-per-query"),
    (WeightSettings, dict(ema=1.0), "--ema"),
    (WeightSettings, dict(scratch=ScratchConfig(hidden=10, heads=3)), "multiple of --heads"),
    (RuntimeSettings, dict(precision="fp8"), "--precision 'fp8'"),
])
def test_each_part_validates_its_own_fields(part, change, message):
    part().validate()  # the defaults are valid
    with pytest.raises(RetrieverError, match=message):
        part(**change).validate()


def test_data_and_objective_parts_alone():
    DataSettings(objective="url", data=("u.txt",)).validate()
    with pytest.raises(RetrieverError, match="no training data"):
        DataSettings(objective="url", data=()).validate()
    with pytest.raises(RetrieverError, match="--anchor 'x'"):
        DataSettings(objective="contriever", data=("c",), anchor="x").validate()  # type: ignore[arg-type]
    ObjectiveSettings().validate()


def test_rules_across_parts_live_in_the_config():
    config = TrainConfig(objective="finetune", data=("p.jsonl",), anchor="title")
    DataSettings.validate(config)  # each part alone is fine
    with pytest.raises(RetrieverError, match="--anchor applies to the contriever objective only"):
        config.validate()
