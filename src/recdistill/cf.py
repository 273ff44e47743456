"""The cf track: LightGCN meta model, MF main model with or without GraphTransfer cross fusion.

``run_cf`` is the one function the ``cf-{meta,distill,alone}`` stages call; it returns an
:class:`recdistill.arm.ArmResult`. Models are built by name from :data:`MODELS`
(``train.cf.model`` for the meta model, ``distill.cf.student.model`` for the main model) for
a :class:`CfContext` (the train split and the embedding width). Every model trains with BPR
(uniform negatives that are never the user's train items) through ``recdistill.train.fit``,
the distilled main model with the cross-fusion term against the meta model's fixed final
embeddings as well, stopping early on ``valid/<evaluate.select.cf>``; the best state is
evaluated once on test. Evaluation is full ranking: all users' scores come from one matrix
product ``(U, D) @ (D, I)``; the user's train items (and, for test, valid items) are set to
``-inf`` before ``recdistill.metrics`` ranks them.

Recall@K is ``|top-K ∩ relevant| / |relevant|`` per user (relevant = the user's items of
that split), NDCG@K has binary gains and ideal DCG over ``min(K, |relevant|)`` items, HR@K
is 1 when any relevant item is in the top K, AUC is the per-user AUC of relevant vs all other
unmasked items; all are means over the users with at least one relevant item.

Cost (:func:`measure_cost`): an example is one (user, item) pair scored; the dense product is
counted by ``recdistill.cost.count_macs``, LightGCN's sparse propagation by a formula.

Shapes: B batch, U users, I items, D embedding dim, K cut-off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd
import torch
from torch import nn

from recdistill import metrics
from recdistill.arm import ArmRecord, ArmResult, CheckpointMeta, Cost, Role
from recdistill.train.checkpoint import load_model, recorded_size
from recdistill.cost import count_macs, n_params
from recdistill.data.interactions import (BprBatch, CfSplits, Interactions, bpr_batches,
                                          normalized_adjacency)
from recdistill.models.lightgcn import LightGCN, LightGcnArch
from recdistill.models.mf import MF, MfArch
from recdistill.models.registry import Arch, Entry, Registry
from recdistill.params import Params, ParamsError, PeriodicOptim
from recdistill.train import FitResult, fit, seed_everything
from recdistill.train.device import Amp
from recdistill.transfer.cross_fusion import CrossFusion, bpr_loss

__all__ = ["CfContext", "CfModel", "MODELS", "ARM_NAMES", "STAGES", "Teacher", "architecture",
           "selectable", "selection", "data_shape", "build_model", "masked_scores",
           "evaluate", "train_cf", "top_k_frame", "measure_cost", "scoring_pass", "load_cf_model", "load_cf_teacher", "run_cf"]

log = logging.getLogger(__name__)
# the arm's name in metrics/ and models/, and its dvc.yaml stage, by role
ARM_NAMES: dict[Role, str] = {"teacher": "meta", "student": "distilled", "alone": "alone"}
STAGES: dict[Role, str] = {"teacher": "cf-meta", "student": "cf-distill", "alone": "cf-alone"}
RANKING = ("recall", "ndcg", "hr")  # the metrics evaluate() computes at each cut-off of evaluate.ks


@dataclass(frozen=True)
class CfContext:
    """The data a cf model is built with, besides its architecture block."""

    train: Interactions  # the train split: the sizes, and LightGCN's graph
    embed_dim: int  # train.cf.embed_dim; the meta checkpoint's for the distilled main model

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items


def _lightgcn(arch: LightGcnArch, c: CfContext) -> nn.Module:
    return LightGCN(c.n_users, c.n_items, c.embed_dim, arch.n_layers, normalized_adjacency(c.train))


def _mf(arch: MfArch, c: CfContext) -> nn.Module:
    return MF(c.n_users, c.n_items, c.embed_dim)


# Any of them can be the meta or the main model: cross fusion needs final embeddings only.
MODELS: Registry[CfContext] = Registry("cf", {
    "lightgcn": Entry(LightGcnArch, _lightgcn), "mf": Entry(MfArch, _mf)})


@runtime_checkable
class CfModel(Protocol):
    """What the cf track needs of a model of :data:`MODELS`, besides being an ``nn.Module``.

    Methods only: from Python 3.12 ``isinstance`` looks a protocol's members up statically,
    and that lookup does not see an ``nn.Module``'s submodules.
    """

    def tables(self) -> tuple[nn.Embedding, nn.Embedding]:
        """The layer-0 user (U, D) and item (I, D) tables: the L2 term reads the batch's rows."""
        ...

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (U, D) and item (I, D) embeddings; a score is their dot product."""
        ...

    def sparse_macs(self) -> int:
        """Multiply-adds of ``embeddings()`` that torch's flop counter does not see."""
        ...


