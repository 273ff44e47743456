"""Proximity, z-scoring and blocked top-K against a dense brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics.pairwise import cosine_similarity

from recdistill.graph.proximity import knn_graph, l2_normalize_rows, offdiag_moments


def _problem(seed: int = 0, n: int = 13, n_cold: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ratings = rng.integers(1, 6, size=(n, 9)) * (rng.random((n, 9)) < 0.5)  # (N, F_r)
    ratings[:n_cold] = 0  # the first nodes are cold: no train ratings
    ratings[n_cold:, 0] = np.where(ratings[n_cold:, 0] == 0, 3, ratings[n_cold:, 0])  # warm: >= 1 rating
    attrs = (rng.random((n, 6)) < 0.35).astype(float)  # (N, F_a) multi-hot, ties included
    return ratings.astype(float), attrs


def _zscore_offdiag(s: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    sub = s[np.ix_(nodes, nodes)]
    off = sub[~np.eye(len(nodes), dtype=bool)]
    std = off.std()
    return (s - off.mean()) / (std if std > 1e-12 else 1.0)


def brute_force(ratings: np.ndarray, attrs: np.ndarray, k: int, wp: float, wa: float, temp: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense N x N version of ARCHITECTURE §5, one node at a time."""
    n = len(ratings)
    warm = (ratings != 0).any(axis=1)
    sp_ = _zscore_offdiag(cosine_similarity(ratings), np.flatnonzero(warm))
    sa = _zscore_offdiag(cosine_similarity(attrs), np.arange(n))
    k = min(k, warm.sum() - 1)
    ids, scores = np.zeros((n, k), int), np.zeros((n, k))
    for i in range(n):
        row = wa * sa[i] + (wp * sp_[i] if warm[i] else 0.0)
        candidates = [j for j in range(n) if warm[j] and j != i]
        ranked = sorted(candidates, key=lambda j: (-row[j], j))[:k]  # ties: lower index first
        ids[i], scores[i] = ranked, row[ranked]
    w = np.exp(scores / temp - (scores / temp).max(1, keepdims=True))
    return ids, scores, w / w.sum(1, keepdims=True)


def test_l2_normalize_rows_gives_sklearn_cosine() -> None:
    ratings, _ = _problem()
    xn = l2_normalize_rows(sp.csr_matrix(ratings))
    torch.testing.assert_close(torch.as_tensor((xn @ xn.T).toarray()),
                               torch.as_tensor(cosine_similarity(ratings)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block_size", [1, 4, 100])
def test_offdiag_moments_match_numpy(block_size: int) -> None:
    _, attrs = _problem(seed=1)
    s = cosine_similarity(attrs)
    off = s[~np.eye(len(s), dtype=bool)]
    m = offdiag_moments(l2_normalize_rows(sp.csr_matrix(attrs)), block_size)
    assert m.mean == pytest.approx(off.mean(), abs=1e-12)
    assert m.std == pytest.approx(off.std(), abs=1e-12)


@pytest.mark.parametrize("block_size,wp,wa,temp,seed", [
    (1, 1.0, 1.0, 1.0, 0), (4, 1.0, 1.0, 1.0, 1), (100, 0.5, 2.0, 3.0, 2), (5, 0.0, 1.0, 1.0, 3)])
def test_knn_graph_matches_brute_force(block_size: int, wp: float, wa: float, temp: float, seed: int) -> None:
    ratings, attrs = _problem(seed)
    got = knn_graph(sp.csr_matrix(ratings), sp.csr_matrix(attrs), k=4, preference_weight=wp,
                    attribute_weight=wa, block_size=block_size, temperature=temp)
    ids, scores, weights = brute_force(ratings, attrs, 4, wp, wa, temp)
    np.testing.assert_array_equal(got.ids, ids)
    torch.testing.assert_close(torch.as_tensor(got.scores), torch.as_tensor(scores, dtype=torch.float32),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.as_tensor(got.weights), torch.as_tensor(weights, dtype=torch.float32),
                               rtol=1e-5, atol=1e-6)


def test_cold_nodes_use_attributes_only_and_are_nobodys_neighbor() -> None:
    ratings, attrs = _problem(seed=4, n_cold=3)
    got = knn_graph(sp.csr_matrix(ratings), sp.csr_matrix(attrs), k=5)
    assert not np.isin(got.ids, [0, 1, 2]).any(), "a cold node is listed as a neighbor"
    assert not (got.ids == np.arange(len(ratings))[:, None]).any(), "a node is its own neighbor"
    attr_only = knn_graph(sp.csr_matrix(ratings), sp.csr_matrix(attrs), k=5, preference_weight=0.0)
    np.testing.assert_array_equal(got.ids[:3], attr_only.ids[:3])  # cold rows ignore preference
    np.testing.assert_allclose(got.weights.sum(1), 1.0, rtol=1e-6)


def test_k_is_capped_and_too_few_warm_nodes_is_an_error() -> None:
    ratings, attrs = _problem(n=6, n_cold=2)
    assert knn_graph(sp.csr_matrix(ratings), sp.csr_matrix(attrs), k=50).ids.shape == (6, 3)
    ratings[:5] = 0
    with pytest.raises(ValueError, match="at least 2 warm nodes"):
        knn_graph(sp.csr_matrix(ratings), sp.csr_matrix(attrs), k=2)
