"""GraphTransfer cross fusion: a fixed meta model teaches a main model by cross dot products.

Jiafeng Xia, Dongsheng Li, Hansu Gu, Tun Lu, Ning Gu. "GraphTransfer: A Generic Feature
Fusion Framework for Collaborative Filtering". arXiv:2408.05792, 2024.

With the meta model's embeddings E (fixed) and the main model's H, over a batch of observed
``(user, item)`` pairs:

    L = L_BPR + lambda1 * MSE(<E_u, H_i>, <E_u, E_i>) + lambda2 * MSE(<H_u, E_i>, <E_u, E_i>)

Deviations from the released snippet (see ARCHITECTURE section 6): the users and items are
the batch's two *columns* (the snippet takes ``pair[0]``/``pair[1]``, i.e. the first two
rows), and the main model's full (U, D)/(I, D) tables are indexed by those global ids (the
snippet indexes batch-sized tensors by global ids).

Shapes: B batch, U users, I items, D embedding dim (shared by meta and main model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["bpr_loss", "cross_fusion_terms", "CrossFusion"]


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalized ranking: mean of ``-log sigmoid(pos - neg)`` over (B,) scores.

    >>> round(float(bpr_loss(torch.tensor([0.0]), torch.tensor([0.0]))), 4)  # log 2
    0.6931
    """
    return -F.logsigmoid(pos - neg).mean()  # ()


def cross_fusion_terms(meta_user: torch.Tensor, meta_item: torch.Tensor,
                       main_user: torch.Tensor, main_item: torch.Tensor,
                       users: torch.Tensor, items: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two cross-dot-product MSE terms over the batch's pairs.

    Args:
        meta_user: (U, D) meta user embeddings E_u (treated as constants).
        meta_item: (I, D) meta item embeddings E_i (constants).
        main_user: (U, D) main user embeddings H_u (trained).
        main_item: (I, D) main item embeddings H_i (trained).
        users: (B,) int64, the batch's user column.
        items: (B,) int64, the batch's item column.

    Returns:
        ``(MSE(<E_u, H_i>, <E_u, E_i>), MSE(<H_u, E_i>, <E_u, E_i>))``, two scalars.

    Example:
        >>> e = torch.ones(2, 1); h = torch.zeros(2, 1)
        >>> [float(t) for t in cross_fusion_terms(e, e, h, h, torch.tensor([0]), torch.tensor([1]))]
        [1.0, 1.0]
    """
    e_u, e_i = meta_user[users].detach(), meta_item[items].detach()  # (B, D), (B, D)
    h_u, h_i = main_user[users], main_item[items]  # (B, D), (B, D)
    target = (e_u * e_i).sum(-1)  # (B,) meta scores
    item_side = (e_u * h_i).sum(-1)  # (B,) meta user x main item
    user_side = (h_u * e_i).sum(-1)  # (B,) main user x meta item
    return F.mse_loss(item_side, target), F.mse_loss(user_side, target)


@dataclass(frozen=True)
class CrossFusion:
    """The weighted transfer term ``lambda1 * MSE_item + lambda2 * MSE_user`` for a fixed meta.

    Args:
        meta_user: (U, D) meta user embeddings, detached.
        meta_item: (I, D) meta item embeddings, detached.
        lambda1: weight of ``MSE(<E_u, H_i>, <E_u, E_i>)``.
        lambda2: weight of ``MSE(<H_u, E_i>, <E_u, E_i>)``.
    """

    meta_user: torch.Tensor
    meta_item: torch.Tensor
    lambda1: float
    lambda2: float

    def __call__(self, main_user: torch.Tensor, main_item: torch.Tensor,
                 users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The scalar transfer loss for the batch's ``(users, items)`` columns, each (B,)."""
        assert main_user.shape[1] == self.meta_user.shape[1], (
            f"main and meta embedding sizes differ: {main_user.shape[1]} vs {self.meta_user.shape[1]}")
        mse_item, mse_user = cross_fusion_terms(self.meta_user, self.meta_item, main_user,
                                                main_item, users, items)
        return self.lambda1 * mse_item + self.lambda2 * mse_user  # ()
