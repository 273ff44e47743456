"""Train (or count) one arm of the seq track and evaluate it by full ranking.

Roles: ``teacher`` (the model of ``train.seq.model``, SASRec), ``student`` (the model of
``distill.seq.student.model`` learning from the teacher's soft targets plus its hard loss),
``alone`` (the same student, no teacher), ``baseline`` (most popular, same evaluation code).
Models by their block's ``name``: ``recdistill.seq.MODELS``; arm names: ``recdistill.seq.ARMS``.

In:  data/prepared/seq/{train,valid,test}.parquet, data/canonical/items.parquet (catalogue
     size), params.yaml, and for ``student`` the teacher's model.pt of the same seed.
Out: OUT_DIR/{model.pt, history.json, predictions.parquet (test top-20 per user:
     user, rank, item, score)} and METRICS: models/seq/<arm>-s<seed>/, metrics/seq/<arm>-s<seed>.json.

Usage: seq_train.py ROLE --seed S --data data/prepared/seq --items data/canonical/items.parquet
       [--teacher models/seq/teacher-sS/model.pt] OUT_DIR METRICS
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recdistill import cli, seq, tracking
from recdistill.arm import ROLES
from recdistill.publish import publish
from recdistill.data.sequences import load_seq_split
from recdistill.train import resolve_device

log = logging.getLogger("seq_train")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("role", choices=ROLES, help="which arm of the seq track")
    parser.add_argument("out_dir", type=Path, help="models/seq/<arm>-s<seed>/")
    parser.add_argument("metrics", type=Path, help="metrics/seq/<arm>-s<seed>.json")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/seq"), help="seq split dir")
    parser.add_argument("--items", type=Path, default=Path("data/canonical/items.parquet"),
                        help="canonical items table (its row count is the catalogue size)")
    parser.add_argument("--teacher", type=Path, help="teacher model.pt (role student only)")
    args, p = cli.parse(parser, argv)
    if (args.role == "student") != (args.teacher is not None):
        parser.error("--teacher is required for role student and only for it")
    arch = seq.resolve_arch(args.role, p)  # bad params fail before any work
    device = resolve_device(p.runtime)
    n_items = len(pd.read_parquet(args.items, columns=["item"]))
    split = load_seq_split(args.data, n_items=n_items, max_len=p.data.seq.max_len, device=device)
    with tracking.stage_run(seq.ARMS[args.role].stage, str(args.seed), track="seq", role=args.role,
                            params=cli.dvc_params(seq.ARMS[args.role].stage, args.params), experiment=p.tracking.experiment) as run:
        result = seq.run_seq(args.role, p, split, arch=arch, seed=args.seed, device=device,
                             teacher_checkpoint=args.teacher, on_epoch=run.log_epoch)
        publish(result, run, out_dir=args.out_dir, metrics=args.metrics)
    log.info("seq %s seed %d: %s", result.record.model, args.seed, cli.metrics_line(result.record.metrics))


if __name__ == "__main__":
    cli.run(main)
