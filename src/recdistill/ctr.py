"""The ctr track: CrossNet/CIN teacher, DAGFM distilled by KD_DAGFM, DAGFM alone.

``run_ctr`` is the one function the ``ctr-{teacher,distill,alone}`` stages call. Every model
trains on BCE of its logits (the student's first phase on KD_DAGFM's loss) through
``recdistill.train.fit``, with early stopping on validation AUC; the best state is
evaluated once on test. Cost: parameters, multiply-adds per example counted by
``torch.utils.flop_counter`` at dispatch level (matrix products plus element-wise
products), and the median wall time of scoring 10,000 rows in one batch.

Shapes: B batch, N rows, Fc categorical fields, G genres.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from recdistill import metrics
from recdistill.data.ctr_features import CtrFeatures, CtrSplit
from recdistill.io import write_json, write_parquet
from recdistill.models.cin import CIN
from recdistill.models.crossnet import CrossNet
from recdistill.models.dagfm import DAGFM
from recdistill.params import CtrDistillParams, CtrTeacherParams, DagfmParams, Params
from recdistill.train import FitResult, fit, load_checkpoint, median_ms, save_checkpoint, seed_everything
from recdistill.transfer.kd_dagfm import KdResult, kd_dagfm

__all__ = ["Role", "TEACHERS", "MODELS", "build_model", "teacher_config", "student_config",
           "epoch_batches", "predict", "evaluate", "train_bce", "count_macs", "latency_ms", "cost",
           "load_teacher", "distill_student", "CtrRun", "run_ctr", "write_outputs"]

log = logging.getLogger(__name__)
Role = Literal["teacher", "distill", "alone"]
TEACHERS: dict[str, type[nn.Module]] = {"crossnet": CrossNet, "cin": CIN}
MODELS: dict[str, type[nn.Module]] = {**TEACHERS, "dagfm": DAGFM}
OUT_NAMES: dict[Role, str] = {"teacher": "teacher", "distill": "distilled", "alone": "alone"}
METRIC_ROLES: dict[Role, str] = {"teacher": "teacher", "distill": "student", "alone": "alone"}
LATENCY_ROWS = 10_000


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """The ctr model ``name`` (a key of :data:`MODELS`) from constructor kwargs."""
    if name not in MODELS:
        raise ValueError(f"unknown ctr model {name!r}; accepted: {', '.join(sorted(MODELS))}")
    return MODELS[name](**config)


def _fields(features: CtrFeatures) -> dict[str, Any]:
    return {"cardinalities": list(features.cardinalities), "n_multi": features.n_multi}


def teacher_config(p: CtrTeacherParams, features: CtrFeatures) -> dict[str, Any]:
    """Constructor kwargs of the teacher ``p.teacher`` (plain types: stored in the checkpoint)."""
    if p.teacher not in TEACHERS:
        raise ValueError(f"train.ctr.teacher = {p.teacher!r}; accepted: {', '.join(sorted(TEACHERS))}")
    extra = {"cross": p.cross} if p.teacher == "crossnet" else {"layer_size": p.cin_layer_size}
    return {**_fields(features), "embed_dim": p.embed_dim, "depth": p.depth,
            "mlp_dims": list(p.mlp_dims), **extra}


def student_config(p: DagfmParams, embed_dim: int, features: CtrFeatures) -> dict[str, Any]:
    return {**_fields(features), "embed_dim": embed_dim, "depth": p.depth, "type": p.type}


def epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device) -> Callable[[int], Iterator[torch.Tensor]]:
    """``epoch -> (B,) row indices``: a fresh permutation per epoch, split into batches."""
    def batches(epoch: int) -> Iterator[torch.Tensor]:
        return iter(torch.randperm(n, generator=generator, device=device).split(batch_size))
    return batches


@torch.no_grad()
def predict(model: nn.Module, split: CtrSplit, chunk: int = 65_536) -> torch.Tensor:
    """Logits (N,) of every row of ``split``, in eval mode (the mode is restored)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(split.ids[i:i + chunk], split.multi[i:i + chunk])
                     for i in range(0, len(split), chunk)])  # (N,)
    model.train(was_training)
    return out


def evaluate(model: nn.Module, split: CtrSplit, prefix: str) -> dict[str, float]:
    """``{prefix}/auc`` and ``{prefix}/logloss`` of ``model`` on ``split``."""
    probs = torch.sigmoid(predict(model, split))  # (N,)
    return {f"{prefix}/auc": metrics.auc(probs, split.labels),
            f"{prefix}/logloss": metrics.logloss(probs, split.labels)}


