"""The one training loop every track uses.

Epochs of mini-batches, validation every ``eval_every`` epochs, early stopping on one named
validation metric with a strict-improvement rule, the best weights kept in memory, a tqdm
progress bar on a terminal, and a guard that stops on a NaN/inf loss before any broken state is saved.
Models and losses stay with the caller: the loop only sees closures.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from recdistill.errors import UserError
from recdistill.train.device import Amp, autocast
from recdistill.train.threads import rebalance as rebalance_threads

__all__ = ["FitResult", "NonFiniteLossError", "fit", "history_records"]

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]  # CPU copy of the best weights
    best_epoch: int  # 1-based epoch of the best validation score
    best: dict[str, float]  # validation metrics at the best epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    epochs_run: int = 0
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch's training part
    seconds_per_epoch: float = 0.0  # their mean
    stopped: Literal["early_stopping", "epoch_cap"] = "epoch_cap"  # why training ended


def _improved(value: float, best: float | None, mode: Literal["max", "min"]) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    epochs: int,
    monitor: str,
    mode: Literal["max", "min"],
    patience: int,
    name: str,
    eval_every: int = 1,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
    amp: Amp = "none",
) -> FitResult:
    """Train ``model`` and return its best validation state (also loaded into ``model``).

    Args:
        batches: ``epoch -> iterable of batches``; built by the caller as tensor ops.
        loss_fn: ``batch -> scalar loss``; the loop does backward and the optimizer step.
        validate: metrics on validation data, called with ``model.eval()`` and no grad.
        monitor: the key of ``validate()``'s result that early stopping watches.
        mode: ``"max"`` (AUC, NDCG) or ``"min"`` (RMSE).
        patience: evaluations without strict improvement before stopping.
        name: names the model in logs and errors.
        on_epoch: called with ``(epoch, metrics)`` after each epoch (e.g. MLflow logging).
        amp: ``runtime.amp``: the loss is computed under CUDA autocast to bf16 or fp16 (fp16
            with a gradient scaler); on the CPU it is ignored.

    Example:
        >>> _ = torch.manual_seed(0); model = nn.Linear(1, 1)
        >>> x = torch.linspace(-1, 1, 32)[:, None]; y = 3 * x
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.5)
        >>> result = fit(model, opt, batches=lambda e: [(x, y)],
        ...              loss_fn=lambda b: ((model(b[0]) - b[1]) ** 2).mean(),
        ...              validate=lambda: {"valid/mse": ((model(x) - y) ** 2).mean().item()},
        ...              epochs=50, monitor="valid/mse", mode="min", patience=3, name="line",
        ...              progress=False)
        >>> round(model.weight.item(), 2)
        3.0
    """
    if epochs < 1 or patience < 1 or eval_every < 1:
        raise ValueError(f"{name}: epochs, patience and eval_every must be >= 1")
    best_score: float | None = None
    result = FitResult(best_state={}, best_epoch=0, best={})
    stale = 0
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
    # the bar only on a terminal (disable=None): in a log file its frames would mix with the lines
    bar = tqdm(range(1, epochs + 1), desc=name, unit="epoch", disable=None if progress else True, leave=False)
    for epoch in bar:
        rebalance_threads()  # runtime.threads: auto follows the jobs running now
        model.train()
        start = time.perf_counter()
        total, n_batches = 0.0, 0
        for batch_index, batch in enumerate(batches(epoch)):
            optimizer.zero_grad(set_to_none=True)
            with autocast(amp, device):
                loss = loss_fn(batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{name}: training loss is {value} at epoch {epoch}, "
                                         f"batch {batch_index}; stopping without saving this state "
                                         "(lower the learning rate or check the inputs)")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += value
            n_batches += 1
        result.epoch_seconds.append(time.perf_counter() - start)
        # the history is a DVC out and must not change when a rerun takes longer: wall time
        # goes to the per-epoch callback (MLflow) and FitResult only
        row: dict[str, float] = {"epoch": float(epoch), "train/loss": total / max(n_batches, 1)}
        evaluate_now = epoch % eval_every == 0 or epoch == epochs
        if evaluate_now:
            model.eval()
            with torch.no_grad():
                metrics = validate()
            model.train()
            if monitor not in metrics:
                raise KeyError(f"{name}: validate() returned {sorted(metrics)}, "
                               f"not the monitored metric {monitor!r}")
            row.update(metrics)
            score = metrics[monitor]
            if not math.isfinite(score):
                raise NonFiniteLossError(f"{name}: validation {monitor} is {score} at epoch {epoch}; "
                                         "stopping without saving this state")
            if _improved(score, best_score, mode):
                best_score, stale = score, 0
                result.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                result.best_epoch, result.best = epoch, dict(metrics)
            else:
                stale += 1
            bar.set_postfix({"loss": f"{row['train/loss']:.4f}", monitor: f"{score:.4f}"})
        result.history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, {**{k: v for k, v in row.items() if k != "epoch"},
                             "train/seconds": result.epoch_seconds[-1]})
        log.info("%s epoch %d: %s (%.2f s)", name, epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"), result.epoch_seconds[-1])
        if evaluate_now and stale >= patience:
            log.info("%s: early stop at epoch %d (best %s=%.5f at epoch %d)", name, epoch,
                     monitor, best_score, result.best_epoch)
            result.stopped = "early_stopping"
            break
    bar.close()
    model.load_state_dict(result.best_state)
    result.epochs_run = len(result.history)
    result.seconds_per_epoch = sum(result.epoch_seconds) / len(result.epoch_seconds)
    return result


def history_records(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``history.json``: one record per epoch, every record with the same keys.

    With ``eval_every > 1`` the epochs without validation have no ``valid/*`` keys; here they
    get ``None`` (JSON ``null``). DVC plots read a file only when all its records share one
    set of keys, and the plots drop the null points (the curve joins the evaluated epochs).
    ``recdistill.report.read_history`` keeps numeric values only, so it reads these rows as
    it reads the sparse ones.

    >>> history_records([{"epoch": 1, "train/loss": 0.9}, {"epoch": 2, "train/loss": 0.5, "valid/auc": 0.7}])
    [{'epoch': 1, 'train/loss': 0.9, 'valid/auc': None}, {'epoch': 2, 'train/loss': 0.5, 'valid/auc': 0.7}]
    """
    keys = list(dict.fromkeys(k for row in history for k in row))
    return [{k: row.get(k) for k in keys} for row in history]
