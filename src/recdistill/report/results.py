"""Reading what the training stages wrote: the metrics files (validated key by key),
the per-epoch histories and the MLflow run links in ``run.json``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recdistill.io import read_json
from recdistill.report.specs import ROLES, SCENARIOS, ReportError

log = logging.getLogger(__name__)

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
