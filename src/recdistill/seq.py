"""The seq track: SASRec teacher, distilled and alone students, most-popular baseline.

Training goes through the one loop (``recdistill.train.fit``) with validation NDCG@k as the
early-stopping metric. Evaluation is full ranking over all items with the user's history
masked (train items; train + valid items for test) and the target left in; the variant
with 100 sampled negatives that papers report is computed by the same code and labelled
``sampled<n>_`` (e.g. ``test/sampled100_hr@10``). Its negatives are drawn from one fixed
seed (``data.seed``), so every model is ranked against the same candidates.

Distillation: the frozen teacher sees the same training sequences every epoch, so its hidden
states (and, for ``candidates: sampled``, its top items and their scores at every position)
are computed once; each batch then blends the student's hard loss with
``T^2 KL(teacher || student)`` over all items, or over the teacher's top ``teacher_top``
items at that position, the target and ``n_candidates`` uniform items shared by the batch.

Shapes: U users, B batch of users, L sequence length, N real positions, D hidden dim,
I items (tokens 1..I, 0 = padding), C candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from recdistill.data.sequences import SeqBatch, SeqSplit, Split, history_mask, seq_batches
from recdistill.metrics import hr_at_k, ndcg_at_k, topk_items
from recdistill.models.sasrec import SASRec
from recdistill.params import Params, SasrecParams, SeqDistillParams
from recdistill.train import FitResult, fit, load_checkpoint, median_ms, seed_everything
from recdistill.transfer.soft_targets import blend, next_item_bce, soft_target_kl

__all__ = ["Role", "Ranking", "SeqRun", "TeacherTargets", "build_sasrec", "rank", "popularity_counts",
           "popularity_scorer", "teacher_targets", "train_sasrec", "latency_ms", "run_seq"]

Role = Literal["teacher", "distill", "alone", "popular"]
Scorer = Callable[[torch.Tensor], torch.Tensor]  # inputs (B, L) int64 -> scores (B, I + 1)


def build_sasrec(arch: SasrecParams, *, n_items: int, max_len: int) -> SASRec:
    """The SASRec of an architecture block (``train.seq`` or ``distill.seq.student``)."""
    return SASRec(n_items=n_items, max_len=max_len, hidden_dim=arch.hidden_dim,
                  n_blocks=arch.n_blocks, n_heads=arch.n_heads, dropout=arch.dropout)


@dataclass(frozen=True)
class Ranking:
    metrics: dict[str, float]  # "hr@10", "ndcg@10", ..., "sampled100_hr@10", ...
    top_items: torch.Tensor  # (U, top) int64 tokens, best first
    top_scores: torch.Tensor  # (U, top) float32


@torch.no_grad()
def rank(scorer: Scorer, split: SeqSplit, which: Split, *, ks: tuple[int, ...],
         sampled_negatives: int = 0, sample_seed: int = 0, top: int = 20,
         batch_size: int = 512) -> Ranking:
    """HR@k and NDCG@k of the target among all items (history masked), and top lists.

    With ``sampled_negatives`` n > 0, also among n unseen items drawn without replacement
    (the target placed last, so ties count against it).
    """
    inputs, targets = split.inputs(which)  # (U, L), (U,)
    generator = torch.Generator(device=inputs.device).manual_seed(sample_seed)
    per_user: dict[str, list[torch.Tensor]] = {}
    tops, top_scores = [], []
    for start in range(0, len(inputs), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(inputs)), device=inputs.device)  # (B,)
        target = targets[rows]  # (B,)
        relevant = torch.zeros((len(rows), split.n_items + 1), dtype=torch.bool, device=inputs.device)
        relevant[torch.arange(len(rows), device=rows.device), target] = True  # (B, I + 1)
        mask = history_mask(split, rows, which) & ~relevant  # (B, I + 1)
        scores = scorer(inputs[rows]).float().masked_fill(mask, float("-inf"))  # (B, I + 1)
        best = topk_items(scores, max(top, *ks))  # (B, K): the one full sort
        best_scores = scores.gather(1, best)  # (B, K)
        # one relevant item per user: HR/NDCG@k over the stable top K equal those over all items
        groups = [("", best_scores, relevant.gather(1, best))]
        if sampled_negatives:
            unseen = int((~(mask | relevant)).sum(1).min())
            if unseen < sampled_negatives:
                raise ValueError(f"evaluate.sampled_negatives = {sampled_negatives} but a user has "
                                 f"only {unseen} unseen items to sample from")
            keys = torch.rand(scores.shape, generator=generator, device=scores.device)  # (B, I + 1)
            negs = keys.masked_fill(mask | relevant, 2.0).topk(sampled_negatives, largest=False).indices
            cand = torch.cat([negs, target[:, None]], dim=1)  # (B, C)
            hit = torch.zeros(cand.shape, dtype=torch.bool, device=cand.device)
            hit[:, -1] = True  # (B, C)
            groups.append((f"sampled{sampled_negatives}_", scores.gather(1, cand), hit))
        for prefix, s, rel in groups:
            for k in ks:  # a cutoff beyond the candidate count ranks them all
                per_user.setdefault(f"{prefix}hr@{k}", []).append(hr_at_k(s, rel, min(k, s.shape[1])))
                per_user.setdefault(f"{prefix}ndcg@{k}", []).append(ndcg_at_k(s, rel, min(k, s.shape[1])))
        tops.append(best[:, :top])
        top_scores.append(best_scores[:, :top])
    metrics = {name: float(torch.cat(v).mean()) for name, v in per_user.items()}
    return Ranking(metrics, torch.cat(tops), torch.cat(top_scores))


def popularity_counts(split: SeqSplit) -> torch.Tensor:
    """Train interactions per token (I + 1,) float32; padding counts 0."""
    counts = torch.bincount(split.history.flatten(), minlength=split.n_items + 2)[:-1].float()  # (I + 1,)
    counts[0] = 0.0
    return counts


def popularity_scorer(split: SeqSplit) -> Scorer:
    """Every user gets the train interaction count of each item (most-popular baseline)."""
    counts = popularity_counts(split)  # (I + 1,)
    return lambda inputs: counts.expand(len(inputs), -1)  # (B, I + 1)


def _repeats(top: torch.Tensor, positives: torch.Tensor, shared: torch.Tensor, n_tokens: int
             ) -> torch.Tensor:
    """(N, K + 1 + n) bool: which of [top (N, K) distinct, positives (N,), shared (n,) distinct]
    repeat a token of an earlier column of the same row."""
    seen = torch.zeros((len(top), n_tokens), dtype=torch.bool, device=top.device)  # (N, I + 1)
    seen.scatter_(1, top, True)
    positive_repeats = seen.gather(1, positives[:, None])  # (N, 1)
    seen.scatter_(1, positives[:, None], True)
    return torch.cat([torch.zeros_like(top, dtype=torch.bool), positive_repeats, seen[:, shared]], 1)


@dataclass(frozen=True)
class TeacherTargets:
    """What distillation needs from a frozen teacher, computed once for the training inputs."""

    teacher: SASRec
    states: torch.Tensor  # (U, L, D_teacher) hidden states
    top_items: torch.Tensor  # (U, L, K) int64 the teacher's best tokens at each position
    top_scores: torch.Tensor  # (U, L, K) float32 their scores


@torch.no_grad()
def teacher_targets(teacher: SASRec, inputs: torch.Tensor, top: int, batch_size: int = 256) -> TeacherTargets:
    """Run the frozen teacher once over fixed inputs (U, L): it sees the same sequences every
    epoch, so per batch distillation only gathers these and scores the candidates."""
    teacher.eval()
    states, items, scores = [], [], []
    for s in range(0, len(inputs), batch_size):
        h = teacher(inputs[s:s + batch_size])  # (B, L, D)
        states.append(h)
        if top:
            best = teacher.logits(h)[..., 1:].topk(top, dim=-1)  # (B, L, K) over tokens 1..I
            items.append(best.indices + 1)
            scores.append(best.values)
    empty = inputs.new_zeros((*inputs.shape, 0))  # (U, L, 0)
    return TeacherTargets(teacher, torch.cat(states), torch.cat(items) if top else empty,
                          torch.cat(scores) if top else empty.float())


def _kd_scores(student: SASRec, h: torch.Tensor, targets: TeacherTargets, rows: torch.Tensor,
               keep: torch.Tensor, positives: torch.Tensor, kd: SeqDistillParams,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher scores (N, C) over all items, or over [the teacher's top K at
    that position, the target, n uniform items shared by the batch] (repeats set to -1e9)."""
    teacher, width = targets.teacher, keep.shape[1]
    h_t = targets.states[rows, -width:][keep]  # (N, D_teacher)
    if kd.candidates == "all":
        return student.logits(h)[:, 1:], teacher.logits(h_t)[:, 1:]  # (N, I), (N, I)
    top = targets.top_items[rows, -width:][keep]  # (N, K)
    n_tokens = student.item_emb.num_embeddings  # I + 1
    shared = torch.randperm(n_tokens - 1, generator=generator, device=h.device)[:kd.n_candidates] + 1  # (n,)
    s = torch.cat([torch.einsum("nd,nkd->nk", h, student.item_emb(top)),
                   student.pair_scores(h, positives)[:, None], h @ student.item_emb(shared).T], 1)  # (N, C)
    t = torch.cat([targets.top_scores[rows, -width:][keep], teacher.pair_scores(h_t, positives)[:, None],
                   h_t @ teacher.item_emb(shared).T], 1)  # (N, C)
    repeat = _repeats(top, positives, shared, n_tokens)  # (N, C): no probability mass on repeats
    return s.masked_fill(repeat, -1e9), t.masked_fill(repeat, -1e9)


