"""Paired bootstrap of the gain of one arm over another in a test metric, over seeds.

What the interval means. A test metric is a function of an arm's predictions on the test
units: users for ranking (per-user NDCG@k, Recall@k, HR@k, averaged), rows for rating and
CTR. With the trained models held fixed, the bootstrap asks how far the difference A − B
could move had the test units been another draw from the same population. One resample
draws N of the N test units with replacement; both arms, and every seed, are scored on that
same draw (paired: what is hard or easy about a unit is common to the arms and cancels). The
metric is recomputed from the resampled units as it is from the whole test set (RMSE as the
root of the resampled mean squared error, AUC as the Mann-Whitney statistic of the resampled
rows with ties counting half), not averaged from per-unit values where it is not a mean.
Each resample's gain is the mean over seeds of the per-seed differences; the interval is the
percentile interval of those gains over the resamples (numpy's linear quantiles at
(1 - level) / 2 and (1 + level) / 2).

The point estimate is the mean over seeds of the per-seed difference on the whole test set
(the difference of the reported means), the per-seed differences are kept beside it. Their
spread is training (seed) variance, which the interval does not cover: an interval that
excludes 0 says the gain of these trained models is not test-set noise, not that a new
training run would reproduce it; the per-seed differences say that. Gains are signed so that
positive = better (B − A for a lower-is-better metric).

Reference: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (ch. 13, percentile
intervals); the paired bootstrap over test topics in IR: Sakai, "Evaluating Evaluation Metrics
based on the Bootstrap", SIGIR 2006.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["mean", "rmse", "auc"]
CHUNK = 1 << 18  # resampled unit counts held at once (R_chunk x N int64: 2 MiB)


@dataclass(frozen=True)
class UnitScores:
    """One arm at one seed: what its metric needs from each test unit, in ``keys`` order.

    ``kind`` says how the metric follows from ``values``: ``mean`` their mean (per-user NDCG,
    absolute error, per-row logloss), ``rmse`` the root of their mean (squared errors), ``auc``
    the AUC of the scores ``values`` against ``labels``.
    """

    kind: Kind
    keys: np.ndarray  # (N,) or (N, c): the unit ids, the same order in every arm compared
    values: np.ndarray  # (N,) float64
    labels: np.ndarray | None = None  # (N,) bool: auc only

    def __post_init__(self) -> None:
        n = len(self.values)
        assert self.values.shape == (n,) and len(self.keys) == n, \
            f"values {self.values.shape} and keys {self.keys.shape} must have one row per unit"
        assert (self.labels is not None) == (self.kind == "auc"), "labels go with kind 'auc' only"
        assert self.labels is None or (self.labels.shape == (n,) and self.labels.dtype == np.bool_), \
            f"labels must be (N,) = ({n},) bool, got {self.labels.shape} {self.labels.dtype}"


@dataclass(frozen=True)
class PairedGain:
    """The gain of arm A over arm B (positive = better) with its bootstrap interval."""

    mean: float  # over seeds, of the per-seed difference on the whole test set
    low: float  # the percentile interval at ``level``
    high: float
    level: float
    per_seed: dict[int, float]  # seed -> difference on the whole test set
    resamples: int  # resamples the interval is taken over (an AUC resample without both classes drops out)
    units: int  # test units (users or rows) of each resample

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def counts(indices: np.ndarray, n_units: int) -> np.ndarray:
    """Resamples as drawn unit indices (R, n) -> how often each unit is drawn (R, N) int64.

    >>> counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    array([[2, 0, 1],
           [0, 1, 2]])
    """
    R = indices.shape[0]
    flat = (indices + (np.arange(R) * n_units)[:, None]).ravel()  # (R * n,) into the flattened (R, N)
    return np.bincount(flat, minlength=R * n_units).reshape(R, n_units)


Scorer = Callable[[np.ndarray], np.ndarray]  # resamples as unit counts (R, N) -> a value each (R,)


def scorer(u: UnitScores) -> Scorer:
    """The metric of ``u`` on each resample, given as unit counts (:func:`counts`): (R, N) -> (R,).

    ``np.ones((1, N), np.int64)`` is the whole test set. An AUC resample without a positive or
    without a negative is NaN.

    >>> u = UnitScores("rmse", np.arange(3), np.array([1.0, 4.0, 16.0]))  # squared errors
    >>> scorer(u)(counts(np.array([[1, 1, 1], [0, 0, 0], [2, 2, 2], [0, 1, 1]]), 3)).round(4).tolist()
    [2.0, 1.0, 4.0, 1.7321]
    """
    values = u.values
    if u.kind == "mean":
        return lambda w: w @ values / w.sum(1)
    if u.kind == "rmse":
        return lambda w: np.sqrt(w @ values / w.sum(1))
    assert u.labels is not None
    return _auc_scorer(values, u.labels)


def _auc_scorer(scores: np.ndarray, labels: np.ndarray) -> Scorer:
    """Mann-Whitney AUC of each resample, ties counting half: (N,), (N,) -> counts (R, N) -> (R,).

    Sorted by score with the positives first in a tie, a positive has the first k negatives
    scored strictly below it and the next t tied with it; so with ``below[m]`` the draws of the
    first m negatives (one cumulative sum per resample), its draws count ``below[k]`` pairs
    ranked right and ``below[k + t] - below[k]`` ties, each half: no sort per resample.
    """
    order = np.lexsort((~labels, scores))  # (N,) ascending score, positives first in a tie
    s, y = scores[order], labels[order]  # (N,)
    neg, pos = order[~y], order[y]  # (N_neg,), (P,) units in that order
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # (N,) tie group of each position
    k = (np.cumsum(~y) - ~y)[y]  # (P,) negatives strictly below each positive (tied ones come after)
    t = np.bincount(group, weights=~y).astype(np.int64)[group][y]  # (P,) negatives tied with each positive

    def auc(w: np.ndarray) -> np.ndarray:
        R = w.shape[0]
        below = np.zeros((R, len(neg) + 1), np.int64)  # (R, N_neg + 1)
        np.cumsum(w[:, neg], 1, out=below[:, 1:])  # below[:, m]: draws of the first m negatives
        right = 2 * below[:, k] if not t.any() else below[:, k] + below[:, k + t]  # (R, P) 2 x (below + ties / 2)
        pairs = (w[:, pos] * right).sum(1)  # (R,)
        negatives = below[:, -1]  # (R,)
        positives = w.sum(1) - negatives  # (R,)
        with np.errstate(invalid="ignore", divide="ignore"):
            return pairs / (2.0 * positives * negatives)  # (R,) NaN where a resample lacks a class
    return auc


def paired_difference(a: UnitScores, b: UnitScores, higher_is_better: bool) -> Scorer:
    """A's gain over B (positive = better) on each resample: counts (R, N) -> (R,); exactly 0
    where A and B predict the same."""
    sign = 1.0 if higher_is_better else -1.0
    if a.kind == "mean":  # the mean of the per-unit differences: no cancellation
        diff = sign * (a.values - b.values)  # (N,)
        return lambda w: w @ diff / w.sum(1)
    score_a, score_b = scorer(a), scorer(b)
    return lambda w: sign * (score_a(w) - score_b(w))


def resample_counts(n_units: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``resamples`` draws of ``n_units`` units with replacement, as counts (R_chunk, N) in
    chunks of at most :data:`CHUNK` numbers; the same for a given (n_units, resamples, seed)
    whatever the chunk size (the draws are taken in order, one row of ``n_units`` each)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK // n_units)
    for start in range(0, resamples, chunk):
        yield counts(rng.integers(0, n_units, size=(min(chunk, resamples - start), n_units)), n_units)


def paired_bootstrap(pairs: Mapping[int, tuple[UnitScores, UnitScores]], *, higher_is_better: bool,
                     resamples: int, seed: int, level: float,
                     indices: np.ndarray | None = None) -> PairedGain:
    """The gain of A over B, ``pairs``: seed -> (A, B) on the same test units.

    Every resample draws the same units for both arms and for every seed (the module
    docstring says what the interval means). ``indices`` (R, N) gives the resamples
    explicitly instead of ``resamples`` seeded draws (tests).

    >>> a = UnitScores("mean", np.arange(4), np.array([1.0, 1.0, 0.0, 1.0]))
    >>> b = UnitScores("mean", np.arange(4), np.array([0.0, 1.0, 0.0, 0.0]))
    >>> g = paired_bootstrap({0: (a, b)}, higher_is_better=True, resamples=2000, seed=0, level=0.95)
    >>> g.mean, g.per_seed, g.resamples, g.units
    (0.5, {0: 0.5}, 2000, 4)
    """
    assert pairs, "nothing to compare"
    first = next(iter(pairs.values()))[0]
    n = len(first.values)
    for s, (a, b) in pairs.items():
        if a.kind != first.kind or b.kind != first.kind:
            raise ValueError(f"seed {s}: metric kinds {a.kind!r} and {b.kind!r}, expected {first.kind!r}")
        if not (np.array_equal(a.keys, first.keys) and np.array_equal(b.keys, first.keys)):
            raise ValueError(f"seed {s}: the two models' predictions cover different test units")
    differences = {s: paired_difference(a, b, higher_is_better) for s, (a, b) in pairs.items()}
    per_seed = {s: float(d(np.ones((1, n), np.int64))[0]) for s, d in differences.items()}  # whole test set
    draws = [counts(indices, n)] if indices is not None else resample_counts(n, resamples, seed)
    gains = np.concatenate([np.mean([d(w) for d in differences.values()], axis=0)  # (R_chunk,)
                            for w in draws])
    gains = gains[np.isfinite(gains)]
    if not len(gains):
        raise ValueError("no resample holds both classes: too few test rows for an AUC interval")
    low, high = np.quantile(gains, [(1 - level) / 2, (1 + level) / 2])
    return PairedGain(mean=float(np.mean(list(per_seed.values()))), low=float(low), high=float(high),
                      level=level, per_seed=per_seed, resamples=len(gains), units=n)
