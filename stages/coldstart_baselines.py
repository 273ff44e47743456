"""stages/coldstart_baselines.py: the rating baselines of one coldstart scenario.

DVC stage ``coldstart-baselines@<scenario>``: global mean, user/item bias (ALS) and the
attribute-residual baseline (``recdistill.coldstart.baselines``), fitted on the scenario's
train ratings and scored on validation and test. They are deterministic: their records
carry the first seed of ``seeds`` so the report can line them up with AGNN's seeds.

In: ``--split`` (folder of the scenario's train/valid/test.parquet), ``--canonical``
(users, items, attributes .parquet), params ``baselines`` and ``seeds``.
Out: ``--out`` folder with predictions.parquet (test: model, user, item, rating,
prediction); the ``--metrics`` JSON, one arm set
``{"arms": {"global-mean" | "bias" | "attribute-residual": <arm record>}}`` (role
``baseline``, 0 epochs, stopped ``not_trained``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recdistill import cli
from recdistill.arm import write_metrics
from recdistill.coldstart.baselines import run_baselines
from recdistill.io import atomic_path, write_parquet
from recdistill.tracking import stage_run

log = logging.getLogger("coldstart_baselines")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("scenario", choices=("warm", "ics", "ucs"), help="coldstart scenario")
    parser.add_argument("--split", type=Path, required=True, help="folder of the scenario's split Parquet files")
    parser.add_argument("--canonical", type=Path, required=True, help="folder of the canonical tables")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. models/coldstart/baselines-ics")
    parser.add_argument("--metrics", type=Path, required=True,
                        help="metrics JSON, e.g. metrics/coldstart/baselines-ics.json")
    args, p = cli.parse(parser, argv)
    split = {name: pd.read_parquet(args.split / f"{name}.parquet") for name in ("train", "valid", "test")}
    tables = {name: pd.read_parquet(args.canonical / f"{name}.parquet")
              for name in ("users", "items", "attributes")}
    seed = p.seeds[0]
    with stage_run("coldstart-baselines", args.scenario, track="coldstart", role="baseline",
                   params=cli.dvc_params("coldstart-baselines", args.params), experiment=p.tracking.experiment,
                   seed=seed, data=args.split) as run:
        arms, predictions = run_baselines(split["train"], split["valid"], split["test"], tables["users"],
                                          tables["items"], tables["attributes"], p.baselines,
                                          scenario=args.scenario, seed=seed)
        with atomic_path(args.out) as tmp:
            tmp.mkdir(parents=True)
            write_parquet(tmp / "predictions.parquet", predictions)
        write_metrics(args.metrics, arms)
        run.record_checkpoint(args.out / "predictions.parquet")  # what the report finds this run by
        run.log_metrics({f"{name}/{key}": value for name, arm in arms.arms.items()
                         for key, value in {**arm.metrics, "cost/params": arm.cost.params}.items()})
    log.info("coldstart-baselines@%s: %s", args.scenario,
             {name: round(arm.metrics["test/rmse"], 4) for name, arm in arms.arms.items()})


if __name__ == "__main__":
    cli.run(main)
