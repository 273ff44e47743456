"""Split leak checks: cold nodes never reach train; seq valid/test are each user's last two."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recdistill.data.canonical import parse_archive
from recdistill.data.splits import make_all, seq_split
from repo_params import repo_params


@pytest.fixture(scope="module")
def splits(tmp_path_factory, synth):  # noqa: ANN001, ANN201
    import synthetic
    path = synthetic.write_recbole(synth, tmp_path_factory.mktemp("a") / "r.whl")
    c = parse_archive(path)
    return c, make_all(c.ratings, len(c.users), len(c.items), repo_params().data)


def _keys(df: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df["user"], df["item"]))


def test_partitions_cover_ratings_once(splits) -> None:  # noqa: ANN001
    c, s = splits
    everything = _keys(c.ratings)
    for name in ("coldstart/warm", "coldstart/ics", "coldstart/ucs"):
        parts = [_keys(getattr(s[name], p)) for p in ("train", "valid", "test")]
        assert sum(map(len, parts)) == len(everything)
        assert set().union(*parts) == everything
    assert s["coldstart/warm"].sizes() == {"train": 1660, "valid": 207, "test": 208} or \
        abs(s["coldstart/warm"].sizes()["train"] / len(c.ratings) - 0.8) < 0.01


@pytest.mark.parametrize(("name", "column"), [("coldstart/ics", "item"), ("coldstart/ucs", "user")])
def test_no_cold_node_in_train(splits, name: str, column: str) -> None:  # noqa: ANN001
    _, s = splits
    train_nodes = set(s[name].train[column])
    cold = set(s[name].valid[column]) | set(s[name].test[column])
    assert cold and not (cold & train_nodes)
    assert not (set(s[name].valid[column]) & set(s[name].test[column]))


def test_seq_valid_test_are_last_two(splits) -> None:  # noqa: ANN001
    c, s = splits
    seq = s["seq"]
    times = c.ratings.set_index(["user", "item"])["timestamp"]
    last_two = c.ratings.groupby("user")["timestamp"].apply(lambda t: tuple(np.sort(t.to_numpy())[-2:]))
    for part, at in ((seq.valid, 0), (seq.test, 1)):  # the second-last and last time (ties: any order)
        assert part["user"].is_unique and len(part) == len(last_two)
        got = times.loc[list(zip(part.user, part.item))].to_numpy()
        assert (got == [last_two[u][at] for u in part.user]).all()
    kept = c.ratings[c.ratings["user"].isin(seq.test["user"])]  # the users with enough ratings
    parts = [_keys(seq.train), _keys(seq.valid), _keys(seq.test)]
    assert sum(map(len, parts)) == len(kept) and set().union(*parts) == _keys(kept)  # a partition
    merged = seq.train.merge(seq.test, on="user", suffixes=("", "_test"))
    t_test = times.loc[list(zip(merged.user, merged.item_test))].to_numpy()
    assert (merged["timestamp"].to_numpy() <= t_test).all()
    assert (seq.train.groupby("user")["pos"].apply(lambda p: (np.diff(p) == 1).all())).all()


def test_seq_ties_in_time_are_shuffled_not_ordered_by_item() -> None:
    """200 users rate 5 items in the same second: sorting ties by item id would make the
    largest id every user's test item; a seeded shuffle makes it so for about 1 in 5."""
    rng = np.random.default_rng(0)
    items = np.concatenate([rng.choice(50, 5, replace=False) for _ in range(200)])
    ratings = pd.DataFrame({"user": np.repeat(np.arange(200), 5), "item": items,
                            "rating": 4, "timestamp": 1000})
    p = repo_params().data
    split = seq_split(ratings, p, np.random.default_rng(1))
    largest = ratings.groupby("user")["item"].max()
    share = float((split.test.set_index("user")["item"] == largest).mean())
    assert 0.1 < share < 0.35, share
    again = seq_split(ratings, p, np.random.default_rng(1))
    pd.testing.assert_frame_equal(again.test, split.test)
    assert len(split.train) + len(split.valid) + len(split.test) == len(ratings)


def test_cf_every_user_in_each_part(splits) -> None:  # noqa: ANN001
    c, s = splits
    for part in ("train", "valid", "test"):
        assert set(getattr(s["cf"], part)["user"]) == set(c.ratings["user"])
    assert not (_keys(s["cf"].train) & _keys(s["cf"].test))


def test_ctr_labels_and_neutral_drop(splits) -> None:  # noqa: ANN001
    _, s = splits
    train = s["ctr"].train
    assert (train["rating"] != 3).all()
    assert ((train["rating"] >= 4) == (train["label"] == 1)).all()


def test_same_seed_same_split_other_seed_differs(splits) -> None:  # noqa: ANN001
    c, s = splits
    again = make_all(c.ratings, len(c.users), len(c.items), repo_params().data)
    pd.testing.assert_frame_equal(again["coldstart/ics"].test, s["coldstart/ics"].test)
    other = make_all(c.ratings, len(c.users), len(c.items), repo_params().data.model_copy(update={"seed": 1}))
    assert not other["coldstart/ics"].test.equals(s["coldstart/ics"].test)
