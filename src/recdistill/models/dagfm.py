r"""DAGFM: directed acyclic graph factorization machine, the KD_DAGFM student of the ctr track.

Zhen Tian, Ting Bai, Zibin Zhang, Zhiyuan Xu, Kangyi Lin, Ji-Rong Wen, Wayne Xin Zhao.
"Directed Acyclic Graph Factorization Machines for CTR Prediction via Knowledge
Distillation". WSDM 2023, arXiv:2211.11159.
Reference code: https://github.com/chenyuwuxin/DAGFM (``DAGFM``).

The fields are the nodes of a DAG with an edge i -> j for every i <= j (self loops
included, as the reference's upper-triangular adjacency). Layer t propagates
:math:`h_j^{(t)} = h_j^{(0)} \odot \sum_{i \le j} m^{(t)}_{ij}(h_i^{(t-1)})`, with
``inner``: :math:`m_{ij}(h) = p_{ij} \odot h` and ``outer``: :math:`m_{ij}(h) = (p_{ij}^\top h)\,
q_{ij}` (the rank-one edge matrix :math:`q_{ij} p_{ij}^\top`). A learnable field-mixing matrix
(identity at init) gives :math:`h^{(0)}`; every layer's node states are sum-pooled over D and
a linear layer over all of them gives the logit.

Deviations: only the F(F+1)/2 edges that exist are parameters (the reference stores full
F x F x D tensors and masks them, so its parameter count includes dead weights); the
adjacency is a buffer that follows the module's device (the reference hard-codes it).

Shapes: B batch, F fields, D embedding dim, E = F(F+1)/2 edges, T depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from recdistill.models.ctr_embedding import FieldEmbedding
from recdistill.models.registry import Arch
from recdistill.params import Count

__all__ = ["DAGFM", "DagfmArch"]


class DagfmArch(Arch):
    """A DAGFM's ``model:`` block; the fields and ``embed_dim`` come from the data and the teacher."""

    name: Literal["dagfm"]
    type: Literal["outer", "inner"]  # edge message: outer (q p^T, as expressive as CrossNet) | inner (p)
    depth: Count  # propagation layers T


class DAGFM(nn.Module):
    """Directed acyclic graph factorization machine.

    Args:
        cardinalities: vocabulary sizes of the categorical fields (OOV slot included).
        n_multi: number of values of the multi-hot field.
        embed_dim: embedding dimension D.
        depth: propagation layers T.
        type: ``"outer"`` (edge matrix q p^T, as expressive as CrossNet) or ``"inner"``
            (edge vector p, element-wise).

    Example:
        >>> model = DAGFM(cardinalities=(3, 5), n_multi=4, embed_dim=2, depth=2, type="outer")
        >>> model(torch.tensor([[0, 4], [2, 1]]), torch.full((2, 4), 0.25)).shape
        torch.Size([2])
        >>> tuple(model.p.shape)  # (T, E, D): 3 fields -> 6 edges
        (2, 6, 2)
    """

    src: torch.Tensor  # (E,) edge sources
    dst: torch.Tensor  # (E,) edge targets

    def __init__(self, cardinalities: Sequence[int], n_multi: int, embed_dim: int, depth: int,
                 type: Literal["outer", "inner"] = "outer") -> None:
        super().__init__()
        assert type in ("outer", "inner"), f"type must be 'outer' or 'inner', got {type!r}"
        self.embedding = FieldEmbedding(cardinalities, n_multi, embed_dim)
        F = self.embedding.n_fields
        src, dst = torch.triu_indices(F, F)  # (E,), (E,): edges i -> j with i <= j
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("dst", dst, persistent=False)
        self.kind = type  # not self.type: that is nn.Module's dtype-casting method
        std = 1.414 / (F * embed_dim) ** 0.5  # the reference's xavier_normal(gain=1.414) on (F, F, D)
        self.p = nn.Parameter(torch.randn(depth, len(src), embed_dim) * std)  # (T, E, D)
        self.q = (nn.Parameter(torch.randn(depth, len(src), embed_dim) * std)  # (T, E, D)
                  if type == "outer" else None)
        self.connect = nn.Parameter(torch.eye(F))  # (F, F) field mixing
        self.head = nn.Linear(F * (depth + 1), 1)

    def edge_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Scatter one layer's edge weights (E, D) into a dense (F, F, D), zero off the DAG."""
        F = self.connect.shape[0]
        dense = weights.new_zeros(F, F, weights.shape[1])  # (F, F, D)
        return dense.index_put((self.src, self.dst), weights)  # (F, F, D)

    def interact(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: (B, F, D) float32 field embeddings -> (B,) float32 logits."""
        h0 = torch.matmul(self.connect, emb)  # (F, F) @ (B, F, D) -> (B, F, D)
        h, states = h0, [h0.sum(dim=2)]  # [(B, F)]
        for t in range(self.p.shape[0]):
            p = self.edge_weights(self.p[t])  # (F, F, D)
            if self.q is None:
                aggr = torch.einsum("bid,ijd->bjd", h, p)  # (B, F, D)
            else:
                score = torch.einsum("bid,ijd->bij", h, p)  # (B, F, F): p_ij . h_i
                aggr = torch.einsum("bij,ijd->bjd", score, self.edge_weights(self.q[t]))  # (B, F, D)
            h = h0 * aggr  # (B, F, D)
            states.append(h.sum(dim=2))  # (B, F)
        return self.head(torch.cat(states, dim=1)).squeeze(1)  # (B, F*(T+1)) -> (B,)

    def forward(self, ids: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
        """ids: (B, Fc) int64, multi: (B, G) float32 -> (B,) float32 logits."""
        return self.interact(self.embedding(ids, multi))  # (B,)