def train_bce(model: nn.Module, features: CtrFeatures, hp: CtrTeacherParams | DagfmParams, *,
              generator: torch.Generator, name: str,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train every parameter of ``model`` on BCE; early stopping on validation AUC."""
    train = features.train

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        logits = model(train.ids[rows], train.multi[rows])  # (B,)
        return F.binary_cross_entropy_with_logits(logits, train.labels[rows])

    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    batches = epoch_batches(len(train), hp.batch_size, generator, train.ids.device)
    return fit(model, optimizer, batches=batches, loss_fn=loss_fn,
               validate=lambda: evaluate(model, features.valid, "valid"), epochs=hp.epochs,
               monitor="valid/auc", mode="max", patience=hp.patience, name=name, on_epoch=on_epoch)


def _mul_flops(*args: Any, out_shape: tuple[int, ...], **kwargs: Any) -> int:
    return 2 * int(torch.Size(out_shape).numel())  # 1 multiply = 1 MAC = 2 "flops"


def _mv_flops(mat: tuple[int, ...], *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return 2 * mat[0] * mat[1]  # (M, N) @ (N,)


def _addmv_flops(bias: Any, mat: tuple[int, ...], *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return 2 * mat[0] * mat[1]


def _dot_flops(a: tuple[int, ...], *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return 2 * a[0]


# counted on top of torch's own formulas (mm, addmm, bmm, baddbmm, convolutions)
_MAC_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten.mul: _mul_flops, torch.ops.aten.mv: _mv_flops,
    torch.ops.aten.addmv: _addmv_flops, torch.ops.aten.dot: _dot_flops}


@torch.no_grad()
def count_macs(model: nn.Module, split: CtrSplit, rows: int = 8) -> int:
    """Multiply-adds per example of one forward pass, counted on ``rows`` examples.

    Matrix products (mm, addmm, bmm, mv, ...) count ``M*N*K``; element-wise products count
    one per output element; lookups, sums and additions count nothing.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_MAC_FORMULAS)
    with counter:
        model(split.ids[:rows], split.multi[:rows])
    model.train(was_training)
    return round(counter.get_total_flops() / 2 / rows)


@torch.no_grad()
def latency_ms(model: nn.Module, split: CtrSplit, repeats: int = 7) -> float:
    index = torch.arange(LATENCY_ROWS, device=split.ids.device) % len(split)  # (10k,)
    ids, multi = split.ids[index], split.multi[index]  # (10k, Fc), (10k, G)
    model.eval()
    return median_ms(lambda: model(ids, multi), ids.device, repeats)


def cost(model: nn.Module, split: CtrSplit) -> dict[str, Any]:
    """The metrics-file ``cost`` block: parameters, MACs per example, latency per 10k rows."""
    device = split.ids.device
    return {"params": sum(p.numel() for p in model.parameters()),
            "macs_per_example": count_macs(model, split),
            "latency_ms": round(latency_ms(model, split), 3), "latency_unit": "per 10k rows",
            "device": device.type}


def load_teacher(path: str | Path, features: CtrFeatures) -> tuple[CrossNet | CIN, dict[str, Any]]:
    """The trained teacher from its checkpoint (``CheckpointError`` naming a missing/bad path)."""
    state, meta = load_checkpoint(path, map_location=features.train.ids.device)
    if meta.get("role") != "teacher" or meta.get("architecture") not in TEACHERS:
        raise ValueError(f"checkpoint {path} is not a ctr teacher (role={meta.get('role')!r}, "
                         f"architecture={meta.get('architecture')!r}; accepted: {sorted(TEACHERS)})")
    if list(meta["config"]["cardinalities"]) != list(features.cardinalities):
        raise ValueError(f"checkpoint {path} was trained on other vocabularies "
                         f"({meta['config']['cardinalities']} vs {list(features.cardinalities)}); "
                         "retrain the teacher on this split")
    teacher = build_model(meta["architecture"], meta["config"]).to(features.train.ids.device)
    assert isinstance(teacher, CrossNet | CIN)
    teacher.load_state_dict(state)
    return teacher, meta


@dataclass
class CtrRun:
    """What a ctr stage writes: the trained model and its records."""

    role: Role
    architecture: str
    config: dict[str, Any]
    model: nn.Module
    seed: int
    metrics: dict[str, float]
    cost: dict[str, Any]
    history: list[dict[str, Any]]
    epochs: int
    best_epoch: int
    seconds_per_epoch: float
    extra: dict[str, Any] = field(default_factory=dict)


