"""The soft-target KD loss and the hard loss against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recdistill.transfer.soft_targets import blend, next_item_bce, next_item_ce, soft_target_kl


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_kd_loss_equals_hand_computation() -> None:
    rng = np.random.default_rng(0)
    s, t, temp = rng.normal(size=(5, 7)), rng.normal(size=(5, 7)) * 3, 2.5
    log_ps, log_pt = _log_softmax(s / temp), _log_softmax(t / temp)
    expected = temp ** 2 * np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1))
    got = soft_target_kl(torch.tensor(s), torch.tensor(t), temp)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_kd_loss_is_zero_when_student_equals_teacher() -> None:
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(soft_target_kl(x, x.clone(), 3.0), torch.tensor(0.0), atol=1e-7, rtol=0)
    shifted = x + 5.0  # softmax is shift-invariant
    torch.testing.assert_close(soft_target_kl(shifted, x, 0.5), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_kd_gradient_is_t_times_probability_gap() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 6, generator=g, dtype=torch.float64)
    temp = 4.0
    soft_target_kl(s, t, temp).backward()
    expected = temp * (torch.softmax(s / temp, 1) - torch.softmax(t / temp, 1)) / 3
    torch.testing.assert_close(s.grad, expected.detach())


def test_hard_loss_and_blend() -> None:
    pos, neg = np.array([2.0, -1.0, 0.5]), np.array([0.3, -2.0, 1.0])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected = np.mean(-np.log(sig(pos)) - np.log(1 - sig(neg)))
    got = next_item_bce(torch.tensor(pos), torch.tensor(neg))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(blend(torch.tensor(2.0), torch.tensor(6.0), 0.25), torch.tensor(3.0))


def test_next_item_ce_is_minus_log_softmax_over_items_without_padding() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 8))  # token 0 is padding: never in the softmax
    positives = rng.integers(1, 8, 5)
    items = logits[:, 1:]
    log_softmax = items - np.log(np.exp(items).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(5), positives - 1].mean()
    got = next_item_ce(torch.tensor(logits, dtype=torch.float64), torch.tensor(positives))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    shifted = torch.tensor(logits).clone()
    shifted[:, 0] = 1e6  # a huge padding score changes nothing
    assert next_item_ce(shifted, torch.tensor(positives)).item() == pytest.approx(expected, rel=1e-12)

