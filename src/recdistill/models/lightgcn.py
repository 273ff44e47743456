"""LightGCN: simplified graph convolution for collaborative filtering.

Xiangnan He, Kuan Deng, Xiang Wang, Yan Li, Yongdong Zhang, Meng Wang. "LightGCN:
Simplifying and Powering Graph Convolution Network for Recommendation". SIGIR 2020,
arXiv:2002.02126. Reference code: https://github.com/kuandeng/LightGCN

Deviations: none in the model (no feature transform, no nonlinearity, layer combination
with uniform weights 1/(K+1)); embeddings are initialised N(0, 0.1^2) as in the authors'
PyTorch port (LightGCN-PyTorch) rather than Xavier. The normalized adjacency is built in
``recdistill.data.interactions.normalized_adjacency`` and handed to the model. Propagation
uses the symmetry of that adjacency in its backward pass (grad = A @ grad instead of
A^T @ grad, which torch computes by re-sorting the sparse matrix every call: 4x slower).

Shapes: B batch, U users, I items, N = U + I nodes, D embedding dim, K layers.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from recdistill.models.registry import Arch

__all__ = ["LightGCN", "LightGcnArch"]


class LightGcnArch(Arch):
    """A LightGCN's ``model:`` block; users, items, ``embed_dim`` and the graph come from the data
    and params."""

    name: Literal["lightgcn"]
    n_layers: Annotated[int, Field(ge=0)]  # propagation layers K (0: matrix factorisation)


class _SymmetricSpmm(torch.autograd.Function):
    """``adj @ x`` for a constant symmetric sparse ``adj``: the backward is ``adj @ grad``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, adj: torch.Tensor, x: torch.Tensor
                ) -> torch.Tensor:
        ctx.adj = adj  # type: ignore[attr-defined]
        return adj @ x  # (N, N) @ (N, D) -> (N, D)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
                 ) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ grad  # type: ignore[attr-defined]  # A^T = A: (N, D)


class LightGCN(nn.Module):
    r"""Score :math:`\hat y_{ui} = \langle e_u, e_i \rangle` with
    :math:`E = \frac{1}{K+1}\sum_{k=0}^{K} \hat A^k E^{(0)}`.

    Args:
        n_users: number of users U.
        n_items: number of items I.
        embed_dim: embedding size D.
        n_layers: propagation layers K (0 gives plain matrix factorisation).
        norm_adj: the (N, N) sparse *symmetric* normalized adjacency
            :math:`D^{-1/2} A D^{-1/2}` (users first, then items). Kept as a non-persistent
            buffer: it is data, rebuilt from the train split, not a weight.

    Example:
        >>> from recdistill.data.interactions import Interactions, normalized_adjacency
        >>> train = Interactions.from_arrays([0, 1, 1], [0, 0, 2], n_users=2, n_items=3)
        >>> model = LightGCN(2, 3, embed_dim=4, n_layers=2, norm_adj=normalized_adjacency(train))
        >>> users, items = model.embeddings()
        >>> users.shape, items.shape, model(torch.tensor([0, 1]), torch.tensor([2, 2])).shape
        (torch.Size([2, 4]), torch.Size([3, 4]), torch.Size([2]))
        >>> model.sparse_macs()  # 2 layers x 6 stored entries (3 pairs, both directions) x 4
        48
    """

    norm_adj: torch.Tensor

    def __init__(self, n_users: int, n_items: int, embed_dim: int, n_layers: int,
                 norm_adj: torch.Tensor) -> None:
        super().__init__()
        n = n_users + n_items
        assert norm_adj.shape == (n, n), f"norm_adj must be ({n}, {n}), got {tuple(norm_adj.shape)}"
        assert n_layers >= 0, f"n_layers must be >= 0, got {n_layers}"
        self._n_users, self._n_layers = n_users, n_layers
        self.user = nn.Embedding(n_users, embed_dim)  # E^(0) of users (U, D)
        self.item = nn.Embedding(n_items, embed_dim)  # E^(0) of items (I, D)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        self.register_buffer("norm_adj", norm_adj, persistent=False)

    @property
    def n_layers(self) -> int:
        return self._n_layers

    def tables(self) -> tuple[nn.Embedding, nn.Embedding]:
        """The layer-0 user (U, D) and item (I, D) tables E^(0), the ones that are trained."""
        return self.user, self.item

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (U, D) and item (I, D) embeddings: the mean of the K+1 layers."""
        x = torch.cat([self.user.weight, self.item.weight])  # (N, D) layer 0
        total = x  # (N, D)
        for _ in range(self._n_layers):
            x = _SymmetricSpmm.apply(self.norm_adj, x)  # (N, D)
            total = total + x  # (N, D)
        mean = total / (self._n_layers + 1)  # (N, D)
        return mean[: self._n_users], mean[self._n_users:]  # (U, D), (I, D)

    def sparse_macs(self) -> int:
        """Multiply-adds of one :meth:`embeddings` call that a flop counter does not see (it
        counts a sparse product as a dense (N, N) one): K sparse products of nnz(A_hat) * D."""
        return self._n_layers * self.norm_adj.values().numel() * self.user.embedding_dim

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of pairs.

        Args:
            users: (B,) int64 user ids.
            items: (B,) int64 item ids.

        Returns:
            (B,) float32 scores :math:`\\langle e_u, e_i \\rangle`.
        """
        user_emb, item_emb = self.embeddings()  # (U, D), (I, D)
        return (user_emb[users] * item_emb[items]).sum(-1)  # (B, D) * (B, D) -> (B,)
