"""Train one model of the cf track (GraphTransfer cross fusion) for one seed.

Roles (DVC stages ``cf-meta``, ``cf-distill``, ``cf-alone``, a matrix over ``seeds``):
  meta     LightGCN meta model; params ``train.cf``.
  distill  MF main model with cross fusion from the meta model; params ``distill.cf``.
  alone    the same MF, same budget, no transfer; params ``distill.cf.student``.
All read ``evaluate.ks``.

In:  DATA/{train,valid,test}.parquet (user, item; per-user 80/10/10 of implicit feedback);
     for ``distill`` also the meta checkpoint (--meta).
Out: OUT/model.pt (checkpoint), OUT/run.json (MLflow run record), OUT/history.json
     (per-epoch rows), OUT/predictions.parquet (top-K per test user: user, rank, item,
     score; train and valid items masked), and METRICS (the track's metrics JSON).

Usage: python stages/cf_train.py distill data/prepared/cf models/cf/distilled-s0 \\
           metrics/cf/distilled-s0.json --seed 0 --meta models/cf/meta-s0/model.pt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recdistill import cli, params, tracking
from recdistill.cf import run_cf
from recdistill.io import atomic_path, write_json, write_parquet
from recdistill.train import resolve_device, save_checkpoint

log = logging.getLogger("cf_train")
MODEL = {"meta": "meta", "distill": "distilled", "alone": "alone"}  # the metrics' model name
ROLE = {"meta": "teacher", "distill": "student", "alone": "alone"}  # the cross-track role


def stage_params(p: params.Params, role: str) -> dict[str, Any]:
    """The params this role reads (logged to MLflow; the same keys dvc.yaml lists)."""
    own: dict[str, Any] = ({"train.cf": p.train.cf} if role == "meta" else
                           {"distill.cf": p.distill.cf} if role == "distill" else
                           {"distill.cf.student": p.distill.cf.student})
    return {**own, "evaluate.ks": list(p.evaluate.ks)}


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("role", choices=sorted(MODEL), help="which cf model to train")
    parser.add_argument("data", type=Path, help="folder with the cf train/valid/test Parquet files")
    parser.add_argument("out", type=Path, help="output folder (model.pt, run.json, ...)")
    parser.add_argument("metrics", type=Path, help="metrics JSON to write")
    parser.add_argument("--meta", type=Path, help="meta model checkpoint (role distill only)")
    args, p = cli.parse(parser, argv)
    if (args.role == "distill") != (args.meta is not None):
        parser.error("--meta is required for role distill and only for it")
    device = resolve_device(p.runtime)
    with tracking.stage_run(f"cf-{args.role}", str(args.seed), track="cf", role=ROLE[args.role],
                            params=stage_params(p, args.role), experiment=p.tracking.experiment) as run:
        result = run_cf(args.role, p, data=args.data, seed=args.seed, device=device,
                        meta_checkpoint=args.meta, on_epoch=run.log_epoch)
        with atomic_path(args.out) as tmp:
            tmp.mkdir()
            save_checkpoint(tmp / "model.pt", result.model.state_dict(), result.checkpoint_meta)
            write_json(tmp / "history.json", result.fit.history)
            write_parquet(tmp / "predictions.parquet", result.predictions)
            run.write_run_json(tmp / "run.json")
        run.record_checkpoint(args.out / "model.pt")
        run.log_metrics(result.metrics)
        run.log_dict(result.fit.history, "history.json")
        write_json(args.metrics, {
            "track": "cf", "model": MODEL[args.role], "role": ROLE[args.role], "seed": args.seed,
            "metrics": result.metrics, "cost": result.cost, "epochs": result.fit.epochs_run,
            "best_epoch": result.fit.best_epoch, "seconds_per_epoch": result.fit.seconds_per_epoch})
    log.info("cf-%s@%d: %s; wrote %s and %s", args.role, args.seed, cli.metrics_line(result.metrics),
             args.out, args.metrics)


if __name__ == "__main__":
    cli.run(main)
