"""Train (or count) one model of the seq track and evaluate it by full ranking.

Roles: ``teacher`` (SASRec, ``train.seq``), ``distill`` (the student of ``distill.seq.student``
learning from the teacher's soft targets plus its hard loss), ``alone`` (the same student,
no teacher), ``popular`` (most-popular baseline, same evaluation code).

In:  data/prepared/seq/{train,valid,test}.parquet, data/canonical/items.parquet (catalogue
     size), params.yaml, and for ``distill`` the teacher's model.pt of the same seed.
Out: OUT_DIR/{model.pt, run.json, history.json, predictions.parquet (test top-20 per user:
     user, rank, item, score)} and METRICS (metrics/seq/<model>-s<seed>.json).

Usage: seq_train.py ROLE --seed S --data data/prepared/seq --items data/canonical/items.parquet
       [--teacher models/seq/teacher-sS/model.pt] OUT_DIR METRICS
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from recdistill import cli, seq, tracking
from recdistill.data.sequences import load_seq_split
from recdistill.io import atomic_path, write_json, write_parquet
from recdistill.train import resolve_device, save_checkpoint

log = logging.getLogger("seq_train")
MODEL = {"teacher": "teacher", "distill": "distilled", "alone": "alone", "popular": "popular"}
ROLE_TAG = {"teacher": "teacher", "distill": "student", "alone": "alone", "popular": "baseline"}


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("role", choices=sorted(MODEL), help="which model of the seq track")
    parser.add_argument("out_dir", type=Path, help="models/seq/<model>-s<seed>/")
    parser.add_argument("metrics", type=Path, help="metrics/seq/<model>-s<seed>.json")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/seq"), help="seq split dir")
    parser.add_argument("--items", type=Path, default=Path("data/canonical/items.parquet"),
                        help="canonical items table (its row count is the catalogue size)")
    parser.add_argument("--teacher", type=Path, help="teacher model.pt (role distill only)")
    args, p = cli.parse(parser, argv)
    if (args.role == "distill") != (args.teacher is not None):
        parser.error("--teacher is required for role distill and only for it")
    device = resolve_device(p.runtime)
    n_items = len(pd.read_parquet(args.items, columns=["item"]))
    split = load_seq_split(args.data, n_items=n_items, max_len=p.train.seq.max_len, device=device)
    reads: dict[str, dict[str, Any]] = {  # the params each role reads (as in dvc.yaml)
        "teacher": {"train.seq": p.train.seq},
        "distill": {"distill.seq": p.distill.seq, "train.seq.max_len": p.train.seq.max_len},
        "alone": {"distill.seq.student": p.distill.seq.student, "train.seq.max_len": p.train.seq.max_len},
        "popular": {}}
    read = reads[args.role]
    read = {**read, "evaluate.ks": list(p.evaluate.ks),
            "evaluate.sampled_negatives": p.evaluate.sampled_negatives, "data.seed": p.data.seed}
    model_name = MODEL[args.role]
    with tracking.stage_run(f"seq-{args.role}", str(args.seed), track="seq", role=ROLE_TAG[args.role],
                            params=read, experiment=p.tracking.experiment) as run:
        result = seq.run_seq(args.role, p, split, seed=args.seed, device=device,
                             teacher_checkpoint=args.teacher,
                             on_epoch=run.log_epoch)
        fit = result.fit
        history = fit.history if fit else []
        record = {"track": "seq", "model": model_name, "role": ROLE_TAG[args.role], "seed": args.seed,
                  "metrics": result.metrics, "cost": result.cost,
                  "epochs": fit.epochs_run if fit else 0, "best_epoch": fit.best_epoch if fit else 0,
                  "seconds_per_epoch": fit.seconds_per_epoch if fit else 0.0}
        with atomic_path(args.out_dir) as tmp:
            tmp.mkdir()
            if result.model is not None:
                state, config = result.model.state_dict(), result.model.config
            else:
                state, config = {"counts": seq.popularity_counts(split)}, {"n_items": n_items}
            save_checkpoint(tmp / "model.pt", state, {"role": args.role, "seed": args.seed,
                                                      "model": config, "best_epoch": record["best_epoch"]})
            write_json(tmp / "history.json", history)
            write_parquet(tmp / "predictions.parquet", result.predictions)
            run.write_run_json(tmp / "run.json", model=model_name, seed=args.seed)
        write_json(args.metrics, record)
        run.record_checkpoint(args.out_dir / "model.pt")
        run.log_metrics({**result.metrics, "cost/params": result.cost["params"],
                         "cost/latency_ms": result.cost["latency_ms"]})
        run.log_dict(history, "history.json")
        log.info("seq %s seed %d: %s", model_name, args.seed, cli.metrics_line(result.metrics))


if __name__ == "__main__":
    cli.run(main)
