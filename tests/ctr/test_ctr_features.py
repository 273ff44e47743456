"""ctr features: train-only vocabularies, OOV index, mean-pooled genres, raw field values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recdistill.data.canonical import GENRE_COLUMNS
from recdistill.data.canonical import Canonical
from recdistill.data.ctr_features import FIELDS, CtrFeatures, raw_fields
from recdistill.data.splits import Split


def test_raw_fields_by_hand() -> None:
    users = pd.DataFrame({"user": [0], "age": [30], "gender": ["F"], "occupation": ["writer"],
                          "zip": ["55105"]})
    items = pd.DataFrame({"item": [0], "year": pd.array([1987], dtype="Int16"),
                          **{c: [0] for c in GENRE_COLUMNS}})
    # 2001-09-09 01:46:40 UTC, a Sunday
    rows = pd.DataFrame({"user": [0], "item": [0], "timestamp": [1_000_000_000]})
    raw = raw_fields(rows, users, items).iloc[0].to_dict()
    assert raw == {"user": 0, "item": 0, "age": 2, "gender": "F", "occupation": "writer",
                   "zip": "5", "decade": 1980, "weekday": 6, "hour": 1}


def test_vocabularies_come_from_train_and_unseen_values_are_oov(ctr_tables: tuple[Canonical, Split],
        ctr_features: CtrFeatures) -> None:
    canonical, split = ctr_tables
    f = ctr_features
    assert f.fields == (*FIELDS, "genres") and f.n_multi == len(GENRE_COLUMNS)
    raw = {name: raw_fields(getattr(split, name), canonical.users, canonical.items)
           for name in ("train", "valid", "test")}
    for k, field in enumerate(FIELDS):
        train_values = sorted(raw["train"][field].unique())
        assert f.cardinalities[k] == len(train_values) + 1
        assert int(f.train.ids[:, k].min()) >= 1  # train values are never OOV
        for name in ("valid", "test"):
            ids = getattr(f, name).ids[:, k].numpy()
            unseen = ~raw[name][field].isin(train_values).to_numpy()
            assert np.array_equal(ids == 0, unseen), (field, name)
            seen_values = raw[name][field].to_numpy()[~unseen]
            expected = [train_values.index(v) + 1 for v in seen_values]
            assert ids[~unseen].tolist() == expected


def test_genres_are_mean_pooled_and_labels_kept(ctr_tables: tuple[Canonical, Split],
        ctr_features: CtrFeatures) -> None:
    canonical, split = ctr_tables
    f = ctr_features
    flags = canonical.items.set_index("item").loc[split.test["item"], list(GENRE_COLUMNS)].to_numpy()
    expected = flags / flags.sum(1, keepdims=True)
    torch.testing.assert_close(f.test.multi, torch.tensor(expected, dtype=torch.float32))
    assert f.test.labels.tolist() == split.test["label"].astype(float).tolist()
