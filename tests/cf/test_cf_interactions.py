"""Interactions: membership, negatives, BPR epochs and the normalized adjacency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recdistill.data.interactions import (Interactions, bpr_batches, load_cf_splits,
                                          normalized_adjacency, sample_negatives)


def random_pairs(seed: int, n_users: int, n_items: int, density: float) -> Interactions:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[np.arange(n_users), rng.integers(n_items, size=n_users)] = True  # every user has one
    dense[:, -1] = False  # and every user has at least one negative
    users, items = np.nonzero(dense)
    return Interactions.from_arrays(users, items, n_users=n_users, n_items=n_items)


def test_from_arrays_dedupes_sorts_and_contains() -> None:
    x = Interactions.from_arrays([2, 0, 2, 0], [1, 3, 1, 0], n_users=3, n_items=4)
    assert x.users.tolist() == [0, 0, 2] and x.items.tolist() == [0, 3, 1]
    users, items = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    expected = np.zeros((3, 4), dtype=bool)
    expected[[0, 0, 2], [0, 3, 1]] = True
    got = x.contains(users.flatten(), items.flatten()).view(3, 4)
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(x.dense().numpy(), expected)
    assert [d.tolist() for d in x.degrees()] == [[2, 0, 1], [1, 1, 0, 1]]


def test_from_arrays_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 4\)"):
        Interactions.from_arrays([0], [4], n_users=1, n_items=4)


def test_negatives_are_never_train_items_even_for_dense_users() -> None:
    train = random_pairs(0, n_users=30, n_items=12, density=0.8)  # ~80% of items are positives
    g = torch.Generator().manual_seed(0)
    users = train.users.repeat(20)  # (20P,)
    neg = sample_negatives(train, users, g)
    dense = train.dense().numpy()
    assert not dense[users.numpy(), neg.numpy()].any()
    assert neg.min() >= 0 and neg.max() < 12


def test_negatives_are_uniform_over_the_users_non_train_items() -> None:
    train = Interactions.from_arrays([0, 0, 0], [0, 2, 4], n_users=1, n_items=6)
    g = torch.Generator().manual_seed(1)
    neg = sample_negatives(train, torch.zeros(30_000, dtype=torch.long), g)
    counts = torch.bincount(neg, minlength=6).double() / 30_000
    torch.testing.assert_close(counts, torch.tensor([0, 1 / 3, 0, 1 / 3, 0, 1 / 3], dtype=torch.double),
                               atol=0.015, rtol=0)


def test_a_user_with_every_item_is_an_error() -> None:
    train = Interactions.from_arrays([0, 0, 1], [0, 1, 0], n_users=2, n_items=2)
    with pytest.raises(ValueError, match="user 0 interacts with every item"):
        next(bpr_batches(train, 2, torch.Generator().manual_seed(0)))


def test_an_epoch_visits_each_train_pair_once_with_valid_negatives() -> None:
    train = random_pairs(1, n_users=20, n_items=15, density=0.3)
    batches = list(bpr_batches(train, 7, torch.Generator().manual_seed(0)))
    assert all(len(b.users) == 7 for b in batches[:-1])
    users = torch.cat([b.users for b in batches])
    pos = torch.cat([b.pos for b in batches])
    neg = torch.cat([b.neg for b in batches])
    assert sorted((users * 15 + pos).tolist()) == train.keys.tolist()
    assert not train.contains(users, neg).any()


def test_epochs_are_reproducible_from_the_seed() -> None:
    train = random_pairs(2, n_users=10, n_items=9, density=0.3)
    a = [b.neg for b in bpr_batches(train, 4, torch.Generator().manual_seed(5))]
    b = [b.neg for b in bpr_batches(train, 4, torch.Generator().manual_seed(5))]
    torch.testing.assert_close(torch.cat(a), torch.cat(b), rtol=0, atol=0)


def test_normalized_adjacency_matches_dense_numpy() -> None:
    train = random_pairs(3, n_users=6, n_items=5, density=0.4)
    r = train.dense().numpy().astype(np.float64)  # (U, I)
    a = np.block([[np.zeros((6, 6)), r], [r.T, np.zeros((5, 5))]])  # (N, N)
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    expected = inv[:, None] * a * inv[None, :]
    adj = normalized_adjacency(train)
    assert adj.layout == torch.sparse_csr and adj._nnz() == 2 * len(train)
    torch.testing.assert_close(adj.to_dense().double(), torch.from_numpy(expected), rtol=1e-6, atol=1e-7)


def test_isolated_nodes_get_zero_rows() -> None:
    train = Interactions.from_arrays([0], [1], n_users=2, n_items=3)  # user 1, items 0 and 2 isolated
    dense = normalized_adjacency(train).to_dense()
    assert torch.isfinite(dense).all()
    assert dense[[1, 2, 4]].abs().sum() == 0 and dense[0, 3] == 1


def test_load_cf_splits_infers_sizes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd
    for name, (u, i) in {"train": ([0, 1], [0, 2]), "valid": ([1], [4]), "test": ([3], [1])}.items():
        pd.DataFrame({"user": u, "item": i}).to_parquet(tmp_path / f"{name}.parquet")
    splits = load_cf_splits(tmp_path)
    assert (splits.n_users, splits.n_items) == (4, 5)
    assert splits.valid.contains(torch.tensor([1]), torch.tensor([4])).item()
