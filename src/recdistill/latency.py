"""Inference latency of every model of a track, timed side by side in one process.

A training stage times nothing that it writes to a file git or ``dvc.lock`` compares: its
wall time depends on whatever else the machine runs, so a rerun would change the file, and
ratios between models timed by different processes under different loads are noise (they
moved by ~30% between two runs). Here one process loads every model of a track and times
them in *rounds*: each round calls every model's pass once, in a seeded shuffled order, so
slow periods of the machine hit all models alike. A model's latency is its median over the
rounds; its ratio to the teacher is the median of the per-round ratios, with their
interquartile range as the spread. The ``<track>-latency`` stage writes a
:class:`LatencyTable` to ``metrics/latency/<track>.json`` (small, kept in git); it reruns
only when one of the track's checkpoints changes, so a rerun of unchanged training leaves
the file as it is. The stage itself is :func:`recdistill.latency_stage.stage_main`; this
module holds no training code, so the report can read the tables without depending on it.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from pydantic import ValidationError

from recdistill.arm import NonNegative, SchemaError, Track
from recdistill.io import read_json, write_json
from recdistill.params import Frozen, describe_error

__all__ = ["ModelLatency", "LatencyTable", "time_side_by_side", "latency_table", "write_latency", "read_latency"]


class ModelLatency(Frozen):
    """One model's latency, from the rounds of one process."""

    median_ms: NonNegative  # median over the rounds of one pass's wall time
    ratio: NonNegative  # median over the rounds of (this model's time / the teacher's time)
    ratio_q1: NonNegative  # first and third quartiles of those per-round ratios
    ratio_q3: NonNegative


class LatencyTable(Frozen):
    """``metrics/latency/<track>.json``: every model of a track, timed side by side."""

    track: Track
    unit: str  # what one pass scores ("per 10k rows", "all users")
    device: str
    threads: int  # torch CPU threads during the timing
    rounds: int
    teacher: str  # the model the ratios divide by
    models: dict[str, ModelLatency]


def time_side_by_side(passes: Mapping[str, Callable[[], object]], device: torch.device, *,
                      rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Wall times (ms) of each pass over ``rounds`` rounds, after one warm-up call of each;
    every round calls every pass once, in an order shuffled by ``seed``.

    >>> times = time_side_by_side({"a": lambda: sum(range(100)), "b": lambda: None},
    ...                           torch.device("cpu"), rounds=3)
    >>> sorted(times), [len(t) for t in times.values()]
    (['a', 'b'], [3, 3])
    """
    for fn in passes.values():
        fn()
    order = list(passes)
    shuffle = random.Random(seed).shuffle
    times: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            passes[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(1000 * (time.perf_counter() - start))
    return times


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def latency_table(track: Track, times: Mapping[str, list[float]], *, teacher: str, unit: str,
                  device: torch.device) -> LatencyTable:
    """Summarise :func:`time_side_by_side`'s rounds, ratios against ``teacher``'s time in the
    same round.

    >>> t = latency_table("ctr", {"teacher": [2.0, 4.0, 2.0], "student": [1.0, 1.0, 1.0]},
    ...                   teacher="teacher", unit="per 10k rows", device=torch.device("cpu"))
    >>> t.models["student"].median_ms, t.models["student"].ratio, t.models["teacher"].ratio
    (1.0, 0.5, 1.0)
    """
    if teacher not in times:
        raise ValueError(f"no timings of the teacher {teacher!r} among {sorted(times)}")
    models = {}
    for name, values in times.items():
        q1, ratio, q3 = _quartiles([v / t for v, t in zip(values, times[teacher], strict=True)])
        models[name] = ModelLatency(median_ms=round(statistics.median(values), 4), ratio=round(ratio, 4),
                                    ratio_q1=round(q1, 4), ratio_q3=round(q3, 4))
    return LatencyTable(track=track, unit=unit, device=device.type, threads=torch.get_num_threads(),
                        rounds=len(times[teacher]), teacher=teacher, models=models)


def write_latency(path: str | Path, table: LatencyTable) -> None:
    write_json(path, table.model_dump(mode="json"))


def read_latency(path: str | Path) -> LatencyTable:
    """A latency file; :class:`recdistill.arm.SchemaError` naming the file and field."""
    try:
        return LatencyTable.model_validate(read_json(path))
    except ValidationError as err:
        raise SchemaError(f"{path}: {describe_error(err, LatencyTable)}") from None

