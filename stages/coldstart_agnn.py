"""stages/coldstart_agnn.py: train AGNN on one coldstart scenario for one seed.

DVC stage ``agnn@<scenario>-<seed>`` (ARCHITECTURE §5, §6). AGNN is the coldstart track's
trained model (arm ``agnn``, role ``teacher``), built by name from ``train.agnn.model``.
Early stopping on ``valid/<evaluate.select.coldstart>`` (rmse or mae); test RMSE/MAE
computed once from the selected state.

In: ``--graph`` (the scenario's neighbor pickle from ``neighbors@<scenario>``, read through
the restricted unpickler), ``--split`` (folder of the scenario's train/valid/test.parquet),
params ``train.agnn``, ``evaluate.select.coldstart`` and ``runtime``.
Out: ``--out`` folder with model.pt (state_dict + checkpoint metadata),
history.json and predictions.parquet (test: user, item, rating, prediction), written as a
whole; the ``--metrics`` JSON (one arm record: valid/test RMSE and MAE, cost, epochs).
MLflow: per-epoch metrics, the learning-curve PNG, the history, the final metrics and the
checkpoint's md5.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recdistill import cli
from recdistill.coldstart.graphs import graph_from_payload
from recdistill.coldstart.training import ROLE, TEACHERS, curve_figure, monitor, run_coldstart
from recdistill.errors import UserError
from recdistill.graph import read_pickle
from recdistill.publish import publish
from recdistill.tracking import stage_run
from recdistill.train import resolve_device

log = logging.getLogger("coldstart_agnn")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("scenario", choices=("warm", "ics", "ucs"), help="coldstart scenario")
    parser.add_argument("--graph", type=Path, required=True, help="neighbor pickle, e.g. data/neighbors/ics.pkl")
    parser.add_argument("--split", type=Path, required=True, help="folder of the scenario's split Parquet files")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. models/coldstart/agnn-ics-s0")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON, e.g. metrics/coldstart/agnn-ics-s0.json")
    args, p = cli.parse(parser, argv)
    arch = TEACHERS.arch(p.train.agnn.model, "train.agnn.model")
    select = p.evaluate.select.coldstart
    key = monitor(select)  # a metric the track does not compute fails here, before any work
    graph = graph_from_payload(read_pickle(args.graph))
    if graph.scenario != args.scenario:
        raise UserError(f"{args.graph} holds the neighbors of {graph.scenario!r}, not {args.scenario!r}")
    split = {name: pd.read_parquet(args.split / f"{name}.parquet") for name in ("train", "valid", "test")}
    device = resolve_device(p.runtime)
    with stage_run("agnn", f"{args.scenario}-{args.seed}", track="coldstart", role=ROLE,
                   params=cli.dvc_params("agnn", args.params),
                   experiment=p.tracking.experiment, seed=args.seed, data=args.split) as run:
        result = run_coldstart(graph, split["train"], split["valid"], split["test"], arch, p.train.agnn,
                               select=select, seed=args.seed, device=device, amp=p.runtime.amp,
                               on_epoch=run.log_epoch)
        publish(result, run, out_dir=args.out, metrics=args.metrics)
        run.log_figure(curve_figure(result.history, f"agnn {args.scenario} seed {args.seed}", key), "curve.png")
    log.info("agnn@%s-%d: %s", args.scenario, args.seed, cli.metrics_line(result.record.metrics))


if __name__ == "__main__":
    cli.run(main)
