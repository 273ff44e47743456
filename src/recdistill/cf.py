"""The cf track: LightGCN meta model, MF main model with or without GraphTransfer cross fusion.

``run_cf`` is the one function the ``cf-{meta,distill,alone}`` stages call. It trains one
model with BPR (uniform negatives that are never the user's train items) through
``recdistill.train.fit``, selects the epoch on validation NDCG@20 only, then evaluates the
best state once on test. Evaluation is full ranking: all users' scores come from one
matrix product ``(U, D) @ (D, I)``; the user's train items (and, for test, valid items)
are set to ``-inf`` before ``recdistill.metrics`` ranks them.

Recall@K is ``|top-K ∩ relevant| / |relevant|`` per user (relevant = the user's items of
that split), NDCG@K has binary gains and ideal DCG over ``min(K, |relevant|)`` items, AUC
is the per-user AUC of relevant vs all other unmasked items; all are means over the users
with at least one relevant item.

Shapes: B batch, U users, I items, D embedding dim, K cut-off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from recdistill import metrics
from recdistill.data.interactions import (BprBatch, CfSplits, bpr_batches, load_cf_splits,
                                          normalized_adjacency)
from recdistill.models.lightgcn import LightGCN
from recdistill.models.mf import MF
from recdistill.params import LightGcnParams, MfParams, Params
from recdistill.train import CheckpointError, FitResult, fit, load_checkpoint, median_ms, seed_everything
from recdistill.transfer.cross_fusion import CrossFusion, bpr_loss

__all__ = ["Role", "CfRun", "build_model", "masked_scores", "evaluate", "train_cf", "top_k_frame",
           "scoring_cost", "load_meta_embeddings", "run_cf"]

log = logging.getLogger(__name__)
Role = Literal["meta", "distill", "alone"]
MONITOR = "valid/ndcg@20"
CfModel = LightGCN | MF


def build_model(kind: Literal["lightgcn", "mf"], splits: CfSplits, hp: LightGcnParams | MfParams
                ) -> CfModel:
    """A fresh LightGCN (graph from the train split) or MF, on the split's device."""
    device = splits.train.keys.device
    if kind == "lightgcn":
        assert isinstance(hp, LightGcnParams)
        return LightGCN(splits.n_users, splits.n_items, hp.embed_dim, hp.n_layers,
                        normalized_adjacency(splits.train)).to(device)
    return MF(splits.n_users, splits.n_items, hp.embed_dim).to(device)


def _exclusions(splits: CfSplits, split: Literal["valid", "test"]) -> torch.Tensor:
    """Items not ranked for ``split`` (U, I) bool: train items, plus valid items for test."""
    seen = splits.train.dense()  # (U, I)
    return seen | splits.valid.dense() if split == "test" else seen


def masked_scores(model: CfModel, exclude: torch.Tensor) -> torch.Tensor:
    """All users' scores (U, I) from one matrix product, ``-inf`` where ``exclude``."""
    user_emb, item_emb = model.embeddings()  # (U, D), (I, D)
    scores = user_emb @ item_emb.T  # (U, I)
    return scores.masked_fill(exclude, float("-inf"))  # (U, I)


