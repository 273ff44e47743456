"""The per-scenario neighbor graphs of the coldstart track, as plain pickles and typed objects.

:func:`build_graph` turns one scenario's **train** ratings plus the canonical user and item
tables into k-NN neighbor lists for users and items (:func:`recdistill.graph.knn_graph`) and
returns a plain payload (dicts of numpy arrays) for :func:`recdistill.graph.write_pickle`;
:func:`graph_from_payload` checks a loaded payload and turns it into a :class:`ScenarioGraph`.
The payload also carries the multi-hot attribute matrices, so AGNN reads one file and uses
exactly the attributes the neighbors were built from. Validation and test ratings are never
an input here: a cold node has no train ratings, so its neighbors come from attributes only.

Shapes: U users, I items, N nodes of one type, K neighbors, F attribute values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recdistill.data.attributes import AttributeMatrix, item_attributes, user_attributes
from recdistill.graph.proximity import knn_graph
from recdistill.params import NeighborParams, Scenario

__all__ = ["FORMAT", "SideGraph", "ScenarioGraph", "rating_matrix", "build_graph",
           "graph_from_payload"]

FORMAT = 1  # bump when the payload layout changes


@dataclass(frozen=True)
class SideGraph:
    """Neighbors and attributes of one node type."""

    neighbors: np.ndarray  # (N, K) int64, best first
    weights: np.ndarray  # (N, K) float32 sampling probabilities, rows sum to 1
    scores: np.ndarray  # (N, K) float32 combined z-scores
    warm: np.ndarray  # (N,) bool, has train ratings
    attributes: sp.csr_matrix  # (N, F) float32 multi-hot
    columns: tuple[str, ...]  # (F,) "field=value"


@dataclass(frozen=True)
class ScenarioGraph:
    scenario: Scenario
    users: SideGraph
    items: SideGraph


def rating_matrix(ratings: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """(U, I) float64 CSR of the ratings (columns user, item, rating)."""
    return sp.csr_matrix((ratings["rating"].to_numpy(np.float64),
                          (ratings["user"].to_numpy(), ratings["item"].to_numpy())),
                         shape=(n_users, n_items))


def _side(ratings: sp.csr_matrix, attrs: AttributeMatrix, p: NeighborParams) -> dict[str, Any]:
    n = ratings.shape[0]
    k = max(1, int(p.top_frac * n))
    nb = knn_graph(ratings, attrs.matrix, k=k, preference_weight=p.preference_weight,
                   attribute_weight=p.attribute_weight, block_size=p.block_size,
                   temperature=p.temperature)
    m = attrs.matrix.tocsr()
    return {"neighbors": nb.ids, "weights": nb.weights, "scores": nb.scores,
            "warm": np.diff(ratings.indptr) > 0,
            "attributes": {"indptr": m.indptr.astype(np.int64), "indices": m.indices.astype(np.int64),
                           "shape": [int(m.shape[0]), int(m.shape[1])]},
            "columns": np.array(attrs.columns, dtype=str)}


def build_graph(scenario: str, train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame,
                attributes: pd.DataFrame, p: NeighborParams) -> dict[str, Any]:
    """The neighbor payload of one scenario from its train ratings and the canonical tables."""
    r = rating_matrix(train, len(users), len(items))  # (U, I)
    return {"format": FORMAT, "scenario": scenario,
            "users": _side(r, user_attributes(users, p.min_attribute_count), p),
            "items": _side(r.T.tocsr(), item_attributes(items, attributes, p.min_attribute_count), p)}


def _side_from(raw: Any, what: str) -> SideGraph:
    if not isinstance(raw, dict):
        raise ValueError(f"neighbor payload: {what} must be a mapping, got {type(raw).__name__}")
    missing = {"neighbors", "weights", "scores", "warm", "attributes", "columns"} - set(raw)
    if missing:
        raise ValueError(f"neighbor payload: {what} lacks {sorted(missing)}")
    ids, weights = np.asarray(raw["neighbors"]), np.asarray(raw["weights"])
    a = raw["attributes"]
    attrs = sp.csr_matrix((np.ones(len(a["indices"]), dtype=np.float32), a["indices"], a["indptr"]),
                          shape=tuple(a["shape"]))
    n = attrs.shape[0]
    if ids.ndim != 2 or ids.shape[0] != n or weights.shape != ids.shape:
        raise ValueError(f"neighbor payload: {what}.neighbors {ids.shape} and weights "
                         f"{weights.shape} must both be ({n}, K)")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"neighbor payload: {what}.neighbors has ids outside [0, {n})")
    return SideGraph(ids.astype(np.int64), weights.astype(np.float32),
                     np.asarray(raw["scores"], dtype=np.float32), np.asarray(raw["warm"], dtype=bool),
                     attrs, tuple(str(c) for c in raw["columns"]))


def graph_from_payload(payload: Any) -> ScenarioGraph:
    """Check a payload read with :func:`recdistill.graph.read_pickle` and type it."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"not a coldstart neighbor payload of format {FORMAT} "
                         f"(got format {payload.get('format') if isinstance(payload, dict) else None}); "
                         "rerun the neighbors stage")
    scenarios: tuple[Scenario, ...] = get_args(Scenario)
    scenario = next((s for s in scenarios if s == payload.get("scenario")), None)
    if scenario is None:
        raise ValueError(f"neighbor payload: scenario {payload.get('scenario')!r} is not one of {scenarios}")
    return ScenarioGraph(scenario, _side_from(payload.get("users"), "users"),
                         _side_from(payload.get("items"), "items"))
