"""Frozen training configuration, validated once and saved next to the trained model (``train_config.json``).

Modules: ``parts`` (the parts a config is composed of: data, optimisation, keys, weights, objective settings,
runtime), ``objectives`` (the settings of one objective each), ``sources`` (hard-negative mining, evaluation set),
``train`` (:class:`TrainConfig`: the parts together, the rules across them, JSON).
"""

from training.config.objectives import (CodeConfig, CropConfig, MlmConfig, ScratchConfig, SentenceConfig, SqlConfig,
                                            TransliterationConfig)
from training.config.parts import (ANCHORS, OBJECTIVES, PRECISIONS, Anchor, DataSettings, KeySettings,
                                       ObjectiveSettings, Objective, OptimizationSettings, Precision, RuntimeSettings,
                                       WeightSettings)
from training.config.sources import EvalConfig, NegativesConfig, parse_weights
from training.config.train import CONFIG_FILE, PARTS, SCRATCH, TrainConfig

__all__ = [
    "ANCHORS", "CONFIG_FILE", "OBJECTIVES", "PARTS", "PRECISIONS", "SCRATCH", "Anchor", "CodeConfig", "CropConfig",
    "DataSettings", "EvalConfig", "KeySettings", "MlmConfig", "NegativesConfig", "Objective", "ObjectiveSettings",
    "OptimizationSettings", "Precision", "RuntimeSettings", "ScratchConfig", "SentenceConfig", "SqlConfig",
    "TrainConfig", "TransliterationConfig", "WeightSettings", "parse_weights",
]
