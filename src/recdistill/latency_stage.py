"""The ``<track>-latency`` stages' one main: load a track's checkpoints (through a function
of the stage script), time them side by side (:mod:`recdistill.latency`), write the table."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from recdistill import cli
from recdistill.arm import CheckpointMeta, Track
from recdistill.latency import latency_table, time_side_by_side, write_latency
from recdistill.params import Params
from recdistill.tracking import stage_run
from recdistill.train import resolve_device

__all__ = ["Passes", "model_name", "stage_main"]

log = logging.getLogger(__name__)
Passes = dict[str, tuple[CheckpointMeta, Callable[[], object]]]  # model name -> (its checkpoint, one pass)


def model_name(folder: Path) -> str:
    """A checkpoint folder's model: ``models/ctr/distilled-s0`` -> ``distilled``.

    >>> model_name(Path("models/ctr/distilled-s0"))
    'distilled'
    """
    return re.sub(r"-s\d+$", "", folder.name)


def stage_main(track: Track, unit: str, doc: str | None,
               build: Callable[[list[Path], argparse.Namespace, Params, torch.device], Passes],
               argv: Sequence[str] | None = None) -> None:
    """The ``<track>-latency`` stage: ``build`` loads the track's checkpoints and gives each
    model's pass (what one pass scores: ``unit``); they are timed side by side and written
    as a :class:`LatencyTable`, and logged to the stage's MLflow run."""
    parser = cli.stage_parser(doc)
    parser.add_argument("checkpoints", type=Path, nargs="+",
                        help=f"checkpoint folders holding model.pt, e.g. models/{track}/teacher-s0")
    parser.add_argument("--rounds", type=int, required=True, help="timed rounds (each times every model once)")
    parser.add_argument("--prepared", type=Path, default=Path(f"data/prepared/{track}"), help="the track's split")
    parser.add_argument("--canonical", type=Path, default=Path("data/canonical"), help="canonical tables")
    parser.add_argument("--out", type=Path, required=True, help=f"e.g. metrics/latency/{track}.json")
    args, p = cli.parse(parser, argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    device = resolve_device(p.runtime)
    stage = f"{track}-latency"
    with stage_run(stage, "", track=track, role="cost", params=cli.dvc_params(stage, args.params),
                   experiment=p.tracking.experiment, data=args.prepared) as run:
        passes = build(args.checkpoints, args, p, device)
        teachers = [name for name, (meta, _) in passes.items() if meta.role == "teacher"]
        if len(teachers) != 1:
            parser.error(f"the {track} checkpoints hold {len(teachers)} teachers ({teachers}); "
                         "the ratios need exactly one")
        times = time_side_by_side({name: fn for name, (_, fn) in passes.items()}, device, rounds=args.rounds)
        table = latency_table(track, times, teacher=teachers[0], unit=unit, device=device)
        write_latency(args.out, table)
        run.log_metrics({f"latency/{name}_ms": m.median_ms for name, m in table.models.items()}
                        | {f"latency/{name}_x_teacher": m.ratio for name, m in table.models.items()})
    log.info("%s (%s, %d threads, %d rounds): %s", stage, table.unit, table.threads, table.rounds,
             ", ".join(f"{name} {m.median_ms:.2f} ms ({m.ratio:.2f}x)" for name, m in table.models.items()))
