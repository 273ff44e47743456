"""ctr models against closed forms, hand computations and naive per-edge references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from recdistill.models.cin import CIN
from recdistill.models.crossnet import CrossNet
from recdistill.models.ctr_embedding import FieldEmbedding
from recdistill.models.dagfm import DAGFM

ONE_FIELD = dict(cardinalities=(3,), n_multi=2)  # 1 categorical + 1 multi-hot field -> F = 2


def test_field_embedding_offsets_and_mean_pooling() -> None:
    torch.manual_seed(0)
    emb = FieldEmbedding(cardinalities=(3, 4), n_multi=3, dim=2)
    ids = torch.tensor([[2, 0], [1, 3]])
    multi = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])  # two genres; none
    out = emb(ids, multi)  # (2, 3, 2)
    table, genres = emb.table.weight, emb.multi
    expected = torch.stack([
        torch.stack([table[2], table[3 + 0], (genres[0] + genres[2]) / 2]),
        torch.stack([table[1], table[3 + 3], torch.zeros(2)]),
    ])
    assert_close(out, expected)


def test_crossnet_vector_layer_is_the_dcn_closed_form() -> None:
    model = CrossNet(**ONE_FIELD, embed_dim=2, depth=1, cross="vector")  # N = 2 * 2 = 4
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
        model.bias.copy_(torch.tensor([[0.01, 0.02, 0.03, 0.04]]))
    x0 = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    x = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    # w . x = 0.05 - 0.2 + 0.6 + 0 = 0.45; x0 * 0.45 + b + x
    expected = torch.tensor([[0.45 + 0.01 + 0.5, 0.9 + 0.02 - 1.0, 1.35 + 0.03 + 2.0,
                              1.8 + 0.04 + 0.0]])
    assert_close(model.cross_layer(x0, x, 0), expected, rtol=1e-6, atol=1e-6)


def test_crossnet_matrix_network_matches_numpy() -> None:
    torch.manual_seed(1)
    model = CrossNet(**ONE_FIELD, embed_dim=3, depth=2, cross="matrix")
    with torch.no_grad():
        model.bias.normal_()
    emb = torch.randn(5, 2, 3)
    W, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    x0 = emb.double().numpy().reshape(5, -1)
    x = x0
    for layer in range(2):
        x = x0 * (x @ W[layer].T + b[layer]) + x
    v, c = model.head.weight.detach().double().numpy()[0], model.head.bias.item()
    assert_close(model.interact(emb), torch.from_numpy(x @ v + c).float(), rtol=1e-5, atol=1e-5)


def test_cin_shape_and_hand_computed_value() -> None:
    model = CIN(**ONE_FIELD, embed_dim=2, depth=1, layer_size=1)
    assert model.compress(torch.zeros(2, 14), torch.zeros(2, 14), 0).shape == (1, 14)
    with torch.no_grad():
        model.maps[0].copy_(torch.tensor([[1.0, 0.5, -1.0, 2.0]]))  # W_ij, (i, j) in row-major
        model.head.weight.fill_(0.1)
        model.head.bias.fill_(-1.0)
        model.linear.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.5]]))  # reads field 1, d=1
    emb = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # X0: field 0 = (1, 2), field 1 = (3, 4)
    x0 = emb[0]  # (F, N) with N = D for one example
    # d=0: 1*1*1 + 0.5*1*3 - 1*3*1 + 2*3*3 = 17.5; d=1: 4 + 0.5*8 - 8 + 2*16 = 32
    assert_close(model.compress(x0, x0, 0), torch.tensor([[17.5, 32.0]]))
    assert_close(model.interact(emb), torch.tensor([0.1 * 49.5 - 1.0 + 0.5 * 4.0]))
    deep = CIN(**ONE_FIELD, embed_dim=2, depth=3, layer_size=4, mlp_dims=(5,))
    assert deep.interact(torch.randn(6, 2, 2)).shape == (6,)


def test_cin_matches_the_paper_equation_per_example() -> None:
    """A batch of 3 through 2 layers against xDeepFM's equation evaluated one example, one
    feature map and one (i, j) pair at a time in float64."""
    torch.manual_seed(0)
    model = CIN(cardinalities=(3, 4), n_multi=3, embed_dim=4, depth=2, layer_size=3).double()
    emb = torch.randn(3, 3, 4, dtype=torch.float64)  # (B, F, D)
    W = [w.detach().view(w.shape[0], -1, 3) for w in model.maps]  # (H_k, H_{k-1}, F)
    v, c = model.head.weight.detach()[0], model.head.bias.item()
    expected = []
    for x0 in emb:  # (F, D)
        x, pooled = x0, []
        for w in W:
            x = torch.stack([sum(w[h, i, j] * x[i] * x0[j] for i in range(x.shape[0]) for j in range(3))
                             for h in range(w.shape[0])])  # (H, D)
            pooled.extend(x.sum(dim=1))
        expected.append(sum(a * b for a, b in zip(v, pooled)) + c + model.linear(x0.reshape(1, -1))[0, 0])
    assert_close(model.interact(emb), torch.stack(expected).detach())


def naive_dagfm(model: DAGFM, emb: torch.Tensor) -> torch.Tensor:
    """DAGFM by a plain loop over the DAG's edges i -> j (i <= j), one example at a time."""
    F, D = emb.shape[1], emb.shape[2]
    C = model.connect.detach().double()
    logits = []
    for e in emb.double():
        h0 = C @ e  # (F, D)
        h, states = h0, [h0.sum(1)]
        for t in range(model.p.shape[0]):
            aggr = torch.zeros(F, D, dtype=torch.float64)
            edge = 0
            for i in range(F):
                for j in range(i, F):
                    p = model.p[t, edge].detach().double()
                    if model.q is None:
                        aggr[j] += p * h[i]
                    else:
                        aggr[j] += (p @ h[i]) * model.q[t, edge].detach().double()
                    edge += 1
            h = h0 * aggr
            states.append(h.sum(1))
        w, c = model.head.weight.detach().double()[0], model.head.bias.detach().double()[0]
        logits.append(torch.cat(states) @ w + c)
    return torch.stack(logits).float()


@pytest.mark.parametrize("kind", ["inner", "outer"])
def test_dagfm_propagation_matches_naive_per_edge_loop(kind: str) -> None:
    torch.manual_seed(2)
    model = DAGFM(cardinalities=(3, 4, 5), n_multi=2, embed_dim=3, depth=3, type=kind)  # F = 4
    with torch.no_grad():
        model.connect.add_(0.3 * torch.randn(4, 4))  # not the identity
        model.p.mul_(5.0)
        if model.q is not None:
            model.q.mul_(5.0)
    emb = torch.randn(6, 4, 3)
    assert_close(model.interact(emb), naive_dagfm(model, emb), rtol=1e-5, atol=1e-5)


def test_dagfm_only_dag_edges_are_parameters() -> None:
    model = DAGFM(cardinalities=(3, 4), n_multi=2, embed_dim=4, depth=2, type="outer")  # F = 3
    assert model.p.shape == (2, 6, 4) and model.q is not None and model.q.shape == (2, 6, 4)
    dense = model.edge_weights(model.p[0]).detach().numpy()  # (F, F, D)
    assert np.all(dense[np.tril_indices(3, -1)] == 0)  # no edge j -> i for j > i
    assert np.all(dense[np.triu_indices(3)] != 0)
