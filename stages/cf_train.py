"""stages/cf_train.py: train one cf arm for one seed (GraphTransfer cross fusion, ARCHITECTURE §6).

Roles (DVC stages ``cf-meta@<seed>``, ``cf-distill@<seed>``, ``cf-alone@<seed>``):
  teacher  the meta model ``train.cf.model`` (LightGCN), ``train.cf.embed_dim`` wide, on BPR;
  student  the main model ``distill.cf.student.model`` (MF) on BPR plus cross fusion with the
           fixed final embeddings of the ``--teacher`` checkpoint, whose width it takes; a
           missing or incompatible checkpoint fails before training, naming the stage that
           trains it;
  alone    the same main model (``distill.cf.student``, ``train.cf.embed_dim``) on BPR alone.
Every arm stops early on ``valid/<evaluate.select.cf>`` and is evaluated by full ranking at
``evaluate.ks``.

In:  DATA/{train,valid,test}.parquet (user, item; per-user 80/10/10 of implicit feedback),
     params.yaml, and for ``student`` the meta model's checkpoint (--teacher).
Out: OUT/ with model.pt (checkpoint), history.json (per-epoch
     rows) and predictions.parquet (top-K per test user: user, rank, item, score; train and
     valid items masked), written as a whole; METRICS (the arm's metrics JSON).

Usage: python stages/cf_train.py student data/prepared/cf models/cf/distilled-s0 \\
           metrics/cf/distilled-s0.json --seed 0 --teacher models/cf/meta-s0/model.pt
"""

from __future__ import annotations

import logging
from pathlib import Path

from recdistill import cf, cli
from recdistill.publish import publish
from recdistill.data.interactions import load_cf_splits
from recdistill.tracking import stage_run
from recdistill.train import CheckpointError, resolve_device

log = logging.getLogger("cf_train")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("role", choices=tuple(cf.ARM_NAMES), help="which arm to train")
    parser.add_argument("data", type=Path, help="folder with the cf train/valid/test Parquet files")
    parser.add_argument("out", type=Path, help="output folder, e.g. models/cf/meta-s0")
    parser.add_argument("metrics", type=Path, help="metrics JSON to write, e.g. metrics/cf/meta-s0.json")
    parser.add_argument("--teacher", type=Path, help="the meta model's model.pt (required for student)")
    args, p = cli.parse(parser, argv)
    cf.architecture(args.role, p)  # bad params fail before any work
    cf.selection(p)
    if (args.role == "student") != (args.teacher is not None):
        parser.error("--teacher PATH (the meta model's model.pt) is required for student, and only for it")
    splits = load_cf_splits(args.data, device=resolve_device(p.runtime))
    teacher = None
    if args.teacher is not None:
        try:
            teacher = cf.load_cf_teacher(args.teacher, splits)
        except CheckpointError as err:
            raise CheckpointError(f"{err} [the meta model of {cf.STAGES['student']}@{args.seed} is "
                                  f"trained by {cf.STAGES['teacher']}@{args.seed}]") from None
    with stage_run(cf.STAGES[args.role], str(args.seed), track="cf", role=args.role,
                   params=cli.dvc_params(cf.STAGES[args.role], args.params), experiment=p.tracking.experiment,
                   data=args.data) as run:
        result = cf.run_cf(args.role, p, splits=splits, seed=args.seed, teacher=teacher,
                           on_epoch=run.log_epoch)
        publish(result, run, out_dir=args.out, metrics=args.metrics)
    log.info("%s@%d: %s; wrote %s and %s", cf.STAGES[args.role], args.seed,
             cli.metrics_line(result.record.metrics), args.out, args.metrics)


if __name__ == "__main__":
    cli.run(main)
