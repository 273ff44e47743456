"""stages/ctr_train.py: train one ctr model for one seed (KD_DAGFM, ARCHITECTURE §6).

Roles (DVC stages ``ctr-teacher@<seed>``, ``ctr-distill@<seed>``, ``ctr-alone@<seed>``):
  teacher  CrossNet or CIN (``train.ctr``) on BCE;
  distill  DAGFM (``distill.ctr``) distilled from the teacher checkpoint given by
           ``--teacher`` on its frozen embeddings, then finetuned; fails before training
           when that checkpoint is missing or unreadable;
  alone    the same DAGFM (``distill.ctr.student``, ``train.ctr.embed_dim``) on BCE alone.

In: ``--prepared`` (ctr train/valid/test.parquet), ``--canonical`` (users, items tables),
params.yaml, and for ``distill`` the ``--teacher`` checkpoint.
Out: ``--out`` directory with model.pt, run.json, history.json, predictions.parquet (row,
label, score on test), written as a whole; the ``--metrics`` JSON (AUC, LogLoss, cost).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recdistill import cli
from recdistill.ctr import METRIC_ROLES, run_ctr, write_outputs
from recdistill.data.ctr_features import load_features
from recdistill.io import atomic_path, write_json
from recdistill.tracking import stage_run
from recdistill.train import resolve_device

log = logging.getLogger("ctr_train")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("role", choices=("teacher", "distill", "alone"), help="which model to train")
    parser.add_argument("--prepared", type=Path, required=True, help="folder of the ctr split Parquets")
    parser.add_argument("--canonical", type=Path, required=True, help="folder of the canonical tables")
    parser.add_argument("--out", type=Path, required=True, help="e.g. models/ctr/teacher-s0")
    parser.add_argument("--metrics", type=Path, required=True, help="e.g. metrics/ctr/teacher-s0.json")
    parser.add_argument("--teacher", type=Path, help="teacher model.pt (required for distill)")
    args, p = cli.parse(parser, argv)
    if args.role == "distill" and args.teacher is None:
        parser.error("the distill role needs --teacher PATH (the teacher's model.pt)")
    if args.role == "distill" and not args.teacher.is_file():
        raise SystemExit(f"ctr-distill: teacher checkpoint {args.teacher} does not exist; "
                         f"train it first (dvc repro ctr-teacher@{args.seed})")
    device = resolve_device(p.runtime)
    features = load_features(args.prepared, args.canonical).to(device)
    tracked: dict[str, dict[str, Any]] = {  # the params this role reads (as in dvc.yaml)
        "teacher": {"train.ctr": p.train.ctr},
        "distill": {"distill.ctr": p.distill.ctr},
        "alone": {"distill.ctr.student": p.distill.ctr.student,
                  "train.ctr.embed_dim": p.train.ctr.embed_dim},
    }
    with stage_run(f"ctr-{args.role}", str(args.seed), track="ctr", role=METRIC_ROLES[args.role],
                   params=tracked[args.role], experiment=p.tracking.experiment) as run:
        result = run_ctr(args.role, p, features=features, seed=args.seed,
                         teacher_checkpoint=args.teacher, on_epoch=run.log_epoch)
        with atomic_path(args.out) as tmp:
            tmp.mkdir(parents=True)
            record = write_outputs(result, features, tmp)
            run.write_run_json(tmp / "run.json", architecture=result.architecture,
                               config=result.config, **result.extra)
        write_json(args.metrics, record)
        run.record_checkpoint(args.out / "model.pt")
        run.set_tags({"architecture": result.architecture})
        run.log_metrics({**result.metrics, **{f"cost/{k}": v for k, v in record["cost"].items()
                                              if isinstance(v, int | float)}})
        run.log_dict(result.history, "history.json")
    log.info("ctr-%s@%d: %s", args.role, args.seed, cli.metrics_line(record["metrics"]))


if __name__ == "__main__":
    cli.run(main)
