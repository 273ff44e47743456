"""Multi-hot attribute matrices on the device and their pooling through an embedding table.

:class:`MultiHot` is a (N, F) 0/1 matrix in CSR form; :func:`csr_pair` turns it into sparse
CSR tensors (the matrix and its transpose) and :class:`SparseRowSum` computes
``x @ table`` (each node's sum of attribute embeddings) with the backward ``x.T @ grad``:
two sparse-dense products, no index sort (``embedding_bag``'s backward sorts every call).

Shapes: N nodes, F attribute values, D embedding dim.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch

__all__ = ["MultiHot", "SparseRowSum", "csr_pair"]


class MultiHot(NamedTuple):
    """A (N, F) 0/1 matrix in CSR form: row n holds values ``columns[offsets[n]:offsets[n+1]]``."""

    offsets: torch.Tensor  # (N + 1,) int64
    columns: torch.Tensor  # (nnz,) int64
    n_values: int  # F

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> MultiHot:
        """(N, F) dense 0/1 -> MultiHot (for tests and examples)."""
        rows, cols = x.nonzero(as_tuple=True)  # (nnz,), (nnz,) row-major order
        offsets = torch.zeros(len(x) + 1, dtype=torch.int64)
        offsets[1:] = torch.bincount(rows, minlength=len(x)).cumsum(0)
        return cls(offsets, cols, x.shape[1])


class SparseRowSum(torch.autograd.Function):
    """``x @ table`` for a sparse CSR ``x`` (N, F); the backward is ``x.T @ grad`` (no sort).

    >>> x, x_t = csr_pair(MultiHot.from_dense(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])))
    >>> SparseRowSum.apply(x, x_t, torch.arange(6.0).view(3, 2)).tolist()  # rows 0 + 2, row 1
    [[4.0, 6.0], [2.0, 3.0]]
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_t: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.x_t = x_t
        return x @ table  # (N, D)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.x_t @ grad  # (F, D)


def csr_pair(m: MultiHot) -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-hot matrix (N, F) and its transpose (F, N) as sparse CSR float32."""
    n, f = len(m.offsets) - 1, max(m.n_values, 1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        x = torch.sparse_csr_tensor(m.offsets.long(), m.columns.long(), torch.ones(len(m.columns)), (n, f))
        return x, x.to_sparse_coo().t().coalesce().to_sparse_csr()  # (N, F), (F, N)
