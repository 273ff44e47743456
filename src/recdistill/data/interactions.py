"""Implicit-feedback interactions on the device: membership, masks, BPR batches, adjacency.

The cf track keeps every split as an :class:`Interactions` (deduplicated ``(user, item)``
pairs sorted by the key ``user * n_items + item``). Sorted keys give a vectorized membership
test (``torch.searchsorted``) that the negative sampler uses to reject a user's own train
items, and the normalized bipartite adjacency of LightGCN is built from the same pairs.
Nothing here loops over rows in Python.

Shapes: P pairs, B batch, U users, I items, N = U + I graph nodes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["Interactions", "BprBatch", "CfSplits", "load_cf_splits", "sample_negatives",
           "bpr_batches", "normalized_adjacency"]


@dataclass(frozen=True)
class Interactions:
    """Deduplicated ``(user, item)`` pairs, sorted by ``user * n_items + item``.

    >>> x = Interactions.from_arrays([1, 0, 1, 1], [2, 1, 0, 2], n_users=2, n_items=3)
    >>> x.users.tolist(), x.items.tolist()
    ([0, 1, 1], [1, 0, 2])
    >>> x.contains(torch.tensor([1, 1, 0]), torch.tensor([2, 1, 1])).tolist()
    [True, False, True]
    """

    users: torch.Tensor  # (P,) int64
    items: torch.Tensor  # (P,) int64
    keys: torch.Tensor  # (P,) int64, strictly increasing
    n_users: int
    n_items: int

    @classmethod
    def from_arrays(cls, users: object, items: object, *, n_users: int, n_items: int,
                    device: torch.device | str = "cpu") -> Interactions:
        """Build from any int sequences (numpy, lists, tensors); ids must be in range."""
        u = torch.tensor(np.asarray(users, dtype=np.int64), device=device)  # (P,) copied
        i = torch.tensor(np.asarray(items, dtype=np.int64), device=device)  # (P,) copied
        if u.shape != i.shape or u.dim() != 1:
            raise ValueError(f"users and items must be 1-D of equal length, got {tuple(u.shape)} "
                             f"and {tuple(i.shape)}")
        if len(u) and (int(u.min()) < 0 or int(u.max()) >= n_users):
            raise ValueError(f"user ids must lie in [0, {n_users}), got [{int(u.min())}, {int(u.max())}]")
        if len(i) and (int(i.min()) < 0 or int(i.max()) >= n_items):
            raise ValueError(f"item ids must lie in [0, {n_items}), got [{int(i.min())}, {int(i.max())}]")
        keys = torch.unique(u * n_items + i)  # (P',) sorted, duplicates removed
        return cls(keys // n_items, keys % n_items, keys, n_users, n_items)

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each ``(users[b], items[b])`` is one of the pairs: (B,) bool."""
        query = users * self.n_items + items  # (B,)
        if len(self.keys) == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)  # (B,)
        return self.keys[pos] == query  # (B,)

    def dense(self) -> torch.Tensor:
        """The (U, I) bool matrix of the pairs."""
        out = torch.zeros(self.n_users * self.n_items, dtype=torch.bool, device=self.keys.device)
        out[self.keys] = True
        return out.view(self.n_users, self.n_items)  # (U, I)

    def degrees(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs per user (U,) and per item (I,), int64."""
        return (torch.bincount(self.users, minlength=self.n_users),
                torch.bincount(self.items, minlength=self.n_items))


@dataclass(frozen=True)
class CfSplits:
    train: Interactions
    valid: Interactions
    test: Interactions

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items


def load_cf_splits(root: str | Path, *, device: torch.device | str = "cpu",
                   n_users: int | None = None, n_items: int | None = None) -> CfSplits:
    """Read ``root/{train,valid,test}.parquet`` (columns user, item) onto ``device``.

    ``n_users``/``n_items`` default to 1 + the largest id in any of the three splits.
    """
    frames = {name: pd.read_parquet(Path(root) / f"{name}.parquet", columns=["user", "item"])
              for name in ("train", "valid", "test")}
    n_users = n_users or 1 + max(int(f["user"].max()) for f in frames.values())
    n_items = n_items or 1 + max(int(f["item"].max()) for f in frames.values())
    parts = [Interactions.from_arrays(f["user"].to_numpy(), f["item"].to_numpy(), n_users=n_users,
                                      n_items=n_items, device=device) for f in frames.values()]
    return CfSplits(*parts)


@dataclass(frozen=True)
class BprBatch:
    users: torch.Tensor  # (B,) int64
    pos: torch.Tensor  # (B,) int64, a train item of the user
    neg: torch.Tensor  # (B,) int64, never a train item of the user


def sample_negatives(train: Interactions, users: torch.Tensor, generator: torch.Generator,
                     max_rounds: int = 1000) -> torch.Tensor:
    """One uniform item per user (B,) that is not among the user's train items.

    Draws all items at once, then redraws only the rejected ones until none is left:
    exact uniform sampling over each user's non-train items.
    """
    neg = torch.randint(train.n_items, users.shape, generator=generator, device=users.device)  # (B,)
    bad = train.contains(users, neg)  # (B,) bool
    for _ in range(max_rounds):
        idx = bad.nonzero().squeeze(1)  # (R,) rejected positions
        if len(idx) == 0:
            return neg
        neg[idx] = torch.randint(train.n_items, idx.shape, generator=generator, device=users.device)
        bad[idx] = train.contains(users[idx], neg[idx])
    raise RuntimeError(f"sample_negatives: {int(bad.sum())} users still have no negative after "
                       f"{max_rounds} rounds; does a user interact with (almost) every item?")


def bpr_batches(train: Interactions, batch_size: int, generator: torch.Generator
                ) -> Iterator[BprBatch]:
    """One epoch of BPR triples: a permutation of the train pairs, sliced, with negatives."""
    full = train.degrees()[0] >= train.n_items  # (U,) users with no possible negative
    if bool(full.any()):
        raise ValueError(f"user {int(full.nonzero()[0])} interacts with every item: no negative exists")
    perm = torch.randperm(len(train), generator=generator, device=train.keys.device)  # (P,)
    for start in range(0, len(perm), batch_size):
        idx = perm[start:start + batch_size]  # (B,)
        users = train.users[idx]  # (B,)
        yield BprBatch(users, train.items[idx], sample_negatives(train, users, generator))


def normalized_adjacency(train: Interactions) -> torch.Tensor:
    r"""The LightGCN graph :math:`\hat A = D^{-1/2} A D^{-1/2}` as a sparse CSR (N, N) float32.

    ``A = [[0, R], [R^T, 0]]`` is the symmetric user-item bipartite adjacency (users are
    nodes ``0..U-1``, items ``U..U+I-1``) and ``D`` its degree matrix; isolated nodes get
    zero rows (no division by zero). CSR, because ``csr @ dense`` and its backward are
    3-4x faster than with COO on CPU.

    >>> x = Interactions.from_arrays([0, 0, 1], [0, 1, 1], n_users=2, n_items=2)
    >>> normalized_adjacency(x).to_dense()[0]  # user 0: degree 2, items of degree 1 and 2
    tensor([0.0000, 0.0000, 0.7071, 0.5000])
    """
    n_users, n = train.n_users, train.n_users + train.n_items
    rows = torch.cat([train.users, train.items + n_users])  # (2P,)
    cols = torch.cat([train.items + n_users, train.users])  # (2P,)
    deg = torch.bincount(rows, minlength=n).to(torch.float32)  # (N,)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))  # (N,)
    values = inv_sqrt[rows] * inv_sqrt[cols]  # (2P,)
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n),
                                  check_invariants=True).coalesce()  # (N, N)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used for spmm only
        warnings.simplefilter("ignore", UserWarning)
        return adj.to_sparse_csr()  # (N, N)
