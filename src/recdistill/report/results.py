"""Reading what the training stages wrote: the metrics files (through the schema the stages
write them with, :func:`recdistill.arm.read_metrics`), and the per-epoch histories."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recdistill.arm import ArmRecord, Role, Track, read_metrics
from recdistill.io import read_json
from recdistill.report.specs import ReportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One arm (a model at one seed) as its metrics file reports it, and which file that is."""

    record: ArmRecord
    source: Path

    @property
    def model(self) -> str:
        """Unique in the track: ``<model>-<scenario>`` when the arm has a scenario (coldstart)."""
        r = self.record
        return r.model if r.scenario is None else f"{r.model}-{r.scenario}"

    @property
    def name_in_file(self) -> str:
        """The arm's name in its track (and in a shared predictions file's ``model`` column)."""
        return self.record.model

    @property
    def track(self) -> Track:
        return self.record.track

    @property
    def role(self) -> Role:
        return self.record.role

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def scenario(self) -> str | None:
        return self.record.scenario

    @property
    def metrics(self) -> dict[str, float]:
        return self.record.metrics


def parse_metrics_file(path: Path, track: str) -> list[Result]:
    """The arms in one metrics file of ``track``'s folder (one :class:`~recdistill.arm.ArmRecord`,
    or several in an ``ArmSet``); ``arm.SchemaError`` naming the file and field if it does not
    match the schema, :class:`ReportError` if it holds another track's arms."""
    results = [Result(record, path) for record in read_metrics(path)]
    for r in results:
        if r.track != track:
            raise ReportError(f"{path}: track = {r.track!r}, but the file is in the {track!r} metrics folder")
    return results


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


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_history(path: Path) -> list[dict[str, float]]:
    """Per-epoch rows from ``history.json`` (``publish.write_arm``: a list of rows with the same
    keys, ``null`` where an epoch has no validation), numeric values only.

    A row's ``epoch`` becomes its ``step`` when it has one (ctr numbers steps on through its
    distillation phases, whose epochs restart at 1), so each row has one x on a curve.
    """
    try:
        raw = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, list):
        raise ReportError(f"{path}: expected a list of per-epoch rows, got {type(raw).__name__}")
    rows: list[dict[str, float]] = []
    for i, row in enumerate(raw):
        if not isinstance(row, dict):
            raise ReportError(f"{path}: row {i} is {row!r}, not an object")
        clean = {k: float(v) for k, v in row.items() if _number(v)}
        clean["epoch"] = clean.pop("step", clean.get("epoch", i + 1.0))
        rows.append(clean)
    return rows
