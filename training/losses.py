"""Contrastive losses as pure functions of embeddings (no models, no distributed code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(
    queries: Tensor,
    keys: Tensor,
    *,
    temperature: float = 0.05,
    extra_negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE with in-batch negatives: query ``i``'s positive is ``keys[i]``; every other key, and every
    row of ``extra_negatives`` (hard negatives, a MoCo queue), is a negative.

    Args:
        queries: ``(n, d)`` embeddings (normalize them first for cosine similarity).
        keys: ``(n, d)`` embeddings, row ``i`` the positive of query ``i``.
        temperature: logits are similarities divided by this.
        extra_negatives: ``(m, d)`` more negatives shared by every query, or None.

    Returns:
        The mean cross-entropy over the ``n`` queries, a 0-d tensor.
    """
    if queries.shape != keys.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must have the same shape")
    candidates = keys if extra_negatives is None else torch.cat([keys, extra_negatives.to(keys.dtype)])  # (n + m, d)
    logits = queries @ candidates.T / temperature  # (n, n + m)
    labels = torch.arange(queries.shape[0], device=queries.device)  # (n,)
    return F.cross_entropy(logits, labels)


def supervised_info_nce(
    queries: Tensor,
    keys: Tensor,
    groups: Tensor,
    *,
    temperature: float = 0.05,
    extra_negatives: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "outside the log" form) over query/key pairs:
    query ``i``'s positives are every key ``j`` with ``groups[j] == groups[i]`` (its own key ``i`` included),
    its negatives every other key and every row of ``extra_negatives``. With all groups distinct this is
    exactly :func:`info_nce`.

    Args:
        queries, keys: ``(n, d)`` embeddings (normalized for cosine similarity), row ``i`` a pair.
        groups: ``(n,)`` integer class ids.
        temperature, extra_negatives: as in :func:`info_nce`.

    Returns:
        The mean over queries of the mean negative log-probability of their positives, a 0-d tensor.
    """
    if queries.shape != keys.shape or groups.shape != (queries.shape[0],):
        raise ValueError(f"queries {tuple(queries.shape)}, keys {tuple(keys.shape)} and groups {tuple(groups.shape)} do not match")
    candidates = keys if extra_negatives is None else torch.cat([keys, extra_negatives.to(keys.dtype)])  # (n + m, d)
    log_probs = F.log_softmax(queries @ candidates.T / temperature, dim=1)[:, : keys.shape[0]]  # (n, n)
    positive = (groups[:, None] == groups[None, :]).to(log_probs.dtype)  # (n, n), diagonal included
    return -((log_probs * positive).sum(1) / positive.sum(1)).mean()


def listwise_distillation(student: Tensor, teacher: Tensor, *, temperature: float = 0.05,
                          teacher_temperature: float = 0.05) -> Tensor:
    """KL divergence from a teacher's ranking to the student's over each query's own candidate list
    (RocketQAv2's and GPL's soft-label distillation, listwise).

    Args:
        student: ``(n, c)`` the student's similarities of each query to its ``c`` candidates.
        teacher: ``(n, c)`` the teacher's scores of the same candidates (any scale; divided by its temperature).
        temperature, teacher_temperature: the two softmax temperatures.

    Returns:
        ``KL(softmax(teacher / t_teacher) || softmax(student / t))`` averaged over the ``n`` queries, a 0-d
        tensor; 0 exactly when the two distributions agree.
    """
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be the same (n, c)")
    target = F.log_softmax(teacher.to(student.dtype) / teacher_temperature, dim=1)
    return F.kl_div(F.log_softmax(student / temperature, dim=1), target, reduction="batchmean", log_target=True)
