"""The seq track: SASRec teacher, distilled and alone students, most-popular baseline.

Models come from :data:`MODELS` by the ``name`` of their ``model:`` block (``train.seq.model``
for the teacher, ``distill.seq.student.model`` for both students); a registered model builds
from its block and :class:`SeqContext` and has the surface of :class:`SeqModel`. Another model
(a capsule model such as MIND or ComiRec) is its model file (module + ``Arch``), one entry in
:data:`MODELS`, and its block in ``params.yaml``; every role can then use it. Training goes
through the one loop (``recdistill.train.fit``), stopping early on ``valid/`` +
``evaluate.select.seq``. Evaluation is full ranking over all items with the user's history
masked (train items; train + valid items for test) and the target left in; the variant with
``evaluate.sampled_negatives`` sampled negatives that papers report is computed by the same
code and labelled ``evaluate.sampled_label`` (e.g. ``test/sampled100_hr@10``). Its negatives
are drawn from one fixed seed (``data.seed``), so every model is ranked against the same
candidates.

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
from typing import Any, Literal, NamedTuple, Protocol, cast

import pandas as pd
import torch
from torch import nn

from recdistill.arm import ArmRecord, ArmResult, CheckpointMeta, Cost, Role
from recdistill.train.checkpoint import load_model, read_checkpoint
from recdistill.cost import count_macs, n_params
from recdistill.data.sequences import SeqBatch, SeqSplit, Split, history_mask, seq_batches
from recdistill.metrics import hr_at_k, ndcg_at_k, topk_items
from recdistill.models.registry import Arch, Entry, Registry
from recdistill.models.sasrec import SASRec, SasrecArch
from recdistill.params import Params, ParamsError, PeriodicOptim, SeqDistillParams, SeqLoss
from recdistill.train import FitResult, fit, seed_everything
from recdistill.train.device import Amp
from recdistill.transfer.soft_targets import blend, next_item_bce, next_item_ce, soft_target_kl

__all__ = ["SeqContext", "SeqModel", "MODELS", "Arm", "ARMS", "Scorer", "SampledRanking", "Ranking",
           "TeacherTargets", "resolve_arch", "monitor", "seq_model", "rank",
           "popularity_counts", "popularity_scorer", "teacher_targets", "train_model", "scoring_pass", "load_scorer",
           "run_seq"]

Scorer = Callable[[torch.Tensor], torch.Tensor]  # inputs (B, L) int64 -> scores (B, I + 1)


@dataclass(frozen=True)
class SeqContext:
    """The data sizes a seq model is built for (and a teacher checkpoint is checked against)."""

    n_items: int  # I: tokens 1..I, 0 = padding
    max_len: int  # L: the input window (data.seq.max_len)


class SeqModel(Protocol):
    """What the seq track uses of a model: hidden states at every position, scores of all or
    of given tokens from them, next-item scores after a sequence, and (checked by
    :func:`seq_model`, as a Protocol cannot see an ``nn.Module``'s submodules from Python
    3.12 on) the item table ``item_emb``: ``nn.Embedding`` (I + 1, D), row 0 = padding."""

    item_emb: nn.Embedding  # for the type checker; not part of the runtime check

    def __call__(self, seq: torch.Tensor) -> torch.Tensor: ...  # (B, L) int64 -> (B, L, D)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...  # (..., D) -> (..., I + 1)

    def pair_scores(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor: ...  # -> (...,)

    def score_last(self, seq: torch.Tensor) -> torch.Tensor: ...  # (B, L) -> (B, I + 1)


def _sasrec(arch: SasrecArch, context: SeqContext) -> SASRec:
    return SASRec(n_items=context.n_items, max_len=context.max_len, hidden_dim=arch.hidden_dim,
                  n_blocks=arch.n_blocks, n_heads=arch.n_heads, dropout=arch.dropout)


MODELS: Registry[SeqContext] = Registry("seq", {"sasrec": Entry(SasrecArch, _sasrec)})


class Arm(NamedTuple):
    model: str  # the arm's name in metrics/seq/ and models/seq/ (<model>-s<seed>)
    stage: str  # its dvc.yaml stage, which names its MLflow run


ARMS: dict[Role, Arm] = {"teacher": Arm("teacher", "seq-teacher"), "student": Arm("distilled", "seq-distill"),
                         "alone": Arm("alone", "seq-alone"), "baseline": Arm("popular", "seq-popular")}


def monitor(p: Params) -> str:
    """The early-stopping metric, ``valid/`` + ``evaluate.select.seq`` (ParamsError if the
    track does not compute it during training: hr@k or ndcg@k with k in ``evaluate.ks``)."""
    computed = [f"{m}@{k}" for k in p.evaluate.ks for m in ("hr", "ndcg")]
    if p.evaluate.select.seq not in computed:
        raise ParamsError(f"params.yaml: evaluate.select.seq = {p.evaluate.select.seq!r} is invalid: "
                          f"expected one of {', '.join(computed)} (hr@k and ndcg@k for k in evaluate.ks)")
    return f"valid/{p.evaluate.select.seq}"


def resolve_arch(role: Role, p: Params) -> Arch | None:
    """The architecture ``role`` trains (None for the baseline), validated through
    :data:`MODELS`, and its selection metric checked: bad params fail before any work."""
    if role == "baseline":
        return None
    monitor(p)
    if role == "teacher":
        return MODELS.arch(p.train.seq.model, "train.seq.model")
    return MODELS.arch(p.distill.seq.student.model, "distill.seq.student.model")


def seq_model(module: nn.Module) -> SeqModel:
    """``module`` as the track uses it (TypeError naming what a registered model lacks)."""
    missing = [m for m in ("item_emb", "logits", "pair_scores", "score_last") if not hasattr(module, m)]
    if missing:
        raise TypeError(f"{type(module).__name__} is not a seq model: it lacks {', '.join(missing)}")
    return cast(SeqModel, module)


@dataclass(frozen=True)
class SampledRanking:
    """The labelled sampled-ranking variant: ``negatives`` unseen items per user drawn from
    ``seed``, metrics named ``<label>_hr@k``."""

    label: str  # evaluate.sampled_label, e.g. "sampled100"
    negatives: int  # evaluate.sampled_negatives
    seed: int  # data.seed: every model is ranked against the same candidates

    @classmethod
    def of(cls, p: Params) -> SampledRanking:
        return cls(p.evaluate.sampled_label, p.evaluate.sampled_negatives, p.data.seed)


@dataclass(frozen=True)
class Ranking:
    metrics: dict[str, float]  # "hr@10", "ndcg@10", ..., "sampled100_hr@10", ...
    top_items: torch.Tensor  # (U, top) int64 tokens, best first
    top_scores: torch.Tensor  # (U, top) float32


@torch.no_grad()
def rank(scorer: Scorer, split: SeqSplit, which: Split, *, ks: tuple[int, ...],
         sampled: SampledRanking | None = None, top: int = 20, batch_size: int = 512) -> Ranking:
    """HR@k and NDCG@k of the target among all items (history masked), and top lists.

    With ``sampled``, also among ``sampled.negatives`` unseen items drawn without replacement
    (the target placed last, so ties count against it).
    """
    inputs, targets = split.inputs(which)  # (U, L), (U,)
    generator = torch.Generator(device=inputs.device).manual_seed(sampled.seed if sampled else 0)
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
        if sampled:
            unseen = int((~(mask | relevant)).sum(1).min())
            if unseen < sampled.negatives:
                raise ValueError(f"evaluate.sampled_negatives = {sampled.negatives} but a user has "
                                 f"only {unseen} unseen items to sample from")
            keys = torch.rand(scores.shape, generator=generator, device=scores.device)  # (B, I + 1)
            negs = keys.masked_fill(mask | relevant, 2.0).topk(sampled.negatives, largest=False).indices
            cand = torch.cat([negs, target[:, None]], dim=1)  # (B, C)
            hit = torch.zeros(cand.shape, dtype=torch.bool, device=cand.device)
            hit[:, -1] = True  # (B, C)
            groups.append((f"{sampled.label}_", scores.gather(1, cand), hit))
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


def popularity_scorer(counts: torch.Tensor) -> Scorer:
    """Every user gets the train interaction count of each item (most-popular baseline)."""
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

    teacher: SeqModel
    states: torch.Tensor  # (U, L, D_teacher) hidden states
    top_items: torch.Tensor  # (U, L, K) int64 the teacher's best tokens at each position
    top_scores: torch.Tensor  # (U, L, K) float32 their scores


@torch.no_grad()
def teacher_targets(teacher: SeqModel, inputs: torch.Tensor, top: int, batch_size: int = 256) -> TeacherTargets:
    """Run the frozen teacher (in eval mode) once over fixed inputs (U, L): it sees the same
    sequences every epoch, so per batch distillation only gathers these and scores the candidates."""
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


def _kd_scores(student: SeqModel, h: torch.Tensor, targets: TeacherTargets, rows: torch.Tensor,
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
    # in fp32: -1e9 overflows the fp16 scores that CUDA autocast (runtime.amp: fp16) produces
    return s.float().masked_fill(repeat, -1e9), t.float().masked_fill(repeat, -1e9)


def train_model(split: SeqSplit, arch: Arch, optim: PeriodicOptim, *, seed: int, device: torch.device,
                name: str, ks: tuple[int, ...], monitor: str, loss: SeqLoss, teacher: SeqModel | None = None,
                kd: SeqDistillParams | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None, amp: Amp = "none"
                ) -> tuple[nn.Module, FitResult]:
    """Train the model of ``arch`` on its hard ``loss`` (``bce``: one sampled negative per
    position; ``ce``: softmax over every item), plus the teacher's soft targets when one is given. Validation ranks all items (HR/NDCG at ``ks``); training stops early on ``monitor``
    (one of them, e.g. ``valid/ndcg@10``). Returns the best state, in eval mode."""
    generator = seed_everything(seed, device)
    module = MODELS.build(arch, SeqContext(split.n_items, split.max_len)).to(device)
    model = seq_model(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=optim.lr, betas=(0.9, 0.98),
                                 weight_decay=optim.weight_decay)
    targets = None
    if teacher is not None:
        assert kd is not None, "distillation needs the distill.seq params"
        assert not getattr(teacher, "training", False), "the teacher must be in eval mode (no dropout)"
        top = kd.teacher_top if kd.candidates == "sampled" else 0
        targets = teacher_targets(teacher, split.train[:, :-1], top)

    def loss_fn(batch: SeqBatch) -> torch.Tensor:
        keep = batch.positives != 0  # (B, L')
        h = model(batch.inputs)[keep]  # (N, D)
        pos = batch.positives[keep]  # (N,)
        if loss == "ce":
            hard = next_item_ce(model.logits(h), pos)  # (N, I + 1) scores
        else:
            hard = next_item_bce(model.pair_scores(h, pos), model.pair_scores(h, batch.negatives[keep]))
        if targets is None or kd is None or kd.kd_weight == 0:
            return hard
        s, t = _kd_scores(model, h, targets, batch.rows, keep, pos, kd, generator)  # (N, C), (N, C)
        return blend(hard, soft_target_kl(s, t, kd.temperature), kd.kd_weight)

    def validate() -> dict[str, float]:
        found = rank(model.score_last, split, "valid", ks=ks).metrics
        return {f"valid/{k}": v for k, v in found.items()}

    result = fit(module, optimizer, batches=lambda epoch: seq_batches(split, optim.batch_size, generator),
                 loss_fn=loss_fn, validate=validate, epochs=optim.epochs, monitor=monitor, mode="max",
                 patience=optim.patience, name=name, eval_every=optim.eval_every, on_epoch=on_epoch,
                 progress=False, amp=amp)
    return module.eval(), result


def scoring_pass(scorer: Scorer, split: SeqSplit, *, batch_size: int = 512) -> Callable[[], object]:
    """One timed pass for :mod:`recdistill.latency`: score every item for all users' test
    inputs, ``batch_size`` users at a time."""
    inputs, _ = split.inputs("test")  # (U, L)

    @torch.no_grad()
    def score_all() -> None:
        for s in range(0, len(inputs), batch_size):
            scorer(inputs[s:s + batch_size])

    return score_all


def load_scorer(path: str | Path, split: SeqSplit, device: torch.device) -> tuple[Scorer, CheckpointMeta]:
    """The scorer of the trained arm at ``path`` (most popular: its stored counts) for
    ``split``; every failure is one :class:`recdistill.train.CheckpointError` line naming the file."""
    state, meta = read_checkpoint(path, map_location=device)
    if meta.arch.get("name") == "popular":
        return popularity_scorer(state["counts"]), meta
    context = SeqContext(split.n_items, split.max_len)
    module, meta = load_model(path, "seq", MODELS, context, role=None, device=device,
                              shape={"n_items": context.n_items, "max_len": context.max_len})
    return seq_model(module).score_last, meta


def _predictions(split: SeqSplit, top: Ranking) -> pd.DataFrame:
    """The test top lists: user, rank (1-based), item (canonical id), score."""
    n_users, n_top = top.top_items.shape
    return pd.DataFrame({
        "user": split.users.cpu().repeat_interleave(n_top).numpy(),
        "rank": torch.arange(1, n_top + 1).repeat(n_users).numpy(),
        "item": (top.top_items - 1).cpu().flatten().numpy(),
        "score": top.top_scores.cpu().flatten().numpy()})


def run_seq(role: Role, p: Params, split: SeqSplit, *, arch: Arch | None, seed: int, device: torch.device,
            teacher_checkpoint: Path | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> ArmResult:
    """Train (or count, for the baseline) the arm ``role`` of the seq track and evaluate it.

    ``arch``: :func:`resolve_arch` of ``role``; ``teacher_checkpoint``: the teacher's
    ``model.pt`` (role ``student`` only), loaded through :func:`recdistill.train.checkpoint.load_model`.
    """
    context = SeqContext(split.n_items, split.max_len)
    shape = {"n_items": context.n_items, "max_len": context.max_len}
    extra: dict[str, Any] = {}
    method: Literal["flop_counter", "formula"]
    if arch is None:  # most popular: counted, not trained
        counts = popularity_counts(split)  # (I + 1,)
        scorer, state, fitted = popularity_scorer(counts), {"counts": counts}, None
        # a lookup: every user's score row is the stored count vector, 0 multiply-adds per user
        size, macs, method = split.n_items, 0, "formula"
    else:
        teacher = None
        if role == "student":
            assert teacher_checkpoint is not None, "the student needs its teacher's checkpoint"
            module, meta = load_model(teacher_checkpoint, "seq", MODELS, context, role="teacher", shape=shape,
                                      device=device)
            teacher = seq_model(module)
            extra["teacher"] = {"path": str(teacher_checkpoint), "arch": meta.arch, "seed": meta.seed}
        optim = p.train.seq.optim if role == "teacher" else p.distill.seq.student.optim
        loss = p.train.seq.loss if role == "teacher" else p.distill.seq.loss
        trained, fitted = train_model(split, arch, optim, seed=seed, device=device, name=f"seq-{role}@{seed}",
                                      ks=tuple(p.evaluate.ks), monitor=monitor(p), loss=loss, teacher=teacher,
                                      kd=p.distill.seq if teacher else None, on_epoch=on_epoch,
                                      amp=p.runtime.amp)
        scorer, state = seq_model(trained).score_last, trained.state_dict()
        inputs, _ = split.inputs("test")  # (U, L): scoring every item for each user
        size, macs, method = n_params(trained), count_macs(lambda: scorer(inputs), len(inputs)), "flop_counter"
    metrics: dict[str, float] = {}
    rankings = {}
    for which in ("valid", "test"):
        rankings[which] = rank(scorer, split, which, ks=tuple(p.evaluate.ks), sampled=SampledRanking.of(p))
        metrics.update({f"{which}/{k}": v for k, v in rankings[which].metrics.items()})
    record = ArmRecord(
        track="seq", model=ARMS[role].model, role=role, seed=seed, scenario=None, metrics=metrics,
        cost=Cost(params=size, macs_per_example=macs, macs_method=method, device=device.type),
        epochs=fitted.epochs_run if fitted else 0, best_epoch=fitted.best_epoch if fitted else 0,
        stopped=fitted.stopped if fitted else "not_trained")
    checkpoint = CheckpointMeta(
        track="seq", role=role, seed=seed, arch=arch.model_dump(mode="json") if arch else {"name": "popular"},
        shape=shape, selection=fitted.best if fitted else {}, best_epoch=record.best_epoch, extra=extra)
    return ArmResult(record, state, checkpoint, fitted.history if fitted else [], _predictions(split, rankings["test"]))
