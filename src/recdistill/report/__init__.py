"""The evaluate stage's library: gather every run's metrics (``results``), check them
against the saved test predictions (``recompute``), aggregate over seeds (``summary``),
and render the comparison tables (``markdown``) and figures (``figures``); ``specs`` holds
what each track reports, built from the ``evaluate`` params (:func:`track_specs`).

Inputs (the pipeline conventions): ``metrics/<track>/<name>-s<seed>.json`` holds one arm, an
:class:`recdistill.arm.ArmRecord`, or several, an :class:`recdistill.arm.ArmSet`, read through
:func:`recdistill.arm.read_metrics` (the schema the stages write them with); roles are
:data:`recdistill.arm.ROLES`. ``models/<track>/<name>-s<seed>/`` holds ``predictions.parquet``,
``history.json`` and ``model.pt``, whose md5 finds the MLflow run that trained it. Predictions are per track: coldstart (user, item,
rating, prediction), ctr (row, label, score = probability), cf and seq top-k lists (user,
rank 1-based, item, score) ranked against ``data/prepared/{cf,seq}/test.parquet``.

A track without a metrics directory is skipped with a warning (tracks land one by one); a
metrics file that does not match the schema raises :class:`recdistill.arm.SchemaError` naming
the file and the field, a malformed predictions or history file :class:`ReportError`;
a reported test metric that the predictions do not reproduce raises :class:`RecomputeMismatch`.

Aggregates are the mean and the sample standard deviation (ddof 1; 0 for one seed) over
seeds. Gains are relative improvements, positive = better, whatever the metric's direction;
each gain row, and teacher vs alone, also gets the absolute gain in the track's main metric
with a paired bootstrap interval over the test users or rows (``bootstrap``, which says what
the interval means).
Figures are plain :class:`matplotlib.figure.Figure` objects (Agg canvas, no display, no
pyplot state).
"""

from __future__ import annotations

from recdistill.report.bootstrap import PairedGain, UnitScores, paired_bootstrap
from recdistill.report.figures import FIGURES, learning_curves, make_figures, quality_vs_cost, scenario_bars
from recdistill.report.markdown import Provenance, links_markdown, render_markdown
from recdistill.report.recompute import (click_metrics, load_predictions, rating_metrics, topk_metrics,
                                         topk_per_user, unit_scores, verify)
from recdistill.report.results import Result, gather, parse_metrics_file, read_history
from recdistill.report.specs import (TRACK_NAMES, RecomputeMismatch, ReportError, TrackSpec, higher_is_better,
                                     relative_gain, track_specs)
from recdistill.report.summary import (Evaluation, Gain, GainInterval, ModelSummary, Run, build, comparisons,
                                       gains, intervals, summarize, summary_json)

__all__ = [
    "TrackSpec", "TRACK_NAMES", "track_specs", "ReportError", "RecomputeMismatch", "higher_is_better",
    "relative_gain", "Result", "parse_metrics_file", "gather", "read_history",
    "rating_metrics", "click_metrics", "topk_metrics", "topk_per_user", "load_predictions", "verify",
    "unit_scores", "UnitScores", "PairedGain", "paired_bootstrap", "Run", "ModelSummary", "Gain",
    "GainInterval", "Evaluation", "summarize", "gains", "comparisons", "intervals", "build", "summary_json", "Provenance", "render_markdown",
    "links_markdown", "FIGURES", "learning_curves", "quality_vs_cost", "scenario_bars",
    "make_figures",
]
