"""The training loop shared by every objective: contrastive InfoNCE over (query, key[, negatives]) examples.

One optimizer step = ``accumulate`` forward passes of ``batch_size`` examples (over all processes). Keys come
from the trained encoder (in-batch negatives, gradients on both sides) or, with a queue, from a momentum key
encoder (MoCo). Checkpoints hold everything needed to continue exactly (see :mod:`training.trainer_checkpoint`).

An *auxiliary loss* (a module called on the query side's token embeddings and the examples' ``query_labels``,
e.g. masked-language modelling) is added with its ``weight``. The optional behaviours (freezing, adversarial
training, MoCo or frozen keys, the queue, a weight average) are parts (:mod:`training.trainer_parts`) composed
from the configuration; the loop calls their hooks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from indexing.errors import RetrieverError
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.data import Example, SpecialTokens, TrainingData, collate, collate_labels
from training.dev_eval import DevSet
from training.distributed import DistInfo, barrier, broadcast_object, gather
from training.events import HISTORY_FILE, Callback, TrainEvent, TrainResult
from training.export import BaseModel, publish, save_model_folder
from training.losses import info_nce, listwise_distillation, supervised_info_nce
from training.trainer_checkpoint import restore_trainer, save_trainer
from training.trainer_parts import FrozenKeysPart, TrainerPart, build_parts

log = logging.getLogger(__name__)

__all__ = ["HISTORY_FILE", "Callback", "TrainEvent", "TrainResult", "Trainer", "warmup_linear"]  # events re-exported


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


class _Batch(NamedTuple):
    """One micro-batch on the device: ``n`` examples with ``h`` negatives each."""

    queries: dict[str, Tensor]  # collated, (n, t)
    keys: dict[str, Tensor]  # collated positives then negatives, (n * (1 + h), t)
    key_ids: list[list[int]]  # the keys' token ids, uncollated
    labels: Tensor | None  # (n, t) auxiliary-loss targets of the queries
    groups: Tensor | None  # (n,) class ids: same class = positives
    teacher: Tensor | None  # (n, 1 + h) teacher scores of each query's own keys


class Trainer:
    """Runs one configured training of ``encoder`` (a SentenceTransformer) on ``data``, writing to ``out``.

    The optional behaviours the config asks for are ``parts`` (:func:`training.trainer_parts.build_parts`), set up
    here in order; ``keys`` is the one that embeds keys (a momentum or frozen key encoder), if any.
    """

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
        self.parts: list[TrainerPart] = build_parts(config, special=self.special, device=device)
        for part in self.parts:
            part.setup(encoder)
        self.keys: TrainerPart | None = next((part for part in self.parts if part.embeds_keys), None)
        dual: nn.Module = _Dual(encoder, self.auxiliary)
        if dist.enabled:
            ids = [torch.device(device).index] if device.startswith("cuda") else None
            dual = nn.parallel.DistributedDataParallel(dual, device_ids=ids, find_unused_parameters=True)
        self.dual = dual
        self.optimizer = torch.optim.AdamW(self._parameter_groups(), lr=config.lr)
        schedule = functools.partial(warmup_linear, warmup=config.warmup, total=config.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, int] | None = None

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups of the trainable parameters (encoder, then the auxiliary head's own): matrices with weight
        decay, biases and norms without."""
        trainable = [p for p in self.encoder.parameters() if p.requires_grad]
        if self.auxiliary is not None:
            known = {id(p) for p in self.encoder.parameters()}
            trainable += [p for p in self.auxiliary.parameters() if p.requires_grad and id(p) not in known]
        return [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": self.config.weight_decay},
                {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]

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
            restore_trainer(self)
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
                    emit(TrainEvent("checkpoint", self.step, cfg.steps, path=str(save_trainer(self))))
                if time_limit_s is not None and self.step < cfg.steps:
                    timed_out = self._out_of_time(clock, time_limit_s)
        except KeyboardInterrupt:
            if not self.dist.enabled and self.step > 0:
                log.warning("interrupted: saving a checkpoint of step %d", self.step)
                save_trainer(self)
            raise
        finished = self.step >= cfg.steps
        if timed_out:
            log.info("time limit of %.0f s reached at step %d of %d", time_limit_s, self.step, cfg.steps)
        ended = finished or timed_out  # a run that ends (not one paused by stop_after) is evaluated and exported
        if ended and self.devset is not None and (not self.history or self.history[-1]["step"] != self.step):
            self._evaluate(emit)
        emit(TrainEvent("checkpoint", self.step, cfg.steps, path=str(save_trainer(self))))
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
        for part in self.parts:
            part.before_step(self.encoder)
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for micro in range(cfg.accumulate):
            clean, seen = self._micro_batch(micro)
            total += clean / cfg.accumulate
            tokens += seen
        self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        for part in self.parts:
            part.after_step(self.encoder)
        return total, tokens

    def _micro_batch(self, micro: int) -> tuple[float, int]:
        """Forward/backward micro-batch ``micro`` of this step: the clean pass, then the parts' extra passes
        (adversarial). Returns the clean pass's loss and the tokens of the batch over all processes."""
        cfg = self.config
        position = (self.step * cfg.accumulate + micro) * cfg.batch_size + self.dist.rank * self.local_batch
        batch = self._batch(self.data.examples(position, self.local_batch))
        tokens = int(batch.queries["attention_mask"].sum() + batch.keys["attention_mask"].sum()) * self.dist.world_size
        passes = 1 + sum(part.extra_passes for part in self.parts)
        for attempt in range(passes):
            final = micro == cfg.accumulate - 1 and attempt == passes - 1
            sync = contextlib.nullcontext() if final or not self.dist.enabled else self.dual.no_sync()
            with sync:
                loss, positives = self._forward_loss(batch.queries, batch.keys, batch.labels, batch.groups,
                                                     batch.teacher, batch.key_ids)
                self.scaler.scale(loss / cfg.accumulate).backward()
            if attempt == 0:
                clean, clean_positives = loss.item(), positives
            for part in self.parts:
                part.after_pass(attempt)
        for part in self.parts:
            part.after_batch(clean_positives)
        return clean, tokens

    def _batch(self, examples: list[Example]) -> _Batch:
        """The tensors of ``examples`` on the device (see :class:`_Batch`)."""
        cfg = self.config
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
        return _Batch(queries, keys, key_ids, labels, groups, teacher)

    def _forward_loss(self, queries: dict[str, Tensor], keys: dict[str, Tensor], labels: Tensor | None,
                      groups: Tensor | None, teacher: Tensor | None,
                      key_ids: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Contrastive loss (+ weighted auxiliary loss) of one batch, and the gathered positives for the queue."""
        with self._autocast():
            q, k, aux = self.dual(queries, None if self.keys is not None else keys, labels)
            if self.keys is not None:
                with torch.no_grad():
                    k = self.keys.key_embeddings(keys, key_ids)  # (n * (1 + h), d)
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
        for part in self.parts:
            more = part.extra_negatives()  # the queue's keys (filled, d)
            if more is not None:
                extras.append(more)
        extra = torch.cat(extras) if extras else None
        if groups is not None:
            loss = supervised_info_nce(all_q, all_pos, gather(groups, self.dist), temperature=self.config.temperature,
                                       extra_negatives=extra)
        else:
            loss = info_nce(all_q, all_pos, temperature=self.config.temperature, extra_negatives=extra)
        if distill is not None:
            loss = loss + distill
        return loss, all_pos.detach()

    def prefill_keys(self, texts: list[str], vectors: np.ndarray) -> int:
        """Seed the frozen-key cache with known embeddings ``vectors`` ``(n, d)`` of ``texts`` (as the data feeds
        them, prefixes included), e.g. read back from an index built with the base model; the evaluation corpus
        is looked up there too. Returns the number of cached keys.

        Raises RetrieverError unless the run is ``query_only`` (its keys are the base model's document embeddings)."""
        keys = self.keys
        if not (self.config.query_only and isinstance(keys, FrozenKeysPart)):
            raise RetrieverError("known key embeddings apply to --query-only runs only")
        dev_texts = self.devset.doc_texts if self.devset is not None else None
        return keys.prefill(self.encoder.tokenizer, texts, vectors, dev_texts=dev_texts)

    @property
    def evaluated(self) -> nn.Module:
        """The trained encoder as evaluated and exported: the moving average of its weights with ``--ema``, else itself."""
        model = self.encoder
        for part in self.parts:
            model = part.evaluated(model)
        return model

    def output_model(self) -> nn.Module:
        """The model to save: the (averaged) encoder, or (``query_only``) an asymmetric model whose query route is
        it and whose document route is the frozen base (see :func:`training.export.asymmetric_model`)."""
        model = self.evaluated
        for part in self.parts:
            model = part.output_model(model)
        return model

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):  # fp16 only on CUDA (see training.run.resolve_precision)
            device_type = "cuda" if self.device.startswith("cuda") else "cpu"
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
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
            for part in self.parts:  # query_only: the documents keep the base model's embeddings
                documents = part.dev_documents(self.devset) if documents is None else documents
            metrics = self.devset.score(self.evaluated, documents=documents)
            value = metrics[self.devset.measure]
            improved = self.best is None or value > self.best[0]
            if improved:
                self.best = (value, self.step)
                save_model_folder(self.output_model(), self.root / "best", base=self.base, extra_files=self.extra_files,
                                  training={"precision": self.precision})
            self.history.append({"step": self.step, "metrics": metrics, "seconds": round(time.perf_counter() - started, 1)})
            log.info("step %d: %s on %s = %.4f%s", self.step, self.devset.measure, self.devset.name, value, " (best)" if improved else "")
            emit(TrainEvent("eval", self.step, self.config.steps, metrics=metrics, improved=improved))
        barrier(self.dist)

    def _export(self) -> None:
        """Publish the output model into ``out``: the best evaluated step, else the final weights (rank 0)."""
        if self.dist.is_main:
            source = self.root / "best" if self.best is not None else save_model_folder(
                self.output_model(), self.root / "final", base=self.base, extra_files=self.extra_files,
                training={"precision": self.precision})
            publish(source, self.out)
            summary = {"steps": self.step, "best": {"step": self.best[1], "value": self.best[0]} if self.best else None,
                       "metric": self.devset.measure if self.devset else None, "history": self.history}
            (self.out / HISTORY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        barrier(self.dist)
