"""Evaluation metrics as vectorized torch: rating, classification and full ranking.

Ranking metrics take a dense score matrix ``scores (U, I)`` where items excluded from the
ranking (the user's train items, say) are ``-inf``, and ``relevant (U, I)`` bool. Ties
are broken by the lower item index (a stable sort), so results are deterministic and
reproducible by a brute-force reference.
"""

from __future__ import annotations

import torch

__all__ = [
    "rmse", "mae", "auc", "logloss", "topk_items", "ndcg_at_k", "hr_at_k",
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
    """Indices (U, k) of the k best items per row, best first; ties go to the lower index.

    Equivalent to a stable descending sort cut at k, in O(U I + U k log k): ``torch.topk``
    finds the k-th value, items above it are in, items equal to it fill up by index.

    >>> topk_items(torch.tensor([[0.1, 0.5, 0.5, 0.9, 0.5]]), 3).tolist()
    [[3, 1, 2]]
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    threshold = torch.topk(scores, k, dim=1).values[:, -1:]  # (U, 1) the k-th largest value
    above = scores > threshold  # (U, I)
    tied = scores == threshold  # (U, I)
    room = k - above.sum(1, keepdim=True)  # (U, 1) places left for tied items
    chosen = above | (tied & (torch.cumsum(tied.long(), 1) <= room))  # (U, I), k per row
    index = torch.arange(n_items, device=scores.device).expand_as(scores)  # (U, I)
    key = torch.where(chosen, n_items - index, 0)  # (U, I) positive exactly for chosen items
    picked = n_items - torch.topk(key, k, dim=1).values  # (U, k) the chosen item indices
    order = torch.sort(scores.gather(1, picked), dim=1, descending=True, stable=True).indices
    return picked.gather(1, order)  # (U, k)


def _hits(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """(U, k) bool: is the item at each of the top k places relevant (and not masked)."""
    top = topk_items(scores, k)  # (U, k)
    return relevant.gather(1, top) & torch.isfinite(scores.gather(1, top))  # (U, k)


def _recall(hits: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].sum(1).double() / relevant.sum(1).double().clamp(min=1)  # (U,)


def _hr(hits: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].any(1).double()  # (U,)


def _ndcg(hits: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=hits.device))  # (k,)
    dcg = (hits[:, :k].double() * discount).sum(1)  # (U,)
    n_ideal = relevant.sum(1).clamp(max=k)  # (U,)
    ideal = torch.cumsum(discount, 0)[(n_ideal - 1).clamp(min=0)]  # (U,)
    return torch.where(n_ideal > 0, dcg / ideal, torch.zeros_like(dcg))


def hr_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per user (U,): 1.0 when any relevant item is in the top k."""
    return _hr(_hits(scores, relevant, k), k)


def ndcg_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per user (U,): DCG@k / ideal DCG@k with binary gains."""
    return _ndcg(_hits(scores, relevant, k), relevant, k)


def ranking_metrics(scores: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] | list[int]
                    ) -> dict[str, float]:
    """Recall/NDCG/HR@k for each k, averaged over users with at least one relevant item.

    One top-k selection for the largest k serves every metric and every k. ``relevant``
    should not include masked (-inf) items: they count in recall's denominator.
    """
    users = relevant.any(1)  # (U,)
    scores, relevant = scores[users], relevant[users]
    hits = _hits(scores, relevant, max(ks))  # (U', max k)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(_recall(hits, relevant, k).mean())
        out[f"ndcg@{k}"] = float(_ndcg(hits, relevant, k).mean())
        out[f"hr@{k}"] = float(_hr(hits, k).mean())
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
