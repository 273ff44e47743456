r"""Proximity between nodes and the k-NN neighbor lists of AGNN's input layer (ARCHITECTURE §5).

For one node type (users or items) with a preference matrix ``R`` (rows: the node's train
ratings) and a multi-hot attribute matrix ``A``:

.. math::
    s^{pref}_{ij} = \cos(R_i, R_j), \qquad s^{attr}_{ij} = \cos(A_i, A_j), \qquad
    s_{ij} = w_p \, z(s^{pref}_{ij}) + w_a \, z(s^{attr}_{ij})

where ``z`` standardises with the mean and standard deviation of the off-diagonal entries
(preference: over pairs of warm nodes; attributes: over all pairs). A *warm* node has at
least one train rating; a cold node has no preference row, so its row of ``s`` is the
attribute term alone. Candidates are warm nodes other than the node itself (a cold node's
preference embedding is never trained, so it is never anyone's neighbor). Each node keeps
its top ``K`` candidates (ties: lower index first) with sampling weights
``softmax(s / temperature)`` over the kept ones.

Everything is sparse-times-sparse products over blocks of ``block_size`` rows: memory is
``block_size x N`` per block, never ``N x N``, and there is no Python loop over nodes.

Shapes: N nodes, F features (items or attribute values), K neighbors, b rows in a block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["Moments", "Neighbors", "l2_normalize_rows", "offdiag_moments", "knn_graph"]


@dataclass(frozen=True)
class Moments:
    mean: float
    std: float  # 1.0 when the entries are constant, so z-scores are 0, not NaN


@dataclass(frozen=True)
class Neighbors:
    ids: np.ndarray  # (N, K) int64, best first
    scores: np.ndarray  # (N, K) float32, combined z-scored proximity
    weights: np.ndarray  # (N, K) float32, sampling probabilities; each row sums to 1


def l2_normalize_rows(x: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float64 CSR.

    >>> l2_normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).toarray().round(6).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = sp.csr_matrix(x, dtype=np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())  # (N,)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)  # (N,)
    return sp.csr_matrix(sp.diags(inv) @ x)


def _blocks(n: int, block_size: int) -> Iterator[slice]:
    for start in range(0, n, block_size):
        yield slice(start, min(start + block_size, n))


def _cosine_block(xn: sp.csr_matrix, xn_t: sp.csc_matrix, rows: slice) -> np.ndarray:
    """Cosine of rows ``rows`` against all rows: (b, N) float64 (``xn`` is row-normalized)."""
    return np.asarray((xn[rows] @ xn_t).todense())  # (b, N)


def offdiag_moments(xn: sp.csr_matrix, block_size: int) -> Moments:
    """Mean and std of ``xn @ xn.T`` over its off-diagonal entries, computed by row blocks.

    >>> m = offdiag_moments(l2_normalize_rows(np.eye(3)), block_size=2)
    >>> (m.mean, m.std)
    (0.0, 1.0)
    """
    n = xn.shape[0]
    if n < 2:
        return Moments(0.0, 1.0)
    xn_t = sp.csc_matrix(xn.T)
    total, squares = 0.0, 0.0
    for rows in _blocks(n, block_size):
        block = _cosine_block(xn, xn_t, rows)  # (b, N)
        diag = block[np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)]  # (b,)
        total += float(block.sum() - diag.sum())
        squares += float((block * block).sum() - (diag * diag).sum())
    pairs = n * (n - 1)
    mean = total / pairs
    var = max(squares / pairs - mean * mean, 0.0)
    std = math.sqrt(var)
    return Moments(mean, std if std > 1e-12 else 1.0)


def knn_graph(preference: sp.spmatrix, attributes: sp.spmatrix, *, k: int,
              preference_weight: float = 1.0, attribute_weight: float = 1.0,
              block_size: int = 1024, temperature: float = 1.0) -> Neighbors:
    """Top-``k`` neighbors of every node from combined, z-scored cosine proximities.

    Args:
        preference: (N, F_r) train ratings of each node; an all-zero row marks a cold node.
        attributes: (N, F_a) multi-hot attributes of each node.
        k: neighbors kept per node (capped at the number of warm nodes minus one).
        preference_weight, attribute_weight: ``w_p`` and ``w_a`` of the combination.
        block_size: rows per block of the blocked products.
        temperature: softmax temperature of the sampling weights.

    Example:
        >>> ratings = sp.csr_matrix(np.array([[5, 4, 0], [5, 5, 0], [0, 1, 5], [0, 0, 0]]))
        >>> attrs = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]]))
        >>> knn_graph(ratings, attrs, k=1).ids.ravel().tolist()  # node 3 is cold: attributes only
        [1, 0, 1, 2]
    """
    n = preference.shape[0]
    if attributes.shape[0] != n:
        raise ValueError(f"preference has {n} rows but attributes has {attributes.shape[0]}")
    pref = sp.csr_matrix(preference)
    warm = np.diff(pref.indptr) > 0  # (N,) nodes with at least one train rating
    n_warm = int(warm.sum())
    if n_warm < 2:
        raise ValueError(f"need at least 2 warm nodes (with train ratings) to build neighbors, got {n_warm}")
    k = min(k, n_warm - 1)
    pn, an = l2_normalize_rows(pref), l2_normalize_rows(attributes)  # (N, F_r), (N, F_a)
    pm = offdiag_moments(pn[warm], block_size)  # statistics over warm pairs only
    am = offdiag_moments(an, block_size)
    pn_t, an_t = sp.csc_matrix(pn.T), sp.csc_matrix(an.T)
    ids = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float64)
    for rows in _blocks(n, block_size):
        b = rows.stop - rows.start
        z = attribute_weight * (_cosine_block(an, an_t, rows) - am.mean) / am.std  # (b, N)
        if preference_weight:
            zp = (_cosine_block(pn, pn_t, rows) - pm.mean) / pm.std  # (b, N)
            z += preference_weight * zp * warm[rows, None]  # cold rows: attributes only
        z[:, ~warm] = -np.inf  # cold nodes are nobody's neighbor
        z[np.arange(b), np.arange(rows.start, rows.stop)] = -np.inf  # nor their own
        order = np.argsort(-z, axis=1, kind="stable")[:, :k]  # (b, K) ties -> lower index
        ids[rows] = order
        scores[rows] = np.take_along_axis(z, order, axis=1)  # (b, K)
    logits = scores / temperature  # (N, K)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))  # (N, K)
    weights /= weights.sum(axis=1, keepdims=True)
    return Neighbors(ids, scores.astype(np.float32), weights.astype(np.float32))
