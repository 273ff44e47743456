"""The ctr track: CrossNet/CIN teacher, its student distilled by KD_DAGFM, the student alone.

``run_ctr`` is the one function the ``ctr-{teacher,distill,alone}`` stages call; it returns
an :class:`recdistill.arm.ArmResult`. Models are built by name from :data:`TEACHERS` and
:data:`STUDENTS` (``train.ctr.model``, ``distill.ctr.student.model``) for a
:class:`CtrContext` of data sizes. Every model trains on BCE of its logits (the distilled
student's first phase on KD_DAGFM's loss) through ``recdistill.train.fit``, stopping early
on ``valid/<evaluate.select.ctr>``; the best state is evaluated once on test. Cost:
parameters and multiply-adds per example (:func:`recdistill.cost.count_macs`); latency is
the wall time of scoring 10,000 rows in one batch (:func:`scoring_pass`), timed for every
model side by side by the ``ctr-latency`` stage (:mod:`recdistill.latency`).

Shapes: B batch, N rows, Fc categorical fields, G genres.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recdistill import metrics
from recdistill.arm import ArmRecord, ArmResult, CheckpointMeta, Cost, Role
from recdistill.train.checkpoint import load_model, recorded_size
from recdistill.cost import count_macs, n_params
from recdistill.data.ctr_features import CtrFeatures, CtrSplit
from recdistill.models.cin import CIN, CinArch
from recdistill.models.crossnet import CrossNet, CrossNetArch
from recdistill.models.dagfm import DAGFM, DagfmArch
from recdistill.models.registry import Arch, Entry, Registry
from recdistill.params import Optim, Params, ParamsError
from recdistill.train import FitResult, fit, seed_everything
from recdistill.transfer.kd_dagfm import KdResult, kd_dagfm

__all__ = ["CtrContext", "TEACHERS", "STUDENTS", "ARM_NAMES", "STAGES", "SELECTABLE", "Teacher",
           "architecture", "selection", "data_shape", "epoch_batches", "predict",
           "evaluate", "train_bce", "LATENCY_ROWS", "scoring_pass", "measure_cost", "load_ctr_model",
           "load_ctr_teacher", "distill_student", "run_ctr"]

log = logging.getLogger(__name__)
ARM_NAMES: dict[Role, str] = {"teacher": "teacher", "student": "distilled", "alone": "alone"}  # metrics/, models/
STAGES: dict[Role, str] = {"teacher": "ctr-teacher", "student": "ctr-distill", "alone": "ctr-alone"}  # dvc.yaml
SELECTABLE: dict[str, Literal["max", "min"]] = {"auc": "max", "logloss": "min"}  # what evaluate() computes
LATENCY_ROWS = 10_000
MACS_ROWS = 8  # rows of the forward pass whose multiply-adds are counted


@dataclass(frozen=True)
class CtrContext:
    """The sizes a ctr model is built with, besides its architecture block."""

    cardinalities: tuple[int, ...]  # per categorical field, OOV slot included
    n_multi: int  # values of the multi-hot field (genres)
    embed_dim: int  # train.ctr.embed_dim; the teacher checkpoint's for the distilled student


def _crossnet(arch: CrossNetArch, c: CtrContext) -> nn.Module:
    return CrossNet(c.cardinalities, c.n_multi, c.embed_dim, depth=arch.depth, cross=arch.cross,
                    mlp_dims=arch.mlp_dims)


def _cin(arch: CinArch, c: CtrContext) -> nn.Module:
    return CIN(c.cardinalities, c.n_multi, c.embed_dim, depth=arch.depth, layer_size=arch.layer_size,
               mlp_dims=arch.mlp_dims)


def _dagfm(arch: DagfmArch, c: CtrContext) -> nn.Module:
    return DAGFM(c.cardinalities, c.n_multi, c.embed_dim, depth=arch.depth, type=arch.type)


TEACHERS: Registry[CtrContext] = Registry("ctr teacher", {
    "crossnet": Entry(CrossNetArch, _crossnet), "cin": Entry(CinArch, _cin)})
# a student is distilled with KD_DAGFM: it needs a FieldEmbedding `embedding` and `interact(emb)`
STUDENTS: Registry[CtrContext] = Registry("ctr student", {"dagfm": Entry(DagfmArch, _dagfm)})


@dataclass(frozen=True)
class Teacher:
    """A trained teacher, loaded for distillation."""

    model: nn.Module  # in eval mode, on the features' device
    meta: CheckpointMeta
    path: Path


def architecture(role: Role, p: Params) -> Arch:
    """The typed ``model:`` block of ``role``'s model (ParamsError naming the key if bad)."""
    if role == "teacher":
        return TEACHERS.arch(p.train.ctr.model, "train.ctr.model")
    if role in ("student", "alone"):
        return STUDENTS.arch(p.distill.ctr.student.model, "distill.ctr.student.model")
    raise ValueError(f"the ctr track has no {role!r} arm; its roles: {', '.join(ARM_NAMES)}")