@dataclass(frozen=True)
class Teacher:
    """A trained meta model, loaded for cross fusion: its fixed final embeddings."""

    user: torch.Tensor  # (U, D) E_u, detached, on the splits' device
    item: torch.Tensor  # (I, D) E_i
    meta: CheckpointMeta
    path: Path


def architecture(role: Role, p: Params) -> Arch:
    """The typed ``model:`` block of ``role``'s model (ParamsError naming the key if bad)."""
    if role == "teacher":
        return MODELS.arch(p.train.cf.model, "train.cf.model")
    if role in ("student", "alone"):
        return MODELS.arch(p.distill.cf.student.model, "distill.cf.student.model")
    raise ValueError(f"the cf track has no {role!r} arm; its roles: {', '.join(ARM_NAMES)}")


def selectable(ks: Iterable[int]) -> tuple[str, ...]:
    """The metric names :func:`evaluate` computes for the cut-offs ``ks``.

    >>> selectable([10])
    ('recall@10', 'ndcg@10', 'hr@10', 'auc')
    """
    return (*(f"{metric}@{k}" for k in ks for metric in RANKING), "auc")


def selection(p: Params) -> str:
    """The monitored validation metric (``valid/ndcg@20``), from ``evaluate.select.cf``: one the
    track computes, so its cut-off must be one of ``evaluate.ks``. Every cf metric is maximised."""
    name, accepted = p.evaluate.select.cf, selectable(p.evaluate.ks)
    if name not in accepted:
        raise ParamsError(f"params.yaml: evaluate.select.cf = {name!r} is invalid: expected one of "
                          f"{', '.join(map(repr, accepted))} (the metrics the cf track computes at "
                          f"evaluate.ks = {list(p.evaluate.ks)})")
    return f"valid/{name}"


def data_shape(splits: CfSplits) -> dict[str, Any]:
    """The data sizes a checkpoint records and a meta model is checked against at load."""
    return {"n_users": splits.n_users, "n_items": splits.n_items}


def build_model(arch: Arch, context: CfContext) -> nn.Module:
    """A fresh model of ``arch`` from :data:`MODELS`, on the train split's device."""
    model = MODELS.build(arch, context)
    assert isinstance(model, CfModel), f"{type(model).__name__} lacks CfModel's methods"
    return model.to(context.train.keys.device)


def _exclusions(splits: CfSplits, split: Literal["valid", "test"]) -> torch.Tensor:
    """Items not ranked for ``split`` (U, I) bool: train items, plus valid items for test."""
    seen = splits.train.dense()  # (U, I)
    return seen | splits.valid.dense() if split == "test" else seen


def masked_scores(model: nn.Module, exclude: torch.Tensor) -> torch.Tensor:
    """All users' scores (U, I) from one matrix product, ``-inf`` where ``exclude``."""
    assert isinstance(model, CfModel), type(model)
    user_emb, item_emb = model.embeddings()  # (U, D), (I, D)
    scores = user_emb @ item_emb.T  # (U, I)
    return scores.masked_fill(exclude, float("-inf"))  # (U, I)


@torch.no_grad()
def evaluate(model: nn.Module, splits: CfSplits, split: Literal["valid", "test"],
             ks: tuple[int, ...], exclude: torch.Tensor | None = None) -> dict[str, float]:
    """Full-ranking ``{split}/recall@k``, ``ndcg@k``, ``hr@k`` and ``{split}/auc``."""
    was_training = model.training
    model.eval()
    scores = masked_scores(model, _exclusions(splits, split) if exclude is None else exclude)
    relevant = getattr(splits, split).dense()  # (U, I)
    out = {f"{split}/{k}": v for k, v in metrics.ranking_metrics(scores, relevant, ks).items()}
    out[f"{split}/auc"] = metrics.user_auc(scores, relevant)
    model.train(was_training)
    return out


