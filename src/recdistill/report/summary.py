"""Aggregation over seeds (mean, sample std), gain rows with the bootstrap interval of their
main metric, and the whole evaluation: gather, verify, read histories and links, summarize;
and ``metrics/summary.json``."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recdistill.arm import ROLES, Role, Stopped
from recdistill.io import file_digest
from recdistill.latency import ModelLatency, read_latency
from recdistill.params import BootstrapParams
from recdistill.report.bootstrap import PairedGain, UnitScores, paired_bootstrap
from recdistill.report.recompute import load_predictions, read_table, unit_scores, verify
from recdistill.report.results import Result, gather, read_history
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
    units: UnitScores | None = None  # the track's main metric per test unit, from the predictions


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
    latency: ModelLatency | None  # timed side by side with the track's other models (first seed)
    latency_unit: str  # what one timed pass scores ("" without a latency file)
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
            latency=None, latency_unit="",
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


def gain_pairs(models: Sequence[ModelSummary], spec: TrackSpec) -> list[tuple[ModelSummary, ModelSummary]]:
    """(model, base) of each gain row: transferred student vs student alone, or (coldstart) each
    model vs the baseline of its scenario that is best on validation (``spec.curve``): the test
    set picks nothing."""
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
    return pairs


def gains(models: Sequence[ModelSummary], spec: TrackSpec) -> list[Gain]:
    """The relative gain in every test metric of each pair of :func:`gain_pairs`."""
    return [Gain(m.model, b.model, m.scenario,
                 {k: relative_gain(m.metrics[k][0], b.metrics[k][0], k)
                  for k in m.metrics if k in b.metrics and k.startswith("test/")})
            for m, b in gain_pairs(models, spec)]


@dataclass(frozen=True)
class GainInterval:
    """The absolute gain of ``model`` over ``base`` in the track's main metric, bootstrapped."""

    model: str
    base: str
    scenario: str | None
    metric: str  # the track's main metric
    ci: PairedGain | None  # None: no interval, ``note`` says why
    note: str = ""


def comparisons(models: Sequence[ModelSummary], spec: TrackSpec) -> list[tuple[ModelSummary, ModelSummary]]:
    """The pairs of the gain rows (:func:`gain_pairs`), then teacher vs alone in each scenario."""
    return gain_pairs(models, spec) + [(t, b) for t in models if t.role == "teacher"
                                       for b in models if b.role == "alone" and b.scenario == t.scenario]


def intervals(models: Sequence[ModelSummary], runs: Sequence[Run], spec: TrackSpec,
              bootstrap: BootstrapParams) -> tuple[GainInterval, ...]:
    """:func:`~recdistill.report.bootstrap.paired_bootstrap` of ``spec.main`` for each of
    :func:`comparisons`, seed by seed; a baseline with a single run (not trained: the same at
    every seed) is paired with every seed of the other model."""
    units: dict[str, dict[int, UnitScores | None]] = {}
    for run in runs:
        units.setdefault(run.result.model, {})[run.result.seed] = run.units
    out = []
    for m, b in comparisons(models, spec):
        if b.role == "baseline" and len(b.seeds) == 1:
            seeds = {s: b.seeds[0] for s in m.seeds}
        else:
            seeds = {s: s for s in m.seeds if s in b.seeds}
        pairs = {s: (units.get(m.model, {}).get(s), units.get(b.model, {}).get(sb)) for s, sb in seeds.items()}
        ready = {s: (ua, ub) for s, (ua, ub) in pairs.items() if ua is not None and ub is not None}
        absent = list(dict.fromkeys(f"{name}-s{seed}" for s, sb in seeds.items()
                                    for name, seed, u in ((m.model, s, pairs[s][0]), (b.model, sb, pairs[s][1]))
                                    if u is None))
        ci, note = None, ""
        if not pairs:
            note = "no seed in common"
        elif absent:
            note = f"no {spec.main} per test unit in the saved predictions of {', '.join(absent)}"
        else:
            try:
                ci = paired_bootstrap(ready, higher_is_better=higher_is_better(spec.main),
                                      resamples=bootstrap.resamples, seed=bootstrap.seed, level=bootstrap.level)
            except ValueError as err:
                note = str(err)
        if ci is None:
            log.warning("%s vs %s: no bootstrap interval of %s (%s)", m.model, b.model, spec.main, note)
        out.append(GainInterval(m.model, b.model, m.scenario, spec.main, ci, note))
    return tuple(out)


@dataclass(frozen=True)
class Evaluation:
    tracks: dict[str, list[ModelSummary]]  # the tracks with results, in TRACK_NAMES order
    missing: tuple[str, ...]  # tracks without results yet
    runs: tuple[Run, ...]
    intervals: dict[str, tuple[GainInterval, ...]]  # per track, the bootstrap of each comparison


def _run_dir(models_root: Path, r: Result) -> Path | None:
    for name in (f"{r.model}-s{r.seed}", f"{r.name_in_file}-s{r.seed}", r.source.stem):
        if (models_root / r.track / name).is_dir():
            return models_root / r.track / name
    return None