def train_sasrec(split: SeqSplit, arch: SasrecParams, *, seed: int, device: torch.device,
                 name: str, ks: tuple[int, ...], teacher: SASRec | None = None,
                 kd: SeqDistillParams | None = None,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None
                 ) -> tuple[SASRec, FitResult]:
    """Train a SASRec on its hard loss, plus the teacher's soft targets when one is given."""
    generator = seed_everything(seed, device)
    model = build_sasrec(arch, n_items=split.n_items, max_len=split.max_len).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=arch.lr, betas=(0.9, 0.98))
    targets = None
    if teacher is not None:
        assert kd is not None, "distillation needs the distill.seq params"
        top = kd.teacher_top if kd.candidates == "sampled" else 0
        targets = teacher_targets(teacher, split.train[:, :-1], top)

    def loss_fn(batch: SeqBatch) -> torch.Tensor:
        keep = batch.positives != 0  # (B, L')
        h = model(batch.inputs)[keep]  # (N, D)
        pos = batch.positives[keep]  # (N,)
        hard = next_item_bce(model.pair_scores(h, pos), model.pair_scores(h, batch.negatives[keep]))
        if targets is None or kd is None or kd.kd_weight == 0:
            return hard
        s, t = _kd_scores(model, h, targets, batch.rows, keep, pos, kd, generator)  # (N, C), (N, C)
        return blend(hard, soft_target_kl(s, t, kd.temperature), kd.kd_weight)

    def validate() -> dict[str, float]:
        found = rank(model.score_last, split, "valid", ks=ks).metrics
        return {f"valid/{k}": v for k, v in found.items()}

    result = fit(model, optimizer, batches=lambda epoch: seq_batches(split, arch.batch_size, generator),
                 loss_fn=loss_fn, validate=validate, epochs=arch.epochs,
                 monitor=f"valid/ndcg@{ks[0]}", mode="max", patience=arch.patience, name=name,
                 eval_every=arch.eval_every, on_epoch=on_epoch, progress=False)
    return model.eval(), result


