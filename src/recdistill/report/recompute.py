"""Recomputing each run's test metrics from its saved predictions, independently of
the training code, and refusing a run whose reported metrics they do not reproduce."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recdistill import metrics as M
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


def topk_metrics(top: pd.DataFrame, test: pd.DataFrame, ks: Sequence[int]) -> dict[str, float]:
    """``test/recall@k``, ``test/ndcg@k``, ``test/hr@k`` of top lists (user, rank, item)
    against the relevant test pairs (user, item), averaged over the test's users.

    >>> top = pd.DataFrame({"user": [0, 0, 1, 1], "rank": [1, 2, 1, 2], "item": [5, 7, 3, 9]})
    >>> m = topk_metrics(top, pd.DataFrame({"user": [0, 1, 1], "item": [7, 3, 4]}), [2])
    >>> round(m["test/recall@2"], 4), round(m["test/hr@2"], 4)
    (0.75, 1.0)
    """
    relevant = test[["user", "item"]].drop_duplicates()
    n_rel = relevant.groupby("user").size()  # per test user
    hits = top.merge(relevant, on=["user", "item"], how="inner")  # listed relevant items
    out: dict[str, float] = {}
    for k in ks:
        h = hits[hits["rank"] <= k]
        n_hit = h.groupby("user").size().reindex(n_rel.index, fill_value=0).to_numpy()
        gain = 1.0 / np.log2(h["rank"].to_numpy(np.float64) + 1)
        dcg = pd.Series(gain).groupby(h["user"].to_numpy()).sum().reindex(n_rel.index, fill_value=0.0)
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(n_rel.to_numpy(), k) - 1]
        out[f"test/recall@{k}"] = float(np.mean(n_hit / n_rel.to_numpy()))
        out[f"test/ndcg@{k}"] = float(np.mean(dcg.to_numpy() / ideal))
        out[f"test/hr@{k}"] = float(np.mean(n_hit > 0))
    return out


def read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: unreadable Parquet ({err})") from None


def verify(result: Result, run_dir: Path | None, spec: TrackSpec, *, test: pd.DataFrame | None,
           ks: Sequence[int], tolerance: float) -> tuple[str, ...]:
    """Recompute ``result``'s test metrics from ``run_dir/predictions.parquet``.

    Returns the metrics checked (those both recomputable and reported); raises
    :class:`RecomputeMismatch` when one differs by more than ``tolerance``.
    """
    path = None if run_dir is None else run_dir / PREDICTIONS
    if path is None or not path.is_file():
        log.warning("%s %s seed %d: no %s; its test metrics are not recomputed",
                    result.track, result.model, result.seed, path or PREDICTIONS)
        return ()
    pred = read_table(path)
    if "model" in pred.columns:  # one file holding several models
        pred = pred[pred["model"] == result.name_in_file]
    if pred.empty:
        raise ReportError(f"{path}: no predictions for model {result.name_in_file!r}")
    if spec.predictions == "rating":
        _columns(pred, ("user", "item", "rating", "prediction"), path)
        recomputed = rating_metrics(pred)
    elif spec.predictions == "click":
        _columns(pred, ("row", "label", "score"), path)
        if not pred["score"].between(0, 1).all():
            raise ReportError(f"{path}: column 'score' must hold probabilities in [0, 1]")
        recomputed = click_metrics(pred)
    else:
        _columns(pred, ("user", "rank", "item", "score"), path)
        if test is None:
            raise ValueError(f"{result.track}: top-k predictions need the prepared test split")
        if pred.duplicated(["user", "rank"]).any():
            raise ReportError(f"{path}: duplicate (user, rank) rows")
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
