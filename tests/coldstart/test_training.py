"""AGNN training: neighbor sampling, determinism, no cold rating reaching training, the
registry, the selection metric and the cost count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from repo_params import repo_params  # tests/ is on sys.path (conftest)

from recdistill.arm import ArmResult
from recdistill.coldstart.graphs import SideGraph, build_graph, graph_from_payload
from recdistill.coldstart.training import TEACHERS, NeighborSampler, Ratings, monitor, run_coldstart, scoring_macs
from recdistill.data.canonical import Canonical, parse_archive
from recdistill.data.splits import cold_split
from recdistill.models.agnn import AGNN
from recdistill.models.multihot import MultiHot
from recdistill.params import AgnnParams, ParamsError


def _agnn(epochs: int = 2, patience: int = 1) -> AgnnParams:
    """train.agnn of params.yaml, shrunk for tests."""
    p = repo_params().train.agnn
    block = {**p.model.model_dump(), "embed_dim": 8, "hidden_dim": 8, "n_neighbors": 3}
    optim = p.optim.model_copy(update={"lr": 0.01, "batch_size": 64, "epochs": epochs, "patience": patience})
    return p.model_copy(update={"model": p.model.model_validate(block), "optim": optim})


NEIGHBORS = repo_params().neighbors.model_copy(update={"top_frac": 0.1})


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
         p: AgnnParams | None = None, select: str = "rmse") -> ArmResult:
    p = p or _agnn()
    payload = build_graph("ics", train, c.users, c.items, c.attributes, NEIGHBORS)
    return run_coldstart(graph_from_payload(payload), train, valid, test, TEACHERS.arch(p.model, "train.agnn.model"),
                         p, select=select, seed=3, device=torch.device("cpu"))


def test_training_is_deterministic_and_reports_once(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    a, b = _run(canonical, train, valid, test), _run(canonical, train, valid, test)
    assert a.record.metrics == b.record.metrics
    for key in a.state:
        torch.testing.assert_close(a.state[key], b.state[key], rtol=0, atol=0)
    assert set(a.record.metrics) == {"valid/rmse", "valid/mae", "test/rmse", "test/mae"}
    r = a.record
    assert (r.track, r.model, r.role, r.scenario, r.seed) == ("coldstart", "agnn", "teacher", "ics", 3)
    assert r.epochs == len(a.history) == 2 and r.stopped in ("early_stopping", "epoch_cap")
    assert a.checkpoint.selection == {k: v for k, v in r.metrics.items() if k.startswith("valid/")}
    assert a.checkpoint.arch["name"] == "agnn" and a.checkpoint.extra == {"scenario": "ics"}
    best = a.history[r.best_epoch - 1]  # the kept epoch has the best valid/rmse of the history
    assert best["valid/rmse"] == r.metrics["valid/rmse"] == min(row["valid/rmse"] for row in a.history)
    pred, rating = a.predictions["prediction"].to_numpy(np.float64), a.predictions["rating"].to_numpy(np.float64)
    assert r.metrics["test/rmse"] == pytest.approx(np.sqrt(np.mean((pred - rating) ** 2)), abs=1e-6)
    assert r.metrics["test/mae"] == pytest.approx(np.mean(np.abs(pred - rating)), abs=1e-6)


def test_selection_follows_the_named_metric(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    by_mae = _run(canonical, train, valid, test, _agnn(epochs=4, patience=4), select="mae")
    best = min(by_mae.history, key=lambda row: row["valid/mae"])
    assert by_mae.record.best_epoch == best["epoch"] and by_mae.record.metrics["valid/mae"] == best["valid/mae"]
    with pytest.raises(ParamsError, match=r"evaluate.select.coldstart = 'auc' is invalid: expected one of 'rmse', 'mae'"):
        monitor("auc")


def test_a_bad_architecture_block_names_its_key() -> None:
    block = {**repo_params().train.agnn.model.model_dump(), "depth": 2}
    with pytest.raises(ParamsError, match=r"unknown key 'train.agnn.model.depth'"):
        TEACHERS.arch(block, "train.agnn.model")
    with pytest.raises(ParamsError, match=r"train.agnn.model.name = 'gcmc' is invalid: expected one of 'agnn'"):
        TEACHERS.arch({**block, "name": "gcmc"}, "train.agnn.model")


def test_scoring_macs_match_a_hand_count() -> None:
    """Every user and item once, then each rating: per node type with N nodes, nnz attribute
    entries, K neighbors, dim D: pooling 2 nnz D (the sparse part), Bi-Interaction's 0.5 * N D,
    Linear layers 14 N D^2 (bi, lin 2D^2 each; 3 encoder D^2; 2 decoder D^2; 2 projections
    2D^2; the add gate's message half D^2), aggregation 3 N D^2 (add gate's self half D^2,
    erase gate 2D^2) + N D (erase) + 3 N K D (weights x messages, weights x gates x messages);
    per rating: the MLP 2 D H + H and the dot product D."""
    torch.manual_seed(0)
    n_u, n_i, d, h, k, n_ratings = 5, 7, 8, 6, 3, 11
    ua, ia = (torch.rand(5, 4) < 0.5).float(), (torch.rand(7, 6) < 0.5).float()
    model = AGNN(MultiHot.from_dense(ua), MultiHot.from_dense(ia), torch.zeros(n_u, dtype=torch.bool),
                 torch.zeros(n_i, dtype=torch.bool), embed_dim=d, hidden_dim=h)
    rng = np.random.default_rng(0)
    users = NeighborSampler(_side(rng.integers(0, n_u, (n_u, k)), np.full((n_u, k), 1 / k)), k, "cpu")
    items = NeighborSampler(_side(rng.integers(0, n_i, (n_i, k)), np.full((n_i, k), 1 / k)), k, "cpu")
    data = Ratings(torch.randint(n_u, (n_ratings,)), torch.randint(n_i, (n_ratings,)), torch.rand(n_ratings))

    def side(n: int, nnz: int) -> int:
        return 2 * nnz * d + 2 * n * d + 17 * n * d * d + 3 * n * k * d

    total = side(n_u, int(ua.sum())) + side(n_i, int(ia.sum())) + n_ratings * (2 * d * h + h + d)
    assert scoring_macs(model, users, items, data) == round(total / n_ratings)


def test_cold_ratings_never_reach_the_trained_weights(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    flipped_valid, flipped_test = valid.assign(rating=6 - valid["rating"]), test.assign(rating=1)
    # one epoch: model selection has nothing to choose, so the weights depend on train alone
    state_a = _run(canonical, train, valid, test, _agnn(epochs=1)).state
    state_b = _run(canonical, train, flipped_valid, flipped_test, _agnn(epochs=1)).state
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)


def test_cold_items_are_listed_by_attributes_only(canonical: Canonical) -> None:
    train, valid, test = _ics(canonical)
    cold = np.union1d(valid["item"].unique(), test["item"].unique())
    graph = graph_from_payload(build_graph("ics", train, canonical.users, canonical.items,
                                           canonical.attributes, NEIGHBORS))
    assert not graph.items.warm[cold].any()
    assert not np.isin(graph.items.neighbors, cold).any(), "a cold item is someone's neighbor"
    attr_only = graph_from_payload(build_graph(
        "ics", train, canonical.users, canonical.items, canonical.attributes,
        NEIGHBORS.model_copy(update={"preference_weight": 0.0})))
    np.testing.assert_array_equal(graph.items.neighbors[cold], attr_only.items.neighbors[cold])
