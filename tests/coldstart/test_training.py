"""AGNN training: neighbor sampling, determinism, and no cold rating reaching training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recdistill.coldstart.graphs import SideGraph, build_graph, graph_from_payload
from recdistill.coldstart.training import NeighborSampler, train_agnn
from recdistill.data.canonical import Canonical, parse_archive
from recdistill.data.splits import cold_split
from recdistill.params import AgnnParams, NeighborParams

TINY = AgnnParams(embed_dim=8, hidden_dim=8, n_neighbors=3, lr=0.01, batch_size=64, epochs=2, patience=1)


def _side(ids: np.ndarray, weights: np.ndarray) -> SideGraph:
    n = len(ids)
    return SideGraph(ids, weights.astype(np.float32), weights.astype(np.float32), np.ones(n, bool),
                     sp.csr_matrix((n, 1), dtype=np.float32), ("x=1",))


def test_sampler_draws_listed_distinct_neighbors_by_weight() -> None:
    n = 20000  # identical rows: one draw per row gives the sampling frequencies
    ids = np.tile([1, 2, 3], (n, 1))
    w = np.tile([0.7, 0.2, 0.1], (n, 1))
    g = torch.Generator().manual_seed(0)
    drawn, weight = NeighborSampler(_side(ids, w), n_sample=1, device="cpu").sample(g)
    assert drawn.shape == weight.shape == (n, 1) and torch.all(weight == 1.0)
    freq = torch.bincount(drawn[:, 0], minlength=4).double() / n
    torch.testing.assert_close(freq[1:], torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=0.015, rtol=0)
    two, weight = NeighborSampler(_side(ids, w), n_sample=2, device="cpu").sample(g)
    assert torch.all(two[:, 0] != two[:, 1]), "sampling is without replacement"
    assert torch.all(weight == 0.5)
    everything = NeighborSampler(_side(ids[:4], w[:4]), n_sample=5, device="cpu").sample(g)
    torch.testing.assert_close(everything[1], torch.as_tensor(w[:4], dtype=torch.float32))  # n >= K


@pytest.fixture(scope="module")
def canonical(synth: object, tmp_path_factory: pytest.TempPathFactory) -> Canonical:
    import synthetic  # the tests/ helper on sys.path (conftest)
    wheel = synthetic.write_recbole(synth, tmp_path_factory.mktemp("wheel") / "recbole-1.2.1-py3-none-any.whl")
    return parse_archive(wheel)


def _ics(c: Canonical) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    s = cold_split(c.ratings, "item", len(c.items), 0.15, 0.15, np.random.default_rng(0))
    return s.train, s.valid, s.test


def _run(c: Canonical, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame,
         p: AgnnParams = TINY) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    payload = build_graph("ics", train, c.users, c.items, c.attributes, NeighborParams(top_frac=0.1))
    run = train_agnn(graph_from_payload(payload), train, valid, test, p, seed=3, device=torch.device("cpu"))
    return run.model.state_dict(), run.metrics


def test_training_is_deterministic_and_reports_once(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    state_a, metrics_a = _run(canonical, train, valid, test)
    state_b, metrics_b = _run(canonical, train, valid, test)
    assert metrics_a == metrics_b
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)
    assert set(metrics_a) == {"valid/rmse", "valid/mae", "test/rmse", "test/mae"}


def test_cold_ratings_never_reach_the_trained_weights(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    flipped_valid, flipped_test = valid.assign(rating=6 - valid["rating"]), test.assign(rating=1)
    # one epoch: model selection has nothing to choose, so the weights depend on train alone
    one = dataclasses.replace(TINY, epochs=1)
    state_a, _ = _run(canonical, train, valid, test, one)
    state_b, _ = _run(canonical, train, flipped_valid, flipped_test, one)
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)


def test_cold_items_are_listed_by_attributes_only(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    cold = np.union1d(valid["item"].unique(), test["item"].unique())
    graph = graph_from_payload(build_graph("ics", train, canonical.users, canonical.items,
                                           canonical.attributes, NeighborParams(top_frac=0.1)))
    assert not graph.items.warm[cold].any()
    assert not np.isin(graph.items.neighbors, cold).any(), "a cold item is someone's neighbor"
    attr_only = graph_from_payload(build_graph(
        "ics", train, canonical.users, canonical.items, canonical.attributes,
        NeighborParams(top_frac=0.1, preference_weight=0.0)))
    np.testing.assert_array_equal(graph.items.neighbors[cold], attr_only.items.neighbors[cold])
