"""stages/ctr_train.py: train one ctr arm for one seed (KD_DAGFM, ARCHITECTURE §6).

Roles (DVC stages ``ctr-teacher@<seed>``, ``ctr-distill@<seed>``, ``ctr-alone@<seed>``):
  teacher  the ``train.ctr.model`` network (CrossNet or CIN) on BCE;
  student  the ``distill.ctr.student.model`` network (DAGFM) distilled by KD_DAGFM from the
           ``--teacher`` checkpoint on its frozen embeddings, then finetuned; a missing or
           incompatible teacher fails before training, naming the stage that trains it;
  alone    the same student (``distill.ctr.student``, ``train.ctr.embed_dim``) on BCE alone.
Every arm stops early on ``valid/<evaluate.select.ctr>``.

In: ``--prepared`` (ctr train/valid/test.parquet), ``--canonical`` (users, items tables),
params.yaml, and for ``student`` the ``--teacher`` checkpoint.
Out: ``--out`` directory with model.pt, history.json, predictions.parquet (row,
label, score on test), written as a whole; the ``--metrics`` JSON (AUC, LogLoss, cost).
"""

from __future__ import annotations

import logging
from pathlib import Path

from recdistill import cli, ctr
from recdistill.publish import publish
from recdistill.data.ctr_features import load_features
from recdistill.tracking import stage_run
from recdistill.train import CheckpointError, resolve_device

log = logging.getLogger("ctr_train")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("role", choices=tuple(ctr.ARM_NAMES), help="which arm to train")
    parser.add_argument("--prepared", type=Path, required=True, help="folder of the ctr split Parquets")
    parser.add_argument("--canonical", type=Path, required=True, help="folder of the canonical tables")
    parser.add_argument("--out", type=Path, required=True, help="e.g. models/ctr/teacher-s0")
    parser.add_argument("--metrics", type=Path, required=True, help="e.g. metrics/ctr/teacher-s0.json")
    parser.add_argument("--teacher", type=Path, help="teacher model.pt (required for student)")
    args, p = cli.parse(parser, argv)
    ctr.architecture(args.role, p)  # bad params fail before any work
    ctr.selection(p)
    if (args.role == "student") != (args.teacher is not None):
        parser.error("--teacher PATH (the teacher's model.pt) is required for student, and only for it")
    features = load_features(args.prepared, args.canonical).to(resolve_device(p.runtime))
    teacher = None
    if args.teacher is not None:
        try:
            teacher = ctr.load_ctr_teacher(args.teacher, features)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; {ctr.STAGES['student']}@{args.seed}'s teacher is trained by "
                                  f"`dvc repro {ctr.STAGES['teacher']}@{args.seed}`") from None
    with stage_run(ctr.STAGES[args.role], str(args.seed), track="ctr", role=args.role,
                   params=cli.dvc_params(ctr.STAGES[args.role], args.params), experiment=p.tracking.experiment) as run:
        result = ctr.run_ctr(args.role, p, features=features, seed=args.seed, teacher=teacher,
                             on_epoch=run.log_epoch)
        publish(result, run, out_dir=args.out, metrics=args.metrics)
    log.info("%s@%d: %s", ctr.STAGES[args.role], args.seed, cli.metrics_line(result.record.metrics))


if __name__ == "__main__":
    cli.run(main)
