"""What the report knows about each track: its metrics, how its test metrics are
recomputed, what its gain rows compare; the metric directions and the report's errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recdistill.errors import UserError

ROLES = ("teacher", "student", "alone", "baseline")  # table order
LOWER_IS_BETTER = frozenset({"rmse", "mae", "logloss"})
SCENARIOS = ("warm", "ics", "ucs")
PREDICTIONS = "predictions.parquet"


@dataclass(frozen=True)
class TrackSpec:
    main: str  # the metric on the y axis of the figures
    columns: tuple[str, ...]  # test metrics in the table, in order (all are in summary.json)
    curve: str  # the validation metric: learning curves, and (coldstart) which baseline a gain row uses
    predictions: Literal["rating", "click", "topk"]  # how test metrics are recomputed
    test_split: str | None  # prepared split the top-k lists are ranked against
    gain: Literal["student-vs-alone", "vs-best-baseline"]  # what the gain rows compare


TRACKS: dict[str, TrackSpec] = {
    "coldstart": TrackSpec("test/rmse", ("test/rmse", "test/mae"), "valid/rmse", "rating", None,
                           "vs-best-baseline"),
    "ctr": TrackSpec("test/auc", ("test/auc", "test/logloss"), "valid/auc", "click", None,
                     "student-vs-alone"),
    "cf": TrackSpec("test/ndcg@20", ("test/recall@20", "test/ndcg@20", "test/auc"),
                    "valid/ndcg@20", "topk", "cf/test.parquet", "student-vs-alone"),
    "seq": TrackSpec("test/ndcg@10", ("test/hr@10", "test/ndcg@10", "test/hr@20", "test/ndcg@20",
                                      "test/sampled100_hr@10", "test/sampled100_ndcg@10"),
                     "valid/ndcg@10", "topk", "seq/test.parquet", "student-vs-alone"),
}


class ReportError(UserError, ValueError):
    """A metrics, predictions, history or run file is malformed; the message names it."""


class RecomputeMismatch(UserError, ValueError):
    """A test metric recomputed from the saved predictions differs from the reported one."""

    def __init__(self, path: Path, metric: str, reported: float, recomputed: float,
                 source: Path, tolerance: float) -> None:
        self.path, self.metric, self.reported, self.recomputed = path, metric, reported, recomputed
        super().__init__(f"{path}: {metric} recomputed from the predictions is {recomputed:.6f}, "
                         f"but {source} reports {reported:.6f} (|diff| "
                         f"{abs(recomputed - reported):.2g} > tolerance {tolerance:g})")


def higher_is_better(metric: str) -> bool:
    """``test/auc`` -> True; ``test/rmse``, ``valid/logloss`` -> False.

    >>> higher_is_better("test/ndcg@20"), higher_is_better("test/rmse")
    (True, False)
    """
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


def relative_gain(value: float, base: float, metric: str) -> float | None:
    """Relative improvement of ``value`` over ``base`` (positive = better); None if base is 0.

    >>> round(relative_gain(0.8, 0.75, "test/auc"), 4), round(relative_gain(0.9, 1.0, "test/rmse"), 4)
    (0.0667, 0.1)
    """
    if base == 0:
        return None
    change = (value - base) / abs(base)
    return change if higher_is_better(metric) else -change
