"""The shared training loop, checkpoints, seeding: tiny models on synthetic data."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from recdistill.train import (CheckpointError, NonFiniteLossError, fit, load_checkpoint,
                              save_checkpoint, seed_everything)


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Generator]:
    g = seed_everything(seed)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256, generator=g)
    return nn.Linear(4, 1), x, y, g


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, **kw):  # noqa: ANN003, ANN202
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    def batches(epoch: int):  # noqa: ANN202
        perm = torch.randperm(len(x), generator=g)
        return [perm[i:i + 32] for i in range(0, len(x), 32)]
    loss_fn = kw.pop("loss_fn", lambda idx: ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean())
    validate = kw.pop("validate", lambda: {"valid/mse": float(((model(x).squeeze(-1) - y) ** 2).mean())})
    args = dict(epochs=40, monitor="valid/mse", mode="min", patience=3, name="linear", progress=False)
    return fit(model, opt, batches=batches, loss_fn=loss_fn, validate=validate, **(args | kw))


def test_learns_and_keeps_best_state() -> None:
    model, x, y, g = _problem()
    result = _fit(model, x, y, g)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5, 3.0]]), atol=0.05, rtol=0)
    best_row = result.history[result.best_epoch - 1]
    assert best_row["valid/mse"] == min(r["valid/mse"] for r in result.history)
    for key, value in result.best_state.items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_early_stopping_is_strict_and_counts_patience() -> None:
    model, x, y, g = _problem()
    scores = iter([0.5, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3])  # equal is not an improvement
    result = _fit(model, x, y, g, validate=lambda: {"valid/mse": next(scores)}, patience=2)
    assert result.best_epoch == 2 and result.epochs_run == 4


def test_eval_every_and_on_epoch() -> None:
    model, x, y, g = _problem()
    seen: list[tuple[int, dict[str, float]]] = []
    result = _fit(model, x, y, g, epochs=6, eval_every=3, on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert "valid/mse" in seen[2][1] and "valid/mse" not in seen[0][1]
    assert result.best_epoch in (3, 6)


def test_nan_loss_stops_with_name_epoch_batch() -> None:
    model, x, y, g = _problem()
    calls = {"n": 0}
    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        return loss * float("nan") if calls["n"] == 11 else loss  # epoch 2, batch 2
    with pytest.raises(NonFiniteLossError, match=r"linear: training loss is nan at epoch 2, batch 2"):
        _fit(model, x, y, g, loss_fn=loss_fn)


def test_same_seed_bit_identical() -> None:
    runs = []
    for _ in range(2):
        model, x, y, g = _problem(seed=7)
        result = _fit(model, x, y, g, epochs=5)
        runs.append((result.history[-1]["valid/mse"], model.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model.state_dict(), {"model": "linear", "epoch": 3, "dims": [3, 2]})
    state, meta = load_checkpoint(path)
    assert meta == {"model": "linear", "epoch": 3, "dims": [3, 2]}
    torch.testing.assert_close(state["weight"], model.weight.detach())
    with pytest.raises(CheckpointError, match=str(tmp_path / "missing.pt")):
        load_checkpoint(tmp_path / "missing.pt")
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": EvilPayload()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(evil)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(truncated)


def test_same_weights_give_byte_identical_checkpoints(tmp_path: Path) -> None:
    """A retrained model with unchanged weights must not look changed to DVC (its md5),
    whatever the temp name the atomic write used."""
    model = nn.Linear(3, 2)
    (tmp_path / "a").mkdir()
    paths = [tmp_path / "model.pt", tmp_path / "a" / "model.pt", tmp_path / "other.pt"]
    for path in paths:
        save_checkpoint(path, model.state_dict(), {"model": "linear"})
    assert len({p.read_bytes() for p in paths}) == 1


class EvilPayload:
    def __reduce__(self):  # noqa: ANN204
        return (pickle.loads, (b"cos\nsystem\n(S'echo pwned'\ntR.",))
