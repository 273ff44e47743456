"""Evaluation metrics as vectorized torch: rating, classification and full ranking.

Ranking metrics take a dense score matrix ``scores (U, I)`` where items excluded from the
ranking (the user's train items, say) are ``-inf``, and ``relevant (U, I)`` bool. Ties
are broken by the lower item index (a stable sort), so results are deterministic and
reproducible by a brute-force reference.
"""

from __future__ import annotations

import torch

__all__ = [
    "rmse", "mae", "auc", "logloss", "topk_items", "recall_at_k", "ndcg_at_k", "hr_at_k",
    "ranking_metrics", "user_auc",
]


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error.

    >>> round(rmse(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 5.0])), 6)
    1.581139
    """
    return float(torch.sqrt(torch.mean((pred.double() - target.double()) ** 2)))


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error."""
    return float(torch.mean(torch.abs(pred.double() - target.double())))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``x`` (N,), ties sharing their average rank (as scipy's rankdata)."""
    order = torch.argsort(x, stable=True)  # (N,)
    sorted_x = x[order]  # (N,)
    first = torch.ones_like(sorted_x, dtype=torch.bool)
    first[1:] = sorted_x[1:] != sorted_x[:-1]
    group = torch.cumsum(first.long(), 0) - 1  # (N,) tie-group id in sorted order
    positions = torch.arange(1, len(x) + 1, dtype=torch.float64, device=x.device)
    n_groups = int(group[-1]) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, group, positions)
    counts = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(
        0, group, torch.ones_like(positions))
    ranks = torch.empty_like(positions)
    ranks[order] = (sums / counts)[group]
    return ranks


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    >>> auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75
    """
    labels = labels.bool().flatten()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = _average_ranks(scores.double().flatten())
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1 - eps])."""
    p = probs.double().clamp(eps, 1 - eps)
    y = labels.double()
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())


def topk_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (U, k) of the k best items per row; ties go to the lower item index."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # (U, k)


def _hits(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    top = topk_items(scores, k)  # (U, k)
    hit = relevant.gather(1, top)  # (U, k) bool
    return hit & torch.isfinite(scores.gather(1, top))  # a masked item never counts


def recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per user (U,): relevant items in the top k / relevant items (0 where none)."""
    n_rel = relevant.sum(1).double()  # (U,)
    return _hits(scores, relevant, k).sum(1).double() / n_rel.clamp(min=1)


def hr_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per user (U,): 1.0 when any relevant item is in the top k."""
    return _hits(scores, relevant, k).any(1).double()


def ndcg_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per user (U,): DCG@k / ideal DCG@k with binary gains."""
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=scores.device))  # (k,)
    dcg = (_hits(scores, relevant, k).double() * discount).sum(1)  # (U,)
    n_ideal = relevant.sum(1).clamp(max=k)  # (U,)
    ideal = torch.cumsum(discount, 0)[(n_ideal - 1).clamp(min=0)]  # (U,)
    return torch.where(n_ideal > 0, dcg / ideal, torch.zeros_like(dcg))


def ranking_metrics(scores: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] | list[int]
                    ) -> dict[str, float]:
    """Recall/NDCG/HR@k for each k, averaged over users with at least one relevant item."""
    users = relevant.any(1)  # (U,)
    scores, relevant = scores[users], relevant[users]
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(recall_at_k(scores, relevant, k).mean())
        out[f"ndcg@{k}"] = float(ndcg_at_k(scores, relevant, k).mean())
        out[f"hr@{k}"] = float(hr_at_k(scores, relevant, k).mean())
    return out


def user_auc(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    """Mean over users of the AUC of relevant vs other ranked (finite-score) items.

    Users with no relevant or no irrelevant ranked item are skipped. Ties count one half.
    """
    ranked = torch.isfinite(scores)  # (U, I)
    pos, neg = relevant & ranked, ~relevant & ranked  # (U, I)
    n_pos, n_neg = pos.sum(1).double(), neg.sum(1).double()  # (U,)
    s = scores.double()
    inf = torch.full_like(s, float("inf"))
    neg_sorted = torch.sort(torch.where(neg, s, inf), dim=1).values  # (U, I), +inf padding last
    query = torch.where(pos, s, -inf).contiguous()  # (U, I) positives; others masked below
    below = torch.searchsorted(neg_sorted, query, side="left").double()  # negatives < score
    upto = torch.searchsorted(neg_sorted, query, side="right").double()  # negatives <= score
    wins = torch.where(pos, below + 0.5 * (upto - below), torch.zeros_like(below))  # (U, I)
    valid = (n_pos > 0) & (n_neg > 0)  # (U,)
    if not bool(valid.any()):
        raise ValueError("user_auc: no user has both relevant and irrelevant ranked items")
    return float((wins.sum(1)[valid] / (n_pos[valid] * n_neg[valid])).mean())