def train_cf(model: nn.Module, splits: CfSplits, optim: PeriodicOptim, *, monitor: str,
             generator: torch.Generator, name: str, transfer: CrossFusion | None = None,
             amp: Amp = "none", on_epoch: Callable[[int, dict[str, float]], None] | None = None,
             progress: bool = False) -> FitResult:
    """BPR training (+ the cross-fusion term when ``transfer`` is given), early stopping on
    ``monitor`` (``valid/`` + a name of :func:`selectable`, e.g. ``valid/ndcg@20``). Adam
    without weight decay; instead an L2 of strength ``optim.weight_decay`` on the batch's
    layer-0 embeddings, as LightGCN does: ``wd * (|e_u|^2 + |e_i|^2 + |e_j|^2) / (2B)``."""
    assert isinstance(model, CfModel), type(model)
    select = monitor.removeprefix("valid/")
    k = int(select.partition("@")[2] or 0)
    if monitor != f"valid/{select}" or select not in selectable([k]):
        raise ValueError(f"{name}: monitor {monitor!r} is not a cf validation metric: expected "
                         "valid/recall@K, valid/ndcg@K, valid/hr@K or valid/auc")
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr)
    user_table, item_table = model.tables()  # (U, D), (I, D) layer 0
    valid_exclude, valid_relevant = _exclusions(splits, "valid"), splits.valid.dense()  # (U, I)

    def batches(epoch: int) -> Iterable[BprBatch]:
        return bpr_batches(splits.train, optim.batch_size, generator)

    def loss_fn(b: BprBatch) -> torch.Tensor:
        user_emb, item_emb = model.embeddings()  # (U, D), (I, D)
        u, i, j = user_emb[b.users], item_emb[b.pos], item_emb[b.neg]  # (B, D) each
        loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))  # ()
        ego = (user_table(b.users).pow(2).sum() + item_table(b.pos).pow(2).sum()
               + item_table(b.neg).pow(2).sum())  # ()
        loss = loss + optim.weight_decay * ego / (2 * len(b.users))
        if transfer is not None:
            loss = loss + transfer(user_emb, item_emb, b.users, b.pos)
        return loss

    def validate() -> dict[str, float]:  # the monitored metric only: one top-k per call
        scores = masked_scores(model, valid_exclude)  # (U, I)
        if select == "auc":
            return {monitor: metrics.user_auc(scores, valid_relevant)}
        return {monitor: metrics.ranking_metrics(scores, valid_relevant, (k,))[select]}

    return fit(model, optimizer, batches=batches, loss_fn=loss_fn, validate=validate,
               epochs=optim.epochs, monitor=monitor, mode="max", patience=optim.patience, name=name,
               eval_every=optim.eval_every, on_epoch=on_epoch, progress=progress, amp=amp)


@torch.no_grad()
def top_k_frame(model: nn.Module, splits: CfSplits, k: int) -> pd.DataFrame:
    """Top-k test recommendations (train and valid items masked) of every user with a test
    item: columns user, rank (1-based), item, score."""
    scores = masked_scores(model, _exclusions(splits, "test"))  # (U, I)
    users = torch.unique(splits.test.users)  # (T,)
    top = metrics.topk_items(scores[users], k)  # (T, k)
    top_scores = scores[users].gather(1, top)  # (T, k)
    frame = pd.DataFrame({
        "user": users.repeat_interleave(k).cpu().numpy(),
        "rank": torch.arange(1, k + 1).repeat(len(users)).numpy(),
        "item": top.flatten().cpu().numpy(),
        "score": top_scores.flatten().float().cpu().numpy(),
    })
    return frame[frame["score"] > float("-inf")].reset_index(drop=True)


@torch.no_grad()
def measure_cost(model: nn.Module, splits: CfSplits) -> Cost:
    """Parameters and multiply-adds per example.

    An example is one (user, item) pair scored. Multiply-adds: the dense ``(U, D) @ (D, I)``
    product of all users' scores, counted by :func:`recdistill.cost.count_macs` (D per pair),
    plus the model's sparse work, which the flop counter does not see (``sparse_macs()``:
    LightGCN's propagation, K * nnz(A_hat) * D for all users at once; 0 for MF), divided by
    the U * I pairs; a cost with such a part is labelled ``macs_method="formula"``.
    """
    assert isinstance(model, CfModel), type(model)
    user_emb, item_emb = model.embeddings()  # (U, D), (I, D)
    pairs, sparse = splits.n_users * splits.n_items, model.sparse_macs()
    macs = count_macs(lambda: user_emb @ item_emb.T, examples=pairs) + round(sparse / pairs)
    return Cost(params=n_params(model), macs_per_example=macs,
                macs_method="formula" if sparse else "flop_counter", device=splits.train.keys.device.type)