def selection(p: Params) -> tuple[str, Literal["max", "min"]]:
    """The monitored validation metric (``valid/auc``) and its direction, from ``evaluate.select.ctr``."""
    name = p.evaluate.select.ctr
    if name not in SELECTABLE:
        raise ParamsError(f"params.yaml: evaluate.select.ctr = {name!r} is invalid: expected one of "
                          f"{', '.join(map(repr, SELECTABLE))} (the metrics the ctr track computes)")
    return f"valid/{name}", SELECTABLE[name]


def data_shape(features: CtrFeatures) -> dict[str, Any]:
    """The data sizes a checkpoint records and a teacher is checked against at load."""
    return {"cardinalities": list(features.cardinalities), "n_multi": features.n_multi}


def epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device) -> Callable[[int], Iterator[torch.Tensor]]:
    """``epoch -> (B,) row indices``: a fresh permutation per epoch, split into batches."""
    def batches(epoch: int) -> Iterator[torch.Tensor]:
        return iter(torch.randperm(n, generator=generator, device=device).split(batch_size))
    return batches


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; its train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model: nn.Module, split: CtrSplit, chunk: int = 65_536) -> torch.Tensor:
    """Logits (N,) of every row of ``split``, in eval mode (the mode is restored)."""
    with _eval_mode(model):
        return torch.cat([model(split.ids[i:i + chunk], split.multi[i:i + chunk])
                          for i in range(0, len(split), chunk)])  # (N,)


def evaluate(model: nn.Module, split: CtrSplit, prefix: str) -> dict[str, float]:
    """``{prefix}/auc`` and ``{prefix}/logloss`` of ``model`` on ``split``."""
    probs = torch.sigmoid(predict(model, split))  # (N,)
    return {f"{prefix}/auc": metrics.auc(probs, split.labels),
            f"{prefix}/logloss": metrics.logloss(probs, split.labels)}