@torch.no_grad()
def evaluate(model: CfModel, splits: CfSplits, split: Literal["valid", "test"],
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


def train_cf(model: CfModel, splits: CfSplits, hp: LightGcnParams | MfParams, *,
             generator: torch.Generator, name: str,
             transfer: CrossFusion | None = None,
             on_epoch: Callable[[int, dict[str, float]], None] | None = None,
             progress: bool = False) -> FitResult:
    """BPR training (+ the cross-fusion term when ``transfer`` is given), early stopping on
    validation NDCG@20. L2 of strength ``hp.weight_decay`` on the batch's layer-0
    embeddings, as LightGCN does: ``wd * (|e_u|^2 + |e_i|^2 + |e_j|^2) / (2B)``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr)
    valid_exclude, valid_relevant = _exclusions(splits, "valid"), splits.valid.dense()  # (U, I)

    def batches(epoch: int) -> Iterable[BprBatch]:
        return bpr_batches(splits.train, hp.batch_size, generator)

    def loss_fn(b: BprBatch) -> torch.Tensor:
        user_emb, item_emb = model.embeddings()  # (U, D), (I, D)
        u, i, j = user_emb[b.users], item_emb[b.pos], item_emb[b.neg]  # (B, D) each
        loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))  # ()
        ego: torch.Tensor = (model.user(b.users).pow(2).sum() + model.item(b.pos).pow(2).sum()
                             + model.item(b.neg).pow(2).sum())  # ()
        loss = loss + hp.weight_decay * ego / (2 * len(b.users))
        if transfer is not None:
            loss = loss + transfer(user_emb, item_emb, b.users, b.pos)
        return loss

    def validate() -> dict[str, float]:  # the monitored metric only: one full sort per call
        scores = masked_scores(model, valid_exclude)  # (U, I)
        users = valid_relevant.any(1)  # (U,) users with a valid item
        return {MONITOR: float(metrics.ndcg_at_k(scores[users], valid_relevant[users], 20).mean())}

    return fit(model, optimizer, batches=batches, loss_fn=loss_fn, validate=validate,
               epochs=hp.epochs, monitor=MONITOR, mode="max", patience=hp.patience, name=name,
               eval_every=hp.eval_every, on_epoch=on_epoch, progress=progress)


@torch.no_grad()
def top_k_frame(model: CfModel, splits: CfSplits, k: int) -> pd.DataFrame:
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
def scoring_cost(model: CfModel, splits: CfSplits, k: int, repeats: int = 5) -> dict[str, Any]:
    """Parameters, multiply-adds per (user, item) score (propagation amortised over all
    pairs) and the median wall time of scoring all users: embeddings, the (U, I) product,
    masking and top-k."""
    exclude = _exclusions(splits, "test")
    dim = model.user.embedding_dim
    macs = splits.n_users * splits.n_items * dim  # the product
    if isinstance(model, LightGCN):
        macs += model.n_layers * model.norm_adj._nnz() * dim  # sparse propagation
    latency = median_ms(lambda: metrics.topk_items(masked_scores(model, exclude), k),
                        exclude.device, repeats)
    return {"params": sum(p.numel() for p in model.parameters()),
            "macs_per_example": round(macs / (splits.n_users * splits.n_items)),
            "latency_ms": latency, "latency_unit": "all users", "device": exclude.device.type}


def load_meta_embeddings(path: str | Path, splits: CfSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed final user (U, D) and item (I, D) embeddings of a trained LightGCN meta."""
    state, meta = load_checkpoint(path, map_location=splits.train.keys.device)
    shape = (meta.get("model"), meta.get("n_users"), meta.get("n_items"))
    if shape != ("lightgcn", splits.n_users, splits.n_items):
        raise CheckpointError(f"{path}: expected a LightGCN meta model over {splits.n_users} users "
                              f"and {splits.n_items} items, got (model, users, items) = {shape}")
    hp = LightGcnParams(**meta["hparams"])
    model = build_model("lightgcn", splits, hp)
    model.load_state_dict(state)
    with torch.no_grad():
        user_emb, item_emb = model.embeddings()  # (U, D), (I, D)
    return user_emb.detach(), item_emb.detach()


@dataclass
class CfRun:
    model: CfModel
    fit: FitResult
    metrics: dict[str, float]  # valid/* at the best epoch and test/*
    predictions: pd.DataFrame
    cost: dict[str, Any]
    checkpoint_meta: dict[str, Any]


def run_cf(role: Role, p: Params, *, data: str | Path, seed: int, device: torch.device,
           meta_checkpoint: str | Path | None = None,
           on_epoch: Callable[[int, dict[str, float]], None] | None = None,
           progress: bool = True) -> CfRun:
    """Train and evaluate one cf model: ``meta`` = LightGCN (``train.cf``), ``distill`` = MF
    with cross fusion from ``meta_checkpoint`` (``distill.cf``), ``alone`` = the same MF
    with the same budget and no transfer."""
    ks = tuple(p.evaluate.ks)
    if 20 not in ks:
        raise ValueError(f"evaluate.ks = {list(ks)} must contain 20: cf selects on valid NDCG@20")
    generator = seed_everything(seed, device)
    splits = load_cf_splits(data, device=device)
    hp: LightGcnParams | MfParams = p.train.cf if role == "meta" else p.distill.cf.student
    model = build_model("lightgcn" if role == "meta" else "mf", splits, hp)
    transfer = None
    if role == "distill":
        if meta_checkpoint is None:
            raise ValueError("role 'distill' needs the meta model's checkpoint")
        meta_user, meta_item = load_meta_embeddings(meta_checkpoint, splits)
        if meta_user.shape[1] != hp.embed_dim:
            raise ValueError(f"distill.cf.student.embed_dim = {hp.embed_dim} must equal the meta "
                             f"model's train.cf.embed_dim = {meta_user.shape[1]} (cross dot products)")
        transfer = CrossFusion(meta_user, meta_item, p.distill.cf.lambda1, p.distill.cf.lambda2)
    result = train_cf(model, splits, hp, generator=generator, name=f"cf-{role}@{seed}",
                      transfer=transfer, on_epoch=on_epoch, progress=progress)
    scores = {**evaluate(model, splits, "valid", ks), **evaluate(model, splits, "test", ks)}
    log.info("cf-%s@%d: best epoch %d, %s", role, seed, result.best_epoch,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items()) if "hr@" not in k))
    meta = {"role": role, "model": "lightgcn" if role == "meta" else "mf", "seed": seed,
            "n_users": splits.n_users, "n_items": splits.n_items, "hparams": asdict(hp),
            "best_epoch": result.best_epoch}
    return CfRun(model, result, scores, top_k_frame(model, splits, max(ks)),
                 scoring_cost(model, splits, max(ks)), meta)
