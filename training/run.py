"""One call that runs a configured training: devices, processes, base model, data, evaluation set, loop.

```python
from training.config import TrainConfig
from training.run import run_training
result = run_training(TrainConfig(objective="contriever", data=("corpus.jsonl",), steps=1000), Path("my-model"))
```
Launched under ``torchrun`` (``WORLD_SIZE`` > 1), the same call trains with DDP; only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from indexing.documents import Document
from indexing.errors import RetrieverError
from training.config import SCRATCH, TrainConfig
from training.distributed import DistInfo
from training.export import BaseModel
from training.pairs import LabeledPair
from training.trainer import Callback, TrainResult

log = logging.getLogger(__name__)

SCRATCH_BASE = "scratch-base"
MINED_FILE = "mined_negatives.jsonl"


def resolve_precision(precision: str, device: str) -> str:
    """The precision the forward passes autocast to on ``device`` (a resolved torch device string).

    ``auto``: on CUDA, bf16 where the GPU has it, else fp16 (with a GradScaler); on the CPU, bf16 where it is
    native (:func:`retriever.devices.native_bf16_cpu`), else fp32. bf16 asked for on a CPU without native bf16
    runs (emulated, logged as slow).

    Raises:
        DeviceError: fp16 on the CPU, or an unknown precision.
    """
    from retriever.devices import resolve_precision as resolve_encoding_precision

    if device.startswith("cuda") and precision == "auto":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return resolve_encoding_precision(precision, device)[0]


def check_inputs(config: TrainConfig) -> None:
    """Fail fast, before any model loads, on missing data, index or evaluation folder."""
    from indexing.readers import detect_format
    from training.pairs import check_index

    if config.objective in ("contriever", "crosslingual"):
        for path in config.data:
            detect_format(Path(path))
        check_index(config.negatives.index)
    elif config.objective == "url":
        from indexing.url_readers import read_urls

        read_urls(config.data)
    elif config.objective == "code":
        for path in list(config.data) + list(config.code.exclude):
            if not Path(path).exists():
                raise RetrieverError(f"{path}: no such file or directory")
    else:
        path = Path(config.data[0])
        if not path.exists():
            raise RetrieverError(f"{path}: no such file or directory")
        check_index(config.negatives.index)
    if config.eval.dataset is not None and not (Path(config.eval.dataset) / "queries.jsonl").is_file():
        raise RetrieverError(f"--eval {config.eval.dataset}: not a BEIR folder (no queries.jsonl)")


def run_training(
    config: TrainConfig,
    out: Path,
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    callback: Callback | None = None,
) -> TrainResult:
    """Train as ``config`` says and write the model to ``out`` (a sentence-transformers folder).

    Args:
        device: ``auto|cpu|cuda[:N]``; a GPU asked for and missing is an error.
        resume: continue from ``out/checkpoints`` (settings must match; no checkpoint = start from step 0).
        overwrite: discard the checkpoints of an earlier run in ``out``.
        stop_after: stop (with a checkpoint, without exporting) after this many steps of this call.
        time_limit_s: end this call after the step that crosses this many wall-clock seconds, evaluated,
            checkpointed and exported (``TrainResult.timed_out``); ``resume`` continues towards ``config.steps``.
        callback: receives :class:`training.trainer.TrainEvent` s (rank 0 only).

    Raises:
        RetrieverError: bad settings or inputs, a GPU that is missing, an existing run without resume/overwrite.
    """
    from retriever.devices import resolve_device
    from training.distributed import init_distributed, process_device, shutdown

    config.validate()
    check_inputs(config)
    out = Path(out)
    dist = init_distributed(resolve_device(device))
    try:
        local_device = process_device(resolve_device(device), dist)
        precision = resolve_precision(config.precision, local_device)
        root = _prepare_output(config, out, dist, resume=resume, overwrite=overwrite)
        labeled = None
        if config.objective == "finetune":
            from training.pairs import read_pairs

            labeled = read_pairs(Path(config.data[0]), split=config.split)
        base = _objective_base(config, root, dist)
        from training.export import load_encoder_for_training

        encoder = load_encoder_for_training(base.path, max_tokens=config.max_tokens, device="cpu")
        data = _build_data(config, encoder.tokenizer, base, out, dist, local_device, labeled)
        log.info("training on %s (%s, %d process%s): %s", local_device, precision, dist.world_size,
                 "es" if dist.enabled else "", json.dumps(data.describe()))
        from training.trainer import Trainer

        trainer = Trainer(config, data, encoder, base, out, device=local_device, precision=precision, dist=dist,
                          devset=_devset(config, data, base), extra_files={"train_config.json": config.to_json()},
                          auxiliary=_auxiliary(config, encoder))
        if config.query_only and config.negatives.index is not None:
            from training.index_keys import base_document_vectors

            known = base_document_vectors(config.negatives.index, base, max_tokens=config.max_tokens)
            if known is not None:
                trainer.prefill_keys(*known)
        if dist.is_main or callback is None:
            return trainer.run(resume=resume, stop_after=stop_after, time_limit_s=time_limit_s, callback=callback)
        return trainer.run(resume=resume, stop_after=stop_after, time_limit_s=time_limit_s)
    finally:
        shutdown(dist)


def _prepare_output(config: TrainConfig, out: Path, dist: DistInfo, *, resume: bool, overwrite: bool) -> Path:
    """Create ``out/checkpoints`` (emptied with ``overwrite``) and write ``out/train_config.json`` (rank 0).
    Returns the checkpoints folder.

    Raises RetrieverError when ``out`` holds a run and neither ``resume`` nor ``overwrite`` is given."""
    from training.distributed import barrier

    root = out / "checkpoints"
    earlier = root.exists() and not resume
    if earlier and not overwrite:  # every process decides alike, before anyone writes
        raise RetrieverError(f"{out} holds a training run; pass --resume to continue it or --overwrite to start over")
    barrier(dist)
    if dist.is_main:
        if earlier:
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        config.save(out)
    barrier(dist)
    return root


OBJECTIVE_PRESETS = {"crosslingual": "crosslingual", "sql": "sql", "code": "code"}
"""Objectives whose output model is recorded with their own preset: `--model OUT` then preprocesses as trained
(crosslingual text, SQL structure words sql-structure-v1, code preprocessing via the model card)."""


def _objective_base(config: TrainConfig, root: Path, dist: DistInfo) -> BaseModel:
    """The base model, recorded with the preset of the objective where it has one."""
    base = _prepare_base(config, root, dist)
    preset = OBJECTIVE_PRESETS.get(config.objective)
    return replace(base, preset=preset) if preset else base


def _devset(config: TrainConfig, data, base: BaseModel):
    """The evaluation set selecting the best step (``--eval``, else the data's held-out validation folder), or None."""
    eval_config = config.eval
    if eval_config.dataset is None and getattr(data, "validation_dir", None) is not None:
        eval_config = replace(eval_config, dataset=str(data.validation_dir), split="dev")
    if eval_config.dataset is None:
        return None
    from retriever.encoders.presets import get_preset, preprocessor_function
    from training.dev_eval import DevSet

    return DevSet(eval_config, query_prefix=base.query_prefix, document_prefix=base.document_prefix,
                  preprocess=preprocessor_function(get_preset(base.preset).preprocessor))


def _auxiliary(config: TrainConfig, encoder):
    """The masked-language-modelling head of the url objective (``config.mlm``), or None."""
    if config.mlm is None:
        return None
    from training.mlm import MaskedLanguageModelling

    transformer = encoder[0].auto_model
    return MaskedLanguageModelling(transformer.get_input_embeddings(), transformer.config.hidden_size,
                                   weight=config.mlm.weight)


def _prepare_base(config: TrainConfig, root: Path, dist: DistInfo) -> BaseModel:
    """The base model; for ``scratch``, rank 0 trains the tokenizer and initializes the model once (kept for resume)."""
    from training.distributed import barrier
    from training.export import resolve_base

    preset = "url" if config.objective == "url" else None
    if config.base != SCRATCH:
        base = resolve_base(config.base)
        return replace(base, preset=preset) if preset else base
    folder = root / SCRATCH_BASE
    if dist.is_main and not (folder / "config.json").is_file():
        from training.scratch import build_scratch_model, train_tokenizer

        assert config.scratch is not None
        if config.objective == "url":
            from retriever.encoders.url.tokens import train_url_tokenizer

            texts, train = (doc.text for doc in _read_urls(config)), train_url_tokenizer
        else:
            from indexing.readers import read_corpus

            texts, train = (doc.full_text() for doc in read_corpus([Path(p) for p in config.data])), train_tokenizer
        build_scratch_model(texts, config.scratch, folder, max_tokens=config.max_tokens, seed=config.seed, train=train)
    barrier(dist)
    return BaseModel(SCRATCH, str(folder), preset=preset or "text")


def _anchor_pairs(config: TrainConfig, docs: list[Document]) -> list[LabeledPair]:
    """The pseudo-query pairs of ``--anchor sentence``, ``title``, ``conclusion``, ``title+sentence`` or
    ``title+conclusion`` (titles first).

    Raises RetrieverError when the corpus yields no pair of a requested kind.
    """
    from training.ict import cited_pairs, conclusion_pairs, sentence_pairs, title_pairs

    labeled: list[LabeledPair] = []
    if "title" in config.anchor:
        titles = title_pairs(docs, min_words=config.sentence.min_words)
        if not titles:
            raise RetrieverError(f"--anchor {config.anchor}: no document has a title or first sentence of >= "
                                 f"{config.sentence.min_words} words and a body")
        labeled += titles
    if "sentence" in config.anchor:
        sentences = sentence_pairs(docs, config.sentence, seed=config.seed, untitled=config.untitled_keys)
        if not sentences:
            raise RetrieverError(f"--anchor {config.anchor}: no document has two sentences to make a pair from")
        labeled += sentences
    if "conclusion" in config.anchor:
        conclusions = conclusion_pairs(docs, min_words=config.sentence.min_words, untitled=config.untitled_keys)
        if not conclusions:
            raise RetrieverError(f"--anchor {config.anchor}: no document has three sentences and a concluding one of >= "
                                 f"{config.sentence.min_words} words")
        labeled += conclusions
    if "cited" in config.anchor:
        asked = {pair.query for pair in labeled}  # a text another anchor asks already is not asked twice
        cited = [pair for pair in cited_pairs(docs, per_document=config.sentence.per_document,
                                                     min_words=config.sentence.min_words) if pair.query not in asked]
        if not cited:
            raise RetrieverError(f"--anchor {config.anchor}: no document has a sentence of >= {config.sentence.min_words} words")
        labeled += cited
    return labeled


def _read_urls(config: TrainConfig):
    from indexing.url_readers import read_urls

    return read_urls(config.data)


def _build_data(config: TrainConfig, tokenizer, base: BaseModel, out: Path, dist: DistInfo, device: str,
                labeled: list[LabeledPair] | None):
    from training.data import CropData, PairData, chunk_corpus, token_space

    if config.objective == "url":
        from training.url_data import UrlData, tokenize_labeled_urls, tokenize_urls, url_classes

        room = config.max_tokens - 2  # [CLS] ... [SEP]
        mask = config.mlm.probability if config.mlm else 0.0
        if config.label_field is None:
            urls = tokenize_urls((doc.text for doc in _read_urls(config)), tokenizer, max_length=room)
            return UrlData(urls, token_space(tokenizer), mask=mask, seed=config.seed)
        import numpy as np

        pairs, names = url_classes(_read_urls(config), config.label_field)
        urls, groups = tokenize_labeled_urls(pairs, tokenizer, max_length=room)
        log.info("supervised contrastive on %s: %s", config.label_field, dict(zip(names, np.bincount(groups).tolist())))
        return UrlData(urls, token_space(tokenizer), mask=mask, seed=config.seed, groups=groups)
    if config.objective == "sql":
        from training.sql_data import build_sql_data

        return build_sql_data(config, tokenizer)
    if config.objective == "code":
        from training.code_data import build_code_data

        return build_code_data(config, tokenizer, base, out, dist)
    if config.objective == "contriever":
        from indexing.readers import read_corpus

        docs = read_corpus([Path(p) for p in config.data])
        if config.anchor == "crop":
            chunks = chunk_corpus(docs, tokenizer, config.crop.chunk_tokens)
            return CropData(chunks, token_space(tokenizer), config.crop, seed=config.seed)
        docs = list(docs)  # read once: pairs of two kinds and the keys below all point back at the documents
        labeled = _anchor_pairs(config, docs)
        if config.query_only and not config.untitled_keys:  # documents keep their indexed embeddings: a pair's positive is its whole source document
            whole = {doc.id: doc.full_text() for doc in docs}
            labeled = [pair if pair.teacher_positive else replace(pair, positive=whole[pair.positive_id]) for pair in labeled]
    if config.objective == "crosslingual":
        from indexing.readers import read_corpus
        from training.transliteration import TransliterationData, build_units

        options = config.transliteration
        units = build_units(read_corpus([Path(p) for p in config.data]), max_chars=options.max_chars, group_field=options.group_field)
        return TransliterationData(units, tokenizer, translation_ratio=options.translation_ratio, max_tokens=config.max_tokens,
                                   seed=config.seed, query_prefix=base.query_prefix, document_prefix=base.document_prefix,
                                   teacher=config.teacher_keys, anchor_ratio=options.anchor_ratio)
    from training.pairs import mine_negatives

    assert labeled is not None
    pairs, mined = mine_negatives(labeled, config.negatives, device=device)
    if config.untitled_keys:  # anchor pairs' positives are bodies already; the mined negatives become bodies too
        from training.pairs import untitled_negatives

        pairs = untitled_negatives(pairs, mined, {doc.id: doc.text for doc in docs})
    if mined and dist.is_main:
        with open(out / MINED_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in mined)
    return PairData(pairs, tokenizer, per_query=config.negatives.per_query, max_tokens=config.max_tokens,
                    seed=config.seed, query_prefix=base.query_prefix, document_prefix=base.document_prefix)
