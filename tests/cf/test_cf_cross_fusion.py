"""Cross-fusion loss against a hand-written per-pair loop, and BPR against its formula."""

from __future__ import annotations

import math

import torch

from recdistill.transfer.cross_fusion import CrossFusion, bpr_loss, cross_fusion_terms


def loop_reference(e_user: list[list[float]], e_item: list[list[float]], h_user: list[list[float]],
                   h_item: list[list[float]], pairs: list[tuple[int, int]]) -> tuple[float, float]:
    """Plain Python over the batch's (user, item) pairs."""
    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))
    item_side = user_side = 0.0
    for u, i in pairs:
        target = dot(e_user[u], e_item[i])
        item_side += (dot(e_user[u], h_item[i]) - target) ** 2
        user_side += (dot(h_user[u], e_item[i]) - target) ** 2
    return item_side / len(pairs), user_side / len(pairs)


def tiny() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    # 6 users, 7 items, D = 3; the batch (3 pairs) uses ids larger than the batch size, so
    # indexing batch-sized tensors by global ids (the reference snippet's defect) would fail.
    def randn(n: int) -> torch.Tensor:
        return torch.randn(n, 3, generator=g, dtype=torch.float64)
    return randn(6), randn(7), randn(6), randn(7)


def test_terms_match_a_per_pair_loop() -> None:
    e_u, e_i, h_u, h_i = tiny()
    pairs = torch.tensor([[5, 6], [0, 4], [5, 2]])  # (B, 2): columns are user, item
    got = cross_fusion_terms(e_u, e_i, h_u, h_i, pairs[:, 0], pairs[:, 1])
    expected = loop_reference(e_u.tolist(), e_i.tolist(), h_u.tolist(), h_i.tolist(),
                              [(5, 6), (0, 4), (5, 2)])
    torch.testing.assert_close(torch.stack(got), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_weighted_loss_and_gradients_reach_only_the_main_model() -> None:
    e_u, e_i, h_u, h_i = tiny()
    e_u.requires_grad_(True)
    h_u.requires_grad_(True)
    h_i.requires_grad_(True)
    users, items = torch.tensor([5, 0, 5]), torch.tensor([6, 4, 2])
    loss = CrossFusion(e_u, e_i, lambda1=0.3, lambda2=2.0)(h_u, h_i, users, items)
    mse_item, mse_user = loop_reference(e_u.tolist(), e_i.tolist(), h_u.tolist(), h_i.tolist(),
                                        [(5, 6), (0, 4), (5, 2)])
    torch.testing.assert_close(loss.detach(), torch.tensor(0.3 * mse_item + 2.0 * mse_user,
                                                           dtype=torch.float64), rtol=1e-12, atol=1e-12)
    loss.backward()
    assert e_u.grad is None  # the meta model is fixed
    assert h_u.grad is not None and h_i.grad is not None
    assert (h_u.grad.abs().sum(1) > 0).tolist() == [True, False, False, False, False, True]
    assert (h_i.grad.abs().sum(1) > 0).tolist() == [False, False, True, False, True, False, True]


def test_zero_lambdas_give_zero_loss_and_a_perfect_copy_gives_zero_terms() -> None:
    e_u, e_i, h_u, h_i = tiny()
    users, items = torch.tensor([1, 2]), torch.tensor([3, 0])
    assert float(CrossFusion(e_u, e_i, 0.0, 0.0)(h_u, h_i, users, items)) == 0.0
    assert [float(t) for t in cross_fusion_terms(e_u, e_i, e_u, e_i, users, items)] == [0.0, 0.0]


def test_bpr_loss_matches_its_formula() -> None:
    pos, neg = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5])
    pairs = zip(pos.tolist(), neg.tolist(), strict=True)
    expected = sum(-math.log(1 / (1 + math.exp(-(p - n)))) for p, n in pairs) / 3
    torch.testing.assert_close(bpr_loss(pos, neg), torch.tensor(expected), rtol=1e-6, atol=1e-6)
