"""stages/coldstart_agnn.py: train AGNN on one coldstart scenario for one seed.

DVC stage ``agnn@<scenario>-<seed>`` (ARCHITECTURE §5, §6). Early stopping on validation
RMSE; test RMSE/MAE computed once from the selected state.

In: ``--graph`` (the scenario's neighbor pickle from ``neighbors@<scenario>``, read through
the restricted unpickler), ``--split`` (folder of the scenario's train/valid/test.parquet),
params ``train.agnn`` and ``runtime``.
Out: ``--out`` folder with model.pt (state_dict + meta), run.json, history.json and
predictions.parquet (test: user, item, rating, prediction), written as a whole; the
``--metrics`` JSON (valid/test RMSE and MAE, cost, epochs). MLflow: per-epoch metrics, the
learning-curve PNG, the history, the final metrics and the checkpoint's md5.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from recdistill import cli
from recdistill.coldstart.graphs import graph_from_payload
from recdistill.coldstart.training import curve_figure, metrics_record, train_agnn
from recdistill.graph import read_pickle
from recdistill.io import atomic_path, write_json, write_parquet
from recdistill.tracking import stage_run
from recdistill.train import resolve_device, save_checkpoint

log = logging.getLogger("coldstart_agnn")


def main(argv: list[str] | None = None) -> None:
    parser = cli.stage_parser(__doc__, seeded=True)
    parser.add_argument("scenario", choices=("warm", "ics", "ucs"), help="coldstart scenario")
    parser.add_argument("--graph", type=Path, required=True, help="neighbor pickle, e.g. data/neighbors/ics.pkl")
    parser.add_argument("--split", type=Path, required=True, help="folder of the scenario's split Parquet files")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. models/coldstart/agnn-ics-s0")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON, e.g. metrics/coldstart/agnn-ics-s0.json")
    args, p = cli.parse(parser, argv)
    graph = graph_from_payload(read_pickle(args.graph))
    if graph.scenario != args.scenario:
        raise SystemExit(f"{args.graph} holds the neighbors of {graph.scenario!r}, not {args.scenario!r}")
    split = {name: pd.read_parquet(args.split / f"{name}.parquet") for name in ("train", "valid", "test")}
    device = resolve_device(p.runtime)
    with stage_run("agnn", f"{args.scenario}-{args.seed}", track="coldstart", role="teacher",
                   params={"train.agnn": p.train.agnn}, experiment=p.tracking.experiment) as run:
        result = train_agnn(graph, split["train"], split["valid"], split["test"], p.train.agnn,
                            seed=args.seed, device=device, on_epoch=run.log_epoch)
        record = metrics_record(result, scenario=args.scenario, seed=args.seed, device=device)
        with atomic_path(args.out) as tmp:
            tmp.mkdir(parents=True)
            save_checkpoint(tmp / "model.pt", result.model.state_dict(),
                            {"model": "agnn", "scenario": args.scenario, "seed": args.seed,
                             "params": asdict(p.train.agnn), "best_epoch": result.fit.best_epoch})
            write_json(tmp / "history.json", result.history)
            write_parquet(tmp / "predictions.parquet", result.predictions)
            run.write_run_json(tmp / "run.json")
        write_json(args.metrics, record)
        run.record_checkpoint(args.out / "model.pt")
        run.log_metrics({**result.metrics, "cost/params": result.n_params,
                         "cost/latency_ms": result.latency_ms, "best_epoch": result.fit.best_epoch})
        run.log_dict(result.history, "history.json")
        run.log_figure(curve_figure(result.history, f"agnn {args.scenario} seed {args.seed}"), "curve.png")
    log.info("agnn@%s-%d: %s", args.scenario, args.seed, cli.metrics_line(result.metrics))


if __name__ == "__main__":
    cli.run(main)
