"""Aggregation over seeds (mean, sample std), gain rows and the whole evaluation:
gather, verify, read histories and links, summarize; and ``metrics/summary.json``."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.arm import ROLES, Role, Stopped
from recdistill.report.recompute import read_table, verify
from recdistill.report.results import Result, gather, read_history, read_run_link
from recdistill.report.specs import (SCENARIOS, TRACK_NAMES, ReportError, TrackSpec, higher_is_better,
                                     relative_gain)

log = logging.getLogger(__name__)

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
    model: str  # unique in the track (Result.model)
    name: str  # the arm's name in its track (the same in every scenario)
    role: Role
    scenario: str | None
    seeds: tuple[int, ...]
    stopped: tuple[Stopped, ...]  # why training ended, per seed
    metrics: dict[str, tuple[float, float]]  # mean, sample std over seeds
    params: int
    macs_per_example: int
    macs_method: str
    latency_ms: float  # mean over seeds
    latency_unit: str
    seconds_per_epoch: float  # mean over seeds
    checked_runs: int  # seeds whose test metrics were recomputed and matched

    def at_cap(self) -> tuple[int, ...]:
        """The seeds whose training stopped at its epoch cap, not early: not converged."""
        return tuple(s for s, why in zip(self.seeds, self.stopped) if why == "epoch_cap")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def scenario_order(scenario: str | None) -> tuple[int, str]:
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
        first = results[0].record
        out.setdefault(track, []).append(ModelSummary(
            track=track, model=model, name=first.model, role=first.role, scenario=first.scenario,
            seeds=tuple(r.seed for r in results), stopped=tuple(r.record.stopped for r in results),
            metrics={k: _mean_std([r.metrics[k] for r in results]) for k in keys},
            params=first.cost.params, macs_per_example=first.cost.macs_per_example,
            macs_method=first.cost.macs_method,
            latency_ms=float(np.mean([r.record.cost.latency_ms for r in results])),
            latency_unit=first.cost.latency_unit,
            seconds_per_epoch=float(np.mean([r.record.seconds_per_epoch for r in results])),
            checked_runs=sum(bool(g.checked) for g in group)))
    for models in out.values():
        models.sort(key=lambda m: (scenario_order(m.scenario), ROLES.index(m.role), m.model))
    return dict(sorted(out.items(), key=lambda kv: TRACK_NAMES.index(kv[0])))


@dataclass(frozen=True)
class Gain:
    model: str
    base: str
    scenario: str | None
    values: dict[str, float | None]  # metric -> relative gain (positive = better)


def gains(models: Sequence[ModelSummary], spec: TrackSpec) -> list[Gain]:
    """Transferred student vs student alone, or (coldstart) each model vs the baseline of its
    scenario that is best on validation (``spec.curve``): the test set picks nothing."""
    pairs: list[tuple[ModelSummary, ModelSummary]] = []
    for m in models:
        peers = [b for b in models if b.scenario == m.scenario]
        if spec.gain == "student-vs-alone" and m.role == "student":
            pairs += [(m, b) for b in peers if b.role == "alone"]
        elif spec.gain == "vs-best-baseline" and m.role != "baseline":
            bases = [b for b in peers if b.role == "baseline" and spec.curve in b.metrics]
            if bases and spec.main in m.metrics:
                sign = 1 if higher_is_better(spec.curve) else -1
                pairs.append((m, max(bases, key=lambda b: sign * b.metrics[spec.curve][0])))
    return [Gain(m.model, b.model, m.scenario,
                 {k: relative_gain(m.metrics[k][0], b.metrics[k][0], k)
                  for k in m.metrics if k in b.metrics and k.startswith("test/")})
            for m, b in pairs]


@dataclass(frozen=True)
class Evaluation:
    tracks: dict[str, list[ModelSummary]]  # the tracks with results, in TRACK_NAMES order
    missing: tuple[str, ...]  # tracks without results yet
    runs: tuple[Run, ...]


def _run_dir(models_root: Path, r: Result) -> Path | None:
    for name in (f"{r.model}-s{r.seed}", f"{r.name_in_file}-s{r.seed}", r.source.stem):
        if (models_root / r.track / name).is_dir():
            return models_root / r.track / name
    return None


def build(metrics_root: Path, models_root: Path, prepared_root: Path, *, specs: Mapping[str, TrackSpec],
          ks: Sequence[int], tolerance: float, seeds: Sequence[int] | None = None) -> Evaluation:
    """Gather the tracks of ``specs`` (:func:`~recdistill.report.specs.track_specs`), verify
    against predictions, read histories and run links, summarize."""
    results, missing = gather(metrics_root, specs, seeds)
    if not results:
        raise ReportError(f"{metrics_root}: no metrics file of any track ({', '.join(specs)} "
                          "folders of <model>-s<seed>.json) for the params' seeds; wrong folder, "
                          "or no stage has trained yet")
    tests: dict[str, pd.DataFrame] = {}
    runs = []
    for r in results:
        spec, run_dir = specs[r.track], _run_dir(models_root, r)
        if spec.test_split and r.track not in tests:
            tests[r.track] = read_table(prepared_root / spec.test_split)
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


def summary_json(ev: Evaluation, specs: Mapping[str, TrackSpec]) -> dict[str, Any]:
    """``metrics/summary.json``: per track, per model: mean/std of each test metric, cost, how
    many seeds stopped why (``stopped``: ``{"epoch_cap": 1, ...}``); and per gain row
    (``"gain: <model> vs <base>"``) the relative gain of each test metric."""
    out: dict[str, Any] = {}
    for track, models in ev.tracks.items():
        out[track] = {m.model: {
            "role": m.role, "seeds": len(m.seeds),
            **{k: {"mean": mean, "std": std} for k, (mean, std) in m.metrics.items()
               if k.startswith("test/")},
            "params": m.params, "macs_per_example": m.macs_per_example, "macs_method": m.macs_method,
            "latency_ms": m.latency_ms, "latency_unit": m.latency_unit,
            "seconds_per_epoch": m.seconds_per_epoch, "recomputed_runs": m.checked_runs,
            "stopped": dict(Counter(m.stopped)),
            **({"scenario": m.scenario} if m.scenario else {})} for m in models}
        out[track].update({f"gain: {g.model} vs {g.base}": g.values for g in gains(models, specs[track])})
    return out
