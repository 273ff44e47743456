"""The paired bootstrap of a gain (``report.bootstrap``): hand-computed tiny cases, brute-force
loops over explicit resamples (scikit-learn for AUC), a known zero effect, a clear effect,
what pairing buys, and determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recdistill.report import bootstrap as B
from recdistill.report import specs as S
from recdistill.report.recompute import unit_scores


def _mean(values: list[float] | np.ndarray) -> B.UnitScores:
    values = np.asarray(values, np.float64)
    return B.UnitScores("mean", np.arange(len(values)), values)


ALL_27 = np.array(list(itertools.product(range(3), repeat=3)))  # (27, 3): every resample of 3 users


# ---------------------------------------------------------------- hand-computed
def test_three_users_every_resample_by_hand() -> None:
    """Per-user NDCG A = (1, 0, 1), B = (0, 0, 1): the differences are (1, 0, 0), so a resample's
    gain is (draws of user 0) / 3. Over the 27 equally likely resamples that is 0 (8 of them),
    1/3 (12), 2/3 (6), 1 (1); sorted, numpy's linear quantile at q sits at q * 26."""
    a, b = _mean([1.0, 0.0, 1.0]), _mean([0.0, 0.0, 1.0])
    g = B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=0, seed=0, level=0.5,
                           indices=ALL_27)
    assert (g.mean, g.per_seed) == (1 / 3, {0: 1 / 3})
    # q = 0.25 -> position 6.5, between two 0s; q = 0.75 -> position 19.5, between 1/3 (last at 19) and 2/3
    torch.testing.assert_close((g.low, g.high), (0.0, 0.5))
    assert (g.resamples, g.units, g.level, g.excludes_zero) == (27, 3, 0.5, False)
    g = B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=0, seed=0, level=0.95,
                           indices=ALL_27)
    # q = 0.975 -> position 25.35: 2/3 + 0.35 * (1 - 2/3)
    torch.testing.assert_close((g.low, g.high), (0.0, 2 / 3 + 0.35 / 3))
    lower = B.paired_bootstrap({0: (b, a)}, higher_is_better=False, resamples=0, seed=0, level=0.95,
                               indices=ALL_27)  # B vs A on a lower-is-better scale: the same gain
    torch.testing.assert_close((lower.mean, lower.low, lower.high), (g.mean, g.low, g.high))


def test_seeds_share_each_resample_and_average() -> None:
    """Two seeds: differences (1, 0, 0) and (0, 1, 0). A resample's gain is the mean of the two
    seeds' gains on the same draw, (c0 + c1) / 6; the interval is brute-forced over all 27."""
    pairs = {0: (_mean([1.0, 0.0, 1.0]), _mean([0.0, 0.0, 1.0])),
             7: (_mean([1.0, 1.0, 0.0]), _mean([1.0, 0.0, 0.0]))}
    g = B.paired_bootstrap(pairs, higher_is_better=True, resamples=0, seed=0, level=0.9, indices=ALL_27)
    joint = [(list(r).count(0) + list(r).count(1)) / 6 for r in ALL_27]
    assert g.per_seed == {0: 1 / 3, 7: 1 / 3} and g.mean == 1 / 3
    torch.testing.assert_close((g.low, g.high), tuple(np.quantile(joint, [0.05, 0.95])))
    # not the same as resampling the seeds independently: the joint draw keeps c0 + c1 <= 3
    assert max(joint) == 0.5


def test_rmse_is_recomputed_on_each_resample() -> None:
    """RMSE is the root of the resampled mean squared error, not a mean of per-row values:
    brute force over explicit resamples, with the sign of a lower-is-better metric."""
    rng = np.random.default_rng(0)
    rating = rng.integers(1, 6, 12).astype(np.float64)
    pred_a, pred_b = rating + rng.normal(0, 0.5, 12), rating + rng.normal(0, 1.0, 12)
    a = B.UnitScores("rmse", np.arange(12), (pred_a - rating) ** 2)
    b = B.UnitScores("rmse", np.arange(12), (pred_b - rating) ** 2)
    idx = rng.integers(0, 12, (50, 12))
    brute = [np.sqrt(np.mean((pred_b[r] - rating[r]) ** 2)) - np.sqrt(np.mean((pred_a[r] - rating[r]) ** 2))
             for r in idx]  # positive = A better
    g = B.paired_bootstrap({0: (a, b)}, higher_is_better=False, resamples=0, seed=0, level=0.8, indices=idx)
    torch.testing.assert_close((g.low, g.high), tuple(np.quantile(brute, [0.1, 0.9])))
    whole = np.sqrt(np.mean((pred_b - rating) ** 2)) - np.sqrt(np.mean((pred_a - rating) ** 2))
    torch.testing.assert_close(g.per_seed[0], whole)


