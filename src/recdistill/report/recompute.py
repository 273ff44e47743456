"""Recomputing each run's test metrics from its saved predictions, independently of
the training code, and refusing a run whose reported metrics they do not reproduce; and the
per-unit terms of a metric that the bootstrap of the gains resamples (:func:`unit_scores`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recdistill import metrics as M
from recdistill.report.bootstrap import UnitScores
from recdistill.report.results import Result
from recdistill.report.specs import PREDICTIONS, RecomputeMismatch, ReportError, TrackSpec

log = logging.getLogger(__name__)

def _columns(frame: pd.DataFrame, needed: Sequence[str], path: Path) -> None:
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise ReportError(f"{path}: missing column(s) {absent}; has {list(frame.columns)}")


def rating_metrics(pred: pd.DataFrame) -> dict[str, float]:
    """``test/rmse`` and ``test/mae`` of ``prediction`` against ``rating``."""
    y_hat = torch.as_tensor(pred["prediction"].to_numpy(np.float64))  # (N,)
    y = torch.as_tensor(pred["rating"].to_numpy(np.float64))  # (N,)
    return {"test/rmse": M.rmse(y_hat, y), "test/mae": M.mae(y_hat, y)}


def click_metrics(pred: pd.DataFrame) -> dict[str, float]:
    """``test/auc`` and ``test/logloss`` of the click probabilities ``score`` vs ``label``."""
    p = torch.as_tensor(pred["score"].to_numpy(np.float64))  # (N,)
    y = torch.as_tensor(pred["label"].to_numpy(np.int64))  # (N,)
    return {"test/auc": M.auc(p, y), "test/logloss": M.logloss(p, y)}


def topk_per_user(top: pd.DataFrame, test: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per test user (the index, ascending): ``recall@k``, ``ndcg@k``, ``hr@k`` of top lists
    (user, rank, item) against the relevant test pairs (user, item); a user without a list scores 0.

    >>> top = pd.DataFrame({"user": [0, 0, 1, 1], "rank": [1, 2, 1, 2], "item": [5, 7, 3, 9]})
    >>> topk_per_user(top, pd.DataFrame({"user": [0, 1, 1], "item": [7, 3, 4]}), 2)["recall@2"].tolist()
    [1.0, 0.5]
    """
    relevant = test[["user", "item"]].drop_duplicates()
    n_rel = relevant.groupby("user").size()  # per test user
    hits = top.merge(relevant, on=["user", "item"], how="inner")  # listed relevant items
    h = hits[hits["rank"] <= k]
    n_hit = h.groupby("user").size().reindex(n_rel.index, fill_value=0).to_numpy()
    gain = 1.0 / np.log2(h["rank"].to_numpy(np.float64) + 1)
    dcg = pd.Series(gain).groupby(h["user"].to_numpy()).sum().reindex(n_rel.index, fill_value=0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(n_rel.to_numpy(), k) - 1]
    return pd.DataFrame({f"recall@{k}": n_hit / n_rel.to_numpy(), f"ndcg@{k}": dcg.to_numpy() / ideal,
                         f"hr@{k}": (n_hit > 0).astype(np.float64)}, index=n_rel.index)


def topk_metrics(top: pd.DataFrame, test: pd.DataFrame, ks: Sequence[int]) -> dict[str, float]:
    """``test/recall@k``, ``test/ndcg@k``, ``test/hr@k`` of top lists (user, rank, item)
    against the relevant test pairs (user, item), averaged over the test's users.

    >>> top = pd.DataFrame({"user": [0, 0, 1, 1], "rank": [1, 2, 1, 2], "item": [5, 7, 3, 9]})
    >>> m = topk_metrics(top, pd.DataFrame({"user": [0, 1, 1], "item": [7, 3, 4]}), [2])
    >>> round(m["test/recall@2"], 4), round(m["test/hr@2"], 4)
    (0.75, 1.0)
    """
    return {f"test/{name}": float(np.mean(column)) for k in ks
            for name, column in topk_per_user(top, test, k).items()}


