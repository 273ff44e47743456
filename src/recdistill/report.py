"""The evaluate stage's library: gather every run's metrics, check them against the saved
test predictions, aggregate over seeds, and render the comparison table and figures.

Inputs (the pipeline conventions): ``metrics/<track>/<name>-s<seed>.json`` holds one model
(``{"track", "model", "role", "seed", "metrics": {"test/auc": ..}, "cost": {..}, ..}``) or
several (``{"seed", "models": {"<model>": {"role", "metrics", "cost"}}}``, shared keys at
the top); ``models/<track>/<name>-s<seed>/`` holds ``predictions.parquet``,
``history.json`` and ``run.json``. Predictions are per track: coldstart (user, item,
rating, prediction), ctr (row, label, score = probability), cf and seq top-k lists (user,
rank 1-based, item, score) ranked against ``data/prepared/{cf,seq}/test.parquet``.

A track without a metrics directory is skipped with a warning (tracks land one by one); a
malformed file raises :class:`ReportError` naming the file and the key; a reported test
metric that the predictions do not reproduce raises :class:`RecomputeMismatch`.

Aggregates are the mean and the sample standard deviation (ddof 1; 0 for one seed) over
seeds. Gains are relative improvements, positive = better, whatever the metric's direction.
Figures are plain :class:`matplotlib.figure.Figure` objects (Agg canvas, no display, no
pyplot state).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from recdistill import metrics as M
from recdistill.io import read_json

__all__ = [
    "TrackSpec", "TRACKS", "ROLES", "FIGURES", "ReportError", "RecomputeMismatch", "Result",
    "Run", "ModelSummary", "Gain", "Evaluation", "Provenance", "higher_is_better",
    "relative_gain", "parse_metrics_file", "gather", "rating_metrics", "click_metrics",
    "topk_metrics", "verify", "read_history", "read_run_link", "summarize", "gains",
    "build", "summary_json", "render_markdown", "links_markdown", "learning_curves", "quality_vs_cost",
    "scenario_bars", "make_figures",
]

log = logging.getLogger(__name__)

ROLES = ("teacher", "student", "alone", "baseline")  # table order
LOWER_IS_BETTER = frozenset({"rmse", "mae", "logloss"})
SCENARIOS = ("warm", "ics", "ucs")
PREDICTIONS = "predictions.parquet"


@dataclass(frozen=True)
class TrackSpec:
    main: str  # the metric on the y axis of the figures
    columns: tuple[str, ...]  # test metrics in the table, in order (all are in summary.json)
    curve: str  # the validation metric of the learning curves
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
FIGURES = tuple(f"curves_{t}.png" for t in TRACKS) + ("quality_cost.png", "coldstart_scenarios.png")


class ReportError(ValueError):
    """A metrics, predictions, history or run file is malformed; the message names it."""


class RecomputeMismatch(ValueError):
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


# ---------------------------------------------------------------- reading metrics files
@dataclass(frozen=True)
class Result:
    """One model at one seed, as its metrics file reports it."""

    track: str
    model: str  # unique in the track: "<name>-<scenario>" when the file gives a scenario
    role: str
    seed: int
    metrics: dict[str, float]
    params: int | None
    macs_per_example: int | None
    latency_ms: float | None
    latency_unit: str | None
    seconds_per_epoch: float | None
    scenario: str | None
    source: Path
    name_in_file: str  # the model's name in its metrics file (and predictions' model column)


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, where: str,
         optional: bool = False) -> Any:
    if key not in obj or (optional and obj[key] is None):
        if optional:
            return None
        raise ReportError(f"{path}: missing key {where + key!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ReportError(f"{path}: key {where + key!r} = {value!r} should be {names}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ReportError(f"{path}: key {where + key!r} = {value!r} is not finite")
    return value


def _parse_entry(entry: Mapping[str, Any], where: str, path: Path, track: str) -> Result:
    if entry.get("track", track) != track:
        raise ReportError(f"{path}: key {where + 'track'!r} = {entry['track']!r}, but the file "
                          f"is in the {track!r} metrics directory")
    role = _get(entry, "role", str, path, where)
    if role not in ROLES:
        raise ReportError(f"{path}: key {where + 'role'!r} = {role!r} should be one of {ROLES}")
    raw_metrics = _get(entry, "metrics", dict, path, where)
    values = {k: float(_get(raw_metrics, k, (int, float), path, where + "metrics."))
              for k in raw_metrics}
    for key in values:
        if key.count("/") != 1:
            raise ReportError(f"{path}: metric key {where + 'metrics.' + key!r} is not 'split/metric'")
    cost = _get(entry, "cost", dict, path, where, optional=True) or {}
    model = _get(entry, "model", str, path, where)
    scenario = _get(entry, "scenario", str, path, where, optional=True)
    if scenario is None and track == "coldstart":  # from the model name, else the file name
        named = [t for t in (model.rsplit("-", 1)[-1], *path.stem.split("-")) if t in SCENARIOS]
        scenario = named[0] if named else None
    unique = model if scenario is None or model.endswith(f"-{scenario}") else f"{model}-{scenario}"
    latency = _get(cost, "latency_ms", (int, float), path, where + "cost.", optional=True)
    spe = _get(entry, "seconds_per_epoch", (int, float), path, where, optional=True)
    return Result(
        track=track, model=unique, role=role, seed=_get(entry, "seed", int, path, where),
        metrics=values, params=_get(cost, "params", int, path, where + "cost.", optional=True),
        macs_per_example=_get(cost, "macs_per_example", int, path, where + "cost.", optional=True),
        latency_ms=None if latency is None else float(latency),
        latency_unit=_get(cost, "latency_unit", str, path, where + "cost.", optional=True),
        seconds_per_epoch=None if spe is None else float(spe), scenario=scenario, source=path,
        name_in_file=model)


def parse_metrics_file(path: Path, track: str) -> list[Result]:
    """The results in one metrics file (one model, or several under ``models``)."""
    try:
        raw = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if "models" not in raw:
        return [_parse_entry(raw, "", path, track)]
    models = _get(raw, "models", dict, path, "")
    shared = {k: v for k, v in raw.items() if k != "models"}
    return [_parse_entry({**shared, "model": name, **_get(models, name, dict, path, "models.")},
                         f"models.{name}.", path, track) for name in models]


def gather(metrics_root: Path, tracks: Iterable[str], seeds: Sequence[int] | None = None
           ) -> tuple[list[Result], tuple[str, ...]]:
    """All results under ``metrics_root/<track>/*.json``, and the tracks that have none.

    Files of seeds not in ``seeds`` (left over after the seeds param changed) are ignored
    with a warning; two files for the same (track, model, seed) are an error.
    """
    results: list[Result] = []
    missing: list[str] = []
    seen: dict[tuple[str, str, int], Path] = {}
    for track in tracks:
        files = sorted((metrics_root / track).glob("*.json"))
        if not files:
            log.warning("no metrics under %s: skipping the %s track", metrics_root / track, track)
            missing.append(track)
            continue
        for path in files:
            for r in parse_metrics_file(path, track):
                if seeds is not None and r.seed not in seeds:
                    log.warning("%s: seed %d of %s is not in params seeds %s; ignored",
                                path, r.seed, r.model, list(seeds))
                    continue
                key = (track, r.model, r.seed)
                if key in seen:
                    raise ReportError(f"{path}: {r.model} seed {r.seed} is also in {seen[key]}")
                seen[key] = path
                results.append(r)
    return results, tuple(missing)


# ---------------------------------------------------------------- recomputation
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


def _read_parquet(path: Path) -> pd.DataFrame:
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
    pred = _read_parquet(path)
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


# ---------------------------------------------------------------- history and run links
def read_history(path: Path) -> list[dict[str, float]]:
    """Per-epoch rows from ``history.json``: a list of rows, ``{"history": [...]}``, or
    phases ``{"<phase>": [...], ...}`` concatenated with epochs numbered on."""
    raw = read_json(path)
    phases = [raw] if isinstance(raw, list) else (
        [raw["history"]] if isinstance(raw, dict) and "history" in raw else
        list(raw.values()) if isinstance(raw, dict) else None)
    if phases is None or not all(isinstance(p, list) for p in phases):
        raise ReportError(f"{path}: expected a list of per-epoch rows (or phases of them)")
    rows: list[dict[str, float]] = []
    for phase in phases:
        offset, label = rows[-1]["epoch"] if rows else 0.0, None
        for i, row in enumerate(phase):
            if not isinstance(row, dict):
                raise ReportError(f"{path}: row {i} is {row!r}, not an object")
            if row.get("phase", label) != label:  # rows tagged with a phase that restarts epochs
                offset, label = (rows[-1]["epoch"] if rows else 0.0), row["phase"]
            label = row.get("phase", label)
            clean = {k: float(v) for k, v in row.items()
                     if isinstance(v, int | float) and not isinstance(v, bool) and k != "phase"}
            clean["epoch"] = offset + clean.get("epoch", i + 1)
            rows.append(clean)
    return rows


def read_run_link(path: Path) -> dict[str, str]:
    """The MLflow run that produced a checkpoint, from its DVC-cached ``run.json``."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: expected a JSON object")
    _get(raw, "run_id", str, path, "")
    keys = ("run_id", "experiment_id", "run_name", "git.commit", "params.hash", "tracking_uri")
    return {k: str(raw[k]) for k in keys if k in raw}


# ---------------------------------------------------------------- aggregation
@dataclass(frozen=True)
class Run:
    """One model at one seed with what the evaluate stage found beside its metrics."""

    result: Result
    checked: tuple[str, ...]  # test metrics recomputed from predictions and matched
    history: list[dict[str, float]] | None
    link: dict[str, str] | None


@dataclass(frozen=True)
class ModelSummary:
    track: str
    model: str
    role: str
    scenario: str | None
    seeds: tuple[int, ...]
    metrics: dict[str, tuple[float, float]]  # mean, sample std over seeds
    params: int | None
    macs_per_example: int | None
    latency_ms: float | None  # mean over seeds
    latency_unit: str | None
    seconds_per_epoch: float | None
    checked_runs: int  # seeds whose test metrics were recomputed and matched


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _scenario_order(scenario: str | None) -> tuple[int, str]:
    return (SCENARIOS.index(scenario), "") if scenario in SCENARIOS else (len(SCENARIOS), scenario or "")


def summarize(runs: Sequence[Run]) -> dict[str, list[ModelSummary]]:
    """Per track, one summary per model (mean ± std over its seeds), in table order."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.result.track, run.result.model), []).append(run)
    out: dict[str, list[ModelSummary]] = {}
    for (track, model), group in groups.items():
        results = sorted((g.result for g in group), key=lambda r: r.seed)
        roles = {r.role for r in results}
        if len(roles) > 1:
            raise ReportError(f"{track} {model}: role differs between seeds ({sorted(roles)}) in "
                              + ", ".join(str(r.source) for r in results))
        keys = sorted(set.intersection(*(set(r.metrics) for r in results)))
        partial = set.union(*(set(r.metrics) for r in results)) - set(keys)
        if partial:
            log.warning("%s %s: %s missing for some seeds; left out", track, model, sorted(partial))
        out.setdefault(track, []).append(ModelSummary(
            track=track, model=model, role=results[0].role, scenario=results[0].scenario,
            seeds=tuple(r.seed for r in results),
            metrics={k: _mean_std([r.metrics[k] for r in results]) for k in keys},
            params=results[0].params, macs_per_example=results[0].macs_per_example,
            latency_ms=_mean_or_none(r.latency_ms for r in results),
            latency_unit=results[0].latency_unit,
            seconds_per_epoch=_mean_or_none(r.seconds_per_epoch for r in results),
            checked_runs=sum(bool(g.checked) for g in group)))
    for models in out.values():
        models.sort(key=lambda m: (_scenario_order(m.scenario), ROLES.index(m.role), m.model))
    return dict(sorted(out.items(), key=lambda kv: list(TRACKS).index(kv[0])
                       if kv[0] in TRACKS else len(TRACKS)))


@dataclass(frozen=True)
class Gain:
    model: str
    base: str
    scenario: str | None
    values: dict[str, float | None]  # metric -> relative gain (positive = better)


def gains(models: Sequence[ModelSummary], spec: TrackSpec) -> list[Gain]:
    """Transferred student vs student alone, or (coldstart) each model vs the best baseline
    of its scenario by the main metric."""
    pairs: list[tuple[ModelSummary, ModelSummary]] = []
    for m in models:
        peers = [b for b in models if b.scenario == m.scenario]
        if spec.gain == "student-vs-alone" and m.role == "student":
            pairs += [(m, b) for b in peers if b.role == "alone"]
        elif spec.gain == "vs-best-baseline" and m.role != "baseline":
            bases = [b for b in peers if b.role == "baseline" and spec.main in b.metrics]
            if bases and spec.main in m.metrics:
                sign = 1 if higher_is_better(spec.main) else -1
                pairs.append((m, max(bases, key=lambda b: sign * b.metrics[spec.main][0])))
    return [Gain(m.model, b.model, m.scenario,
                 {k: relative_gain(m.metrics[k][0], b.metrics[k][0], k)
                  for k in m.metrics if k in b.metrics and k.startswith("test/")})
            for m, b in pairs]


def _teacher(models: Sequence[ModelSummary], m: ModelSummary) -> ModelSummary | None:
    teachers = [t for t in models if t.role == "teacher" and t.scenario == m.scenario]
    return teachers[0] if len(teachers) == 1 else None


@dataclass(frozen=True)
class Evaluation:
    tracks: dict[str, list[ModelSummary]]  # the tracks with results, in TRACKS order
    missing: tuple[str, ...]  # tracks without results yet
    runs: tuple[Run, ...]


def _run_dir(models_root: Path, r: Result) -> Path | None:
    for name in (f"{r.model}-s{r.seed}", f"{r.name_in_file}-s{r.seed}", r.source.stem):
        if (models_root / r.track / name).is_dir():
            return models_root / r.track / name
    return None


def build(metrics_root: Path, models_root: Path, prepared_root: Path, *, ks: Sequence[int],
          tolerance: float, seeds: Sequence[int] | None = None,
          tracks: Mapping[str, TrackSpec] = TRACKS) -> Evaluation:
    """Gather, verify against predictions, read histories and run links, summarize."""
    results, missing = gather(metrics_root, tracks, seeds)
    tests: dict[str, pd.DataFrame] = {}
    runs = []
    for r in results:
        spec, run_dir = tracks[r.track], _run_dir(models_root, r)
        if spec.test_split and r.track not in tests:
            tests[r.track] = _read_parquet(prepared_root / spec.test_split)
        checked = verify(r, run_dir, spec, test=tests.get(r.track), ks=ks, tolerance=tolerance)
        history = link = None
        if run_dir is not None and (run_dir / "history.json").is_file():
            history = read_history(run_dir / "history.json")
        if run_dir is not None and (run_dir / "run.json").is_file():
            link = read_run_link(run_dir / "run.json")
        elif r.role != "baseline":
            log.warning("%s %s seed %d: no run.json; its training run is not linked",
                        r.track, r.model, r.seed)
        runs.append(Run(r, checked, history, link))
    return Evaluation(summarize(runs), missing, tuple(runs))


def summary_json(ev: Evaluation, tracks: Mapping[str, TrackSpec] = TRACKS) -> dict[str, Any]:
    """``metrics/summary.json``: per track, per model: mean/std of each test metric, cost;
    and per gain row (``"gain: <model> vs <base>"``) the relative gain of each test metric."""
    out: dict[str, Any] = {}
    for track, models in ev.tracks.items():
        out[track] = {m.model: {
            "role": m.role, "seeds": len(m.seeds),
            **{k: {"mean": mean, "std": std} for k, (mean, std) in m.metrics.items()
               if k.startswith("test/")},
            "params": m.params, "macs_per_example": m.macs_per_example,
            "latency_ms": m.latency_ms, "latency_unit": m.latency_unit,
            "seconds_per_epoch": m.seconds_per_epoch, "recomputed_runs": m.checked_runs,
            **({"scenario": m.scenario} if m.scenario else {})} for m in models}
        if track in tracks:
            out[track].update({f"gain: {g.model} vs {g.base}": g.values
                               for g in gains(models, tracks[track])})
    return out


# ---------------------------------------------------------------- markdown
@dataclass(frozen=True)
class Provenance:
    commit: str
    params_hash: str
    data_manifest: str


def _fmt_metric(mean_std: tuple[float, float] | None, n: int) -> str:
    if mean_std is None:
        return "—"
    return f"{mean_std[0]:.4f}" + (f" ± {mean_std[1]:.4f}" if n > 1 else "")


def _fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "—"
    return f"{value / base:.2f}×" if value / base >= 0.01 else "<0.01×"


def _fmt_ms(ms: float) -> str:
    return f"{ms:.2f}" if ms >= 0.1 else f"{ms:.2g}"


def _fmt_gain(g: float | None) -> str:
    return "—" if g is None else f"{g:+.2%}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _track_markdown(track: str, models: Sequence[ModelSummary], runs: Sequence[Run],
                    spec: TrackSpec, tolerance: float) -> list[str]:
    columns = [c for c in spec.columns if any(c in m.metrics for m in models)]
    scenarios = any(m.scenario for m in models)
    units = {m.latency_unit for m in models if m.latency_unit}
    unit = f" ({units.pop()})" if len(units) == 1 else ""
    head = (["scenario"] if scenarios else []) + ["model", "role", "seeds", *columns, "params",
                                                   "params ×teacher", "MACs/example",
                                                   f"latency ms{unit}", "latency ×teacher"]
    direction = "higher" if higher_is_better(spec.main) else "lower"
    lines = [f"## {track}", "", f"Main metric `{spec.main}` ({direction} is better).", "",
             _row(head), _row(["---"] * len(head))]
    all_gains = gains(models, spec)

    def gain_rows(scenario: str | None) -> list[str]:
        return [_row(([scenario or ""] if scenarios else [])
                     + [f"gain: {g.model} vs {g.base}", "", "",
                        *(_fmt_gain(g.values.get(c)) for c in columns), "", "", "", "", ""])
                for g in all_gains if g.scenario == scenario]

    previous = models[0].scenario if models else None
    for m in models:
        if m.scenario != previous:  # the gains of the scenario group that just ended
            lines += gain_rows(previous)
            previous = m.scenario
        t = _teacher(models, m)
        latency = "—" if m.latency_ms is None else _fmt_ms(m.latency_ms) + (
            "" if unit or not m.latency_unit else f" ({m.latency_unit})")
        same_unit = t is not None and t.latency_unit == m.latency_unit
        cells = [m.model, m.role, str(len(m.seeds)),
                 *(_fmt_metric(m.metrics.get(c), len(m.seeds)) for c in columns),
                 "—" if m.params is None else f"{m.params:,}",
                 _fmt_ratio(m.params, t.params if t else None),
                 "—" if m.macs_per_example is None else f"{m.macs_per_example:,}", latency,
                 _fmt_ratio(m.latency_ms, t.latency_ms if t and same_unit else None)]
        lines.append(_row(([m.scenario or ""] if scenarios else []) + cells))
    lines += gain_rows(previous)
    ok = [r for r in runs if r.checked]
    checked = sorted({k for r in ok for k in r.checked})
    lines += ["", f"Recomputed from the saved test predictions (within {tolerance:g}): "
              f"{len(ok)} of {len(runs)} runs" + (f" ({', '.join(checked)})." if checked else ".")]
    unchecked = sorted(f"{r.result.model}-s{r.result.seed}" for r in runs if not r.checked)
    if unchecked:
        lines.append(f"Not recomputed (no predictions): {', '.join(unchecked)}.")
    return lines + [""]


def render_markdown(ev: Evaluation, *, provenance: Provenance, figures: Mapping[str, str],
                    tolerance: float, tracks: Mapping[str, TrackSpec] = TRACKS) -> str:
    """``reports/summary.md``: provenance, one table per track, links to the figures.

    Args:
        figures: link text -> path relative to the report (``"../plots/quality_cost.png"``).
    """
    trained = sorted({r.link["git.commit"] for r in ev.runs if r.link and "git.commit" in r.link})
    lines = ["# recdistill: what the transfer bought, and at what cost", "",
             f"- commit: `{provenance.commit}`",
             f"- params hash: `{provenance.params_hash}`",
             f"- data manifest: `{provenance.data_manifest}`",
             f"- models trained at: {', '.join(f'`{c}`' for c in trained) or '—'}", "",
             ("Test metrics are the mean ± sample std over seeds. A gain row is the relative "
              "improvement of the first model over the second (positive = better). "
              "×teacher is a cost as a fraction of the teacher's."), ""]
    for track, spec in tracks.items():
        if track in ev.tracks:
            runs = [r for r in ev.runs if r.result.track == track]
            lines += _track_markdown(track, ev.tracks[track], runs, spec, tolerance)
        else:
            lines += [f"## {track}", "", "No results yet.", ""]
    lines += ["## Figures", ""] + [f"- [{text}]({link})" for text, link in figures.items()]
    return "\n".join(lines) + "\n"


def links_markdown(ev: Evaluation, limit: int = 8000) -> str:
    """The summary run's MLflow description: per track, a table of links (model x seed) to
    the runs that trained each checkpoint, as their run.json records them. Cut to ``limit``
    characters (MLflow's tag limit); linked_runs.json holds them all."""
    lines = ["Training runs of each checkpoint (from its DVC-cached run.json).", ""]
    for track, models in ev.tracks.items():
        runs = [r for r in ev.runs if r.result.track == track and r.link]
        seeds = sorted({r.result.seed for r in runs})
        if not runs:
            continue
        lines += [f"**{track}**", "", _row(["model", *(f"seed {s}" for s in seeds)]),
                  _row(["---"] * (len(seeds) + 1))]
        for m in models:
            by_seed = {r.result.seed: r.link for r in runs if r.result.model == m.model}
            lines.append(_row([m.model, *(
                f"[{link['run_id'][:8]}](#/experiments/{link.get('experiment_id', '0')}"
                f"/runs/{link['run_id']})" if (link := by_seed.get(s)) else "—" for s in seeds)]))
        lines.append("")
    text = "\n".join(lines)
    tail = "\n\n(cut: see the artifact linked_runs.json)"
    return text if len(text) <= limit else text[:limit - len(tail)] + tail


# ---------------------------------------------------------------- figures
def _placeholder(fig: Figure, text: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    return fig


def learning_curves(track: str, runs: Sequence[Run], spec: TrackSpec) -> Figure:
    """Train loss and the validation metric per epoch, one colour per model, one line per seed."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    with_history = [r for r in runs if r.history]
    if not with_history:
        return _placeholder(fig, f"{track}: no training histories yet")
    axes = fig.subplots(1, 2)
    models = sorted({r.result.model for r in with_history})
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for ax, key in zip(axes, ("train/loss", spec.curve)):
        labelled: set[str] = set()
        for r in sorted(with_history, key=lambda r: (r.result.model, r.result.seed)):
            points = [(row["epoch"], row[key]) for row in r.history or [] if key in row]
            if points:
                x, y = zip(*points)
                model = r.result.model
                ax.plot(x, y, color=colors[model], alpha=0.8, lw=1.2, marker=".",
                        label=None if model in labelled else model)
                labelled.add(model)
    for ax, key in zip(axes, ("train/loss", spec.curve)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=key, title=f"{track}: {key}")
        low, high = ax.get_ylim()
        if key == "train/loss" and low > 0 and high / low > 100:  # e.g. a distillation phase
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return fig


def quality_vs_cost(ev: Evaluation, tracks: Mapping[str, TrackSpec] = TRACKS) -> Figure:
    """Main test metric (mean ± std) against parameters (top row) and latency (bottom row),
    one column per track with results."""
    shown = {t: spec for t, spec in tracks.items() if t in ev.tracks}
    fig = Figure(figsize=(4.2 * max(len(shown), 1), 7.5), layout="constrained")
    if not shown:
        return _placeholder(fig, "no results yet")
    axes = fig.subplots(2, len(shown), squeeze=False)
    for j, (track, spec) in enumerate(shown.items()):
        models = [m for m in ev.tracks.get(track, []) if spec.main in m.metrics]
        for i, (attr, label) in enumerate((("params", "parameters"), ("latency_ms", "latency ms"))):
            ax = axes[i][j]
            points = [(getattr(m, attr), m) for m in models if getattr(m, attr)]
            if not points:
                ax.text(0.5, 0.5, f"{track}: no results", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            for x, m in points:
                mean, std = m.metrics[spec.main]
                ax.errorbar([x], [mean], yerr=[std], fmt="o", color=f"C{ROLES.index(m.role)}",
                            capsize=3)
                ax.annotate(m.model, (x, mean), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
            units = {m.latency_unit for _, m in points if m.latency_unit}
            unit = f" ({', '.join(sorted(units))})" if attr == "latency_ms" and units else ""
            ax.set(xscale="log", xlabel=label + unit, ylabel=spec.main, title=track)
            ax.xaxis.set_minor_formatter(NullFormatter())  # narrow ranges crowd minor labels
            ax.margins(x=0.2, y=0.1)  # room for the labels
            ax.grid(alpha=0.3)
    handles = [axes[0][0].plot([], [], "o", color=f"C{i}", label=r)[0] for i, r in enumerate(ROLES)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(ROLES), fontsize=8)
    return fig


def scenario_bars(models: Sequence[ModelSummary], metric: str = "test/rmse") -> Figure:
    """Coldstart: one group of bars per scenario, one bar per model family, ± std."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    rows = [m for m in models if m.scenario and metric in m.metrics]
    if not rows:
        return _placeholder(fig, "coldstart: no results yet")
    scenarios = sorted({m.scenario for m in rows if m.scenario}, key=_scenario_order)
    role = {m.model.removesuffix(f"-{m.scenario}"): m.role for m in rows}
    families = sorted(role, key=lambda f: (role[f] == "baseline", f))  # the models, then baselines
    width = 0.8 / len(families)
    ax = fig.subplots()
    for i, family in enumerate(families):
        xs, means, stds = [], [], []
        for s, scenario in enumerate(scenarios):
            found = [m for m in rows if m.scenario == scenario
                     and m.model.removesuffix(f"-{scenario}") == family]
            if found:
                mean, std = found[0].metrics[metric]
                xs.append(s + (i - (len(families) - 1) / 2) * width)
                means.append(mean)
                stds.append(std)
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=family, color=f"C{i}")
        ax.bar_label(bars, fmt="%.3f", fontsize=8, label_type="center", color="white")
    low = min(m.metrics[metric][0] - m.metrics[metric][1] for m in rows)
    high = max(m.metrics[metric][0] + m.metrics[metric][1] for m in rows)
    pad = 0.1 * (high - low) + 0.01
    ax.set_ylim(max(0.0, low - 2 * pad), high + pad)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set(ylabel=f"{metric} (axis not from 0)", title="coldstart: test error per scenario")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def make_figures(ev: Evaluation, tracks: Mapping[str, TrackSpec] = TRACKS) -> dict[str, Figure]:
    """Every figure in :data:`FIGURES` (placeholders for tracks without results)."""
    figures = {f"curves_{t}.png": learning_curves(t, [r for r in ev.runs if r.result.track == t],
                                                  spec) for t, spec in tracks.items()}
    figures["quality_cost.png"] = quality_vs_cost(ev, tracks)
    figures["coldstart_scenarios.png"] = scenario_bars(ev.tracks.get("coldstart", []))
    return figures
