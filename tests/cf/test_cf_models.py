"""LightGCN propagation and MF scores against dense numpy computations."""

from __future__ import annotations

import numpy as np
import torch

from recdistill.data.interactions import Interactions, normalized_adjacency
from recdistill.models.lightgcn import LightGCN
from recdistill.models.mf import MF

USERS = [0, 0, 1, 2, 2, 2, 3]
ITEMS = [0, 3, 1, 0, 1, 2, 3]


def numpy_lightgcn(e0: np.ndarray, n_users: int, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense reference: A_hat = D^-1/2 A D^-1/2, E = mean_k A_hat^k E0."""
    r = np.zeros((n_users, e0.shape[0] - n_users))
    r[USERS, ITEMS] = 1.0
    a = np.block([[np.zeros((n_users, n_users)), r], [r.T, np.zeros((r.shape[1], r.shape[1]))]])
    d = a.sum(1) ** -0.5
    a_hat = d[:, None] * a * d[None, :]
    layers = [e0]
    for _ in range(n_layers):
        layers.append(a_hat @ layers[-1])
    final = np.mean(layers, axis=0)
    return final[:n_users], final[n_users:]


def test_lightgcn_propagation_matches_dense_numpy() -> None:
    torch.manual_seed(0)
    train = Interactions.from_arrays(USERS, ITEMS, n_users=4, n_items=4)
    model = LightGCN(4, 4, embed_dim=3, n_layers=3, norm_adj=normalized_adjacency(train))
    e0 = torch.cat([model.user.weight, model.item.weight]).detach().double().numpy()
    exp_u, exp_i = numpy_lightgcn(e0, 4, 3)
    got_u, got_i = model.embeddings()
    torch.testing.assert_close(got_u.detach().double(), torch.from_numpy(exp_u), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_i.detach().double(), torch.from_numpy(exp_i), rtol=1e-5, atol=1e-6)
    users, items = torch.tensor([0, 3, 2]), torch.tensor([1, 3, 2])
    expected = (exp_u[[0, 3, 2]] * exp_i[[1, 3, 2]]).sum(1)
    torch.testing.assert_close(model(users, items).detach().double(), torch.from_numpy(expected),
                               rtol=1e-5, atol=1e-6)


def test_lightgcn_gradients_flow_to_layer_zero_only_through_the_graph() -> None:
    torch.manual_seed(1)
    train = Interactions.from_arrays(USERS, ITEMS, n_users=4, n_items=4)
    model = LightGCN(4, 4, embed_dim=2, n_layers=1, norm_adj=normalized_adjacency(train))
    model(torch.tensor([1]), torch.tensor([1])).sum().backward()
    # score(1, 1) with one layer touches user 1, item 1 and their neighbours (items 1; users 1, 2)
    assert model.user.weight.grad is not None and model.item.weight.grad is not None
    touched_users = model.user.weight.grad.abs().sum(1) > 0
    touched_items = model.item.weight.grad.abs().sum(1) > 0
    assert touched_users.tolist() == [False, True, True, False]
    assert touched_items.tolist() == [False, True, False, False]


def test_zero_layers_is_matrix_factorisation() -> None:
    torch.manual_seed(2)
    train = Interactions.from_arrays(USERS, ITEMS, n_users=4, n_items=4)
    graph = LightGCN(4, 4, embed_dim=3, n_layers=0, norm_adj=normalized_adjacency(train))
    mf = MF(4, 4, embed_dim=3)
    mf.load_state_dict(graph.state_dict())
    users, items = torch.tensor([0, 1, 3]), torch.tensor([2, 2, 0])
    torch.testing.assert_close(graph(users, items), mf(users, items), rtol=0, atol=0)


def test_mf_scores_match_numpy_and_state_dict_has_no_graph() -> None:
    torch.manual_seed(3)
    mf = MF(3, 5, embed_dim=4)
    p, q = mf.user.weight.detach().numpy(), mf.item.weight.detach().numpy()
    users, items = torch.tensor([2, 0, 2]), torch.tensor([4, 1, 0])
    expected = (p[[2, 0, 2]] * q[[4, 1, 0]]).sum(1)
    torch.testing.assert_close(mf(users, items).detach(), torch.from_numpy(expected), rtol=1e-6, atol=1e-6)
    train = Interactions.from_arrays(USERS, ITEMS, n_users=4, n_items=4)
    graph = LightGCN(4, 4, embed_dim=3, n_layers=2, norm_adj=normalized_adjacency(train))
    assert sorted(graph.state_dict()) == ["item.weight", "user.weight"]


def test_lightgcn_gradients_match_dense_autograd() -> None:
    torch.manual_seed(4)
    train = Interactions.from_arrays(USERS, ITEMS, n_users=4, n_items=4)
    adj = normalized_adjacency(train)
    model = LightGCN(4, 4, embed_dim=3, n_layers=2, norm_adj=adj)
    users, items = torch.tensor([0, 2, 3]), torch.tensor([1, 2, 3])
    model(users, items).pow(2).sum().backward()
    e0 = torch.cat([model.user.weight, model.item.weight]).detach().double().requires_grad_(True)
    x, layers, dense = e0, [e0], adj.to_dense().double()
    for _ in range(2):
        x = dense @ x
        layers.append(x)
    final = torch.stack(layers).mean(0)
    ((final[users] * final[4 + items]).sum(-1)).pow(2).sum().backward()
    assert e0.grad is not None and model.user.weight.grad is not None and model.item.weight.grad is not None
    got = torch.cat([model.user.weight.grad, model.item.weight.grad]).double()
    torch.testing.assert_close(got, e0.grad, rtol=1e-5, atol=1e-6)
