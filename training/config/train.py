"""The whole configuration of a training run, composed of its parts and saved next to the trained model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from training.config.objectives import (CodeConfig, CropConfig, MlmConfig, ScratchConfig, SentenceConfig, SqlConfig,
                                            TransliterationConfig)
from training.config.parts import (DataSettings, KeySettings, ObjectiveSettings, OptimizationSettings,
                                       RuntimeSettings, WeightSettings, check_all)
from training.config.sources import EvalConfig, NegativesConfig

SCRATCH = "scratch"
"""The ``--base`` value that trains a tokenizer and a BERT from nothing."""

CONFIG_FILE = "train_config.json"

PARTS = (DataSettings, OptimizationSettings, KeySettings, WeightSettings, ObjectiveSettings, RuntimeSettings)
"""The parts of a :class:`TrainConfig`, in the order they are validated."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig(DataSettings, OptimizationSettings, KeySettings, WeightSettings, ObjectiveSettings, RuntimeSettings):
    """Everything that determines a training run (saved as ``train_config.json`` and checked on ``--resume``).

    The fields are those of the parts (see :mod:`training.config.parts` for each one's meaning), flat: a config is
    built as ``TrainConfig(objective=..., data=..., lr=...)`` and read as ``config.lr``. Only the rules that tie
    fields of different parts together live here.
    """

    def validate(self) -> "TrainConfig":
        """Check every value (each part, then the rules across parts); raises RetrieverError naming the flag.
        Returns self."""
        for part in PARTS:
            part.validate(self)
        scratch, objective, anchor = self.base == SCRATCH, self.objective, self.anchor
        check_all([
            (anchor == "crop" or objective == "contriever", "--anchor applies to the contriever objective only"),
            ("cited" not in anchor or self.negatives.teacher == "hybrid",
             f"--anchor {anchor}: cited sentences need --teacher hybrid (the teacher picks their positive)"),
            (self.negatives.index is None or objective == "finetune" or anchor != "crop",
             "--negatives-from needs pairs: finetune, or contriever with --anchor sentence or title"),
            (scratch == (self.scratch is not None), "scratch sizes are given only with --base scratch"),
            (not (scratch and objective not in ("contriever", "url")), f"{objective} needs a trained --base, not scratch"),
            (not (self.freeze_layers and scratch), "--freeze-layers needs a trained --base, not scratch"),
            (self.mlm is None or objective == "url", "masked-language modelling is part of the url objective only"),
            (self.label_field is None or objective == "url", "--label-field applies to the url objective only"),
            (self.label_field is None or self.queue_size == 0, "--label-field needs in-batch negatives (the queue holds no classes)"),
            (not (self.teacher_keys and scratch), "--teacher-keys needs a trained --base, not scratch"),
            (not (self.query_only and scratch), "--query-only needs a trained --base, not scratch"),
            (not (self.query_only and objective not in ("contriever", "finetune")),
             "--query-only applies to the contriever and finetune objectives"),
            (not self.untitled_keys or (self.query_only and objective == "contriever" and anchor != "crop"),
             "--untitled-keys applies to --query-only contriever training with title or sentence anchors"),
        ])
        return self

    # --- JSON: one flat object, a key per field (the nested settings as objects) ----------------------------
    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["data"] = list(self.data)
        record["code"]["exclude"] = list(self.code.exclude)
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "TrainConfig":
        """The config of a ``to_dict`` record (keys unknown to this version are ignored, missing ones default).

        Raises TypeError on a nested setting with an unknown key."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values["data"] = tuple(values.get("data", ()))
        values["crop"] = CropConfig(**record.get("crop", {}))
        values["sentence"] = SentenceConfig(**record.get("sentence", {}))
        negatives = dict(record.get("negatives", {}))
        values["negatives"] = NegativesConfig(**{**negatives,
                                                 "teacher_indexes": tuple(negatives.get("teacher_indexes", ())),
                                                 "teacher_weights": tuple(negatives.get("teacher_weights", ()))})
        values["eval"] = EvalConfig(**record.get("eval", {}))
        values["transliteration"] = TransliterationConfig(**record.get("transliteration", {}))
        code = dict(record.get("code", {}))
        values["code"] = CodeConfig(**{**code, "exclude": tuple(code.get("exclude", ()))})
        values["sql"] = SqlConfig(**record.get("sql", {}))
        values["scratch"] = ScratchConfig(**record["scratch"]) if record.get("scratch") else None
        values["mlm"] = MlmConfig(**record["mlm"]) if record.get("mlm") else None
        return cls(**values)

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint (how often to save may change)."""
        return replace(self, save_every=0, keep_checkpoints=1).to_dict()

    def save(self, folder: Path) -> Path:
        """Write ``folder/train_config.json``; returns its path."""
        path = Path(folder) / CONFIG_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

