"""CIN: xDeepFM's compressed interaction network, a KD_DAGFM teacher of the ctr track.

Jianxun Lian, Xiaohuan Zhou, Fuzheng Zhang, Zhongxia Chen, Xing Xie, Guangzhong Sun.
"xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender Systems".
KDD 2018, arXiv:1803.05170.
Reference code: https://github.com/chenyuwuxin/DAGFM (``CIN``, ``CINComp``).

Deviations: the output layer has a bias (the reference's has none); the feature-map
layers have no bias, as the paper's equation (the reference's 1x1 convolutions add one);
every feature map feeds the output ("direct" connections, no split-half); xDeepFM's linear
part is kept (the reference drops it, leaving no first-order term) as a linear function of
the field embeddings rather than of the one-hot input; the DNN tower is optional
(``mlp_dims``) and off by default, as in KD_DAGFM.

Shapes: B batch, F fields (= H_0), D embedding dim, H feature maps per layer, L layers,
M feature maps of the previous layer, K last DNN width, N = B*D. Feature maps are kept
feature-major as (H, N), so that each layer is one (H, M*F) @ (M*F, N) product and every
elementwise op (the outer product and, in backward, its two reductions) runs over the long
contiguous N axis; with (B, D, M*F) they ran over the 10-wide F axis, and an epoch took
1.51 s instead of 1.16 s on one CPU thread (benchmarks/ctr_speed.py, both with the heap
setting of ``recdistill.train.configure_cpu``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from torch import nn

from recdistill.models.ctr_embedding import FieldEmbedding, mlp
from recdistill.models.registry import Arch
from recdistill.params import Count, Seq

__all__ = ["CIN", "CinArch"]


class CinArch(Arch):
    """A CIN's ``model:`` block; the fields and ``embed_dim`` come from the data and params."""

    name: Literal["cin"]
    depth: Count  # CIN layers L
    layer_size: Count  # feature maps H per layer
    mlp_dims: Annotated[tuple[Count, ...], Seq]  # xDeepFM's DNN tower; [] for none


class CIN(nn.Module):
    r"""Compressed interaction network.

    Layer k: :math:`X^k_{h,*} = \sum_{i=1}^{H_{k-1}} \sum_{j=1}^{F} W^{k,h}_{ij}
    (X^{k-1}_{i,*} \odot X^0_{j,*})`; each feature map is sum-pooled over D, the pooled
    maps of all layers are concatenated and a linear layer gives the CIN logit, added to
    the linear part (a linear function of the field embeddings) and the optional DNN's.

    Args:
        cardinalities: vocabulary sizes of the categorical fields (OOV slot included).
        n_multi: number of values of the multi-hot field.
        embed_dim: embedding dimension D.
        depth: number of CIN layers L.
        layer_size: feature maps H per layer.
        mlp_dims: widths of the parallel DNN tower (xDeepFM's implicit part); empty for none.

    Example:
        >>> model = CIN(cardinalities=(3, 5), n_multi=4, embed_dim=2, depth=2, layer_size=4)
        >>> model(torch.tensor([[0, 4], [2, 1]]), torch.full((2, 4), 0.25)).shape
        torch.Size([2])
    """

    def __init__(self, cardinalities: Sequence[int], n_multi: int, embed_dim: int, depth: int,
                 layer_size: int, mlp_dims: Sequence[int] = ()) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(cardinalities, n_multi, embed_dim)
        fields = self.embedding.n_fields
        sizes = [fields] + [layer_size] * depth  # H_0 = F, H_1..H_L
        # W^k as (H_k, H_{k-1} * F), the 1x1 convolution of the paper written as a matmul
        self.maps = nn.ParameterList(
            nn.Parameter(torch.empty(sizes[k + 1], sizes[k] * fields)) for k in range(depth))
        for weight in self.maps:
            nn.init.xavier_uniform_(weight)
        self.linear = nn.Linear(fields * embed_dim, 1, bias=False)  # xDeepFM's linear part
        self.deep = mlp(fields * embed_dim, mlp_dims)
        self.deep_head = nn.Linear(mlp_dims[-1], 1, bias=False) if mlp_dims else None
        self.head = nn.Linear(layer_size * depth, 1)

    def compress(self, x0: torch.Tensor, x: torch.Tensor, layer: int) -> torch.Tensor:
        """One CIN layer, feature-major: x0 (F, N), x (M, N) -> (H, N)."""
        M, F, N = x.shape[0], x0.shape[0], x0.shape[1]
        z = (x.unsqueeze(1) * x0.unsqueeze(0)).reshape(M * F, N)  # (M, F, N) -> (M*F, N)
        return self.maps[layer] @ z  # (H, M*F) @ (M*F, N) -> (H, N): one large matmul

    def interact(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: (B, F, D) float32 field embeddings -> (B,) float32 logits."""
        B, F, D = emb.shape
        x0 = emb.transpose(0, 1).reshape(F, B * D)  # (F, N), column n = b*D + d
        x, pooled = x0, []
        for layer in range(len(self.maps)):
            x = self.compress(x0, x, layer)  # (H, N)
            pooled.append(x.view(-1, B, D).sum(dim=2))  # (H, B): sum pooling over D
        flat = emb.reshape(B, -1)  # (B, F*D)
        logit = self.head(torch.cat(pooled).T).squeeze(1) + self.linear(flat).squeeze(1)  # (B,)
        if self.deep_head is not None:
            logit = logit + self.deep_head(self.deep(flat)).squeeze(1)  # (B,)
        return logit  # (B,)

    def forward(self, ids: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
        """ids: (B, Fc) int64, multi: (B, G) float32 -> (B,) float32 logits."""
        return self.interact(self.embedding(ids, multi))  # (B,)