def train_bce(model: nn.Module, features: CtrFeatures, optim: Optim, *, generator: torch.Generator,
              name: str, p: Params,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train every parameter of ``model`` on BCE; early stopping on :func:`selection`."""
    train = features.train
    monitor, mode = selection(p)

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        logits = model(train.ids[rows], train.multi[rows])  # (B,)
        return F.binary_cross_entropy_with_logits(logits, train.labels[rows])

    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    batches = epoch_batches(len(train), optim.batch_size, generator, train.ids.device)
    return fit(model, optimizer, batches=batches, loss_fn=loss_fn,
               validate=lambda: evaluate(model, features.valid, "valid"), epochs=optim.epochs,
               monitor=monitor, mode=mode, patience=optim.patience, name=name, on_epoch=on_epoch,
               amp=p.runtime.amp)


def scoring_pass(model: nn.Module, split: CtrSplit) -> Callable[[], object]:
    """One timed pass for :mod:`recdistill.latency`: score 10,000 rows of ``split`` in one
    batch (``model`` must be in eval mode)."""
    index = torch.arange(LATENCY_ROWS, device=split.ids.device) % len(split)  # (10k,)
    ids, multi = split.ids[index], split.multi[index]  # (10k, Fc), (10k, G)
    return torch.no_grad()(lambda: model(ids, multi))


def measure_cost(model: nn.Module, split: CtrSplit) -> Cost:
    """Parameters and multiply-adds per example of ``model``."""
    ids, multi = split.ids[:MACS_ROWS], split.multi[:MACS_ROWS]  # (8, Fc), (8, G)
    with _eval_mode(model):
        macs = count_macs(lambda: model(ids, multi), examples=len(ids))
    return Cost(params=n_params(model), macs_per_example=macs, macs_method="flop_counter",
                device=split.ids.device.type)


def load_ctr_model(path: str | Path, features: CtrFeatures, *, role: Role | None = None
                   ) -> tuple[nn.Module, CheckpointMeta]:
    """The trained model at ``path`` (a ``role`` arm; any arm for None) for ``features``, on
    their device, in eval mode; every failure is one :class:`CheckpointError` line naming the file."""
    embed_dim, meta = recorded_size(path, "embed_dim")
    context = CtrContext(features.cardinalities, features.n_multi, embed_dim)
    registry = TEACHERS if meta.role == "teacher" else STUDENTS
    return load_model(path, "ctr", registry, context, role=role, shape=data_shape(features),
                      device=features.train.ids.device)


def load_ctr_teacher(path: str | Path, features: CtrFeatures) -> Teacher:
    """The trained teacher at ``path`` for ``features`` (:func:`load_ctr_model`)."""
    model, meta = load_ctr_model(path, features, role="teacher")
    return Teacher(model, meta, Path(path))


def distill_student(student: nn.Module, teacher: nn.Module, features: CtrFeatures, p: Params, *,
                    generator: torch.Generator,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> KdResult:
    """KD_DAGFM's two phases on ``student``; ``on_epoch`` numbers epochs on through both phases."""
    dp, train = p.distill.ctr, features.train
    optim = dp.student.optim
    monitor, mode = selection(p)
    finetune_offset = [0]

    def phase_epoch(phase: str, epoch: int, row: dict[str, float]) -> None:
        if phase == "distill":
            finetune_offset[0] = epoch
        if on_epoch is not None:
            step = epoch + (finetune_offset[0] if phase == "finetune" else 0)
            on_epoch(step, {**row, "phase": 1.0 if phase == "distill" else 2.0})

    return kd_dagfm(student, teacher, train_ids=train.ids, train_multi=train.multi,
                    train_labels=train.labels,
                    batches=epoch_batches(len(train), optim.batch_size, generator, train.ids.device),
                    validate=lambda: evaluate(student, features.valid, "valid"),
                    monitor=monitor, mode=mode, alpha=dp.alpha, beta=dp.beta,
                    make_optimizer=lambda ps: torch.optim.Adam(ps, lr=optim.lr,
                                                               weight_decay=optim.weight_decay),
                    epochs=optim.epochs, patience=optim.patience, amp=p.runtime.amp,
                    on_epoch=phase_epoch)


def run_ctr(role: Role, p: Params, *, features: CtrFeatures, seed: int, teacher: Teacher | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> ArmResult:
    """Train the teacher, the distilled student or the student alone; evaluate it once on test.

    ``features`` must already be on the training device. The student role needs ``teacher``
    (:func:`load_ctr_teacher`) and takes its ``embed_dim`` (its embeddings are the teacher's).

    History rows: ``epoch`` restarts at 1 in the student's finetune phase (``phase`` tells the
    phases apart); ``step`` numbers on through both phases, as the MLflow step does, so that a
    curve over both has one x per row (the DVC plots' x axis).
    """
    arch = architecture(role, p)
    if (role == "student") != (teacher is not None):
        raise ValueError(f"the ctr {role} arm takes {'a' if role == 'student' else 'no'} teacher")
    device = features.train.ids.device
    embed_dim = teacher.meta.extra["embed_dim"] if teacher is not None else p.train.ctr.embed_dim
    generator = seed_everything(seed, device)
    registry = TEACHERS if role == "teacher" else STUDENTS
    model = registry.build(arch, CtrContext(features.cardinalities, features.n_multi, embed_dim)).to(device)
    extra: dict[str, Any] = {"embed_dim": embed_dim, "fields": list(features.fields)}
    results: tuple[FitResult, ...]
    if teacher is not None:
        kd = distill_student(model, teacher.model, features, p, generator=generator, on_epoch=on_epoch)
        results, stopped = (kd.distill, kd.finetune), kd.finetune.stopped
        offset = {"distill": 0, "finetune": kd.distill.epochs_run}
        history = [{**row, "step": row["epoch"] + offset[row["phase"]]} for row in kd.history]
        best_epoch = (kd.finetune if kd.chosen == "finetune" else kd.distill).best_epoch + offset[kd.chosen]
        extra |= {"teacher": {"checkpoint": str(teacher.path), "arch": teacher.meta.arch,
                              "seed": teacher.meta.seed, "selection": teacher.meta.selection},
                  "chosen_phase": kd.chosen,
                  "phase_best": {"distill": kd.distill.best, "finetune": kd.finetune.best}}
    else:
        optim = p.train.ctr.optim if role == "teacher" else p.distill.ctr.student.optim
        result = train_bce(model, features, optim, generator=generator, name=f"ctr-{ARM_NAMES[role]}",
                           p=p, on_epoch=on_epoch)
        results, stopped, best_epoch = (result,), result.stopped, result.best_epoch
        history = [{**row, "step": row["epoch"]} for row in result.history]
    scores = {**evaluate(model, features.valid, "valid"), **evaluate(model, features.test, "test")}
    epochs = sum(r.epochs_run for r in results)
    log.info("ctr %s (%s) seed %d: %s", role, arch.name, seed,
             ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    test = features.test
    probs = torch.sigmoid(predict(model, test)).cpu()  # (N,)
    predictions = pd.DataFrame({  # row: the row's position in the test split file
        "row": torch.arange(len(test)).numpy(), "label": test.labels.cpu().numpy().astype("int8"),
        "score": probs.numpy()})
    record = ArmRecord(track="ctr", model=ARM_NAMES[role], role=role, seed=seed, scenario=None,
                       metrics=scores, cost=measure_cost(model, test), epochs=epochs,
                       best_epoch=best_epoch, stopped=stopped)
    checkpoint = CheckpointMeta(track="ctr", role=role, seed=seed, arch=arch.model_dump(mode="json"),
                                shape=data_shape(features),
                                selection={k: v for k, v in scores.items() if k.startswith("valid/")},
                                best_epoch=best_epoch, extra=extra)
    return ArmResult(record, model.state_dict(), checkpoint, history, predictions)
