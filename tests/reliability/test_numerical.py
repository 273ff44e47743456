"""Numerical faults: a NaN/inf loss stops training with NonFiniteLossError naming the model,
epoch and batch, before the bad step is applied and before any checkpoint is written."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import relkit
import torch
import yaml
from torch import nn

from recdistill.train import NonFiniteLossError, fit, seed_everything

MINI = relkit.HERE / "mini_stage.py"


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Generator]:
    g = seed_everything(0)
    x = torch.randn(96, 3, generator=g)  # (N, 3)
    y = x @ torch.tensor([0.5, -1.0, 2.0])  # (N,)
    return nn.Linear(3, 1), x, y, g


@pytest.mark.parametrize(("epoch", "batch", "bad"), [
    (1, 0, math.nan), (1, 2, math.inf), (3, 1, -math.inf), (2, 0, math.nan)])
def test_non_finite_loss_stops_before_the_step(epoch: int, batch: int, bad: float) -> None:
    model, x, y, g = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    seen: list[int] = []
    where = {"epoch": 0, "batch": -1}
    weights_before_bad: dict[str, torch.Tensor] = {}

    def batches(e: int) -> list[torch.Tensor]:
        where["epoch"], where["batch"] = e, -1
        return list(torch.randperm(len(x), generator=g).split(32))  # 3 batches

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        where["batch"] += 1
        loss = ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        if (where["epoch"], where["batch"]) == (epoch, batch):
            weights_before_bad.update(copy.deepcopy(model.state_dict()))
            return loss * bad
        return loss

    with pytest.raises(NonFiniteLossError) as err:
        fit(model, opt, batches=batches, loss_fn=loss_fn,
            validate=lambda: {"valid/mse": float(((model(x).squeeze(-1) - y) ** 2).mean())},
            epochs=5, monitor="valid/mse", mode="min", patience=5, name="probe",
            on_epoch=lambda e, m: seen.append(e), progress=False)
    assert type(err.value) is NonFiniteLossError
    value = "nan" if math.isnan(bad) else str(bad)
    assert f"probe: training loss is {value} at epoch {epoch}, batch {batch}" in str(err.value)
    assert seen == list(range(1, epoch))  # the failing epoch is never reported as done
    for key, tensor in model.state_dict().items():  # no step was taken with the bad loss
        assert torch.equal(tensor, weights_before_bad[key]), key


def test_nan_validation_metric_is_an_error() -> None:
    model, x, y, _ = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(NonFiniteLossError, match=r"probe.*valid/mse.*epoch 1"):
        fit(model, opt, batches=lambda e: [x], loss_fn=lambda b: model(b).pow(2).mean(),
            validate=lambda: {"valid/mse": math.nan}, epochs=5, monitor="valid/mse", mode="min",
            patience=2, name="probe", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("previous", [True, False], ids=["previous-outs", "fresh"])
def test_stage_with_nan_loss_writes_nothing(tmp_path: Path, previous: bool) -> None:
    """mini_stage.py with a NaN at epoch 2, batch 1: exit 1, the error on stderr, no checkpoint."""
    ws = tmp_path / "ws"
    ws.mkdir()
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    argv = [MINI, "models/mini", "metrics/mini.json", "--epochs", "4"]
    if previous:
        assert relkit.run(argv, ws, store).returncode == 0
    before = [relkit.snapshot(ws / "models/mini"), relkit.snapshot(ws / "metrics/mini.json")]
    proc = relkit.run([*argv, "--nan-at", "2:1"], ws, store)
    relkit.assert_fails_with(proc, NonFiniteLossError,
                             "mini-mf: training loss is nan at epoch 2, batch 1",
                             "stopping without saving this state")
    assert [relkit.snapshot(ws / "models/mini"), relkit.snapshot(ws / "metrics/mini.json")] == before
    assert relkit.stray_temps(ws / "models") == []
    assert relkit.run_status(store)["mini@0"][-1] == "FAILED"
    if not previous:
        assert not (ws / "models").exists() or not any((ws / "models").iterdir())


@pytest.mark.slow
def test_real_stage_diverging_lr(workspace: Path, tmp_path: Path) -> None:
    """ctr-teacher with a learning rate of 1e30 (valid params, a diverging run): the loss turns
    NaN after the first epoch's step and the stage stops with NonFiniteLossError; no model folder."""
    ws = relkit.copy_workspace(workspace, tmp_path / "ws")
    p = yaml.safe_load((ws / "params.yaml").read_text())
    p["train"]["ctr"]["optim"]["lr"] = 1e30
    relkit.write_yaml(ws / "params.yaml", p)
    store = relkit.seeded_store(tmp_path / "mlflow.db")
    proc = relkit.run([relkit.stage("ctr_train.py"), "teacher", "--seed", "0", "--prepared",
                       "data/prepared/ctr", "--canonical", "data/canonical", "--out",
                       "models/ctr/teacher-s0", "--metrics", "metrics/ctr/teacher-s0.json"], ws, store)
    relkit.assert_fails_with(proc, NonFiniteLossError,
                             "ctr-teacher: training loss is nan at epoch 2, batch 0")
    assert not (ws / "models").exists() and not (ws / "metrics/ctr").exists()
    assert relkit.run_status(store) == {"ctr-teacher@0": ["FAILED"]}
    assert json.dumps(relkit.stray_temps(ws)) == "[]"
