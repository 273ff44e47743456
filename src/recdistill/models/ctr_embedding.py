"""Field embeddings and the optional DNN tower shared by the ctr models (CrossNet, CIN, DAGFM).

Every ctr model embeds its input the same way, so a student can take over its teacher's
embedding table unchanged (KD_DAGFM distils on the teacher's frozen embeddings). Categorical
fields share one table with per-field offsets (index 0 of each field is its out-of-vocabulary
slot); the multi-hot field (genres) is the weighted mean of its values' embeddings.

Shapes: B batch, Fc categorical fields, G multi-hot values, F = Fc + 1 fields, D embedding dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FieldEmbedding", "mlp"]


class FieldEmbedding(nn.Module):
    """Embed ``Fc`` categorical fields and one multi-hot field into ``(B, Fc + 1, D)``.

    Args:
        cardinalities: vocabulary size of each categorical field (OOV slot included).
        n_multi: number of values of the multi-hot field (genres).
        dim: embedding dimension D.

    Example:
        >>> emb = FieldEmbedding(cardinalities=(3, 5), n_multi=4, dim=2)
        >>> emb(torch.tensor([[0, 4], [2, 1]]), torch.full((2, 4), 0.25)).shape
        torch.Size([2, 3, 2])
    """

    offsets: torch.Tensor  # (Fc,) first row of each field in the shared table

    def __init__(self, cardinalities: Sequence[int], n_multi: int, dim: int) -> None:
        super().__init__()
        assert len(cardinalities) >= 1 and min(cardinalities) >= 1, "need >= 1 non-empty field"
        offsets = torch.tensor([0, *cardinalities[:-1]]).cumsum(0)  # (Fc,)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(int(sum(cardinalities)), dim)
        self.multi = nn.Parameter(torch.empty(n_multi, dim))
        nn.init.xavier_normal_(self.table.weight)
        nn.init.xavier_normal_(self.multi)
        self.n_fields = len(cardinalities) + 1

    def forward(self, ids: torch.Tensor, multi: torch.Tensor) -> torch.Tensor:
        """ids: (B, Fc) int64 per-field indices; multi: (B, G) float32 pooling weights
        (rows sum to 1, or 0 when empty) -> (B, F, D) float32."""
        cat = self.table(ids + self.offsets)  # (B, Fc, D)
        pooled = multi @ self.multi  # (B, G) @ (G, D) -> (B, D)
        return torch.cat([cat, pooled.unsqueeze(1)], dim=1)  # (B, F, D)


def mlp(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU`` blocks of widths ``dims`` (empty ``dims``: an empty Sequential).

    >>> mlp(4, (8, 2))(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """
    layers: list[nn.Module] = []
    for width in dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers)
