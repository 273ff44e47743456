"""Baselines against a direct least-squares solve and hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recdistill.coldstart.baselines import attribute_residuals, fit_biases, run_baselines
from recdistill.params import BaselineParams


def _ratings(seed: int = 0, n_users: int = 6, n_items: int = 5, n: int = 18) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    return pd.DataFrame({"user": keys // n_items, "item": keys % n_items,
                         "rating": rng.integers(1, 6, size=n)})


def test_als_biases_solve_the_ridge_normal_equations() -> None:
    df = _ratings()
    reg = 2.0
    b = fit_biases(df, 6, 5, reg=reg, iters=500)
    x = np.zeros((len(df), 11))  # one-hot design [user | item]
    x[np.arange(len(df)), df["user"]] = 1
    x[np.arange(len(df)), 6 + df["item"]] = 1
    y = df["rating"].to_numpy(float) - df["rating"].mean()
    exact = np.linalg.solve(x.T @ x + reg * np.eye(11), x.T @ y)
    np.testing.assert_allclose(np.concatenate([b.user, b.item]), exact, atol=1e-8)
    assert b.mu == pytest.approx(df["rating"].mean())


def test_attribute_residuals_match_a_loop() -> None:
    rng = np.random.default_rng(1)
    attrs = (rng.random((5, 4)) < 0.5).astype(float)
    attrs[4] = 0  # a node without attributes gets 0
    nodes, residual, reg = rng.integers(0, 5, 30), rng.normal(size=30), 1.5
    value_mean = [sum(r for n, r in zip(nodes, residual) if attrs[n, f]) /
                  (sum(attrs[n, f] for n in nodes) + reg) for f in range(4)]
    want = [np.mean([value_mean[f] for f in range(4) if attrs[i, f]]) if attrs[i].any() else 0.0
            for i in range(5)]
    got = attribute_residuals(nodes, residual, sp.csr_matrix(attrs), reg)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_item_cold_start_prediction_by_hand() -> None:
    users = pd.DataFrame({"user": [0, 1], "age": [20, 40], "gender": ["F", "M"],
                          "occupation": ["a", "b"], "zip": ["1", "2"]})
    items = pd.DataFrame({"item": [0, 1, 2], "genre_comedy": [1, 0, 1], "genre_drama": [0, 1, 1]})
    kg = pd.DataFrame({"item": pd.Series(dtype="int64"), "kind": pd.Series(dtype=str),
                       "value": pd.Series(dtype=str)})
    train = pd.DataFrame({"user": [0, 0, 1, 1], "item": [0, 1, 0, 1], "rating": [5, 3, 4, 2]})
    test = pd.DataFrame({"user": [0, 1], "item": [2, 2], "rating": [4, 3]})  # item 2 is cold
    arms, predictions = run_baselines(train, test, test, users, items, kg,
                                      BaselineParams(bias_reg=0.0, bias_iters=200), scenario="ics", seed=7)
    mu, bu = 3.5, np.array([0.5, -0.5])  # exact: users differ by 1, items by 2
    comedy = np.mean([5 - mu - bu[0], 4 - mu - bu[1]])  # residuals r - mu - b_u of item 0's ratings
    drama = np.mean([3 - mu - bu[0], 2 - mu - bu[1]])
    want = {"attribute-residual": mu + bu + (comedy + drama) / 2, "bias": mu + bu,  # b_i = 0
            "global-mean": np.array([mu, mu])}
    assert list(arms.arms) == ["global-mean", "bias", "attribute-residual"]
    assert list(predictions.columns) == ["model", "user", "item", "rating", "prediction"]
    for name, arm in arms.arms.items():
        rows = predictions[predictions["model"] == name]
        np.testing.assert_allclose(rows["prediction"], want[name], atol=1e-5)
        assert arm.metrics["test/rmse"] == pytest.approx(np.sqrt(np.mean((want[name] - [4, 3]) ** 2)), abs=1e-6)
        assert arm.metrics["test/mae"] == pytest.approx(np.mean(np.abs(want[name] - [4, 3])), abs=1e-6)
        assert (arm.model, arm.role, arm.scenario, arm.seed, arm.epochs, arm.stopped) == (
            name, "baseline", "ics", 7, 0, "not_trained")
        assert arm.cost.macs_per_example == 0 and arm.cost.macs_method == "formula"
    # fitted numbers: mu; + 2 user and 3 item biases; + residuals of 2 genres, 2 age buckets,
    # 2 genders and 2 occupations
    assert [arm.cost.params for arm in arms.arms.values()] == [1, 6, 14]
