"""Matrix factorisation trained with BPR: the cf track's main (student) model.

Steffen Rendle, Christoph Freudenthaler, Zeno Gantner, Lars Schmidt-Thieme. "BPR:
Bayesian Personalized Ranking from Implicit Feedback". UAI 2009, arXiv:1205.2618.
Reference code: https://github.com/xiangwang1223/neural_graph_collaborative_filtering
(its BPR-MF baseline).

Deviations: no user/item biases (the score is a plain dot product, so the GraphTransfer
cross dot products with a meta model's embeddings are well defined); embeddings are
initialised N(0, 0.1^2), as ``recdistill.models.lightgcn`` does, so the two start alike.

Shapes: B batch, U users, I items, D embedding dim.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from recdistill.models.registry import Arch

__all__ = ["MF", "MfArch"]


class MfArch(Arch):
    """An MF's ``model:`` block: its sizes (users, items, ``embed_dim``) come from the data and
    params."""

    name: Literal["mf"]


class MF(nn.Module):
    r"""Score :math:`\hat y_{ui} = \langle p_u, q_i \rangle`.

    Args:
        n_users: number of users U.
        n_items: number of items I.
        embed_dim: embedding size D.

    Example:
        >>> model = MF(n_users=3, n_items=4, embed_dim=2)
        >>> model(torch.tensor([0, 2]), torch.tensor([1, 3])).shape
        torch.Size([2])
        >>> [t.shape for t in model.embeddings()]
        [torch.Size([3, 2]), torch.Size([4, 2])]
    """

    def __init__(self, n_users: int, n_items: int, embed_dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, embed_dim)  # p (U, D)
        self.item = nn.Embedding(n_items, embed_dim)  # q (I, D)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def tables(self) -> tuple[nn.Embedding, nn.Embedding]:
        """The user (U, D) and item (I, D) tables (the same surface as LightGCN)."""
        return self.user, self.item

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User (U, D) and item (I, D) embedding tables (the same surface as LightGCN)."""
        return self.user.weight, self.item.weight  # (U, D), (I, D)

    def sparse_macs(self) -> int:
        """Multiply-adds of :meth:`embeddings` that a flop counter does not see: none (the same
        surface as LightGCN)."""
        return 0

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of pairs.

        Args:
            users: (B,) int64 user ids.
            items: (B,) int64 item ids.

        Returns:
            (B,) float32 scores.
        """
        scores: torch.Tensor = (self.user(users) * self.item(items)).sum(-1)  # (B, D) * (B, D) -> (B,)
        return scores
