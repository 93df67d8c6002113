"""The training loop shared by every objective: contrastive InfoNCE over (query, key[, negatives]) examples.

One optimizer step = ``accumulate`` forward passes of ``batch_size`` examples (over all processes). Keys come
from the trained encoder (in-batch negatives, gradients on both sides) or, with a queue, from a momentum key
encoder (MoCo). Checkpoints hold everything needed to continue exactly (see :mod:`training.checkpoint`).

Two general extensions: an *auxiliary loss* (a module called on the query side's token embeddings and the
examples' ``query_labels``, e.g. masked-language modelling, added with its ``weight``), and *adversarial
training* (``config.adversarial > 0``: after the clean pass, the input embeddings are pushed by
``adversarial`` along their normalized loss gradient, per example, and a second pass adds its gradients; FGM).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from indexing.errors import RetrieverError
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.data import SpecialTokens, TrainingData, collate, collate_labels
from training.dev_eval import DevSet
from training.distributed import DistInfo, barrier, broadcast_object, gather, gather_objects
from training.export import BaseModel, publish, save_model_folder
from training.freezing import freeze_bottom_layers
from training.losses import info_nce, listwise_distillation, supervised_info_nce
from training.moco import KeyQueue, make_key_encoder, momentum_update

log = logging.getLogger(__name__)

HISTORY_FILE = "training.json"


@dataclass(frozen=True)
class TrainEvent:
    """What the loop reports to its callback (the CLI draws a progress bar from these)."""

    kind: Literal["start", "step", "eval", "checkpoint", "done"]
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    examples_per_s: float | None = None
    tokens_per_s: float | None = None
    metrics: dict[str, float] | None = None
    improved: bool = False
    path: str | None = None


@dataclass
class TrainResult:
    """How a run ended. ``best_*`` are set when an evaluation set was given."""

    out: Path
    steps_done: int
    finished: bool
    last_loss: float | None
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False  # ended by ``time_limit_s`` before ``config.steps``; the model was exported all the same


Callback = Callable[[TrainEvent], None]


def warmup_linear(step: int, *, warmup: int, total: int) -> float:
    """LR factor of 0-based step ``step``: ``(step+1)/warmup`` while warming up, then linear decay towards 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class _Dual(nn.Module):
    """Both sides (and the auxiliary loss) through one module call, so DDP sees one forward per backward."""

    def __init__(self, encoder: nn.Module, auxiliary: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.auxiliary = auxiliary

    def forward(self, queries: dict[str, Tensor], keys: dict[str, Tensor] | None,
                labels: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        features = self.encoder(dict(queries))
        q = features["sentence_embedding"]  # (n, d)
        k = self.encoder(dict(keys))["sentence_embedding"] if keys is not None else None  # (n * (1 + h), d)
        aux = self.auxiliary(features, labels) if self.auxiliary is not None and labels is not None else None  # ()
        return q, k, aux


class _EmbeddingPerturbation:
    """Forward hook on the input embedding: records its outputs (keeping their gradients), or adds deltas to them."""

    def __init__(self, embedding: nn.Module):
        self.outputs: list[Tensor] = []
        self.deltas: list[Tensor] | None = None
        self.handle = embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        if self.deltas is not None:
            return self._add(output)
        if output.requires_grad:
            output.retain_grad()
            self.outputs.append(output)
        return None

    def _add(self, output: Tensor) -> Tensor:
        assert self.deltas is not None
        delta = self.deltas.pop(0)
        return output + delta.to(output.dtype)

    def prepare(self, epsilon: float) -> None:
        """Turn the recorded outputs' gradients into deltas of norm ``epsilon`` per example (rows of dim 0)."""
        deltas = []
        for output in self.outputs:
            grad = output.grad if output.grad is not None else torch.zeros_like(output)  # (n, t, d)
            norm = grad.float().flatten(1).norm(dim=1).clamp_min(1e-12)  # (n,)
            deltas.append((epsilon * grad.float() / norm.view(-1, *([1] * (grad.ndim - 1)))).detach())
        self.outputs, self.deltas = [], deltas

    def reset(self) -> None:
        self.outputs, self.deltas = [], None

    def remove(self) -> None:
        self.handle.remove()


class Trainer:
    """Runs one configured training of ``encoder`` (a SentenceTransformer) on ``data``, writing to ``out``."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        encoder: nn.Module,
        base: BaseModel,
        out: Path,
        *,
        device: str,
        precision: str,
        dist: DistInfo = DistInfo(),
        devset: DevSet | None = None,
        extra_files: dict[str, str] | None = None,
        auxiliary: nn.Module | None = None,
    ):
        if config.batch_size % dist.world_size:
            raise RetrieverError(f"--batch-size {config.batch_size} must be a multiple of the {dist.world_size} processes")
        self.config, self.data, self.base, self.out, self.dist, self.devset = config, data, base, out, dist, devset
        self.device, self.precision = device, precision
        self.extra_files = extra_files or {}
        self.root = out / ckpt.CHECKPOINTS
        self.local_batch = config.batch_size // dist.world_size
        self.special = SpecialTokens.of(encoder.tokenizer)
        self.encoder = encoder.to(device)
        self.auxiliary = auxiliary.to(device) if auxiliary is not None else None
        embedding = encoder[0].auto_model.get_input_embeddings()
        if config.freeze_embeddings or config.freeze_layers:
            embedding.weight.requires_grad_(False)
        if config.freeze_layers:
            freeze_bottom_layers(encoder[0].auto_model, config.freeze_layers)
        if config.adversarial and (config.freeze_embeddings or config.freeze_layers):
            raise RetrieverError("--adversarial needs trainable input embeddings (drop --freeze-embeddings / --freeze-layers)")
        self.key_encoder: nn.Module | None = None
        self.frozen_keys = config.teacher_keys or config.query_only
        if self.frozen_keys:
            self.key_encoder = make_key_encoder(encoder).eval()  # the frozen base model: fixed targets, no dropout
        elif config.queue_size:
            self.key_encoder = make_key_encoder(encoder).train()  # dropout on keys, as Contriever
        # A frozen encoder in eval mode embeds a text alike every time: its keys are computed once per distinct
        # token sequence (hard negatives recur across epochs). Cleared when full (crops rarely repeat).
        self.key_cache: dict[tuple[int, ...], Tensor] = {}
        self.dev_documents: Tensor | None = None
        self.queue = KeyQueue(config.queue_size, encoder.get_embedding_dimension(), device=device) if config.queue_size else None
        self.averaged: AveragedModel | None = None
        if config.ema:  # an exponential moving average of the weights (torch's swa_utils): evaluated and exported
            self.averaged = AveragedModel(encoder, multi_avg_fn=get_ema_multi_avg_fn(config.ema))  # parameters only: constant buffers
            for param in self.averaged.parameters():
                param.requires_grad_(False)
        # after the key encoder and the average are copied, so that the copies carry no hook
        self.perturbation = _EmbeddingPerturbation(embedding) if config.adversarial else None
        dual: nn.Module = _Dual(encoder, self.auxiliary)
        if dist.enabled:
            ids = [torch.device(device).index] if device.startswith("cuda") else None
            dual = nn.parallel.DistributedDataParallel(dual, device_ids=ids, find_unused_parameters=True)
        self.dual = dual
        trainable = [p for p in encoder.parameters() if p.requires_grad]
        if self.auxiliary is not None:
            known = {id(p) for p in encoder.parameters()}
            trainable += [p for p in self.auxiliary.parameters() if p.requires_grad and id(p) not in known]
        groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
                  {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        schedule = functools.partial(warmup_linear, warmup=config.warmup, total=config.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, int] | None = None

    # --- public -------------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, stop_after: int | None = None, time_limit_s: float | None = None,
            callback: Callback | None = None) -> TrainResult:
        """Train until ``config.steps`` (or ``stop_after`` more steps), checkpointing and evaluating as configured.

        ``time_limit_s`` (wall-clock seconds of this call, the first evaluation included) ends the run after the step
        that crosses it: the last step is evaluated, checkpointed (``resume`` continues it) and exported like a
        finished run, so a time budget always leaves a usable model. Under DDP rank 0's clock decides for every rank.
        An interrupted run (KeyboardInterrupt, single process) leaves a checkpoint of its last finished step.
        """
        clock = time.monotonic()
        emit = callback or (lambda event: None)
        cfg = self.config
        if resume and ckpt.latest_checkpoint(self.root) is not None:
            self._restore()
        else:
            random.seed(cfg.seed)
            np.random.seed(cfg.seed)
            torch.manual_seed(cfg.seed + self.dist.rank)
        emit(TrainEvent("start", self.step, cfg.steps))
        if self.devset is not None and self.step == 0 and not self.history:
            self._evaluate(emit)
        last_loss: float | None = None
        target = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        self.encoder.train()
        timed_out = False
        try:
            while self.step < target and not timed_out:
                started = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                last_loss, tokens = self._train_step()
                self.step += 1
                seconds = time.perf_counter() - started
                examples = cfg.batch_size * cfg.accumulate
                emit(TrainEvent("step", self.step, cfg.steps, loss=last_loss, lr=lr,
                                examples_per_s=examples / seconds, tokens_per_s=tokens / seconds))
                if self.devset is not None and cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                    self._evaluate(emit)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < target:
                    emit(TrainEvent("checkpoint", self.step, cfg.steps, path=str(self._save())))
                if time_limit_s is not None and self.step < cfg.steps:
                    timed_out = self._out_of_time(clock, time_limit_s)
        except KeyboardInterrupt:
            if not self.dist.enabled and self.step > 0:
                log.warning("interrupted: saving a checkpoint of step %d", self.step)
                self._save()
            raise
        finished = self.step >= cfg.steps
        if timed_out:
            log.info("time limit of %.0f s reached at step %d of %d", time_limit_s, self.step, cfg.steps)
        ended = finished or timed_out  # a run that ends (not one paused by stop_after) is evaluated and exported
        if ended and self.devset is not None and (not self.history or self.history[-1]["step"] != self.step):
            self._evaluate(emit)
        emit(TrainEvent("checkpoint", self.step, cfg.steps, path=str(self._save())))
        if ended:
            self._export()
        emit(TrainEvent("done", self.step, cfg.steps, loss=last_loss))
        best_step, best_metrics = None, None
        if self.best is not None:
            best_step = self.best[1]
            best_metrics = next(h["metrics"] for h in self.history if h["step"] == best_step)
        return TrainResult(self.out, self.step, finished, last_loss, best_step, best_metrics, list(self.history),
                           timed_out=timed_out)

    def _out_of_time(self, clock: float, limit_s: float) -> bool:
        """Whether ``limit_s`` seconds have passed since ``clock`` (``time.monotonic``); rank 0 decides for all."""
        over = time.monotonic() - clock >= limit_s
        return bool(broadcast_object(over, self.dist)) if self.dist.enabled else over

    # --- one optimizer step -----------------------------------------------------------------------
    def _train_step(self) -> tuple[float, int]:
        """Forward/backward ``accumulate`` batches and step the optimizer. Returns (mean loss, tokens seen globally)."""
        cfg = self.config
        if self.key_encoder is not None and not self.frozen_keys:
            momentum_update(self.key_encoder, self.encoder, cfg.momentum)
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for micro in range(cfg.accumulate):
            position = (self.step * cfg.accumulate + micro) * cfg.batch_size + self.dist.rank * self.local_batch
            examples = self.data.examples(position, self.local_batch)
            queries = self._to_device(collate([e.query for e in examples], self.special, cfg.max_tokens))
            key_ids = [e.key for e in examples] + [n for e in examples for n in e.negatives]
            keys = self._to_device(collate(key_ids, self.special, cfg.max_tokens))
            labels = None
            if self.auxiliary is not None and all(e.query_labels is not None for e in examples):
                labels = collate_labels([e.query_labels for e in examples], self.special, cfg.max_tokens,
                                        queries["input_ids"].shape[1]).to(self.device)
            groups = None
            if all(e.group is not None for e in examples):
                groups = torch.tensor([e.group for e in examples], dtype=torch.long, device=self.device)  # (n,)
            teacher = None
            if examples and all(e.teacher is not None for e in examples):
                teacher = torch.tensor([e.teacher for e in examples], dtype=torch.float32, device=self.device)  # (n, 1 + h)
            tokens += int(queries["attention_mask"].sum() + keys["attention_mask"].sum()) * self.dist.world_size
            last = micro == cfg.accumulate - 1
            passes = 2 if self.perturbation is not None else 1
            for attempt in range(passes):  # the clean pass, then (adversarial training) the perturbed one
                final = last and attempt == passes - 1
                sync = contextlib.nullcontext() if final or not self.dist.enabled else self.dual.no_sync()
                with sync:
                    loss, positives = self._forward_loss(queries, keys, labels, groups, teacher, key_ids)
                    self.scaler.scale(loss / cfg.accumulate).backward()
                if attempt == 0:
                    clean, clean_positives = loss.item(), positives
                    if self.perturbation is not None:
                        self.perturbation.prepare(cfg.adversarial)
            if self.perturbation is not None:
                self.perturbation.reset()
            if self.queue is not None:
                self.queue.enqueue(clean_positives)
            total += clean / cfg.accumulate
        self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.encoder)
        return total, tokens

    def _forward_loss(self, queries: dict[str, Tensor], keys: dict[str, Tensor], labels: Tensor | None,
                      groups: Tensor | None, teacher: Tensor | None,
                      key_ids: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Contrastive loss (+ weighted auxiliary loss) of one batch, and the gathered positives for the queue."""
        with self._autocast():
            q, k, aux = self.dual(queries, None if self.key_encoder is not None else keys, labels)
            if self.key_encoder is not None:
                with torch.no_grad():
                    if self.frozen_keys:
                        k = self._frozen_key_embeddings(key_ids)  # (n * (1 + h), d)
                    else:
                        k = self.key_encoder(dict(keys))["sentence_embedding"]  # (n * (1 + h), d)
        loss, positives = self._loss(q.float(), k.float(), groups, teacher)
        if aux is not None:
            loss = loss + self.auxiliary.weight * aux.float()
        return loss, positives

    def _loss(self, q: Tensor, k: Tensor, groups: Tensor | None = None,
              teacher: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Global InfoNCE of local ``q`` (n, d) against keys ``k`` (n * (1 + h), d) = positives then negatives;
        with class ids ``groups`` (n,), supervised contrastive: keys of the same class are positives too.
        With a ``teacher`` ``(n, 1 + h)`` (scores of each query's positive and own negatives), the hard negatives
        leave the InfoNCE (the teacher grades them; some are near-positives) and a listwise KL to the teacher
        over each query's own ``1 + h`` keys is added with weight ``negatives.distill_weight``.

        Returns the loss and the gathered positives ``(world * n, d)`` (detached) for the queue.
        """
        n = q.shape[0]
        all_q = gather(q, self.dist)  # (world * n, d)
        all_pos = gather(k[:n], self.dist)  # (world * n, d)
        extras = []
        distill = None
        if teacher is not None:
            negatives = k[n:].view(n, -1, k.shape[1])  # (n, h, d): example i's negatives are rows n + i*h ...
            own = torch.cat([(q * k[:n]).sum(1, keepdim=True), torch.einsum("nd,nhd->nh", q, negatives)], 1)  # (n, 1 + h)
            options = self.config.negatives
            distill = listwise_distillation(gather(own, self.dist), gather(teacher, self.dist),
                                            temperature=self.config.temperature,
                                            teacher_temperature=options.teacher_temperature) * options.distill_weight
        elif k.shape[0] > n:
            extras.append(gather(k[n:], self.dist))  # (world * n * h, d)
        if self.queue is not None and self.queue.filled:
            extras.append(self.queue.negatives())  # (filled, d)
        extra = torch.cat(extras) if extras else None
        if groups is not None:
            loss = supervised_info_nce(all_q, all_pos, gather(groups, self.dist), temperature=self.config.temperature,
                                       extra_negatives=extra)
        else:
            loss = info_nce(all_q, all_pos, temperature=self.config.temperature, extra_negatives=extra)
        if distill is not None:
            loss = loss + distill
        return loss, all_pos.detach()

    KEY_CACHE_SIZE = 200_000
    """Most key embeddings held by the frozen-key cache (200k x 384 float32 = 300 MB)."""

    def _frozen_key_embeddings(self, key_ids: list[list[int]]) -> Tensor:
        """The frozen key encoder's embeddings ``(len(key_ids), d)`` of token id lists, through the cache."""
        assert self.key_encoder is not None
        wanted = [self._key_of(ids) for ids in key_ids]
        missing = list(dict.fromkeys(w for w in wanted if w not in self.key_cache))
        if len(self.key_cache) + len(missing) > self.KEY_CACHE_SIZE:
            self.key_cache.clear()
        if missing:
            batch = self._to_device(collate([list(m) for m in missing], self.special, self.config.max_tokens))
            vectors = self.key_encoder(batch)["sentence_embedding"].float()  # (m, d)
            self.key_cache.update(zip(missing, vectors))
        return torch.stack([self.key_cache[w] for w in wanted])

    def _key_of(self, ids: list[int]) -> tuple[int, ...]:
        """The cache key of a token id list: the ids that :func:`collate` keeps."""
        return tuple(ids[: self.special.room(self.config.max_tokens)])

    def prefill_keys(self, texts: list[str], vectors: np.ndarray) -> int:
        """Seed the frozen-key cache with known embeddings ``vectors`` ``(n, d)`` of ``texts`` (as the data feeds
        them, prefixes included), e.g. read back from an index built with the base model; the evaluation corpus
        is looked up there too. Returns the number of cached keys. Only for frozen keys (``query_only``)."""
        from training.data import tokenize_texts

        if not self.config.query_only:
            raise RetrieverError("known key embeddings apply to --query-only runs only")
        tensor = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)  # (n, d)
        ids = tokenize_texts(self.encoder.tokenizer, texts, max_length=self.config.max_tokens)
        self.key_cache.update(zip(map(self._key_of, ids), tensor))
        if self.devset is not None:
            by_text = dict(zip(texts, tensor.cpu()))
            if all(text in by_text for text in self.devset.doc_texts):
                self.dev_documents = torch.stack([by_text[text] for text in self.devset.doc_texts])
        return len(self.key_cache)

    @property
    def evaluated(self) -> nn.Module:
        """The trained encoder as evaluated and exported: the moving average of its weights with ``--ema``, else itself."""
        return self.averaged.module if self.averaged is not None else self.encoder

    def output_model(self) -> nn.Module:
        """The model to save: the (averaged) encoder, or (``query_only``) an asymmetric model whose query route is
        it and whose document route is the frozen base (see :func:`training.export.asymmetric_model`)."""
        if not self.config.query_only:
            return self.evaluated
        from training.export import asymmetric_model

        assert self.key_encoder is not None
        return asymmetric_model(self.evaluated, self.key_encoder)

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    def _to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # --- evaluation, checkpoints, export --------------------------------------------------------------
    def _evaluate(self, emit: Callback) -> None:
        """Score the current model on the dev set (rank 0) and keep it as ``checkpoints/best`` when it improves."""
        assert self.devset is not None
        if self.dist.is_main:
            started = time.perf_counter()
            documents = None
            if self.config.query_only:  # the documents keep the base model's embeddings: encoded once
                assert self.key_encoder is not None
                if self.dev_documents is None:
                    self.dev_documents = self.devset.encode_documents(self.key_encoder)
                documents = self.dev_documents
            metrics = self.devset.score(self.evaluated, documents=documents)
            value = metrics[self.devset.measure]
            improved = self.best is None or value > self.best[0]
            if improved:
                self.best = (value, self.step)
                save_model_folder(self.output_model(), self.root / "best", base=self.base, extra_files=self.extra_files)
            self.history.append({"step": self.step, "metrics": metrics, "seconds": round(time.perf_counter() - started, 1)})
            log.info("step %d: %s on %s = %.4f%s", self.step, self.devset.measure, self.devset.name, value, " (best)" if improved else "")
            emit(TrainEvent("eval", self.step, self.config.steps, metrics=metrics, improved=improved))
        barrier(self.dist)

    def _save(self) -> Path:
        """Write a checkpoint (rank 0); every process takes part in gathering the RNG states."""
        rng_tensors, rng_meta = ckpt.capture_rng()
        everyone = gather_objects((rng_tensors, rng_meta), self.dist)
        path = self.root / f"step-{self.step:07d}"
        if self.dist.is_main:
            optim_tensors, optim_meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
            state: dict[str, Tensor] = {}
            for rank, (tensors, _) in enumerate(everyone):
                state.update({f"rng.{rank}.{k}": v for k, v in tensors.items()})
            queue_meta = None
            if self.queue is not None:
                queue_tensors, queue_meta = self.queue.state()
                state.update(queue_tensors)
            models = self._models()
            meta = {
                "step": self.step,
                "position": self.step * self.config.accumulate * self.config.batch_size,
                "world_size": self.dist.world_size,
                "config": self.config.to_dict(),
                "optimizer": optim_meta,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": [m for _, m in everyone],
                "queue": queue_meta,
                "history": self.history,
                "best": list(self.best) if self.best else None,
            }
            path = ckpt.save_checkpoint(self.root, self.step, ckpt.Checkpoint(models, {"optimizer": optim_tensors, "state": state}, meta),
                                        keep=self.config.keep_checkpoints)
        barrier(self.dist)
        return path

    def _restore(self) -> None:
        folder = ckpt.latest_checkpoint(self.root)
        assert folder is not None
        meta = ckpt.read_meta(folder)
        saved = TrainConfig.from_dict(meta["config"]).resume_key()
        wanted = self.config.resume_key()
        if saved != wanted:
            differ = sorted(k for k in wanted if saved.get(k) != wanted.get(k))
            raise RetrieverError(f"--resume: the checkpoint in {folder} was made with other settings ({', '.join(differ)})")
        loaded = ckpt.load_checkpoint(folder, self._models(), device=self.device)
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(loaded.tensors["optimizer"], meta["optimizer"]))
        self.scheduler.load_state_dict(meta["scheduler"])
        if meta["scaler"]:
            self.scaler.load_state_dict(meta["scaler"])
        state = loaded.tensors["state"]
        if self.queue is not None:
            self.queue.load({"queue.keys": state["queue.keys"]}, meta["queue"])
        rank = self.dist.rank if self.dist.rank < len(meta["rng"]) else 0
        if meta["world_size"] != self.dist.world_size:
            log.warning("checkpoint made with %d processes, resumed with %d: dropout randomness differs", meta["world_size"], self.dist.world_size)
        prefix = f"rng.{rank}."
        ckpt.restore_rng({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, meta["rng"][rank])
        self.step = int(meta["step"])
        self.history = list(meta["history"])
        self.best = (float(meta["best"][0]), int(meta["best"][1])) if meta["best"] else None
        log.info("resumed from %s at step %d", folder, self.step)

    def _models(self) -> dict[str, nn.Module]:
        """The modules a checkpoint holds: the encoder, the MoCo key encoder, the auxiliary head, the weight average."""
        models: dict[str, nn.Module] = {"model": self.encoder}
        if self.key_encoder is not None:
            models["key_model"] = self.key_encoder
        if self.auxiliary is not None:
            models["auxiliary"] = self.auxiliary
        if self.averaged is not None:
            models["averaged_model"] = self.averaged
        return models

    def _export(self) -> None:
        """Publish the output model into ``out``: the best evaluated step, else the final weights (rank 0)."""
        if self.dist.is_main:
            source = self.root / "best" if self.best is not None else save_model_folder(
                self.output_model(), self.root / "final", base=self.base, extra_files=self.extra_files)
            publish(source, self.out)
            summary = {"steps": self.step, "best": {"step": self.best[1], "value": self.best[0]} if self.best else None,
                       "metric": self.devset.measure if self.devset else None, "history": self.history}
            (self.out / HISTORY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        barrier(self.dist)
