"""KD_DAGFM: distil a CrossNet/CIN teacher into a DAGFM student, then finetune the student.

Zhen Tian et al. "Directed Acyclic Graph Factorization Machines for CTR Prediction via
Knowledge Distillation". WSDM 2023, arXiv:2211.11159.

Phase 1 (distillation): the student's embedding table is a copy of the teacher's and stays
frozen; only its interaction layers learn, on
``alpha * BCE(sigmoid(s), y) + beta * mean((s - t)^2)`` with s, t the student's and the
teacher's logits. Phase 2 (finetuning): every student parameter learns on BCE alone. Each
phase stops early on the monitored validation metric (the track's ``evaluate.select.ctr``) and
keeps its best state; the returned student is the better of the two by that metric (phase 2
starts from phase 1's best).

Teacher and student are any ctr models built the ctr way: a :class:`FieldEmbedding` named
``embedding`` and ``interact(emb)``, the logits of the interaction part on its output.

Fixes over the reference code: the phase name is checked (it returned a ``ValueError``
instead of raising), the teacher comes from a checkpoint loaded with ``weights_only=True``
and a missing one is an error (see ``recdistill.ctr``), and the teacher logits are computed
once, not per batch.

Shapes: B batch, N train rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recdistill.models.ctr_embedding import FieldEmbedding
from recdistill.train import FitResult, fit
from recdistill.train.device import Amp

__all__ = ["kd_loss", "field_parts", "transplant_embedding", "Phase", "KdResult", "kd_dagfm"]

Phase = Literal["distill", "finetune"]
Interact = Callable[[torch.Tensor], torch.Tensor]  # (B, F, D) field embeddings -> (B,) logits


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
            alpha: float, beta: float) -> torch.Tensor:
    """``alpha * BCE + beta * MSE(student logit, teacher logit)``; all inputs (B,) float32.

    >>> s, t, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])
    >>> round(kd_loss(s, t, y, alpha=0.0, beta=2.0).item(), 4)  # 2 * (1 + 0) / 2
    1.0
    """
    bce = F.binary_cross_entropy_with_logits(student, labels)  # ()
    return alpha * bce + beta * torch.mean((student - teacher.detach()) ** 2)  # ()


def field_parts(model: nn.Module) -> tuple[FieldEmbedding, Interact]:
    """A ctr model's ``embedding`` and ``interact``; TypeError naming the model if it lacks them."""
    embedding, interact = getattr(model, "embedding", None), getattr(model, "interact", None)
    if not isinstance(embedding, FieldEmbedding) or not callable(interact):
        raise TypeError(f"{type(model).__name__} cannot take part in KD_DAGFM: it needs a FieldEmbedding "
                        "`embedding` and `interact(emb)` (see recdistill.models.ctr_embedding)")
    return embedding, interact


def transplant_embedding(student: nn.Module, teacher: nn.Module, frozen: bool = True) -> None:
    """Copy the teacher's embedding weights into the student and (un)freeze them."""
    embedding = field_parts(student)[0]
    try:
        embedding.load_state_dict(field_parts(teacher)[0].state_dict())
    except RuntimeError as err:
        raise ValueError("the student's embedding does not match the teacher's (fields, "
                         f"vocabularies and embed_dim must be equal): {err}") from None
    embedding.requires_grad_(not frozen)


@dataclass
class KdResult:
    distill: FitResult
    finetune: FitResult
    chosen: Phase  # the phase whose best state the student holds
    history: list[dict[str, Any]] = field(default_factory=list)  # both phases, tagged


def kd_dagfm(student: nn.Module, teacher: nn.Module, *, train_ids: torch.Tensor,
             train_multi: torch.Tensor, train_labels: torch.Tensor,
             batches: Callable[[int], Iterable[torch.Tensor]],
             validate: Callable[[], dict[str, float]], monitor: str, mode: Literal["max", "min"],
             alpha: float, beta: float,
             make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
             epochs: int, patience: int, amp: Amp = "none",
             on_epoch: Callable[[Phase, int, dict[str, float]], None] | None = None) -> KdResult:
    """Run both KD_DAGFM phases on ``student`` (modified in place).

    Args:
        student, teacher: ctr models with a FieldEmbedding ``embedding`` and ``interact``.
        train_ids, train_multi, train_labels: the train split, (N, Fc), (N, G), (N,).
        batches: ``epoch -> iterable of (B,) int64 row indices`` into the train split.
        validate: validation metrics, ``monitor`` among them.
        monitor, mode: the metric each phase stops early on and the better phase is chosen by;
            ``"max"`` (AUC) or ``"min"`` (log loss).
        make_optimizer: builds an optimizer over the given parameters (same for both phases).
        epochs, patience: per phase.
        amp: ``runtime.amp``, passed to :func:`recdistill.train.fit`.
        on_epoch: ``(phase, epoch, metrics)`` after each epoch.
    """
    teacher.eval()
    transplant_embedding(student, teacher, frozen=True)
    t_embedding, t_interact = field_parts(teacher)
    s_embedding, s_interact = field_parts(student)
    with torch.no_grad():
        emb = t_embedding(train_ids, train_multi)  # (N, F, D), the student's too
        t_logits = t_interact(emb)  # (N,)

    def distill_loss(rows: torch.Tensor) -> torch.Tensor:
        s_logits = s_interact(emb[rows])  # (B,)
        return kd_loss(s_logits, t_logits[rows], train_labels[rows], alpha, beta)

    def finetune_loss(rows: torch.Tensor) -> torch.Tensor:
        logits = student(train_ids[rows], train_multi[rows])  # (B,)
        return F.binary_cross_entropy_with_logits(logits, train_labels[rows])

    results: dict[Phase, FitResult] = {}
    phases: tuple[tuple[Phase, Callable[[torch.Tensor], torch.Tensor]], ...] = (
        ("distill", distill_loss), ("finetune", finetune_loss))
    for phase, loss_fn in phases:
        if phase == "finetune":
            s_embedding.requires_grad_(True)
        trainable = [p for p in student.parameters() if p.requires_grad]
        callback = None if on_epoch is None else (lambda e, m, ph=phase: on_epoch(ph, e, m))
        results[phase] = fit(student, make_optimizer(trainable), batches=batches, loss_fn=loss_fn,
                             validate=validate, epochs=epochs, monitor=monitor, mode=mode,
                             patience=patience, name=f"kd-{phase}", on_epoch=callback, amp=amp)
    finetuned, distilled = results["finetune"].best[monitor], results["distill"].best[monitor]
    better = finetuned > distilled if mode == "max" else finetuned < distilled
    chosen: Phase = "finetune" if better else "distill"
    student.load_state_dict(results[chosen].best_state)
    history = [{"phase": ph, **row} for ph in ("distill", "finetune") for row in results[ph].history]
    return KdResult(results["distill"], results["finetune"], chosen, history)