def unit_scores(pred: pd.DataFrame, spec: TrackSpec, metric: str, test: pd.DataFrame | None
                ) -> UnitScores | None:
    """What ``metric`` needs from each test unit of one run's predictions (checked by
    :func:`load_predictions`), for the bootstrap: test users (top-k, the users of ``test``),
    or test rows (coldstart by (user, item), ctr by ``row``). None for a metric the
    predictions do not give (cf's full-ranking AUC, seq's sampled ranking).

    >>> pred = pd.DataFrame({"row": [1, 0], "label": [1, 0], "score": [0.9, 0.2]})
    >>> unit_scores(pred, TrackSpec("test/auc", (), "valid/auc", "click", None, "student-vs-alone"),
    ...             "test/logloss", None).values.round(4).tolist()
    [0.2231, 0.1054]
    """
    name = metric.removeprefix("test/")
    if spec.predictions == "rating":
        frame = pred.sort_values(["user", "item"], kind="stable")
        pairs = frame[["user", "item"]].to_numpy(np.int64)  # (N, 2): a unit is a rated pair
        err = frame["prediction"].to_numpy(np.float64) - frame["rating"].to_numpy(np.float64)  # (N,)
        if name == "rmse":
            return UnitScores("rmse", pairs, err ** 2)
        if name == "mae":
            return UnitScores("mean", pairs, np.abs(err))
    elif spec.predictions == "click":
        frame = pred.sort_values("row", kind="stable")
        rows, p = frame["row"].to_numpy(np.int64), frame["score"].to_numpy(np.float64)  # (N,)
        y = frame["label"].to_numpy(np.int64) == 1  # (N,)
        if name == "auc":
            return UnitScores("auc", rows, p, y)
        if name == "logloss":  # as recdistill.metrics.logloss: probabilities clipped to [1e-7, 1 - 1e-7]
            p = np.clip(p, 1e-7, 1 - 1e-7)
            return UnitScores("mean", rows, -np.where(y, np.log(p), np.log1p(-p)))
    elif test is not None and (m := re.fullmatch(r"(recall|ndcg|hr)@(\d+)", name)) \
            and int(m[2]) <= int(pred["rank"].max()):
        per_user = topk_per_user(pred, test, int(m[2]))
        return UnitScores("mean", per_user.index.to_numpy(np.int64), per_user[name].to_numpy(np.float64))
    return None


def read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: unreadable Parquet ({err})") from None


def load_predictions(result: Result, run_dir: Path | None, spec: TrackSpec
                     ) -> tuple[Path, pd.DataFrame] | None:
    """``run_dir/predictions.parquet`` (the rows of ``result``'s model in a shared file),
    checked for the columns of its track; None, with a warning, when there is none."""
    path = None if run_dir is None else run_dir / PREDICTIONS
    if path is None or not path.is_file():
        log.warning("%s %s seed %d: no %s; its test metrics are not recomputed",
                    result.track, result.model, result.seed, path or PREDICTIONS)
        return None
    pred = read_table(path)
    if "model" in pred.columns:  # one file holding several models
        pred = pred[pred["model"] == result.name_in_file]
    if pred.empty:
        raise ReportError(f"{path}: no predictions for model {result.name_in_file!r}")
    if spec.predictions == "rating":
        _columns(pred, ("user", "item", "rating", "prediction"), path)
    elif spec.predictions == "click":
        _columns(pred, ("row", "label", "score"), path)
        if not pred["score"].between(0, 1).all():
            raise ReportError(f"{path}: column 'score' must hold probabilities in [0, 1]")
    else:
        _columns(pred, ("user", "rank", "item", "score"), path)
        if pred.duplicated(["user", "rank"]).any():
            raise ReportError(f"{path}: duplicate (user, rank) rows")
    return path, pred


def verify(result: Result, path: Path, pred: pd.DataFrame, spec: TrackSpec, *, test: pd.DataFrame | None,
           ks: Sequence[int], tolerance: float) -> tuple[str, ...]:
    """Recompute ``result``'s test metrics from its predictions ``pred`` (read from ``path``
    by :func:`load_predictions`).

    Returns the metrics checked (those both recomputable and reported); raises
    :class:`RecomputeMismatch` when one differs by more than ``tolerance``.
    """
    if spec.predictions == "rating":
        recomputed = rating_metrics(pred)
    elif spec.predictions == "click":
        recomputed = click_metrics(pred)
    else:
        if test is None:
            raise ValueError(f"{result.track}: top-k predictions need the prepared test split")
        recomputed = topk_metrics(pred, test, [k for k in ks if k <= int(pred["rank"].max())])
    checked = []
    for key, value in recomputed.items():
        if key in result.metrics:
            if not abs(value - result.metrics[key]) <= tolerance:
                raise RecomputeMismatch(path, key, result.metrics[key], value, result.source, tolerance)
            checked.append(key)
    if not checked:
        log.warning("%s: none of %s is reported in %s", path, sorted(recomputed), result.source)
    return tuple(checked)