@torch.no_grad()
def latency_ms(scorer: Scorer, split: SeqSplit, *, repeats: int = 5, batch_size: int = 512) -> float:
    """Wall time (ms) to score every item for all users' test inputs: the median of
    ``repeats`` timed passes after a warm-up."""
    inputs, _ = split.inputs("test")

    def score_all() -> None:
        for s in range(0, len(inputs), batch_size):
            scorer(inputs[s:s + batch_size])

    return median_ms(score_all, inputs.device, repeats)


@dataclass
class SeqRun:
    model: SASRec | None  # None for the popular baseline
    fit: FitResult | None
    metrics: dict[str, float]  # "valid/ndcg@10", "test/hr@10", "test/sampled100_hr@10", ...
    predictions: pd.DataFrame  # user, rank (1-based), item (canonical id), score; test top-20
    cost: dict[str, Any]


def run_seq(role: Role, p: Params, split: SeqSplit, *, seed: int, device: torch.device,
            teacher_checkpoint: Path | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> SeqRun:
    """Train (or count, for ``popular``) one model of the seq track and evaluate it."""
    ks, ev = tuple(p.evaluate.ks), p.evaluate
    model, result, scorer = None, None, None
    if role == "popular":
        scorer = popularity_scorer(split)
    else:
        teacher = None
        if role == "distill":
            assert teacher_checkpoint is not None, "distill needs the teacher checkpoint"
            state, meta = load_checkpoint(teacher_checkpoint, map_location=device)
            config = meta["model"]
            if (config["n_items"], config["max_len"]) != (split.n_items, split.max_len):
                raise ValueError(f"teacher {teacher_checkpoint} was trained for {config['n_items']} items "
                                 f"and max_len {config['max_len']}, this split has {split.n_items} and "
                                 f"{split.max_len}: retrain the teacher (dvc repro)")
            teacher = SASRec(**config).to(device)
            teacher.load_state_dict(state)
        arch = p.train.seq if role == "teacher" else p.distill.seq.student
        model, result = train_sasrec(split, arch, seed=seed, device=device, name=f"seq-{role}@{seed}", ks=ks,
                                     teacher=teacher, kd=p.distill.seq if teacher else None, on_epoch=on_epoch)
        scorer = model.score_last
    metrics: dict[str, float] = {}
    rankings = {}
    for which in ("valid", "test"):
        rankings[which] = rank(scorer, split, which, ks=ks, sampled_negatives=ev.sampled_negatives,
                               sample_seed=p.data.seed)
        metrics.update({f"{which}/{k}": v for k, v in rankings[which].metrics.items()})
    top = rankings["test"]
    n_users, n_top = top.top_items.shape
    predictions = pd.DataFrame({
        "user": split.users.cpu().repeat_interleave(n_top).numpy(),
        "rank": torch.arange(1, n_top + 1).repeat(n_users).numpy(),
        "item": (top.top_items - 1).cpu().flatten().numpy(),
        "score": top.top_scores.cpu().flatten().numpy()})
    cost = {"params": sum(w.numel() for w in model.parameters()) if model else split.n_items,  # popular: counts
            "macs_per_example": model.macs(split.max_len) if model else None,
            "latency_ms": latency_ms(scorer, split), "latency_unit": "all users",
            "device": device.type}
    return SeqRun(model, result, metrics, predictions, cost)
