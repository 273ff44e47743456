"""Per-user item sequences of the seq split as padded tensors, and on-device SASRec batches.

Item ids are shifted by +1 so that 0 is padding: item ``i`` of the canonical tables is
token ``i + 1`` here, and a score row over tokens has ``I + 1`` columns whose column 0 is
never ranked. Sequences are left-padded (the most recent item sits in the last column), as
SASRec's reference code pads them.

Negative sampling is exact and vectorized: a user's train items, sorted, ``h_0 < h_1 < ...``
give the nondecreasing gaps ``g_j = h_j - j``, and the ``r``-th (0-based) token outside the
history is ``r + 1 + #{j : g_j <= r + 1}`` (one ``torch.searchsorted``), so drawing ``r``
uniformly below the number of free tokens draws uniformly from the items the user has not
seen: no rejection rounds and no per-user Python loop.

Shapes: U users, L sequence length (``max_len``), B batch, H longest train history,
I items (tokens 1..I, 0 = padding).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

__all__ = ["SeqSplit", "SeqBatch", "load_seq_split", "sample_unseen", "seq_batches", "history_mask"]

Split = Literal["valid", "test"]


def _left_padded(users: np.ndarray, tokens: np.ndarray, n_rows: int, width: int) -> np.ndarray:
    """Rows (n_rows, width) holding each user's last ``width`` tokens, right-aligned.

    ``users`` (dense row ids 0..n_rows-1) and ``tokens`` are in chronological order per user.
    """
    counts = np.bincount(users, minlength=n_rows)  # (U,)
    starts = np.cumsum(counts) - counts  # (U,)
    rank = np.arange(len(users)) - starts[users]  # position within the user's sequence
    from_end = counts[users] - 1 - rank  # 0 for the most recent item
    keep = from_end < width
    out = np.zeros((n_rows, width), dtype=np.int64)
    out[users[keep], width - 1 - from_end[keep]] = tokens[keep]
    return out


@dataclass(frozen=True)
class SeqSplit:
    """The seq split on the device (leave-one-out: valid = second last, test = last item).

    ``train`` row ``u`` holds the last ``L + 1`` train tokens of user ``users[u]``: the model
    reads ``train[:, :-1]`` and predicts ``train[:, 1:]``. Validation reads the last ``L``
    train tokens; test reads the last ``L`` of train + valid.
    """

    users: torch.Tensor  # (U,) int64 canonical user id of each row
    train: torch.Tensor  # (U, L + 1) int64 tokens, left-padded with 0
    valid_input: torch.Tensor  # (U, L) int64
    valid_target: torch.Tensor  # (U,) int64 token
    test_input: torch.Tensor  # (U, L) int64
    test_target: torch.Tensor  # (U,) int64 token
    history: torch.Tensor  # (U, H) int64 sorted train tokens, padded with I + 1
    gaps: torch.Tensor  # (U, H) int64 history[:, j] - j, padded with I + 1
    n_free: torch.Tensor  # (U,) int64 tokens outside the train history
    n_items: int

    @property
    def max_len(self) -> int:
        return self.valid_input.shape[1]

    @classmethod
    def from_frames(cls, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, *,
                    n_items: int, max_len: int, device: torch.device | str = "cpu") -> SeqSplit:
        """Build from frames with columns user, item (0-based), train also ``pos`` (order).

        >>> tr = pd.DataFrame({"user": [5, 5, 5, 7, 7, 7], "item": [2, 0, 3, 1, 2, 0],
        ...                    "pos": [0, 1, 2, 0, 1, 2]})
        >>> va = pd.DataFrame({"user": [5, 7], "item": [1, 3]})
        >>> te = pd.DataFrame({"user": [7, 5], "item": [4, 4]})
        >>> s = SeqSplit.from_frames(tr, va, te, n_items=5, max_len=3)
        >>> s.train.tolist(), s.test_input.tolist(), s.test_target.tolist()
        ([[0, 3, 1, 4], [0, 2, 3, 1]], [[1, 4, 2], [3, 1, 4]], [5, 5])
        """
        train = train.sort_values(["user", "pos"], kind="stable")
        users = np.unique(train["user"].to_numpy())  # (U,)
        row = np.searchsorted(users, train["user"].to_numpy())  # (P,)
        tokens = train["item"].to_numpy().astype(np.int64) + 1  # (P,)
        if len(tokens) and (tokens.min() < 1 or tokens.max() > n_items):
            raise ValueError(f"seq split: item ids must lie in [0, {n_items})")

        def target(df: pd.DataFrame, name: str) -> np.ndarray:
            s = df.set_index("user")["item"]
            if not s.index.is_unique or set(s.index) != set(users.tolist()):
                raise ValueError(f"seq split: {name} must hold exactly one item per train user")
            return s.reindex(users).to_numpy().astype(np.int64) + 1  # (U,)

        valid_t, test_t = target(valid, "valid"), target(test, "test")
        both_rows = np.concatenate([row, np.arange(len(users))])  # train rows, then valid
        order = np.argsort(both_rows, kind="stable")  # valid item last within each user
        test_in = _left_padded(both_rows[order], np.concatenate([tokens, valid_t])[order],
                               len(users), max_len)
        hist = _left_padded(row, tokens, len(users), int(np.bincount(row).max()))  # (U, H)
        hist = np.sort(np.where(hist == 0, n_items + 1, hist), axis=1)  # padding I + 1 sorts last
        n_hist = (hist <= n_items).sum(1)  # (U,)
        if (n_hist >= n_items).any():
            raise ValueError("seq split: a user has seen every item, no negative exists")
        gaps = np.where(hist <= n_items, hist - np.arange(hist.shape[1]), n_items + 1)  # (U, H)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.int64, device=device)

        return cls(users=t(users), train=t(_left_padded(row, tokens, len(users), max_len + 1)),
                   valid_input=t(_left_padded(row, tokens, len(users), max_len)),
                   valid_target=t(valid_t), test_input=t(test_in), test_target=t(test_t),
                   history=t(hist), gaps=t(gaps), n_free=t(n_items - n_hist), n_items=n_items)

    def inputs(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input (U, L) and target token (U,) of ``split``."""
        if split == "valid":
            return self.valid_input, self.valid_target
        return self.test_input, self.test_target