def distill_student(student: DAGFM, teacher: CrossNet | CIN, features: CtrFeatures,
                    p: CtrDistillParams, *, generator: torch.Generator,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> KdResult:
    """KD_DAGFM's two phases on ``student``; epochs are numbered on through both phases."""
    sp, train = p.student, features.train
    finetune_offset = [0]

    def phase_epoch(phase: str, epoch: int, row: dict[str, float]) -> None:
        if phase == "distill":
            finetune_offset[0] = epoch
        if on_epoch is not None:
            step = epoch + (finetune_offset[0] if phase == "finetune" else 0)
            on_epoch(step, {**row, "phase": 1.0 if phase == "distill" else 2.0})

    return kd_dagfm(student, teacher, train_ids=train.ids, train_multi=train.multi,
                    train_labels=train.labels,
                    batches=epoch_batches(len(train), sp.batch_size, generator, train.ids.device),
                    validate=lambda: evaluate(student, features.valid, "valid"),
                    alpha=p.alpha, beta=p.beta,
                    make_optimizer=lambda ps: torch.optim.Adam(ps, lr=sp.lr,
                                                               weight_decay=sp.weight_decay),
                    epochs=sp.epochs, patience=sp.patience, on_epoch=phase_epoch)


def run_ctr(role: Role, p: Params, *, features: CtrFeatures, seed: int,
            teacher_checkpoint: str | Path | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> CtrRun:
    """Train the teacher, the distilled student or the student alone; evaluate it once on test.

    ``features`` must already be on the training device. The distill role needs
    ``teacher_checkpoint`` and fails before any training when it is missing or unreadable;
    the student then takes the teacher's ``embed_dim`` (its embeddings are the teacher's).
    """
    device = features.train.ids.device
    sp = p.distill.ctr.student
    teacher: CrossNet | CIN | None = None
    teacher_meta: dict[str, Any] = {}
    if role == "distill":  # load first: no silent warm start from a missing teacher
        if teacher_checkpoint is None:
            raise ValueError("the distill role needs the teacher checkpoint path")
        teacher, teacher_meta = load_teacher(teacher_checkpoint, features)
    generator = seed_everything(seed, device)
    architecture: str
    if role == "teacher":
        architecture, config = p.train.ctr.teacher, teacher_config(p.train.ctr, features)
    else:
        embed_dim = teacher_meta["config"]["embed_dim"] if teacher else p.train.ctr.embed_dim
        architecture, config = "dagfm", student_config(sp, embed_dim, features)
    model = build_model(architecture, config).to(device)
    extra: dict[str, Any] = {}
    results: tuple[FitResult, ...]
    if teacher is not None:
        assert isinstance(model, DAGFM)
        kd = distill_student(model, teacher, features, p.distill.ctr, generator=generator,
                             on_epoch=on_epoch)
        results, history = (kd.distill, kd.finetune), kd.history
        chosen = kd.finetune if kd.chosen == "finetune" else kd.distill
        best_epoch = chosen.best_epoch + (kd.distill.epochs_run if kd.chosen == "finetune" else 0)
        extra = {"teacher": {"architecture": teacher_meta["architecture"],
                             "checkpoint": str(teacher_checkpoint),
                             "valid/auc": teacher_meta["valid/auc"]},
                 "chosen_phase": kd.chosen,
                 "phase_best": {"distill": kd.distill.best, "finetune": kd.finetune.best}}
    else:
        hp = p.train.ctr if role == "teacher" else sp
        result = train_bce(model, features, hp, generator=generator, name=f"ctr-{role}",
                           on_epoch=on_epoch)
        results, history, best_epoch = (result,), list(result.history), result.best_epoch
    scores = {**evaluate(model, features.valid, "valid"), **evaluate(model, features.test, "test")}
    epochs = sum(r.epochs_run for r in results)
    seconds = sum(r.seconds_per_epoch * r.epochs_run for r in results) / epochs
    log.info("ctr %s (%s) seed %d: %s", role, architecture, seed,
             ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    return CtrRun(role, architecture, config, model, seed, scores, cost(model, features.test),
                  history, epochs, best_epoch, seconds, extra)


def write_outputs(run: CtrRun, features: CtrFeatures, out_dir: str | Path) -> dict[str, Any]:
    """Write model.pt, history.json and predictions.parquet under ``out_dir``.

    predictions.parquet: ``row`` (int64, the row's position in the test split file),
    ``label`` (int8) and ``score`` (float32, the predicted click probability).

    Returns the metrics-file object (the stage writes it, and run.json through tracking).
    """
    out_dir = Path(out_dir)
    meta = {"role": run.role, "architecture": run.architecture, "config": run.config,
            "seed": run.seed, "fields": list(features.fields), "valid/auc": run.metrics["valid/auc"],
            **{k: v for k, v in run.extra.items() if k == "chosen_phase"}}
    save_checkpoint(out_dir / "model.pt", run.model.state_dict(), meta)
    write_json(out_dir / "history.json", run.history)
    test = features.test
    probs = torch.sigmoid(predict(run.model, test)).cpu()  # (N,)
    write_parquet(out_dir / "predictions.parquet", pd.DataFrame({
        "row": torch.arange(len(test)).numpy(), "label": test.labels.cpu().numpy().astype("int8"),
        "score": probs.numpy()}))
    return {"track": "ctr", "model": OUT_NAMES[run.role], "role": METRIC_ROLES[run.role],
            "seed": run.seed, "metrics": run.metrics, "cost": run.cost, "epochs": run.epochs,
            "best_epoch": run.best_epoch, "seconds_per_epoch": round(run.seconds_per_epoch, 4)}
