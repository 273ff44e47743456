"""Padded sequences, exact negative sampling and history masks of the seq split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from recdistill.data.sequences import SeqSplit, history_mask, sample_unseen, seq_batches


def _histories(split: SeqSplit) -> list[set[int]]:
    return [set(int(t) for t in row if t <= split.n_items) for row in split.history]


def test_tensors_hold_the_last_items_right_aligned() -> None:
    tr = pd.DataFrame({"user": [3] * 6, "item": [9, 8, 7, 6, 5, 4], "pos": [5, 4, 3, 2, 1, 0]})
    va, te = pd.DataFrame({"user": [3], "item": [1]}), pd.DataFrame({"user": [3], "item": [2]})
    s = SeqSplit.from_frames(tr, va, te, n_items=10, max_len=4)
    # chronological tokens (item + 1): 5 6 7 8 9 10; valid 2, test 3
    assert s.train.tolist() == [[6, 7, 8, 9, 10]]
    assert s.valid_input.tolist() == [[7, 8, 9, 10]] and s.valid_target.tolist() == [2]
    assert s.test_input.tolist() == [[8, 9, 10, 2]] and s.test_target.tolist() == [3]
    assert s.history.tolist() == [[5, 6, 7, 8, 9, 10]] and s.n_free.tolist() == [4]


def test_sampled_negatives_are_uniform_over_unseen_items(make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(n_users=6, n_items=12, min_len=5, max_seq=10, seed=3)
    g = torch.Generator().manual_seed(0)
    draws = sample_unseen(split.gaps, split.n_free, 24_000, g)  # (U, n)
    for row, seen in zip(draws, _histories(split)):
        free = sorted(set(range(1, split.n_items + 1)) - seen)
        counts = np.bincount(row.numpy(), minlength=split.n_items + 1)
        assert counts[sorted(seen)].sum() == 0 and counts[0] == 0  # never a seen item
        expected = len(row) / len(free)
        np.testing.assert_allclose(counts[free], expected, rtol=0.1)  # all free items, evenly


def test_batches_cover_users_once_with_shifted_targets_and_unseen_negatives(
        make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(n_users=20, n_items=40, max_len=10, seed=1)
    seen = _histories(split)
    g = torch.Generator().manual_seed(0)
    rows_seen = 0
    for batch in seq_batches(split, 6, g):
        keep = batch.positives != 0
        assert torch.equal(batch.negatives != 0, keep)  # one negative per real position
        assert torch.equal(batch.inputs[:, 1:], batch.positives[:, :-1])  # next-item targets
        assert keep.any(0).all()  # no column is padding in every row
        for inp, negs in zip(batch.inputs, batch.negatives):
            user_row = next(i for i, r in enumerate(split.train[:, :-1])
                            if torch.equal(r[-len(inp):], inp) and (r[:-len(inp)] == 0).all())
            assert not set(negs[negs != 0].tolist()) & seen[user_row]
        rows_seen += len(batch.inputs)
    assert rows_seen == len(split.users)


def test_history_mask_matches_sets(make_split: Callable[..., SeqSplit]) -> None:
    split = make_split(seed=2)
    rows = torch.arange(len(split.users))
    for which in ("valid", "test"):
        mask = history_mask(split, rows, which)
        for r, seen in enumerate(_histories(split)):
            expected = seen | {0} | ({int(split.valid_target[r])} if which == "test" else set())
            assert set(mask[r].nonzero().flatten().tolist()) == expected