@pytest.mark.parametrize("decimals", [None, 1])  # continuous scores, and many ties
def test_auc_of_each_resample_matches_sklearn(decimals: int | None) -> None:
    rng = np.random.default_rng(1)
    n = 60
    label = rng.random(n) < 0.4
    score_a, score_b = rng.random(n) + 0.4 * label, rng.random(n) + 0.2 * label
    if decimals is not None:
        score_a, score_b = score_a.round(decimals), score_b.round(decimals)
    a, b = (B.UnitScores("auc", np.arange(n), s, label) for s in (score_a, score_b))
    idx = rng.integers(0, n, (40, n))
    w = B.counts(idx, n)
    torch.testing.assert_close(B.scorer(a)(w), np.array([roc_auc_score(label[r], score_a[r]) for r in idx]))
    brute = [roc_auc_score(label[r], score_a[r]) - roc_auc_score(label[r], score_b[r]) for r in idx]
    g = B.paired_bootstrap({3: (a, b)}, higher_is_better=True, resamples=0, seed=0, level=0.9, indices=idx)
    torch.testing.assert_close((g.low, g.high), tuple(np.quantile(brute, [0.05, 0.95])))
    torch.testing.assert_close(g.per_seed[3], roc_auc_score(label, score_a) - roc_auc_score(label, score_b))


def test_auc_resample_without_a_class_drops_out() -> None:
    label = np.array([True, False, False])
    a = B.UnitScores("auc", np.arange(3), np.array([0.9, 0.1, 0.5]), label)
    b = B.UnitScores("auc", np.arange(3), np.array([0.2, 0.1, 0.5]), label)
    idx = np.array([[0, 1, 2], [1, 1, 2], [0, 0, 0], [0, 2, 2]])  # rows 1 and 2 lack a class
    g = B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=0, seed=0, level=0.5, indices=idx)
    assert g.resamples == 2  # gains 1 - 0.5 (all three rows) and 1 - 0 (rows 0, 2, 2)
    torch.testing.assert_close((g.low, g.high), (0.5 + 0.25 * 0.5, 0.5 + 0.75 * 0.5))
    with pytest.raises(ValueError, match="no resample holds both classes"):
        B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=0, seed=0, level=0.5,
                           indices=idx[1:3])


# ---------------------------------------------------------------- known zero effect
@pytest.mark.parametrize("kind", ["mean", "rmse", "auc"])
def test_identical_predictions_give_exactly_zero(kind: B.Kind) -> None:
    rng = np.random.default_rng(2)
    values = rng.random(500)
    labels = rng.random(500) < 0.3 if kind == "auc" else None
    pairs = {s: (B.UnitScores(kind, np.arange(500), values, labels),
                 B.UnitScores(kind, np.arange(500), values.copy(), labels)) for s in (0, 1, 2)}
    g = B.paired_bootstrap(pairs, higher_is_better=kind == "auc", resamples=500, seed=0, level=0.95)
    assert g.per_seed == {0: 0.0, 1: 0.0, 2: 0.0}
    assert (g.mean, g.low, g.high, g.excludes_zero) == (0.0, 0.0, 0.0, False)


def test_exchangeable_arms_cover_zero_at_the_nominal_rate() -> None:
    """A and B draw per-user values from the same distribution: no effect. Over 100 test sets,
    the 95% interval covers 0 about 95 times (percentile intervals run a little short)."""
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(100):
        difficulty = rng.random(300)  # shared per user: the arms are correlated, as real ones are
        a, b = (_mean(np.clip(difficulty + rng.normal(0, 0.2, 300), 0, 1)) for _ in range(2))
        g = B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=500, seed=trial, level=0.95)
        covered += g.low <= 0 <= g.high
    assert 88 <= covered <= 99


def test_exchangeable_arms_with_seeds_cover_zero() -> None:
    rng = np.random.default_rng(4)
    label = rng.random(2000) < 0.3
    arm = lambda: B.UnitScores("auc", np.arange(2000), rng.random(2000) + 0.5 * label, label)  # noqa: E731
    pairs = {s: (arm(), arm()) for s in (0, 1, 2)}
    g = B.paired_bootstrap(pairs, higher_is_better=True, resamples=1000, seed=0, level=0.95)
    assert g.low < 0 < g.high and not g.excludes_zero


# ---------------------------------------------------------------- a clear effect, and pairing
def _correlated(rng: np.random.Generator, effect: float, n: int = 1000) -> tuple[B.UnitScores, B.UnitScores]:
    """Per-user NDCG with a large shared difficulty (sd 0.3) and a small own noise (sd 0.02):
    A is B plus ``effect``."""
    difficulty = rng.random(n)
    return (_mean(difficulty + effect + rng.normal(0, 0.02, n)), _mean(difficulty + rng.normal(0, 0.02, n)))


def test_clear_effect_excludes_zero() -> None:
    rng = np.random.default_rng(5)
    a, b = _correlated(rng, 0.01)
    g = B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=2000, seed=0, level=0.95)
    assert 0 < g.low < g.mean < g.high and g.excludes_zero
    torch.testing.assert_close(g.mean, float(np.mean(a.values - b.values)))
    worse = B.paired_bootstrap({0: (b, a)}, higher_is_better=True, resamples=2000, seed=0, level=0.95)
    assert worse.high < 0 and worse.excludes_zero
    rmse = B.paired_bootstrap({0: (B.UnitScores("rmse", a.keys, a.values ** 2),
                                   B.UnitScores("rmse", b.keys, (a.values + 0.05) ** 2))},
                              higher_is_better=False, resamples=2000, seed=0, level=0.95)
    assert rmse.low > 0  # A's errors are smaller: a positive gain on a lower-is-better metric