def load_seq_split(root: str | Path, *, n_items: int, max_len: int,
                   device: torch.device | str = "cpu") -> SeqSplit:
    """Read ``root/{train,valid,test}.parquet`` (the prepare stage's seq split)."""
    root = Path(root)
    train = pd.read_parquet(root / "train.parquet", columns=["user", "item", "pos"])
    valid = pd.read_parquet(root / "valid.parquet", columns=["user", "item"])
    test = pd.read_parquet(root / "test.parquet", columns=["user", "item"])
    return SeqSplit.from_frames(train, valid, test, n_items=n_items, max_len=max_len, device=device)


def sample_unseen(gaps: torch.Tensor, n_free: torch.Tensor, n: int,
                  generator: torch.Generator) -> torch.Tensor:
    """``n`` tokens (B, n) per row, uniform over the tokens outside that row's history.

    ``gaps`` (B, H) and ``n_free`` (B,) are rows of :class:`SeqSplit`. Draws with replacement.
    """
    u = torch.rand((len(gaps), n), generator=generator, device=gaps.device)  # (B, n)
    r = (u * n_free[:, None]).long().clamp(max=n_free[:, None] - 1)  # (B, n) rank among free
    before = torch.searchsorted(gaps, r + 1, right=True)  # (B, n) history tokens below it
    return r + 1 + before  # (B, n)


@dataclass(frozen=True)
class SeqBatch:
    rows: torch.Tensor  # (B,) int64 rows of the split (users) in this batch
    inputs: torch.Tensor  # (B, L') int64 tokens, left-padded (L' <= L: empty columns cut)
    positives: torch.Tensor  # (B, L') int64 next token at each position, 0 at padding
    negatives: torch.Tensor  # (B, L') int64 one unseen token per position, 0 at padding


def seq_batches(split: SeqSplit, batch_size: int, generator: torch.Generator) -> Iterator[SeqBatch]:
    """One epoch: a permutation of the users, sliced, each row a whole sequence.

    Columns that are padding in every row of a batch are dropped; positions count back from
    the most recent item (``models.sasrec``), so this changes no score, only the cost.
    """
    perm = torch.randperm(len(split.users), generator=generator, device=split.train.device)  # (U,)
    for start in range(0, len(perm), batch_size):
        rows = perm[start:start + batch_size]  # (B,)
        seq = split.train[rows]  # (B, L + 1)
        width = int((seq[:, 1:] != 0).sum(1).max())  # longest target sequence in the batch
        inputs, positives = seq[:, -width - 1:-1], seq[:, -width:]  # (B, L'), (B, L')
        neg = sample_unseen(split.gaps[rows], split.n_free[rows], width, generator)  # (B, L')
        yield SeqBatch(rows, inputs, positives, neg * (positives != 0))


def history_mask(split: SeqSplit, rows: torch.Tensor, which: Split) -> torch.Tensor:
    """(B, I + 1) bool: tokens not to rank for ``rows`` (padding, train items; + valid for test)."""
    mask = torch.zeros((len(rows), split.n_items + 2), dtype=torch.bool, device=rows.device)  # (B, I + 2)
    mask.scatter_(1, split.history[rows], True)  # padding I + 1 lands in the spare last column
    if which == "test":
        mask.scatter_(1, split.valid_target[rows, None], True)
    mask[:, 0] = True
    return mask[:, :-1]  # (B, I + 1)
