"""User and item multi-hot attribute matrices, checked by hand on tiny tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recdistill.data.attributes import item_attributes, multi_hot, user_attributes


def test_user_attributes_are_one_hot_per_field() -> None:
    users = pd.DataFrame({"user": [0, 1, 2], "age": [17, 30, 61], "gender": ["F", "M", "F"],
                          "occupation": ["student", "writer", "student"], "zip": ["1", "2", "3"]})
    m = user_attributes(users)
    assert m.columns == ("age=0", "age=2", "age=6", "gender=F", "gender=M",
                         "occupation=student", "occupation=writer")
    np.testing.assert_array_equal(m.matrix.toarray(), [[1, 0, 0, 1, 0, 1, 0],
                                                       [0, 1, 0, 0, 1, 0, 1],
                                                       [0, 0, 1, 1, 0, 1, 0]])
    np.testing.assert_array_equal(m.fields, ["age"] * 3 + ["gender"] * 2 + ["occupation"] * 2)


def test_item_attributes_join_genres_and_knowledge_graph() -> None:
    items = pd.DataFrame({"item": [0, 1, 2], "title": ["a", "b", "c"],
                          "genre_comedy": [1, 0, 1], "genre_drama": [1, 1, 0]})
    kg = pd.DataFrame({"item": [0, 0, 2, 2, 2], "kind": ["star", "star", "star", "director", "star"],
                       "value": ["m.s1", "m.s2", "m.s1", "m.d", "m.s1"]})  # a duplicate row counts once
    m = item_attributes(items, kg)
    assert m.columns == ("director=m.d", "genre=comedy", "genre=drama", "star=m.s1", "star=m.s2")
    np.testing.assert_array_equal(m.matrix.toarray(), [[0, 1, 1, 1, 1], [0, 0, 1, 0, 0], [1, 1, 0, 1, 0]])
    kept = item_attributes(items, kg, min_count=2)  # values held by one item only are dropped
    assert kept.columns == ("genre=comedy", "genre=drama", "star=m.s1")


def test_unknown_attribute_kind_and_bad_ids_are_errors() -> None:
    items = pd.DataFrame({"item": [0], "genre_drama": [1]})
    with pytest.raises(ValueError, match="unknown kinds"):
        item_attributes(items, pd.DataFrame({"item": [0], "kind": ["producer"], "value": ["x"]}))
    with pytest.raises(ValueError, match="node ids must lie"):
        multi_hot(np.array([3]), np.array(["g"]), np.array(["a"]), n_nodes=2)
