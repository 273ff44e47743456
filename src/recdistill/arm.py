"""One result shape for every arm of every track, and one schema for what stages write.

An *arm* is one model of a comparison at one seed: a teacher, a distilled student, the same
student alone, or a baseline. Every track's training function returns an :class:`ArmResult`;
:func:`recdistill.publish.publish` writes its outs the same way for every track (``model.pt``
with :class:`CheckpointMeta`, ``history.json``, ``predictions.parquet``) and the metrics file
is one :class:`ArmRecord` (or an :class:`ArmSet` of several, for baselines computed together).
The stages write these files through the models below and the report reads them back through
the same models (this module imports no training code, so the report does not depend on it),
so a file that does not match is a :class:`SchemaError` naming the file and the field, on
either side; checkpoints are read back by :func:`recdistill.train.checkpoint.read_checkpoint`.

Roles are one vocabulary across tracks: ``teacher`` (teacher or meta model), ``student``
(the student or main model with the transfer), ``alone`` (the same student without it) and
``baseline``.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, Field, ValidationError

from recdistill.errors import UserError
from recdistill.io import write_json
from recdistill.params import Frozen, Number, describe_error

__all__ = ["Track", "Role", "ROLES", "Stopped", "SchemaError", "Cost", "ArmRecord", "ArmSet",
           "CheckpointMeta", "ArmResult", "write_metrics", "read_metrics"]

Track = Literal["coldstart", "ctr", "cf", "seq"]
Role = Literal["teacher", "student", "alone", "baseline"]
ROLES: tuple[Role, ...] = typing.get_args(Role)  # the report's table order
Stopped = Literal["early_stopping", "epoch_cap", "not_trained"]
MetricKey = Annotated[str, Field(pattern=r"^(valid|test)/[a-z0-9_]+(@[0-9]+)?$")]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegative = Annotated[Number, Field(ge=0)]


class SchemaError(UserError, ValueError):
    """A metrics file or a checkpoint's metadata does not match its schema."""


class Cost(Frozen):
    """What one arm costs at inference, as counted (deterministic: a rerun writes the same
    numbers). Wall-clock latency is measured apart, every model of a track side by side
    (:mod:`recdistill.latency`), so that this file does not change when a rerun meets
    another load."""

    params: NonNegativeInt
    macs_per_example: NonNegativeInt  # multiply-adds per example (row, user, rating)
    macs_method: Literal["flop_counter", "formula"]  # torch.utils.flop_counter, or a documented formula
    device: str  # where the arm was trained


class ArmRecord(Frozen):
    """The metrics file of one arm (``metrics/<track>/<model>-s<seed>.json``)."""

    track: Track
    model: str  # the arm's name in its track (teacher, distilled, alone, meta, agnn, bias, ...)
    role: Role
    seed: NonNegativeInt
    scenario: Literal["warm", "ics", "ucs"] | None  # coldstart only
    metrics: dict[MetricKey, Number]  # valid/* at the best epoch, test/* of that state
    cost: Cost
    epochs: NonNegativeInt  # epochs run (0 for a model that is not trained by gradient steps)
    best_epoch: NonNegativeInt
    stopped: Stopped  # why training ended


class ArmSet(Frozen):
    """A metrics file holding several arms computed by one stage (the coldstart baselines)."""

    arms: dict[str, ArmRecord]


class CheckpointMeta(Frozen):
    """The metadata saved next to a ``state_dict`` in ``model.pt``."""

    track: Track
    role: Role
    seed: NonNegativeInt
    arch: dict[str, Any]  # the architecture block (``name`` = the registry entry)
    shape: dict[str, Any]  # data-dependent sizes (vocabularies, users, items, max_len)
    selection: dict[MetricKey, Number]  # validation metrics at the kept epoch
    best_epoch: NonNegativeInt
    extra: dict[str, Any]  # track-specific facts (e.g. the teacher it learned from)


@dataclass
class ArmResult:
    """What a track's training function returns for one arm."""

    record: ArmRecord
    state: dict[str, torch.Tensor]  # what model.pt stores (a model's weights, or counts)
    checkpoint: CheckpointMeta
    history: list[dict[str, float]]  # one row per epoch: epoch, train/loss, valid/* ...
    predictions: pd.DataFrame  # the test predictions the report recomputes metrics from


def _describe(err: ValidationError, schema: type[BaseModel], source: Path | str) -> SchemaError:
    return SchemaError(f"{source}: {describe_error(err, schema)}")


def write_metrics(path: str | Path, record: ArmRecord | ArmSet) -> None:
    """Write a metrics file atomically (validated on construction)."""
    write_json(path, record.model_dump(mode="json"))


def read_metrics(path: str | Path) -> list[ArmRecord]:
    """The arms of one metrics file; :class:`SchemaError` naming the file and field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SchemaError(f"{path}: not valid JSON ({err})") from None
    schema: type[ArmRecord] | type[ArmSet] = ArmSet if isinstance(raw, dict) and "arms" in raw else ArmRecord
    try:
        parsed = schema.model_validate(raw)
    except ValidationError as err:
        raise _describe(err, schema, path) from None
    return list(parsed.arms.values()) if isinstance(parsed, ArmSet) else [parsed]
