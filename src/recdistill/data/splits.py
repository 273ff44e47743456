"""Seeded train/valid/test splits for the four tracks (ARCHITECTURE §4).

Every split is a pure function of the canonical ratings, the ``data`` params and the seed;
validation is for model selection, test is touched once at the end. Cold-start splits hold
out whole users (UCS) or items (ICS): none of their ratings is in train.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recdistill.params import DataParams, Fractions

__all__ = ["Split", "random_split", "cold_split", "ctr_split", "cf_split", "seq_split", "make_all"]

COLUMNS = ["user", "item", "rating", "timestamp"]


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def _take(df: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    return df[mask].sort_values(["user", "item"], kind="stable").reset_index(drop=True)


def random_split(df: pd.DataFrame, fr: Fractions, rng: np.random.Generator) -> Split:
    """Rows shuffled, then cut at train and train + valid fractions."""
    order = rng.permutation(len(df))  # (N,) rank of each row in the shuffle
    position = np.empty(len(df), dtype=np.int64)
    position[order] = np.arange(len(df))
    n_train, n_valid = int(round(fr.train * len(df))), int(round(fr.valid * len(df)))
    return Split(_take(df, position < n_train),
                 _take(df, (position >= n_train) & (position < n_train + n_valid)),
                 _take(df, position >= n_train + n_valid))


def cold_split(df: pd.DataFrame, column: str, n_nodes: int, valid_frac: float, test_frac: float,
               rng: np.random.Generator) -> Split:
    """Hold out whole nodes of ``column`` ('item' for ICS, 'user' for UCS)."""
    order = rng.permutation(n_nodes)
    n_valid, n_test = int(round(valid_frac * n_nodes)), int(round(test_frac * n_nodes))
    role = np.zeros(n_nodes, dtype=np.int8)  # 0 warm, 1 valid-cold, 2 test-cold
    role[order[:n_valid]] = 1
    role[order[n_valid:n_valid + n_test]] = 2
    node_role = role[df[column].to_numpy()]
    return Split(_take(df, node_role == 0), _take(df, node_role == 1), _take(df, node_role == 2))


def ctr_split(ratings: pd.DataFrame, p: DataParams, rng: np.random.Generator) -> Split:
    """label = rating >= positive_min_rating; the neutral rating just below is dropped or negative."""
    df = ratings[COLUMNS].copy()
    if p.ctr.neutral == "drop":
        df = df[df["rating"] != p.ctr.positive_min_rating - 1]
    df["label"] = (df["rating"] >= p.ctr.positive_min_rating).astype("int8")
    return random_split(df.reset_index(drop=True), p.ctr.split, rng)


def cf_split(ratings: pd.DataFrame, p: DataParams, rng: np.random.Generator) -> Split:
    """Implicit interactions split per user: each user keeps >= 1 valid and >= 1 test item."""
    df = ratings.loc[ratings["rating"] >= p.cf.min_rating, ["user", "item"]].reset_index(drop=True)
    key = rng.random(len(df))
    df = df.assign(_key=key).sort_values(["user", "_key"], kind="stable").reset_index(drop=True)
    rank = df.groupby("user").cumcount().to_numpy()  # (N,) position within the user's shuffle
    n = df.groupby("user")["item"].transform("size").to_numpy()
    n_valid = np.maximum(1, np.round(n * p.cf.split.valid)).astype(np.int64)
    n_test = np.maximum(1, np.round(n * p.cf.split.test)).astype(np.int64)
    n_train = n - n_valid - n_test
    df = df.drop(columns="_key")
    return Split(_take(df, rank < n_train), _take(df, (rank >= n_train) & (rank < n_train + n_valid)),
                 _take(df, rank >= n_train + n_valid))


def seq_split(ratings: pd.DataFrame, p: DataParams, rng: np.random.Generator) -> Split:
    """Leave-one-out on chronological sequences. Ratings given in the same second (half of
    consecutive pairs in ML-100K) are in no known order: they are shuffled, since ordering
    them by item id would plant a "next id is larger" pattern a model can learn."""
    df = ratings.assign(_tie=rng.random(len(ratings)))
    df = df.sort_values(["user", "timestamp", "_tie"], kind="stable").drop(columns="_tie")
    df = df.reset_index(drop=True)
    length = df.groupby("user")["item"].transform("size").to_numpy()
    df = df[length >= p.seq.min_length].reset_index(drop=True)
    length = df.groupby("user")["item"].transform("size").to_numpy()
    pos = df.groupby("user").cumcount().to_numpy()
    train = df[pos < length - 2].assign(pos=pos[pos < length - 2])[["user", "item", "timestamp", "pos"]]
    valid = df[pos == length - 2][["user", "item"]]
    test = df[pos == length - 1][["user", "item"]]
    return Split(train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True))


def make_all(ratings: pd.DataFrame, n_users: int, n_items: int, p: DataParams) -> dict[str, Split]:
    """All splits, each from its own child of the data seed (adding one changes no other)."""
    seeds = np.random.SeedSequence(p.seed).spawn(6)
    rng = [np.random.default_rng(s) for s in seeds]
    base = ratings[COLUMNS]
    cs = p.coldstart
    return {
        "coldstart/warm": random_split(base, cs.warm, rng[0]),
        "coldstart/ics": cold_split(base, "item", n_items, cs.cold_valid, cs.cold_test, rng[1]),
        "coldstart/ucs": cold_split(base, "user", n_users, cs.cold_valid, cs.cold_test, rng[2]),
        "ctr": ctr_split(ratings, p, rng[3]),
        "cf": cf_split(ratings, p, rng[4]),
        "seq": seq_split(ratings, p, rng[5]),
    }
