"""Rating baselines of the coldstart track: the floor AGNN must clear on the same splits.

- ``global-mean``: :math:`\\hat r = \\mu`, the train mean.
- ``bias``: :math:`\\hat r = \\mu + b_u + b_i`, ridge-regularised biases solved by
  alternating least squares (each sweep is the exact minimiser for one side given the
  other); a node without train ratings has bias 0.
- ``attribute-residual``: the bias model where a cold node's bias (none: it has no train
  ratings) is replaced by the mean, over the node's attribute values, of each value's
  shrunken mean residual on train. Items use their genres and the residual
  :math:`r - \\mu - b_u`; users use gender, age bucket and occupation and the residual
  :math:`r - \\mu - b_i`. In ICS this is :math:`\\mu + b_u + \\text{genre residual}(i)`, in
  UCS :math:`\\mu + b_i + \\text{demographic residual}(u)`; for warm nodes it is the bias model.

Every prediction is clipped to the rating scale, as AGNN's are. Nothing loops over rows.
Each baseline is one arm (role ``baseline``, not trained by gradient steps) of the scenario's
:class:`recdistill.arm.ArmSet`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recdistill import metrics
from recdistill.arm import ArmRecord, ArmSet, Cost
from recdistill.coldstart import RATING_RANGE
from recdistill.data.attributes import AttributeMatrix, item_attributes, user_attributes
from recdistill.params import BaselineParams, Scenario

__all__ = ["Biases", "fit_biases", "attribute_residuals", "run_baselines", "ITEM_GROUP_FIELDS"]

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # users, items (P,) -> ratings (P,)
ITEM_GROUP_FIELDS = ("genre",)  # attribute-residual groups of items; users use all their fields


@dataclass(frozen=True)
class Biases:
    mu: float
    user: np.ndarray  # (U,) float64
    item: np.ndarray  # (I,) float64


def fit_biases(train: pd.DataFrame, n_users: int, n_items: int, reg: float, iters: int) -> Biases:
    """Minimise sum (r - mu - b_u - b_i)^2 + reg (|b_u|^2 + |b_i|^2) by ALS, mu = train mean.

    >>> df = pd.DataFrame({"user": [0, 0, 1], "item": [0, 1, 0], "rating": [5, 3, 4]})
    >>> b = fit_biases(df, 2, 2, reg=0.0, iters=50)
    >>> round(float(b.mu + b.user[0] + b.item[1]), 3)  # an exact fit without regularisation
    3.0
    """
    u, i = train["user"].to_numpy(), train["item"].to_numpy()
    r = train["rating"].to_numpy(np.float64)
    mu = float(r.mean())
    nu, ni = np.bincount(u, minlength=n_users), np.bincount(i, minlength=n_items)
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    for _ in range(iters):
        bu = np.bincount(u, weights=r - mu - bi[i], minlength=n_users) / np.maximum(nu + reg, 1e-12)
        bi = np.bincount(i, weights=r - mu - bu[u], minlength=n_items) / np.maximum(ni + reg, 1e-12)
    return Biases(mu, bu, bi)


def attribute_residuals(nodes: np.ndarray, residual: np.ndarray, attrs: sp.csr_matrix,
                        reg: float) -> np.ndarray:
    """Per node (N,): mean over its attribute values of each value's shrunken mean residual.

    A value's mean is ``sum(residual of its nodes' ratings) / (count + reg)``; a node with no
    attribute value gets 0.

    >>> x = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 0]], dtype=float))
    >>> res = attribute_residuals(np.array([0, 0, 1]), np.array([1.0, 3.0, -2.0]), x, reg=0.0)
    >>> res.round(4).tolist()  # value 0: (1 + 3 - 2) / 3; value 1: -2 / 1; node 1 averages both
    [0.6667, -0.6667, 0.0]
    """
    per_rating = attrs[nodes]  # (P, F) attribute values of each rating's node
    sums = np.asarray(per_rating.T @ residual).ravel()  # (F,)
    counts = np.asarray(per_rating.sum(axis=0)).ravel()  # (F,)
    value_mean = sums / np.maximum(counts + reg, 1e-12)  # (F,)
    n_values = np.asarray(attrs.sum(axis=1)).ravel()  # (N,)
    return np.asarray(attrs @ value_mean).ravel() / np.maximum(n_values, 1)  # (N,)


def _group_matrix(attrs: AttributeMatrix, fields: tuple[str, ...] | None) -> sp.csr_matrix:
    keep = np.ones(len(attrs.columns), bool) if fields is None else np.isin(attrs.fields, fields)
    return sp.csr_matrix(attrs.matrix[:, keep], dtype=np.float64)


def _predict(predict: Predictor, df: pd.DataFrame) -> np.ndarray:
    """Clipped predictions (P,) float64 for the (user, item) rows of ``df``."""
    return np.clip(predict(df["user"].to_numpy(), df["item"].to_numpy()), *RATING_RANGE)


def run_baselines(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, users: pd.DataFrame,
                  items: pd.DataFrame, attributes: pd.DataFrame, p: BaselineParams, *,
                  scenario: Scenario, seed: int) -> tuple[ArmSet, pd.DataFrame]:
    """Fit the three baselines on ``train`` and score ``valid`` and ``test``.

    Returns their metrics file (one arm each; ``seed`` only lines them up with the trained
    arms: nothing here is random) and their test predictions (columns model, user, item,
    rating, prediction).
    """
    n_users, n_items = len(users), len(items)
    b = fit_biases(train, n_users, n_items, p.bias_reg, p.bias_iters)
    u, i = train["user"].to_numpy(), train["item"].to_numpy()
    r = train["rating"].to_numpy(np.float64)
    warm_u = np.bincount(u, minlength=n_users) > 0  # (U,)
    warm_i = np.bincount(i, minlength=n_items) > 0  # (I,)
    item_groups = _group_matrix(item_attributes(items, attributes), ITEM_GROUP_FIELDS)  # (I, G_i)
    user_groups = _group_matrix(user_attributes(users), None)  # (U, G_u)
    n_group_values = item_groups.shape[1] + user_groups.shape[1]
    item_res = attribute_residuals(i, r - b.mu - b.user[u], item_groups, p.bias_reg)  # (I,)
    user_res = attribute_residuals(u, r - b.mu - b.item[i], user_groups, p.bias_reg)  # (U,)
    attr_user = np.where(warm_u, b.user, user_res)  # (U,)
    attr_item = np.where(warm_i, b.item, item_res)  # (I,)
    # name: (prediction, fitted numbers). Every prediction is lookups and additions (the
    # attribute residuals of cold nodes are computed once, when fitting): 0 multiply-adds.
    predictors: dict[str, tuple[Predictor, int]] = {
        "global-mean": (lambda uu, ii: np.full(len(uu), b.mu), 1),
        "bias": (lambda uu, ii: b.mu + b.user[uu] + b.item[ii], 1 + n_users + n_items),
        "attribute-residual": (lambda uu, ii: b.mu + attr_user[uu] + attr_item[ii],
                               1 + n_users + n_items + n_group_values),
    }
    arms: dict[str, ArmRecord] = {}
    frames = []
    for name, (predict, fitted) in predictors.items():
        scores, preds = {}, {}
        for split, df in (("valid", valid), ("test", test)):
            pred = torch.as_tensor(_predict(predict, df))  # (P,)
            target = torch.as_tensor(df["rating"].to_numpy(np.float64))  # (P,)
            scores[f"{split}/rmse"], scores[f"{split}/mae"] = metrics.rmse(pred, target), metrics.mae(pred, target)
            preds[split] = pred.numpy().astype(np.float32)
        cost = Cost(params=fitted, macs_per_example=0, macs_method="formula", device="cpu")
        arms[name] = ArmRecord(track="coldstart", model=name, role="baseline", seed=seed, scenario=scenario,
                               metrics=scores, cost=cost, epochs=0, best_epoch=0,
                               stopped="not_trained")
        frames.append(test[["user", "item", "rating"]].reset_index(drop=True).assign(
            model=name, prediction=preds["test"]))
    predictions = pd.concat(frames, ignore_index=True)[["model", "user", "item", "rating", "prediction"]]
    return ArmSet(arms=arms), predictions
