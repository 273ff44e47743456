"""What the report knows about each track: its metrics, how its test metrics are
recomputed, what its gain rows compare (built from the ``evaluate`` params by
:func:`track_specs`); the metric directions and the report's errors."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recdistill.arm import Track
from recdistill.errors import UserError
from recdistill.params import EvaluateParams, Scenario

TRACK_NAMES: tuple[Track, ...] = typing.get_args(Track)  # the report's track order
LOWER_IS_BETTER = frozenset({"rmse", "mae", "logloss"})
SCENARIOS: tuple[Scenario, ...] = typing.get_args(Scenario)  # coldstart's, in table order
PREDICTIONS = "predictions.parquet"


@dataclass(frozen=True)
class TrackSpec:
    main: str  # the metric on the y axis of the figures: the test value of the selection metric
    columns: tuple[str, ...]  # test metrics in the table, in order (all are in summary.json)
    curve: str  # the selection metric: learning curves, and (coldstart) which baseline a gain row uses
    predictions: Literal["rating", "click", "topk"]  # how test metrics are recomputed
    test_split: str | None  # prepared split the top-k lists are ranked against
    gain: Literal["student-vs-alone", "vs-best-baseline"]  # what the gain rows compare


def track_specs(ev: EvaluateParams) -> dict[str, TrackSpec]:
    """Each track's :class:`TrackSpec` from the ``evaluate`` params, in :data:`TRACK_NAMES` order.

    The main metric is ``test/`` + ``evaluate.select.<track>`` and the curve metric
    ``valid/`` + the same name (the metric the track stops early on); the ranking columns
    are every cutoff in ``evaluate.ks``, seq's sampled variant labelled
    ``evaluate.sampled_label`` (``test/sampled100_hr@10``).

    >>> from recdistill.params import BootstrapParams, SelectParams
    >>> ev = EvaluateParams(ks=(5,), select=SelectParams(coldstart="rmse", ctr="logloss", cf="ndcg@5",
    ...                     seq="hr@5"), sampled_negatives=50, tolerance=1e-4,
    ...                     bootstrap=BootstrapParams(resamples=100, seed=0, level=0.9))
    >>> specs = track_specs(ev)
    >>> specs["ctr"].main, specs["ctr"].curve, specs["seq"].columns
    ('test/logloss', 'valid/logloss', ('test/hr@5', 'test/ndcg@5', 'test/sampled50_hr@5', 'test/sampled50_ndcg@5'))
    """
    def at_ks(*names: str) -> tuple[str, ...]:
        return tuple(f"test/{name}@{k}" for k in ev.ks for name in names)

    def spec(track: Track, columns: tuple[str, ...], predictions: Literal["rating", "click", "topk"],
             test_split: str | None, gain: Literal["student-vs-alone", "vs-best-baseline"]) -> TrackSpec:
        name = getattr(ev.select, track)
        return TrackSpec(main=f"test/{name}", columns=tuple(dict.fromkeys((*columns, f"test/{name}"))),
                         curve=f"valid/{name}", predictions=predictions, test_split=test_split, gain=gain)

    sampled = ev.sampled_label
    return {
        "coldstart": spec("coldstart", ("test/rmse", "test/mae"), "rating", None, "vs-best-baseline"),
        "ctr": spec("ctr", ("test/auc", "test/logloss"), "click", None, "student-vs-alone"),
        "cf": spec("cf", (*at_ks("recall", "ndcg"), "test/auc"), "topk", "cf/test.parquet", "student-vs-alone"),
        "seq": spec("seq", (*at_ks("hr", "ndcg"), *at_ks(f"{sampled}_hr", f"{sampled}_ndcg")), "topk",
                    "seq/test.parquet", "student-vs-alone"),
    }


class ReportError(UserError, ValueError):
    """A predictions, history or run file is malformed, or metrics files disagree; the message
    names the file. (A metrics file that does not match its schema is an ``arm.SchemaError``.)"""


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
