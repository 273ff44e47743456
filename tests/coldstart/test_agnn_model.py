"""AGNN: shapes, the KL closed form, initialisation, cold nodes, sparse pooling, overfitting."""

from __future__ import annotations

import math

import torch
from torch import nn

from recdistill.models.agnn import AGNN, kl_divergence
from recdistill.models.multihot import MultiHot


def _tiny(seed: int = 0, user_cold: tuple[int, ...] = (), item_cold: tuple[int, ...] = ()) -> AGNN:
    torch.manual_seed(seed)
    ua = MultiHot.from_dense((torch.rand(5, 4) < 0.5).float())
    ia = MultiHot.from_dense((torch.rand(7, 6) < 0.5).float())
    uc, ic = torch.zeros(5, dtype=torch.bool), torch.zeros(7, dtype=torch.bool)
    uc[list(user_cold)], ic[list(item_cold)] = True, True
    return AGNN(ua, ia, uc, ic, embed_dim=8, hidden_dim=6)


def _neighbors(n: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n, m), generator=g), torch.full((n, m), 1.0 / m)


def test_forward_shapes() -> None:
    model = _tiny()
    users, items = torch.tensor([0, 4, 2]), torch.tensor([6, 0, 3])
    un, uw = _neighbors(5, 3)
    inb, iw = _neighbors(7, 4)
    rating, recon, kl = model(users, items, un, uw, inb, iw)
    assert rating.shape == recon.shape == kl.shape == (3,)
    p, q, bu, bi = model.representations(un, uw, inb, iw)
    assert p.shape == (5, 8) and q.shape == (7, 8) and bu.shape == (5,) and bi.shape == (7,)


def test_kl_matches_closed_form_and_torch_distributions() -> None:
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.5, -1.0]])
    # 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar): row 2 = (1 + e^0.5 - 1 - 0.5) + (4 + e^-1 - 1 + 1)
    by_hand = torch.tensor([0.0, 0.5 * ((math.exp(0.5) - 0.5) + (4 + math.exp(-1.0)))])
    torch.testing.assert_close(kl_divergence(mu, logvar), by_hand, rtol=1e-6, atol=1e-6)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_divergence(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1))


def test_every_layer_and_gate_is_initialised() -> None:
    model = _tiny()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 11 + 2  # per side: bi, lin, 2 proj, 2 gates, 3 enc, 2 dec; + MLP
    for layer in linears:  # Xavier-uniform weights, zero biases (the reference left a gate at default)
        bound = (6.0 / (layer.in_features + layer.out_features)) ** 0.5
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.3 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_sparse_pooling_and_its_gradient_match_dense() -> None:
    model = _tiny()
    side = model.user
    dense = side.attr.to_dense()  # (N, F)
    table = torch.randn_like(side.attribute, requires_grad=True)
    got = side._pool(table)
    want = dense @ table
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    (grad_got,) = torch.autograd.grad(got, table, g)
    torch.testing.assert_close(grad_got, dense.T @ g)


def test_cold_nodes_ignore_their_preference_embedding() -> None:
    model = _tiny(item_cold=(2,)).eval()
    un, uw = _neighbors(5, 3)
    inb, iw = _neighbors(7, 3, seed=1)
    inb[inb == 2] = 0  # a cold node is nobody's neighbor
    before = model.representations(un, uw, inb, iw)
    with torch.no_grad():
        model.item.preference[2] += 5.0  # untrained embedding and bias of the cold item
        model.item.bias[2] += 1.0
        model.item.preference[3] += 5.0  # a warm item
        model.item.bias[3] += 1.0
    after = model.representations(un, uw, inb, iw)
    torch.testing.assert_close(after[1][2], before[1][2])
    assert after[3][2] == 0.0
    assert not torch.allclose(after[1][3], before[1][3]) and after[3][3] == before[3][3] + 1.0


def test_weighted_neighbors_are_the_expectation_of_uniform_ones() -> None:
    model = _tiny().eval()
    un, uw = _neighbors(5, 3)
    inb = torch.tensor([[1, 1, 2]] * 7)  # neighbor 1 twice, 2 once, uniform weights
    same = torch.tensor([[1, 2]] * 7), torch.tensor([[2 / 3, 1 / 3]] * 7)
    a = model.representations(un, uw, inb, torch.full((7, 3), 1 / 3))[1]
    b = model.representations(un, uw, *same)[1]
    torch.testing.assert_close(a, b)


def test_one_tiny_case_overfits() -> None:
    model = _tiny(seed=1)
    users, items = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([0, 1, 2, 3, 4, 5])
    target = torch.tensor([5.0, 1.0, 3.0, 4.0, 2.0, 1.0])
    un, uw = _neighbors(5, 2)
    inb, iw = _neighbors(7, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        rating, recon, kl = model(users, items, un, uw, inb, iw)
        loss = ((rating - target) ** 2).mean() + 0.01 * (recon.mean() + kl.mean())
        loss.backward()
        opt.step()
    model.eval()
    rating, _, _ = model(users, items, un, uw, inb, iw)
    torch.testing.assert_close(rating, target, atol=0.05, rtol=0)
