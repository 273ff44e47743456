"""Soft targets: a student learns the teacher's temperature-softened distribution.

Geoffrey Hinton, Oriol Vinyals, Jeff Dean. "Distilling the Knowledge in a Neural Network".
NIPS 2014 Deep Learning Workshop, arXiv:1503.02531.

At each sequence position the teacher's and the student's scores over the candidate items
(all items, or a sampled set) are softened by a temperature T and compared with
``T^2 * KL(softmax(t / T) || softmax(s / T))``; the ``T^2`` keeps the gradient scale of the
soft term independent of T. The student's own hard loss (SASRec's binary cross-entropy with
one sampled negative per position, or the softmax cross-entropy over every item) is blended
in: ``(1 - w) * hard + w * soft``.

Shapes: N positions, C candidate items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_target_kl", "next_item_bce", "next_item_ce", "blend"]


def soft_target_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Mean over positions of :math:`T^2 \, KL(softmax(t/T) \| softmax(s/T))`.

    Args:
        student: (N, C) float scores of the student (carries the gradient).
        teacher: (N, C) float scores of the teacher (detached by the caller).
        temperature: T > 0.

    Example:
        >>> s = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[0.0, 1.0]])
        >>> round(soft_target_kl(s, t, 1.0).item(), 4)  # by hand: (e - 1) / (e + 1)
        0.4621
        >>> soft_target_kl(t, t, 3.0).item()
        0.0
    """
    assert student.shape == teacher.shape, f"shapes differ: {student.shape} vs {teacher.shape}"
    log_s = F.log_softmax(student / temperature, dim=-1)  # (N, C)
    log_t = F.log_softmax(teacher / temperature, dim=-1)  # (N, C)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # (N,)
    return temperature ** 2 * kl.mean()


def next_item_bce(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """SASRec's loss: mean over positions of ``-log sigmoid(pos) - log(1 - sigmoid(neg))``.

    positive, negative: (N,) float scores of the true next item and of one sampled negative.

    >>> round(next_item_bce(torch.tensor([0.0]), torch.tensor([0.0])).item(), 4)  # 2 log 2
    1.3863
    """
    return (F.softplus(-positive) + F.softplus(negative)).mean()


def next_item_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the true next item over every item: mean over positions of
    ``-log softmax(logits)[positive]``, token 0 (padding) excluded from the softmax. With
    every item as a negative it is the loss Klenitskiy & Vasilev (RecSys 2023) measured far
    above SASRec's one-negative BCE.

    logits: (N, I + 1) float scores of every token; positives: (N,) int64 in 1..I.

    >>> round(next_item_ce(torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([1])).item(), 4)  # log 2
    0.6931
    """
    return F.cross_entropy(logits[:, 1:], positives - 1)


def blend(hard: torch.Tensor, soft: torch.Tensor, kd_weight: float) -> torch.Tensor:
    """``(1 - kd_weight) * hard + kd_weight * soft``."""
    return (1.0 - kd_weight) * hard + kd_weight * soft
