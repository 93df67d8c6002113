"""Weight-space merging of fine-tuned models of one architecture (WiSE-FT / model soups: Wortsman et al., 2022).

Two fine-tunings of one base often trade one skill for another (e.g. the cross-lingual symmetric contrast gains
romanized retrieval and loses some native retrieval; the teacher-keys recipe keeps native retrieval but gains less).
A weighted average of their parameters usually lands between them, often above the straight line joining their
scores, with no further training. Written by hand: a linear average of two state dicts is a few lines, and the
merge libraries (mergekit) target decoder LLMs and YAML recipes rather than sentence-transformers folders.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from indexing.errors import ModelError, RetrieverError

log = logging.getLogger(__name__)

MERGE_FILE = "merge.json"
WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MergeResult:
    out: Path
    models: list[str]
    weights: list[float]
    tensors: int


def merge_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """The weights of ``count`` models: equal when ``weights`` is None; otherwise one finite weight per model,
    summing to 1 (a negative weight extrapolates, as in task arithmetic).

    Raises:
        RetrieverError: fewer than two models, a count mismatch, a non-finite weight or a sum other than 1.
    """
    if count < 2:
        raise RetrieverError(f"merging needs at least two models (got {count})")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise RetrieverError(f"--weights: {len(weights)} weights for {count} models")
    if not all(math.isfinite(w) for w in weights):
        raise RetrieverError(f"--weights: not finite: {weights}")
    if abs(sum(weights) - 1.0) > WEIGHT_TOLERANCE:
        raise RetrieverError(f"--weights must sum to 1 (got {sum(weights):g})")
    return weights


def merge_models(models: Sequence[str], out: Path, *, weights: Sequence[float] | None = None,
                 overwrite: bool = False) -> MergeResult:
    """Write to ``out`` a sentence-transformers folder whose every parameter is ``sum_i weights[i] * param_i``.

    ``models`` are aliases, folders or hub ids (resolved like ``--base``). The modules, tokenizer and model card
    (preset and prefixes) are the first model's; ``merge.json`` records the models and weights. Floating-point
    tensors are averaged in float32 and stored in their own dtype; integer buffers (position ids) must be equal.

    Raises:
        RetrieverError: bad weights, ``out`` exists without ``overwrite``, or the models differ in a tensor's name,
            shape or (integer) value.
        ModelError: a model cannot be resolved or loaded.
    """
    import torch

    from training.export import resolve_base, save_model_folder

    weights = merge_weights(len(models), weights)
    out = _writable(out, overwrite)
    bases = [resolve_base(str(m)) for m in models]
    if len({b.preset for b in bases}) > 1:
        log.warning("the models have different presets (%s); the merge keeps the first one's (%s)",
                    ", ".join(str(b.preset) for b in bases), bases[0].preset)
    merged = _load(bases[0].path)
    state = merged.state_dict()  # float entries are replaced by the averages below; integer ones stay as they are
    sums = {name: tensor.float() * weights[0] for name, tensor in state.items() if tensor.is_floating_point()}
    for base, weight in zip(bases[1:], weights[1:]):
        other = _load(base.path).state_dict()
        if other.keys() != state.keys():
            missing = sorted(set(state) ^ set(other))[:3]
            raise RetrieverError(f"{base.name}: not the architecture of {bases[0].name} (tensors differ: {missing})")
        for name, tensor in other.items():
            if tensor.shape != state[name].shape:
                raise RetrieverError(f"{base.name}: tensor {name} has shape {tuple(tensor.shape)}, "
                                     f"{bases[0].name} has {tuple(state[name].shape)}")
            if name in sums:
                sums[name] += tensor.float() * weight
            elif not torch.equal(tensor, state[name]):
                raise RetrieverError(f"{base.name}: integer tensor {name} differs from {bases[0].name}'s")
        del other
    for name, total in sums.items():
        state[name] = total.to(state[name].dtype)
    merged.load_state_dict(state)
    record = {"models": [b.name for b in bases], "paths": [str(b.path) for b in bases], "weights": weights}
    save_model_folder(merged, out, base=bases[0], extra_files={MERGE_FILE: json.dumps(record, indent=2) + "\n"})
    log.info("merged %d models into %s (weights %s)", len(bases), out, weights)
    return MergeResult(out, [b.name for b in bases], weights, len(sums))


def _writable(out: Path, overwrite: bool) -> Path:
    """``out`` as a Path; raises RetrieverError when it exists and may not be replaced."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise RetrieverError(f"{out} exists (pass --overwrite to replace it)")
    return out


def _load(path: str):
    """A SentenceTransformer from a folder or hub id, its modules as saved (raises ModelError)."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(path), device="cpu")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from None


def merge_query_route(model: str, out: Path, *, weight: float, overwrite: bool = False) -> MergeResult:
    """WiSE-FT for a query-only model (``--query-only``): write to ``out`` the model whose query route is
    ``weight * query + (1 - weight) * document``, parameter by parameter; the document route (the frozen base the
    query route was trained from) and the rest of the folder stay as they are, so the base's index still serves it.

    ``weight`` 1 is the trained model, 0 the base; one in (0, 1) interpolates. ``merge.json`` records the weight.

    Raises:
        RetrieverError: ``weight`` outside [0, 1], ``out`` exists without ``overwrite``, or ``model`` is not an
            asymmetric model with ``query`` and ``document`` routes of one architecture.
        ModelError: the model cannot be resolved or loaded.
    """
    from sentence_transformers.sentence_transformer.modules import Router

    from training.export import resolve_base, save_model_folder

    if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise RetrieverError(f"query-route merge weight must be in [0, 1] (got {weight})")
    out = _writable(out, overwrite)
    base = resolve_base(str(model))
    merged = _load(base.path)
    router = merged[0] if len(merged) else None
    if not isinstance(router, Router) or set(router.sub_modules) != {"query", "document"}:
        raise RetrieverError(f"{model}: not a query-only model (no query and document routes to merge)")
    query, document = router.sub_modules["query"], router.sub_modules["document"]
    ours, theirs = query.state_dict(), document.state_dict()
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        raise RetrieverError(f"{model}: its query and document routes are not one architecture")
    averaged = {name: (weight * tensor.float() + (1.0 - weight) * theirs[name].float()).to(tensor.dtype)
                for name, tensor in ours.items() if tensor.is_floating_point()}
    query.load_state_dict({**ours, **averaged})
    record = {"models": [base.name], "paths": [str(base.path)], "query_route_weight": weight}
    save_model_folder(merged, out, base=base, extra_files={MERGE_FILE: json.dumps(record, indent=2) + "\n"})
    log.info("merged the query route of %s with its document route into %s (weight %g)", model, out, weight)
    return MergeResult(out, [f"{base.name} (query route)", f"{base.name} (document route)"], [weight, 1.0 - weight],
                       len(averaged))
