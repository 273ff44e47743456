"""Fixtures of the seq tests: a tiny random seq split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from recdistill.data.sequences import SeqSplit


def random_split(n_users: int = 12, n_items: int = 30, max_len: int = 8, seed: int = 0,
                 min_len: int = 5, max_seq: int = 20) -> SeqSplit:
    """Users with distinct-item sequences of random length; last two items are valid/test."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        seq = rng.permutation(n_items)[: rng.integers(min_len, max_seq + 1)]
        train += [(u * 3 + 1, int(i), pos) for pos, i in enumerate(seq[:-2])]
        valid.append((u * 3 + 1, int(seq[-2])))
        test.append((u * 3 + 1, int(seq[-1])))
    return SeqSplit.from_frames(pd.DataFrame(train, columns=["user", "item", "pos"]),
                                pd.DataFrame(valid, columns=["user", "item"]),
                                pd.DataFrame(test, columns=["user", "item"]),
                                n_items=n_items, max_len=max_len)


@pytest.fixture()
def make_split() -> Callable[..., SeqSplit]:
    return random_split
