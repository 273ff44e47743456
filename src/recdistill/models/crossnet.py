"""CrossNet: the cross network of DCN / DCN-V2, a KD_DAGFM teacher of the ctr track.

Ruoxi Wang, Bin Fu, Gang Fu, Mingliang Wang. "Deep & Cross Network for Ad Click
Predictions". ADKDD 2017, arXiv:1708.05123 (``cross="vector"``).
Ruoxi Wang, Rakesh Shivanna, Derek Cheng, Sagar Jain, Dong Lin, Lichan Hong, Ed Chi.
"DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
Systems". WWW 2021, arXiv:2008.13535 (``cross="matrix"``, the KD_DAGFM authors' teacher).
Reference code: https://github.com/chenyuwuxin/DAGFM (``CrossNet``).

Deviations: cross weights are Xavier-normal initialised (the reference draws the matrix
from N(0, 1)); the DNN tower (``mlp_dims``, DCN's deep part) is optional and off by default,
so the teacher is the explicit-interaction network alone, as in KD_DAGFM.

Shapes: B batch, F fields, D embedding dim, N = F * D cross width, H last DNN width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from torch import nn

from recdistill.models.ctr_embedding import FieldEmbedding, mlp
from recdistill.models.registry import Arch
from recdistill.params import Count, Seq

__all__ = ["CrossNet", "CrossNetArch"]


class CrossNetArch(Arch):
    """A CrossNet's ``model:`` block; the fields and ``embed_dim`` come from the data and params."""

    name: Literal["crossnet"]
    cross: Literal["matrix", "vector"]  # matrix: DCN-V2 (the KD_DAGFM authors' teacher); vector: DCN
    depth: Count  # cross layers L
    mlp_dims: Annotated[tuple[Count, ...], Seq]  # parallel DNN tower; [] for none


class CrossNet(nn.Module):
    r"""Cross network over the concatenated field embeddings :math:`x_0 \in R^N`.

    ``vector`` (DCN): :math:`x_{l+1} = x_0 (w_l^\top x_l) + b_l + x_l`;
    ``matrix`` (DCN-V2): :math:`x_{l+1} = x_0 \odot (W_l x_l + b_l) + x_l`;
    logit :math:`= v^\top [x_L; \mathrm{DNN}(x_0)] + c`.

    Args:
        cardinalities: vocabulary sizes of the categorical fields (OOV slot included).
        n_multi: number of values of the multi-hot field.
        embed_dim: embedding dimension D.
        depth: number of cross layers L.
        cross: ``"matrix"`` (DCN-V2) or ``"vector"`` (DCN).
        mlp_dims: widths of the parallel DNN tower; empty for none.

    Example:
        >>> model = CrossNet(cardinalities=(3, 5), n_multi=4, embed_dim=2, depth=2)
        >>> model(torch.tensor([[0, 4], [2, 1]]), torch.full((2, 4), 0.25)).shape
        torch.Size([2])
    """

    def __init__(self, cardinalities: Sequence[int], n_multi: int, embed_dim: int, depth: int,
                 cross: Literal["matrix", "vector"] = "matrix", mlp_dims: Sequence[int] = ()) -> None:
        super().__init__()
        assert cross in ("matrix", "vector"), f"cross must be 'matrix' or 'vector', got {cross!r}"
        self.embedding = FieldEmbedding(cardinalities, n_multi, embed_dim)
        width = self.embedding.n_fields * embed_dim  # N
        self.cross = cross
        shape = (depth, width, width) if cross == "matrix" else (depth, width)
        self.weight = nn.Parameter(torch.empty(shape))  # W_l (L, N, N) or w_l (L, N)
        self.bias = nn.Parameter(torch.zeros(depth, width))  # b_l (L, N)
        for layer in range(depth):
            nn.init.xavier_normal_(self.weight.data[layer].view(width, -1))  # vector: fan_out 1
        self.deep = mlp(width, mlp_dims)
        self.head = nn.Linear(width + (mlp_dims[-1] if mlp_dims else 0), 1)

    def cross_layer(self, x0: torch.Tensor, x: torch.Tensor, layer: int) -> torch.Tensor:
        """One cross layer: x0, x (B, N) -> (B, N)."""
        if self.cross == "vector":
            xw = x @ self.weight[layer]  # (B, N) @ (N,) -> (B,)
            return x0 * xw.unsqueeze(1) + self.bias[layer] + x  # (B, N)
        xw = x @ self.weight[layer].T + self.bias[layer]  # (B, N)
        return x0 * xw + x  # (B, N)

    def interact(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: (B, F, D) float32 field embeddings -> (B,) float32 logits."""
        B = emb.shape[0]
        x0 = emb.reshape(B, -1)  # (B, N)
        x = x0
        for layer in range(self.weight.shape[0]):
            x = self.cross_layer(x0, x, layer)  # (B, N)
        if len(self.deep):
            x = torch.cat([x, self.deep(x0)], dim=1)  # (B, N + H)
        return self.head(x).squeeze(1)  # (B,)

    def forward(self, ids: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
        """ids: (B, Fc) int64, multi: (B, G) float32 -> (B,) float32 logits."""
        return self.interact(self.embedding(ids, multi))  # (B,)
