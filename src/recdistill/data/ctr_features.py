"""Feature fields of the ctr track, with vocabularies built on the train split only.

Each row of the ctr split becomes nine categorical fields and one multi-hot field:
user, item, age bucket, gender, occupation, zip prefix, release decade, weekday, hour
(UTC, from the rating timestamp) and genres. A categorical value is mapped to
``1 + its position`` in the sorted train vocabulary of its field; a value never seen in
train (a user or item only in valid/test, an unknown decade) maps to the OOV index 0.
Genres are a fixed set of 19 flags, pooled as their mean: each row's weights sum to 1.

Shapes: N rows, Fc = 9 categorical fields, G = 19 genres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recdistill.data.canonical import GENRE_COLUMNS, load_canonical
from recdistill.data.demographics import age_bucket, zip_prefix

__all__ = ["FIELDS", "MULTI_FIELD", "CtrSplit", "CtrFeatures", "raw_fields", "build_features",
           "load_features"]

FIELDS = ("user", "item", "age", "gender", "occupation", "zip", "decade", "weekday", "hour")
MULTI_FIELD = "genres"
OOV = 0
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class CtrSplit:
    """One split as tensors: ``ids (N, Fc) int64``, ``multi (N, G) float32``,
    ``labels (N,) float32``."""

    ids: torch.Tensor
    multi: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> CtrSplit:
        return CtrSplit(self.ids.to(device), self.multi.to(device), self.labels.to(device))


@dataclass(frozen=True)
class CtrFeatures:
    """All three splits plus what a model needs to size its embeddings."""

    cardinalities: tuple[int, ...]  # per categorical field, OOV slot included
    n_multi: int  # G
    train: CtrSplit
    valid: CtrSplit
    test: CtrSplit

    @property
    def fields(self) -> tuple[str, ...]:
        """Field names in the order of the model's (B, F, D) embeddings."""
        return (*FIELDS, MULTI_FIELD)

    def to(self, device: torch.device | str) -> CtrFeatures:
        return CtrFeatures(self.cardinalities, self.n_multi, self.train.to(device),
                           self.valid.to(device), self.test.to(device))


def raw_fields(rows: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The raw value of every categorical field for each row (columns :data:`FIELDS`)."""
    user = users.set_index("user").loc[rows["user"].to_numpy()]
    item = items.set_index("item").loc[rows["item"].to_numpy()]
    when = pd.to_datetime(rows["timestamp"].to_numpy(), unit="s", utc=True)
    year = item["year"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    decade = np.where(np.isnan(year), -1, np.floor(np.nan_to_num(year) / 10) * 10).astype(np.int64)
    return pd.DataFrame({
        "user": rows["user"].to_numpy(), "item": rows["item"].to_numpy(),
        "age": age_bucket(user["age"].to_numpy()), "gender": user["gender"].to_numpy(),
        "occupation": user["occupation"].to_numpy(), "zip": zip_prefix(user["zip"].to_numpy()),
        "decade": decade, "weekday": when.day_of_week.to_numpy(), "hour": when.hour.to_numpy(),
    })


def _genre_weights(rows: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    table = items.set_index("item").loc[rows["item"].to_numpy(), list(GENRE_COLUMNS)]
    flags = table.to_numpy(dtype=np.float32)  # (N, G)
    return flags / np.maximum(flags.sum(axis=1, keepdims=True), 1.0)  # (N, G), rows sum to 1 or 0


def build_features(splits: dict[str, pd.DataFrame], users: pd.DataFrame,
                   items: pd.DataFrame) -> CtrFeatures:
    """Encode ``splits`` (train/valid/test frames with user, item, timestamp, label).

    Vocabularies come from ``splits["train"]`` alone.

    >>> users = pd.DataFrame({"user": [0, 1], "age": [20, 40], "gender": ["M", "F"],
    ...                       "occupation": ["x", "y"], "zip": ["1", "2"]})
    >>> items = pd.DataFrame({"item": [0, 1], "year": pd.array([1995, None], dtype="Int16"),
    ...                       **{c: [1, 0] for c in GENRE_COLUMNS}})
    >>> rows = lambda u, i: pd.DataFrame({"user": u, "item": i, "timestamp": [0] * len(u),
    ...                                   "label": [1] * len(u)})
    >>> f = build_features({"train": rows([0], [0]), "valid": rows([1], [1]),
    ...                     "test": rows([0], [1])}, users, items)
    >>> f.valid.ids[0].tolist()  # user 1, item 1, its age, gender, ... unseen in train -> 0
    [0, 0, 0, 0, 0, 0, 0, 1, 1]
    """
    raw = {name: raw_fields(splits[name], users, items) for name in SPLITS}
    vocabularies = {f: pd.Index(np.sort(raw["train"][f].unique())) for f in FIELDS}

    def encode(name: str) -> CtrSplit:
        columns = [vocabularies[f].get_indexer(raw[name][f]) + 1 for f in FIELDS]  # -1 -> OOV 0
        ids = np.stack(columns, axis=1).astype(np.int64)  # (N, Fc)
        return CtrSplit(torch.from_numpy(ids), torch.from_numpy(_genre_weights(splits[name], items)),
                        torch.from_numpy(splits[name]["label"].to_numpy(dtype=np.float32)))

    cardinalities = tuple(len(vocabularies[f]) + 1 for f in FIELDS)
    return CtrFeatures(cardinalities, len(GENRE_COLUMNS), *(encode(name) for name in SPLITS))


def load_features(prepared: str | Path, canonical: str | Path) -> CtrFeatures:
    """Read ``<prepared>/{train,valid,test}.parquet`` and the canonical user/item tables."""
    tables = load_canonical(canonical)
    splits = {name: pd.read_parquet(Path(prepared) / f"{name}.parquet") for name in SPLITS}
    return build_features(splits, tables.users, tables.items)
