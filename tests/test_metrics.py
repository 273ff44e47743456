"""Metrics against scikit-learn and brute-force references, ties and masks included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from recdistill import metrics


def test_rating_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(100, generator=g) * 5, torch.randint(1, 6, (100,), generator=g).float()
    assert metrics.rmse(pred, target) == pytest.approx(math.sqrt(mean_squared_error(target, pred)), rel=1e-6)
    assert metrics.mae(pred, target) == pytest.approx(mean_absolute_error(target, pred), rel=1e-6)


def test_auc_and_logloss_match_sklearn_with_ties() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 6, (300,), generator=g).float() / 5  # many ties
    labels = torch.randint(0, 2, (300,), generator=g)
    assert metrics.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    probs = scores.clamp(0.01, 0.99)
    assert metrics.logloss(probs, labels) == pytest.approx(log_loss(labels, probs), rel=1e-6)
    with pytest.raises(ValueError, match="both classes"):
        metrics.auc(scores, torch.ones_like(labels))


def _brute(scores: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, float]:
    """Per-user loops: stable order (ties -> lower index), masked (-inf) items never hit."""
    recalls, ndcgs, hrs = [], [], []
    for s, r in zip(scores, relevant):
        if not r.any():
            continue
        order = sorted(range(len(s)), key=lambda i: (-s[i], i))[:k]
        hits = [bool(r[i]) and np.isfinite(s[i]) for i in order]
        recalls.append(sum(hits) / r.sum())
        hrs.append(float(any(hits)))
        dcg = sum(1 / math.log2(pos + 2) for pos, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(pos + 2) for pos in range(min(int(r.sum()), k)))
        ndcgs.append(dcg / idcg)
    return {f"recall@{k}": np.mean(recalls), f"ndcg@{k}": np.mean(ndcgs), f"hr@{k}": np.mean(hrs)}


def test_ranking_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, size=(9, 15)).astype(float)  # ties everywhere
    scores[rng.random((9, 15)) < 0.25] = -np.inf  # masked train items
    relevant = (rng.random((9, 15)) < 0.3) & np.isfinite(scores)
    relevant[0] = False  # a user without relevant items is skipped
    got = metrics.ranking_metrics(torch.tensor(scores), torch.tensor(relevant), [3, 5])
    for k in (3, 5):
        for key, value in _brute(scores, relevant, k).items():
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_hand_computed_ranking_case() -> None:
    # items 0..4; item 1 masked; ties between items 2 and 3 go to item 2.
    scores = torch.tensor([[0.9, float("-inf"), 0.5, 0.5, 0.1]])
    relevant = torch.tensor([[False, False, False, True, True]])
    assert metrics.topk_items(scores, 3).tolist() == [[0, 2, 3]]
    got = metrics.ranking_metrics(scores, relevant, [3])
    assert got["recall@3"] == pytest.approx(0.5)
    assert got["hr@3"] == 1.0
    assert got["ndcg@3"] == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_user_auc_against_sklearn_per_user() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(7, 20)).astype(float)
    scores[rng.random((7, 20)) < 0.2] = -np.inf
    relevant = rng.random((7, 20)) < 0.3
    expected = []
    for s, r in zip(scores, relevant):
        keep = np.isfinite(s)
        if r[keep].any() and (~r[keep]).any():
            expected.append(roc_auc_score(r[keep], s[keep]))
    assert metrics.user_auc(torch.tensor(scores), torch.tensor(relevant)) == pytest.approx(np.mean(expected), abs=1e-12)


def test_topk_items_equals_stable_sort() -> None:
    g = torch.Generator().manual_seed(4)
    scores = torch.randint(0, 3, (50, 40), generator=g).float()
    scores[torch.rand(50, 40, generator=g) < 0.5] = float("-inf")  # rows with fewer than k finite
    for k in (1, 5, 25, 40):
        expected = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(metrics.topk_items(scores, k), expected)