RunFinder = Callable[[Collection[str]], Mapping[str, dict[str, str]]]  # checkpoint md5s -> run links


def with_latency(tracks: dict[str, list[ModelSummary]], latency_root: Path) -> dict[str, list[ModelSummary]]:
    """The summaries with the latency of ``<latency_root>/<track>.json`` (written by the
    ``<track>-latency`` stages; a track without one keeps ``latency=None``)."""
    out = {}
    for track, models in tracks.items():
        path = latency_root / f"{track}.json"
        table = read_latency(path) if path.is_file() else None
        out[track] = [dataclasses.replace(m, latency=table.models.get(m.model), latency_unit=table.unit)
                      if table is not None else m for m in models]
    return out


def build(metrics_root: Path, models_root: Path, prepared_root: Path, *, specs: Mapping[str, TrackSpec],
          ks: Sequence[int], tolerance: float, bootstrap: BootstrapParams, seeds: Sequence[int] | None = None,
          find_runs: RunFinder | None = None) -> Evaluation:
    """Gather the tracks of ``specs`` (:func:`~recdistill.report.specs.track_specs`), verify
    against predictions, read histories, the latencies (``metrics_root/latency``) and, with
    ``find_runs`` (:func:`recdistill.tracking.checkpoint_runs`), the links to the runs that
    trained each checkpoint; summarize, and bootstrap the gains (:func:`intervals`)."""
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
        checked: tuple[str, ...] = ()
        units = None
        if (loaded := load_predictions(r, run_dir, spec)) is not None:
            checked = verify(r, *loaded, spec, test=tests.get(r.track), ks=ks, tolerance=tolerance)
            units = unit_scores(loaded[1], spec, spec.main, tests.get(r.track))
        history = None
        if run_dir is not None and (run_dir / "history.json").is_file():
            history = read_history(run_dir / "history.json")
        runs.append(Run(r, checked, history, None, units))
    digests = {i: file_digest(out, "md5") for i, run in enumerate(runs)
               if (out := _out_file(models_root, run.result)) is not None}
    links = find_runs(set(digests.values())) if find_runs is not None else {}
    for i, run in enumerate(runs):
        if (link := links.get(digests.get(i, ""))) is not None:
            runs[i] = dataclasses.replace(run, link=link)
        elif find_runs is not None and run.result.role != "baseline":
            log.warning("%s %s seed %d: the MLflow store holds no run that recorded this checkpoint; "
                        "its training run is not linked", run.result.track, run.result.model, run.result.seed)
    tracks = with_latency(summarize(runs), metrics_root / "latency")
    return Evaluation(tracks, missing, tuple(runs), {
        track: intervals(models, [r for r in runs if r.result.track == track], specs[track], bootstrap)
        for track, models in tracks.items()})


def _out_file(models_root: Path, r: Result) -> Path | None:
    """The file a training run recorded as its checkpoint: model.pt, or for the baselines
    that store none, their predictions."""
    run_dir = _run_dir(models_root, r)
    for name in ("model.pt", "predictions.parquet"):
        if run_dir is not None and (run_dir / name).is_file():
            return run_dir / name
    return None


def interval_json(g: GainInterval) -> dict[str, Any]:
    """One comparison in ``summary.json``: the gain in its metric's units (positive = better),
    the interval, per-seed differences (by seed), or the note saying why there is no interval."""
    if g.ci is None:
        return {"metric": g.metric, "note": g.note}
    ci = g.ci
    return {"metric": g.metric, "mean": ci.mean, "low": ci.low, "high": ci.high, "level": ci.level,
            "excludes_zero": ci.excludes_zero, "per_seed": {str(s): d for s, d in ci.per_seed.items()},
            "resamples": ci.resamples, "units": ci.units}


def summary_json(ev: Evaluation, specs: Mapping[str, TrackSpec]) -> dict[str, Any]:
    """``metrics/summary.json``: per track, per model: mean/std of each test metric, cost, how
    many seeds stopped why (``stopped``: ``{"epoch_cap": 1, ...}``); per gain row
    (``"gain: <model> vs <base>"``) the relative gain of each test metric; and per comparison
    (``"ci: <model> vs <base>"``, :func:`interval_json`) the bootstrapped gain in the main metric."""
    out: dict[str, Any] = {}
    for track, models in ev.tracks.items():
        out[track] = {m.model: {
            "role": m.role, "seeds": len(m.seeds),
            **{k: {"mean": mean, "std": std} for k, (mean, std) in m.metrics.items()
               if k.startswith("test/")},
            "params": m.params, "macs_per_example": m.macs_per_example, "macs_method": m.macs_method,
            **({"latency": {**m.latency.model_dump(), "unit": m.latency_unit}} if m.latency else {}),
            "recomputed_runs": m.checked_runs,
            "stopped": dict(Counter(m.stopped)),
            **({"scenario": m.scenario} if m.scenario else {})} for m in models}
        out[track].update({f"gain: {g.model} vs {g.base}": g.values for g in gains(models, specs[track])})
        out[track].update({f"ci: {g.model} vs {g.base}": interval_json(g) for g in ev.intervals.get(track, ())})
    return out
