"""Multi-hot attribute matrices of users and items, from the canonical tables.

Users: gender, age bucket (:func:`recdistill.data.demographics.age_bucket`), occupation.
Items: genres (the ``genre_*`` flags), director, writer, star, country (the knowledge-graph
``attributes`` table; items without a link simply have none of these).

Each column of the matrix is one ``field=value`` (sorted, so the same tables give the same
matrix); a value held by fewer than ``min_count`` nodes is dropped. Attributes are side
information known for cold nodes too: nothing here reads ratings.

Shapes: N nodes, F attribute values (columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recdistill.data.demographics import age_bucket

__all__ = ["AttributeMatrix", "multi_hot", "user_attributes", "item_attributes", "ITEM_FIELDS"]

ITEM_FIELDS = ("genre", "director", "writer", "star", "country")


@dataclass(frozen=True)
class AttributeMatrix:
    matrix: sp.csr_matrix  # (N, F) float32, 1 where the node has the value
    columns: tuple[str, ...]  # (F,) "field=value"

    @property
    def fields(self) -> np.ndarray:
        """(F,) the field of each column."""
        return np.array([c.split("=", 1)[0] for c in self.columns])


def multi_hot(nodes: np.ndarray, fields: np.ndarray, values: np.ndarray, n_nodes: int,
              min_count: int = 1) -> AttributeMatrix:
    """Long ``(node, field, value)`` triples -> an (N, F) multi-hot CSR; duplicates count once.

    >>> m = multi_hot(np.array([0, 1, 1, 2]), np.array(["g"] * 4), np.array(["a", "b", "a", "a"]), 4)
    >>> m.columns, m.matrix.toarray().tolist()
    (('g=a', 'g=b'), [[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    if len(nodes) and (nodes.min() < 0 or nodes.max() >= n_nodes):
        raise ValueError(f"node ids must lie in [0, {n_nodes}), got [{nodes.min()}, {nodes.max()}]")
    keys = np.char.add(np.char.add(np.asarray(fields, dtype=str), "="), np.asarray(values, dtype=str))
    pairs = pd.DataFrame({"node": nodes, "key": keys}).drop_duplicates()
    counts = pairs["key"].value_counts()
    pairs = pairs[pairs["key"].map(counts).to_numpy() >= min_count]
    columns = np.sort(pairs["key"].unique())
    col = np.searchsorted(columns, pairs["key"].to_numpy())  # (P,)
    matrix = sp.csr_matrix((np.ones(len(col), dtype=np.float32), (pairs["node"].to_numpy(), col)),
                           shape=(n_nodes, len(columns)))
    matrix.sort_indices()
    return AttributeMatrix(matrix, tuple(str(c) for c in columns))


def user_attributes(users: pd.DataFrame, min_count: int = 1) -> AttributeMatrix:
    """Gender, age bucket and occupation of each user (rows in user id order).

    >>> users = pd.DataFrame({"user": [0, 1], "age": [23, 61], "gender": ["M", "F"],
    ...                       "occupation": ["writer", "writer"]})
    >>> user_attributes(users).columns
    ('age=1', 'age=6', 'gender=F', 'gender=M', 'occupation=writer')
    """
    ids = users["user"].to_numpy()
    n = len(users)
    triples = [
        ("gender", users["gender"].astype(str).to_numpy()),
        ("age", age_bucket(users["age"].to_numpy()).astype(str)),
        ("occupation", users["occupation"].astype(str).to_numpy()),
    ]
    return multi_hot(np.concatenate([ids] * len(triples)),
                     np.concatenate([np.full(n, f) for f, _ in triples]),
                     np.concatenate([v for _, v in triples]), n, min_count)


def item_attributes(items: pd.DataFrame, attributes: pd.DataFrame, min_count: int = 1
                    ) -> AttributeMatrix:
    """Genres plus director/writer/star/country values of each item (rows in item id order).

    >>> items = pd.DataFrame({"item": [0, 1], "genre_Comedy": [1, 0], "genre_Drama": [1, 1]})
    >>> kg = pd.DataFrame({"item": [1], "kind": ["director"], "value": ["m.01"]})
    >>> m = item_attributes(items, kg)
    >>> m.columns, m.matrix.toarray().tolist()
    (('director=m.01', 'genre=Comedy', 'genre=Drama'), [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    """
    genre_columns = [c for c in items.columns if c.startswith("genre_")]
    flags = items[genre_columns].to_numpy() > 0  # (N, G)
    rows, cols = np.nonzero(flags)
    genre_names = np.array([c.removeprefix("genre_") for c in genre_columns])
    unknown = sorted(set(attributes["kind"].unique()) - set(ITEM_FIELDS))
    if unknown:
        raise ValueError(f"attributes.kind has unknown kinds {unknown}; expected {ITEM_FIELDS[1:]}")
    nodes = np.concatenate([items["item"].to_numpy()[rows], attributes["item"].to_numpy()])
    fields = np.concatenate([np.full(len(rows), "genre"), attributes["kind"].astype(str).to_numpy()])
    values = np.concatenate([genre_names[cols], attributes["value"].astype(str).to_numpy()])
    return multi_hot(nodes, fields, values, len(items), min_count)