def scoring_pass(model: nn.Module, splits: CfSplits, k: int) -> Callable[[], object]:
    """One timed pass for :mod:`recdistill.latency`: score all users (embeddings, the (U, I)
    product, masking of seen items) and take each user's top ``k``."""
    exclude = _exclusions(splits, "test")  # (U, I)
    return torch.no_grad()(lambda: metrics.topk_items(masked_scores(model, exclude), k))


def load_cf_model(path: str | Path, splits: CfSplits, *, role: Role | None = None
                  ) -> tuple[nn.Module, CheckpointMeta]:
    """The trained model at ``path`` (a ``role`` arm; any arm for None) for ``splits``, on
    their device, in eval mode; every failure is one :class:`CheckpointError` line naming the file."""
    context = CfContext(splits.train, recorded_size(path, "embed_dim")[0])
    module, meta = load_model(path, "cf", MODELS, context, role=role, shape=data_shape(splits),
                              device=splits.train.keys.device)
    return module, meta


def load_cf_teacher(path: str | Path, splits: CfSplits) -> Teacher:
    """The fixed final embeddings of the meta model at ``path`` (:func:`load_cf_model`)."""
    path = Path(path)
    module, meta = load_cf_model(path, splits, role="teacher")
    assert isinstance(module, CfModel), type(module)
    with torch.no_grad():
        user_emb, item_emb = module.embeddings()  # (U, D), (I, D)
    return Teacher(user_emb.detach(), item_emb.detach(), meta, path)


def run_cf(role: Role, p: Params, *, splits: CfSplits, seed: int, teacher: Teacher | None = None,
           on_epoch: Callable[[int, dict[str, float]], None] | None = None,
           progress: bool = True) -> ArmResult:
    """Train and evaluate one cf arm: ``teacher`` = the meta model (``train.cf``), ``student`` =
    the main model with cross fusion from ``teacher`` (:func:`load_cf_teacher`; ``distill.cf``,
    the meta model's width), ``alone`` = the same main model with the same budget and no
    transfer (``distill.cf.student``, ``train.cf.embed_dim``). ``splits`` must already be on
    the training device."""
    arch, monitor = architecture(role, p), selection(p)
    if (role == "student") != (teacher is not None):
        raise ValueError(f"the cf {role} arm takes {'a' if role == 'student' else 'no'} teacher")
    ks = p.evaluate.ks
    embed_dim = teacher.user.shape[1] if teacher is not None else p.train.cf.embed_dim
    optim = p.train.cf.optim if role == "teacher" else p.distill.cf.student.optim
    generator = seed_everything(seed, splits.train.keys.device)
    model = build_model(arch, CfContext(splits.train, embed_dim))
    transfer: CrossFusion | None = None
    extra: dict[str, Any] = {"embed_dim": embed_dim}
    if teacher is not None:
        transfer = CrossFusion(teacher.user, teacher.item, p.distill.cf.lambda1, p.distill.cf.lambda2)
        extra["teacher"] = {"checkpoint": str(teacher.path), "arch": teacher.meta.arch,
                            "seed": teacher.meta.seed, "selection": teacher.meta.selection}
    name = f"{STAGES[role]}@{seed}"
    result = train_cf(model, splits, optim, monitor=monitor, generator=generator, name=name,
                      transfer=transfer, amp=p.runtime.amp, on_epoch=on_epoch, progress=progress)
    scores = {**evaluate(model, splits, "valid", ks), **evaluate(model, splits, "test", ks)}
    log.info("%s: best epoch %d, %s", name, result.best_epoch,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items()) if "hr@" not in k))
    record = ArmRecord(track="cf", model=ARM_NAMES[role], role=role, seed=seed, scenario=None,
                       metrics=scores, cost=measure_cost(model, splits),
                       epochs=result.epochs_run, best_epoch=result.best_epoch,
                       stopped=result.stopped)
    checkpoint = CheckpointMeta(track="cf", role=role, seed=seed, arch=arch.model_dump(mode="json"),
                                shape=data_shape(splits),
                                selection={k: v for k, v in scores.items() if k.startswith("valid/")},
                                best_epoch=result.best_epoch, extra=extra)
    return ArmResult(record, model.state_dict(), checkpoint, result.history,
                     top_k_frame(model, splits, max(ks)))