def test_pairing_narrows_the_interval_of_correlated_arms() -> None:
    """The same 0.01 gain, bootstrapped with independent draws for the two arms (unpaired):
    the shared per-user difficulty no longer cancels, the interval is many times wider and
    covers 0."""
    rng = np.random.default_rng(6)
    a, b = _correlated(rng, 0.01)
    paired = B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=2000, seed=0, level=0.95)
    draws = np.random.default_rng(0).integers(0, 1000, (2, 2000, 1000))
    unpaired = B.scorer(a)(B.counts(draws[0], 1000)) - B.scorer(b)(B.counts(draws[1], 1000))
    low, high = np.quantile(unpaired, [0.025, 0.975])
    assert (paired.high - paired.low) < 0.2 * (high - low)
    assert paired.excludes_zero and low < 0 < high


# ---------------------------------------------------------------- determinism
def test_the_seed_fixes_the_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    pairs = {0: _correlated(rng, 0.0, 300), 1: _correlated(rng, 0.0, 300)}
    run = lambda seed: B.paired_bootstrap(pairs, higher_is_better=True, resamples=1000, seed=seed, level=0.95)  # noqa: E731
    first = run(0)
    assert run(0) == first
    assert (run(1).low, run(1).high) != (first.low, first.high)
    monkeypatch.setattr(B, "CHUNK", 7 * 300)  # the same draws in other chunks: the same interval
    torch.testing.assert_close((run(0).low, run(0).high), (first.low, first.high))


def test_arms_on_different_units_are_refused() -> None:
    a = _mean([1.0, 0.0, 1.0])
    b = B.UnitScores("mean", np.array([0, 1, 3]), np.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="seed 0: the two models' predictions cover different test units"):
        B.paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=10, seed=0, level=0.9)


# ---------------------------------------------------------------- per-unit terms from predictions
def _spec(predictions: str) -> S.TrackSpec:
    return S.TrackSpec("test/x", (), "valid/x", predictions, None, "student-vs-alone")  # type: ignore[arg-type]


def test_unit_scores_give_back_the_track_metrics() -> None:
    """The mean (or root mean, or AUC) of the per-unit terms is the metric of the whole test
    set, whatever the row order of the predictions."""
    rng = np.random.default_rng(8)
    label = rng.integers(0, 2, 300)
    score = np.clip(rng.random(300) * 0.6 + 0.4 * label, 0, 1).astype(np.float32)
    click = pd.DataFrame({"row": rng.permutation(300), "label": label, "score": score})
    auc = unit_scores(click, _spec("click"), "test/auc", None)
    logloss = unit_scores(click, _spec("click"), "test/logloss", None)
    assert auc is not None and logloss is not None
    np.testing.assert_array_equal(auc.keys, np.arange(300))
    whole = np.ones((1, 300), np.int64)
    torch.testing.assert_close(B.scorer(auc)(whole)[0], roc_auc_score(label, score))
    torch.testing.assert_close(B.scorer(logloss)(whole)[0], log_loss(label, score.astype(np.float64)))
    rating = rng.integers(1, 6, 300)
    frame = pd.DataFrame({"user": rng.permutation(300), "item": rng.integers(0, 50, 300), "rating": rating,
                          "prediction": rating + rng.normal(0, 0.8, 300)})
    rmse = unit_scores(frame, _spec("rating"), "test/rmse", None)
    mae = unit_scores(frame, _spec("rating"), "test/mae", None)
    assert rmse is not None and mae is not None and rmse.keys.shape == (300, 2)
    err = frame["prediction"] - frame["rating"]
    torch.testing.assert_close(B.scorer(rmse)(whole)[0], float(np.sqrt(np.mean(err ** 2))))
    torch.testing.assert_close(B.scorer(mae)(whole)[0], float(np.mean(np.abs(err))))
    top = pd.DataFrame({"user": [0, 0, 1, 1], "rank": [1, 2, 1, 2], "item": [5, 7, 3, 9], "score": 1.0})
    test = pd.DataFrame({"user": [0, 1, 1, 2], "item": [7, 3, 4, 1]})  # user 2: no list, scores 0
    ndcg = unit_scores(top, _spec("topk"), "test/ndcg@2", test)
    assert ndcg is not None and ndcg.keys.tolist() == [0, 1, 2]
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(ndcg.values, [1 / np.log2(3), 1 / ideal, 0.0], rtol=1e-12)
    assert unit_scores(top, _spec("topk"), "test/ndcg@5", test) is None  # beyond the lists
    assert unit_scores(top, _spec("topk"), "test/auc", test) is None  # not from top-k lists
